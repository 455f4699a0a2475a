"""Flat action encodings for classic RL (SB3 PPO, DQN, sb3-contrib MaskablePPO).

The env's own structured action is a ``Dict`` with a continuous box and free text,
which SB3 cannot act in. These wrappers replace it with integers over the enabled
tools:

- a tool with a box argument (``zoom``, ``crop``) acts on one cell of a region grid
  laid over the **current view** (``grid=2``: its four quadrants, row-major: upper
  left, upper right, lower left, lower right), so two zooms reach a sixteenth of the
  image;
- the terminal tool with a text argument (``answer``) submits one of a fixed list of
  answer texts (:func:`answer_vocabulary`), or an option letter (``option_slots``);
- every other tool (``think``, ``relook`` of the whole original, a custom tool whose
  arguments all have defaults) is one action with no arguments.

:class:`MultiDiscreteActions` acts with ``MultiDiscrete([n_tools, n_regions, n_answers])``
(tool, region for box tools, answer for the answer tool; unused parts are ignored);
:class:`DiscreteActions` enumerates every (tool, argument) pair as one ``Discrete(n)``
(DQN needs this). Both expose ``action_masks()`` in their own encoding for
``sb3_contrib.MaskablePPO`` (for ``MultiDiscrete``, the per-dimension masks
concatenated) and put the same array in ``info["action_mask"]``; the env's per-tool
mask stays available as ``info["tool_mask"]``.

Actions that are not elements of the space (``1.7``, ``inf``, ``10**5000``, ``True``, a string,
the wrong shape, out of range) raise :class:`InvalidActionError`, a ``ValueError`` naming the
space and the value, before anything is played. Unlike the env's own action paths, where a bad
action is an error code the agent is penalised for, these encodings are produced by code whose
output space *is* the action space (an SB3 policy), so such a value is a bug in that code and
is refused loudly rather than truncated (``1.7`` never plays action 1). Integral floats such as
``2.0`` are accepted as the integer they equal.

Running out of steps (``info["stop_reason"] == "max_steps"``) is reported as
``terminated``, not ``truncated`` (``budget_is_terminal=True``, the default). The step
budget is part of the observation (``obs["step"]``), so it is a terminal state of the
task, and SB3 bootstraps ``gamma * V(last obs)`` into the reward of a *truncated* step:
on this task PPO learned to zoom until the budget ran out and collect that bootstrapped
value instead of answering (its training accuracy fell from 0.06 to 0.00 in 10k steps).

Answer masks: for a multiple-choice sample only answer texts that are one of its
options (and letters of existing options) are valid; otherwise the answers that fit
the question type (a dataset may declare ``answer_sets``: question type -> answers;
the procedural dataset's are its answer sets per question type), else every answer text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs

from ..bounded import preview
from ..data.sample import Sample, option_letter
from ..grading import normalize_answer
from ..tools import Tool

REGION, ANSWER, PLAIN = "region", "answer", "plain"


class InvalidActionError(ValueError):
    """An action given to an SB3 action wrapper that is not an element of its action space (a caller's bug)."""


def integer_action(action: Any, space: spaces.Space, shapes: Sequence[tuple[int, ...]], what: str) -> np.ndarray:
    """``action`` as an int64 array of one of ``shapes``, or :class:`InvalidActionError` naming ``space``.

    Accepts Python and numpy integers and integral floats; refuses booleans, fractions,
    non-finite numbers, strings, objects and integers beyond int64 (range checks are the caller's).
    """

    def refuse(why: str) -> InvalidActionError:
        return InvalidActionError(f"{preview(action, 80)} is not an action of {space}: {why}; {what}")

    if isinstance(action, (str, bytes, dict)) or action is None:
        raise refuse(f"got a {type(action).__name__}")
    try:
        arr = np.asarray(action)
    except Exception:  # ragged nesting, or an object numpy cannot take
        raise refuse("not an array of integers") from None
    if arr.shape not in shapes:
        raise refuse(f"shape {arr.shape}, expected {' or '.join(str(s) for s in shapes)}")
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise refuse("an integer beyond int64")
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise refuse("not finite")
        if not np.all(arr == np.floor(arr)):
            raise refuse("not whole numbers")
        if arr.size and np.abs(arr).max() >= 2.0**63:
            raise refuse("an integer beyond int64")
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        raise refuse("booleans, not integers")
    raise refuse(f"elements of dtype {arr.dtype}, not integers")


def answer_vocabulary(dataset: Any) -> tuple[str, ...]:
    """The answer texts an SB3 policy can give for ``dataset``, the same for every split.

    A dataset may declare them as an ``answer_vocabulary`` attribute; the procedural
    dataset's come from its answer sets (all question types, so that the action
    space does not change with ``question_types``). Any other dataset needs an
    explicit list (``answers=`` on the wrapper).
    """
    declared = getattr(dataset, "answer_vocabulary", None)
    if declared:
        return tuple(str(a) for a in declared)
    from ..data.procedural import ANSWER_SETS, ProceduralDataset

    if isinstance(dataset, ProceduralDataset):
        out: list[str] = []
        for answers in ANSWER_SETS.values():
            out.extend(a for a in answers if a not in out)
        return tuple(out)
    raise ValueError(
        f"cannot tell which answers dataset {getattr(dataset, 'name', type(dataset).__name__)!r} uses: pass "
        "answers=[...] to the action wrapper (the same list for every split), or give the dataset an "
        "answer_vocabulary attribute"
    )


def _type_answers(dataset: Any, sample: Sample) -> tuple[str, ...] | None:
    """Answers that fit the sample's question type, when the dataset says so."""
    from ..data.procedural import ANSWER_SETS, ProceduralDataset

    sets = getattr(dataset, "answer_sets", None)
    if sets is None and isinstance(dataset, ProceduralDataset):
        sets = ANSWER_SETS
    if sets and sample.question_type in sets:
        return tuple(sets[sample.question_type])
    return None


def grid_regions(grid: int | Sequence[int], overlap: float = 0.0) -> np.ndarray:
    """Cells of one or more square grids as ``[x1, y1, x2, y2]`` fractions, row-major, grid by grid.

    ``overlap`` grows each cell by that fraction of its side on every side (clamped to the view).
    """
    grids = [grid] if isinstance(grid, (int, np.integer)) else list(grid)
    if not grids or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1 for g in grids):
        raise ValueError(f"grid must be a positive integer or a list of them, got {grid!r}")
    if not 0.0 <= overlap < 0.5:
        raise ValueError(f"overlap must be in [0, 0.5), got {overlap!r}")
    cells = []
    for g in grids:
        side = 1.0 / g
        for row in range(g):
            for col in range(g):
                x1, y1 = col * side - overlap * side, row * side - overlap * side
                x2, y2 = (col + 1) * side + overlap * side, (row + 1) * side + overlap * side
                cells.append([max(0.0, x1), max(0.0, y1), min(1.0, x2), min(1.0, y2)])
    return np.asarray(cells, dtype=np.float32)


@dataclass(frozen=True)
class Verb:
    """One enabled tool as the flat encodings see it."""

    index: int  # in env.tool_names
    name: str
    kind: str  # REGION | ANSWER | PLAIN


class ActionCodec:
    """Turns (tool, region, answer) integers into the env's structured actions, and builds masks.

    Args:
        env: The unwrapped :class:`~medvr_env.MedVRVQAEnv`.
        grid: Grid size(s) over the current view for box tools (see :func:`grid_regions`).
        overlap: Growth of each grid cell, as a fraction of its side.
        answers: Answer texts (default: :func:`answer_vocabulary` of the env's dataset).
        option_slots: Extra answer actions that submit option letters A, B, ... (for
            multiple-choice datasets whose options are not among ``answers``).
    """

    def __init__(
        self,
        env: Any,
        grid: int | Sequence[int] = 2,
        overlap: float = 0.0,
        answers: Sequence[str] | None = None,
        option_slots: int = 0,
    ) -> None:
        if not hasattr(env, "tool_names") or not hasattr(env, "action_masks"):
            raise TypeError(f"the SB3 action wrappers need a MedVRVQAEnv underneath, got {type(env).__name__}")
        if isinstance(option_slots, bool) or not isinstance(option_slots, int) or not 0 <= option_slots <= 26:
            raise ValueError(f"option_slots must be an integer in [0, 26], got {option_slots!r}")
        self.env = env
        self.regions = grid_regions(grid, overlap)
        self.answers: tuple[str, ...] = tuple(answers) if answers is not None else answer_vocabulary(env.dataset)
        if not self.answers and option_slots == 0:
            raise ValueError("no answers: give answers=[...] or option_slots > 0")
        if len(set(self.answers)) != len(self.answers):
            raise ValueError(f"answers must be unique, got {list(self.answers)}")
        self.answer_texts: tuple[str, ...] = self.answers + tuple(option_letter(i) for i in range(option_slots))
        self.option_slots = option_slots
        self.verbs: tuple[Verb, ...] = tuple(
            Verb(i, cls.name, _kind(cls)) for i, cls in enumerate(env.tools)
        )
        self._norm_answers = [normalize_answer(a) for a in self.answers]
        self._answer_mask_key: str | None = None
        self._answer_mask = np.ones(len(self.answer_texts), dtype=np.int8)

    @property
    def n_tools(self) -> int:
        return len(self.verbs)

    @property
    def n_regions(self) -> int:
        return len(self.regions)

    @property
    def n_answers(self) -> int:
        return len(self.answer_texts)

    def structured(self, tool: int, region: int, answer: int) -> dict[str, Any]:
        """The env action for ``(tool, region, answer)``; arguments a tool does not take are ignored."""
        verb = self.verbs[tool]
        action: dict[str, Any] = {"tool": verb.index}
        if verb.kind == REGION:
            action["bbox"] = self.regions[region].copy()
            action["view"] = int(self.env.episode.current_view)
        elif verb.kind == ANSWER:
            action["text"] = self.answer_texts[answer]
        return action

    def tool_mask(self) -> np.ndarray:
        return np.asarray(self.env.action_masks(), dtype=np.int8)

    def answer_mask(self) -> np.ndarray:
        """Valid answer actions for the current sample (never all zero)."""
        sample = self.env.episode.sample
        if sample.sample_id != self._answer_mask_key:
            self._answer_mask = self._compute_answer_mask(sample)
            self._answer_mask_key = sample.sample_id
        return self._answer_mask.copy()

    def _compute_answer_mask(self, sample: Sample) -> np.ndarray:
        n_vocab = len(self.answers)
        mask = np.zeros(self.n_answers, dtype=np.int8)
        if sample.options:
            options = {normalize_answer(o) for o in sample.options}
            mask[:n_vocab] = [a in options for a in self._norm_answers]
            mask[n_vocab : n_vocab + min(len(sample.options), self.option_slots)] = 1
        else:
            fitting = _type_answers(self.env.dataset, sample)
            if fitting is not None:
                wanted = {normalize_answer(a) for a in fitting}
                mask[:n_vocab] = [a in wanted for a in self._norm_answers]
        if not mask.any():  # nothing fits: every answer text stays possible (the grader decides)
            mask[:n_vocab] = 1
            if not mask.any():
                mask[:] = 1
        return mask


def _kind(cls: type[Tool]) -> str:
    if cls.argument_with_role("box") is not None:
        return REGION
    if cls.terminal and cls.argument_with_role("text") is not None:
        return ANSWER
    missing = list(cls.parameters.get("required", []))
    if missing:
        raise ValueError(
            f"tool {cls.name!r} requires argument(s) {missing} that the SB3 action encodings cannot fill; "
            "give them defaults or leave the tool out (tools=[...])"
        )
    return PLAIN


class _FlatActions(gym.ActionWrapper, RecordConstructorArgs):
    """Shared machinery of the two encodings."""

    def __init__(
        self,
        env: gym.Env,
        grid: int | Sequence[int] = 2,
        overlap: float = 0.0,
        answers: Sequence[str] | None = None,
        option_slots: int = 0,
        budget_is_terminal: bool = True,
    ) -> None:
        RecordConstructorArgs.__init__(
            self, grid=grid, overlap=overlap, answers=list(answers) if answers is not None else None,
            option_slots=option_slots, budget_is_terminal=budget_is_terminal,
        )
        gym.ActionWrapper.__init__(self, env)
        self.codec = ActionCodec(env.unwrapped, grid, overlap, answers, option_slots)
        self.budget_is_terminal = bool(budget_is_terminal)

    def action_masks(self) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._with_mask(info)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(self.action(action))
        if self.budget_is_terminal and truncated and not terminated and info.get("stop_reason") == "max_steps":
            terminated, truncated = True, False
        return obs, reward, terminated, truncated, self._with_mask(info)

    def _with_mask(self, info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        info["tool_mask"] = info.get("action_mask")
        info["action_mask"] = self.action_masks()
        return info


class MultiDiscreteActions(_FlatActions):
    """``MultiDiscrete([n_tools, n_regions, n_answers])`` actions over a MedVR env.

    ## Action Space

    ``[tool, region, answer]``: ``tool`` indexes ``env.tool_names``; ``region`` is a cell
    of the grid over the current view (used by box tools); ``answer`` indexes
    ``codec.answer_texts`` (used by the answer tool). With the default tools, the
    procedural dataset and ``grid=2``: ``MultiDiscrete([5, 4, 13])``.

    ## Masks

    ``action_masks()`` is ``concat(tool mask, region mask, answer mask)`` (length
    ``n_tools + n_regions + n_answers``), the format sb3-contrib's MaskablePPO takes for
    ``MultiDiscrete``.

    ## Episode End

    As the env's, except that running out of steps is ``terminated`` (see the module
    docstring; ``budget_is_terminal=False`` keeps it ``truncated``).

    ## Arguments

    ``grid`` (int or list of ints, default 2), ``overlap`` (default 0), ``answers``
    (default: :func:`answer_vocabulary`), ``option_slots`` (default 0),
    ``budget_is_terminal`` (default True).
    """

    def __init__(self, env: gym.Env, grid: int | Sequence[int] = 2, overlap: float = 0.0,
                 answers: Sequence[str] | None = None, option_slots: int = 0, budget_is_terminal: bool = True) -> None:
        super().__init__(env, grid, overlap, answers, option_slots, budget_is_terminal)
        c = self.codec
        self.action_space = spaces.MultiDiscrete([c.n_tools, c.n_regions, c.n_answers])

    def action(self, action: Any) -> dict[str, Any]:
        what = "a MultiDiscrete MedVR action is [tool, region, answer]"
        arr = integer_action(action, self.action_space, [(3,)], what)
        tool, region, answer = (int(v) for v in arr)
        c = self.codec
        if not (0 <= tool < c.n_tools and 0 <= region < c.n_regions and 0 <= answer < c.n_answers):
            raise InvalidActionError(f"action {arr.tolist()} is outside {self.action_space} ([tool, region, answer])")
        return self.codec.structured(tool, region, answer)

    def action_masks(self) -> np.ndarray:
        c = self.codec
        return np.concatenate([c.tool_mask(), np.ones(c.n_regions, dtype=np.int8), c.answer_mask()]).astype(bool)


class DiscreteActions(_FlatActions):
    """``Discrete(n)`` actions: every (tool, argument) pair numbered in tool order.

    ## Action Space

    For each enabled tool in ``env.tool_names`` order: ``n_regions`` actions for a box
    tool, ``n_answers`` for the answer tool, one for any other tool.
    ``action_meanings()`` names them. With the default tools, the procedural dataset
    and ``grid=2``: ``Discrete(23)`` = think, zoom x4, crop x4, relook, answer x13.

    ## Masks

    ``action_masks()`` has one entry per action: the tool's mask and, for answers,
    the answer mask.

    ## Arguments

    As :class:`MultiDiscreteActions`.
    """

    def __init__(self, env: gym.Env, grid: int | Sequence[int] = 2, overlap: float = 0.0,
                 answers: Sequence[str] | None = None, option_slots: int = 0, budget_is_terminal: bool = True) -> None:
        super().__init__(env, grid, overlap, answers, option_slots, budget_is_terminal)
        c = self.codec
        table: list[tuple[int, int, int]] = []
        for t, verb in enumerate(c.verbs):
            if verb.kind == REGION:
                table.extend((t, r, 0) for r in range(c.n_regions))
            elif verb.kind == ANSWER:
                table.extend((t, 0, a) for a in range(c.n_answers))
            else:
                table.append((t, 0, 0))
        self.table = np.asarray(table, dtype=np.int64)
        self.action_space = spaces.Discrete(len(table))

    def action_meanings(self) -> list[str]:
        """A short name per action, e.g. ``"zoom[1]"`` (grid cell 1) or ``"answer[yes]"``."""
        out = []
        for t, r, a in self.table:
            verb = self.codec.verbs[t]
            arg = f"[{r}]" if verb.kind == REGION else f"[{self.codec.answer_texts[a]}]" if verb.kind == ANSWER else ""
            out.append(f"{verb.name}{arg}")
        return out

    def action(self, action: Any) -> dict[str, Any]:
        index = int(integer_action(action, self.action_space, [(), (1,)], "a Discrete MedVR action is one integer")
                    .reshape(()))
        if not 0 <= index < len(self.table):
            raise InvalidActionError(f"action {index} is outside {self.action_space}")
        return self.codec.structured(*(int(v) for v in self.table[index]))

    def action_masks(self) -> np.ndarray:
        c = self.codec
        tools, answers = c.tool_mask(), c.answer_mask()
        kinds = [c.verbs[t].kind for t in self.table[:, 0]]
        return np.array(
            [tools[t] and (answers[a] if kind == ANSWER else 1) for (t, _, a), kind in zip(self.table, kinds)],
            dtype=bool,
        )


__all__ = [
    "ActionCodec",
    "DiscreteActions",
    "InvalidActionError",
    "MultiDiscreteActions",
    "answer_vocabulary",
    "grid_regions",
    "integer_action",
]
