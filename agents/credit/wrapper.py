"""CCAReward: consensus credit for trainers that see one episode at a time (SB3, a user's loop).

GRPO sees a whole group of trajectories of one sample at once and calls
:func:`~agents.credit.cca.consensus_credit` on it. A classic RL learner plays one episode of
a sample, and meets the sample again later. This wrapper keeps, per sample, a bank of the
footprints of its earlier correct episodes; when an episode ends, that bank plus the
episode itself (when correct) are the voters T⁺ of the same majority-vote consensus, and
the episode is scored by the same rule (:func:`~agents.credit.cca.score_footprint`).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.utils import RecordConstructorArgs

from .cca import DEFAULT_ETA, DEFAULT_MIN_CORRECT, _check_settings, majority_mask, score_footprint
from .footprint import DEFAULT_GRID, Grid, footprint_mask, grid_shape, read_footprint

BANK_FORMAT = "medvr-cca-bank"
BANK_VERSION = 1



class _SampleBank:
    """The footprints of one sample's correct episodes, newest last, at most ``cap`` of them.

    A footprint is stored as the bytes of an ``int32`` array of its boxes (original pixels,
    one row ``x1, y1, x2, y2`` per box): about 1.4 KB for a sample with 16 two-box
    footprints, 2.5x less than as Python tuples (``benchmarks/credit_cost.py``).
    """

    __slots__ = ("image_size", "footprints", "cap")

    def __init__(self, image_size: tuple[int, int], cap: int) -> None:
        self.image_size = image_size
        self.cap = cap
        self.footprints: list[bytes] = []

    def add(self, boxes: Iterable[Sequence[int]]) -> None:
        self.footprints.append(np.asarray(list(boxes), dtype=np.int32).reshape(-1, 4).tobytes())
        if len(self.footprints) > self.cap:
            del self.footprints[: len(self.footprints) - self.cap]

    def boxes(self) -> list[np.ndarray]:
        return [np.frombuffer(f, dtype=np.int32).reshape(-1, 4) for f in self.footprints]


class CCAReward(gym.Wrapper, RecordConstructorArgs):
    """Add MedVR's consensus tool reward ``R_tool`` at the end of each episode, from an online bank per sample.

    ## Description

    CCA (``docs/reference/method.md`` §3) gives a correct trajectory ``R_tool = 1.0`` when its
    footprint (the union of its zoom boxes) agrees with the majority of the sample's correct
    trajectories (IoU > η), else 0.5; a wrong answer gets nothing. This wrapper is the
    one-episode-at-a-time form: the voters are the footprints of the sample's earlier
    correct episodes in the bank, plus this episode when it is correct. Every edge case is
    decided exactly as in :func:`~agents.credit.cca.consensus_credit` (no look: 0; fewer
    than ``min_correct`` voters: 0.5; empty consensus: 0.5). Early in training the bank is
    empty, so correct zooming episodes get 0.5 (like DeepEyes' accuracy-gated tool reward)
    until a sample has been solved ``min_correct`` times.

    Looks and footprints are read from the episode's step records
    (:meth:`medvr_env.episode.Episode.looks`), never from tool names; ``relook`` is no footprint.

    ## Rewards

    The inner reward plus, on the last step (terminated or truncated), ``tool_weight ·
    R_tool``, which is also added to ``info["reward_terms"]["tool"]``. ``info["cca"]`` on
    that step holds ``case``, ``iou``, ``tool_reward`` (before the weight), ``voters`` and
    ``banked`` (how many footprints the sample's bank holds after this episode).

    ## Bank

    Keyed by ``sample_id``; holds at most ``max_per_sample`` footprints per sample (the
    newest) and ``max_samples`` samples (least recently finished dropped first), so memory
    is bounded: a footprint is stored as its few boxes, about 1.4 KB per sample with 16
    two-box footprints, so the default caps hold at most ~150 MB (a 36K-sample training
    set: ~50 MB). Rasterising a full bank on the 64 × 64 grid takes about 0.5 ms per
    finished episode (``benchmarks/credit_cost.py``). Every correct episode is banked, with or without
    looks, so the bank does not depend on ``voters``, ``grid`` or ``eta``.
    :meth:`state_dict` / :meth:`load_state_dict` carry it across a checkpoint, and
    :meth:`save` writes it atomically. In a vector env each worker has its own wrapper and
    bank; :func:`vec_bank_state` merges the workers' banks and :func:`load_vec_bank_state`
    gives every worker the merged bank, or pass ``bank_file`` so each worker starts from a
    saved one.

    ## Arguments

    ``eta`` (0.5), ``min_correct`` (2), ``grid`` (64: 64 × 64 cells), ``voters``
    (``"correct"`` or ``"correct_looking"``), ``no_look_reward`` (0.0), ``tool_weight``
    (1.0), ``max_per_sample`` (16, the paper's group size), ``max_samples`` (100,000),
    ``bank_file`` (a saved bank to start from; ``None``).

    ## Example

    >>> from stable_baselines3.common.env_util import make_vec_env  # doctest: +SKIP
    >>> env = make_vec_env("medvr_env:MedVR-VQA-Tensor-v0", n_envs=4, wrapper_class=CCAReward)  # doctest: +SKIP
    """

    def __init__(
        self,
        env: gym.Env,
        eta: float = DEFAULT_ETA,
        min_correct: int = DEFAULT_MIN_CORRECT,
        grid: Grid = DEFAULT_GRID,
        voters: str = "correct",
        no_look_reward: float = 0.0,
        tool_weight: float = 1.0,
        max_per_sample: int = 16,
        max_samples: int = 100_000,
        bank_file: str | Path | None = None,
    ) -> None:
        RecordConstructorArgs.__init__(
            self, eta=eta, min_correct=min_correct, grid=grid, voters=voters, no_look_reward=no_look_reward,
            tool_weight=tool_weight, max_per_sample=max_per_sample, max_samples=max_samples,
            bank_file=str(bank_file) if bank_file is not None else None,
        )
        gym.Wrapper.__init__(self, env)
        _check_settings(eta, min_correct, voters, no_look_reward)
        grid_shape((64, 64), grid)  # validates the grid spec
        if isinstance(tool_weight, bool) or not isinstance(tool_weight, (int, float)) or not math.isfinite(tool_weight):
            raise ValueError(f"tool_weight must be a finite number, got {tool_weight!r}")
        for name, value in (("max_per_sample", max_per_sample), ("max_samples", max_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not hasattr(type(env.unwrapped), "episode"):
            raise TypeError("CCAReward wraps a MedVR env (one with .unwrapped.episode), "
                            f"got {type(env.unwrapped).__name__}")
        self.eta, self.min_correct, self.grid, self.voters = float(eta), int(min_correct), grid, voters
        self.no_look_reward, self.tool_weight = float(no_look_reward), float(tool_weight)
        self.max_per_sample, self.max_samples = int(max_per_sample), int(max_samples)
        self._bank: OrderedDict[str, _SampleBank] = OrderedDict()
        if bank_file is not None:
            self.load(bank_file)

    # ------------------------------------------------------------------ stepping
    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated):
            return obs, reward, terminated, truncated, info
        credit = self.credit_episode(self.env.unwrapped.episode)
        paid = self.tool_weight * credit["tool_reward"]
        info = dict(info)
        terms = dict(info.get("reward_terms", {}))
        terms["tool"] = float(terms.get("tool", 0.0)) + paid
        info["reward_terms"] = terms
        info["cca"] = credit
        return obs, float(reward) + paid, terminated, truncated, info

    def credit_episode(self, episode: Any) -> dict[str, Any]:
        """Score a finished episode (an ``Episode`` or its record) against its sample's bank, then bank it.

        Returns ``info["cca"]``: ``case``, ``iou``, ``tool_reward`` (unweighted), ``voters``, ``banked``.
        """
        fp = read_footprint(episode)
        key = fp.sample_id
        entry = self._bank.get(key)
        if entry is not None and entry.image_size != fp.image_size:  # the id now names another image
            del self._bank[key]
            entry = None
        past = entry.boxes() if entry is not None else []
        boxes = [b.as_list() for b in fp.boxes]
        mask = footprint_mask(boxes, fp.image_size, self.grid)
        voter_masks = [m for m in (footprint_mask(f, fp.image_size, self.grid) for f in past) if self._votes(m)]
        if fp.correct and self._votes(mask):
            voter_masks.append(mask)
        shape = grid_shape(fp.image_size, self.grid)
        _, majority = majority_mask(voter_masks, shape)
        consensus = majority if voter_masks and len(voter_masks) >= self.min_correct else None
        case, iou, reward = score_footprint(fp.correct, mask, consensus, eta=self.eta,
                                            no_look_reward=self.no_look_reward)
        if fp.correct:
            if entry is None:
                entry = self._bank[key] = _SampleBank(fp.image_size, self.max_per_sample)
            entry.add(boxes)
        if entry is not None:
            self._bank.move_to_end(key)
            while len(self._bank) > self.max_samples:
                self._bank.popitem(last=False)
        banked = len(self._bank[key].footprints) if key in self._bank else 0
        return {"case": case.value, "iou": iou, "tool_reward": reward, "voters": len(voter_masks), "banked": banked}

    def _votes(self, mask: np.ndarray) -> bool:
        return self.voters == "correct" or bool(mask.any())

    # ------------------------------------------------------------------ bank state
    @property
    def bank_size(self) -> tuple[int, int]:
        """``(samples, footprints)`` held in the bank."""
        return len(self._bank), sum(len(e.footprints) for e in self._bank.values())

    def state_dict(self) -> dict[str, Any]:
        """The bank as a JSON-friendly dict (samples least recently finished first)."""
        return {
            "format": BANK_FORMAT,
            "version": BANK_VERSION,
            "samples": [
                {"sample_id": key, "image_size": list(e.image_size), "footprints": [f.tolist() for f in e.boxes()]}
                for key, e in self._bank.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the bank with ``state`` (from :meth:`state_dict`), keeping this wrapper's caps (newest kept)."""
        self._bank = _bank_from_state(state, self.max_per_sample, self.max_samples)

    def save(self, path: str | Path) -> Path:
        """Write the bank to ``path`` as JSON, atomically (a crash leaves the old file or the new one)."""
        from agents.runner import write_json  # lazy: the wrapper itself stays light in vector-env workers

        return write_json(path, self.state_dict())

    def load(self, path: str | Path) -> None:
        """Load a bank written by :meth:`save`."""
        path = Path(path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no CCA bank file at {path}; write one with CCAReward.save()") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not a CCA bank file (invalid JSON: {exc})") from None
        self.load_state_dict(state)


def _bank_from_state(state: Any, max_per_sample: int, max_samples: int) -> OrderedDict[str, _SampleBank]:
    if not isinstance(state, dict) or state.get("format") != BANK_FORMAT:
        raise ValueError(f"not a CCA bank state (expected format {BANK_FORMAT!r}); use CCAReward.state_dict()")
    if state.get("version") != BANK_VERSION:
        raise ValueError(f"CCA bank version {state.get('version')!r} is not supported (this code reads {BANK_VERSION})")
    bank: OrderedDict[str, _SampleBank] = OrderedDict()
    for i, item in enumerate(state.get("samples", [])):
        try:
            size = tuple(int(v) for v in item["image_size"])
            footprints = [tuple(tuple(int(v) for v in box) for box in f) for f in item["footprints"]]
            key = str(item["sample_id"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"CCA bank state: sample entry {i} is malformed: {item!r}"[:300]) from None
        if len(size) != 2 or any(len(b) != 4 for f in footprints for b in f):
            raise ValueError(f"CCA bank state: sample {key!r} needs image_size [w, h] and boxes [x1, y1, x2, y2]")
        entry = _SampleBank(size, max_per_sample)  # type: ignore[arg-type]
        for f in footprints:
            entry.add(f)
        bank.pop(key, None)
        bank[key] = entry
    while len(bank) > max_samples:
        bank.popitem(last=False)
    return bank


def merge_bank_states(states: Iterable[dict[str, Any]], max_per_sample: int = 16) -> dict[str, Any]:
    """One bank state from several (e.g. one per vector-env worker).

    A sample's footprints are concatenated in the order of ``states`` and its newest
    ``max_per_sample`` kept; samples are ordered by their last appearance.
    """
    merged: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for state in states:
        for key, entry in _bank_from_state(state, max_per_sample=10**9, max_samples=10**9).items():
            old = merged.pop(key, None)
            footprints = list(old["footprints"]) if old and tuple(old["image_size"]) == entry.image_size else []
            footprints += [f.tolist() for f in entry.boxes()]
            merged[key] = {"sample_id": key, "image_size": list(entry.image_size),
                           "footprints": footprints[-max_per_sample:]}
    return {"format": BANK_FORMAT, "version": BANK_VERSION, "samples": list(merged.values())}


def vec_bank_state(vec_env: Any, max_per_sample: int = 16) -> dict[str, Any]:
    """The merged bank of every :class:`CCAReward` in an SB3 ``VecEnv`` or a Gymnasium ``VectorEnv``."""
    return merge_bank_states(_call_all(vec_env, "state_dict"), max_per_sample)


def load_vec_bank_state(vec_env: Any, state: dict[str, Any]) -> None:
    """Give every worker of ``vec_env`` the bank ``state`` (e.g. from :func:`vec_bank_state`)."""
    _call_all(vec_env, "load_state_dict", state)


def _call_all(vec_env: Any, method: str, *args: Any) -> Sequence[Any]:
    if hasattr(vec_env, "env_method"):  # stable-baselines3 VecEnv (wrappers are reached through get_wrapper_attr)
        return vec_env.env_method(method, *args)
    if hasattr(vec_env, "call"):  # gymnasium.vector.VectorEnv
        return vec_env.call(method, *args)
    if hasattr(vec_env, method):  # a single wrapped env
        return [getattr(vec_env, method)(*args)]
    raise TypeError(f"expected an SB3 VecEnv, a Gymnasium VectorEnv or a CCAReward env, got {type(vec_env).__name__}")


__all__ = [
    "BANK_FORMAT",
    "BANK_VERSION",
    "CCAReward",
    "load_vec_bank_state",
    "merge_bank_states",
    "vec_bank_state",
]
