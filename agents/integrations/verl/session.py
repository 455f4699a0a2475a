"""One MedVR trajectory played through an async token generator (verl's token server, or a fake one in tests).

A :class:`MedVRSession` owns its env (built for it, never shared with another trajectory, so tool state cannot
leak between trajectories) and a :class:`agents.vlm.conversation.Conversation`: the same chat rendering, tool
protocol and exact token sequence as the HF policy (generated ids are never re-tokenised; env-side pieces are
rendered by the chat template and processed with their images, so placeholders are expanded for the images in
the order they appear). Each turn:

1. send the whole sequence so far and every image in it (placeholder order) to ``generate``;
2. record the generated ids, log-probs and entropies (:mod:`.entropy`), and where the call's coordinate tokens
   are (the env's own parser locates them, ``agents/vlm/entropy.py`` maps characters to tokens);
3. remember a *fork point* when the turn wrote a box: the conversation and the env state before the action
   (``Episode.snapshot()``), so an EVR branch can restart from the first coordinate token with the shared prefix;
4. step the env with the text (and the entropy channel) and append its tool result and new view.

:class:`SessionFactory` holds what all sessions of a worker share and is read-only after construction: the
processor, the family adapter (built from the model config only: the model itself runs in the token server),
the renderer. This module imports neither verl nor Ray.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.train.samples import TrainSample, rollout_to_sample
from agents.vlm.branching import rolling_max_mean
from agents.vlm.budget import ImageBudget
from agents.vlm.conversation import Conversation, TurnOutput
from agents.vlm.families import FamilyAdapter, adapter_class_for
from agents.vlm.prompts import ChatRenderer, PromptStyle
from agents.vlm.sampling import end_of_turn_ids
from medvr_env.importing import import_object

from .settings import MedVRVerlSettings


@dataclass
class Generation:
    """What the token server generated for one turn."""

    token_ids: list[int]
    logprobs: list[float]
    entropies: list[float]
    finish: str = "stop"
    entropy_source: str = "surprisal"


Generate = Callable[[str, list[int], list[Any], int], Awaitable[Generation]]
"""``generate(request_id, prompt_ids, images, max_tokens) -> Generation``; ``images`` in placeholder order."""


@dataclass
class ForkPoint:
    """Where an EVR branch may start: a turn that wrote a box, before its action reached the env.

    ``token`` is the index, in the turn, of the first coordinate token (the child's first own token).
    """

    turn: int
    token: int
    conversation: Conversation
    snapshot: Any
    ids: list[int]
    logprobs: list[float]
    entropies: list[float]
    h_tool: float
    h_base: float
    call: str


class _ConfigOnlyModel:
    """The model as a family adapter sees it in a verl worker: its config and generation config, no weights.

    The adapter reads token ids from the config (image placeholder, vision markers); weights, positions and
    vision inputs are the token server's and verl's business, so ``get_rope_index`` is never called here.
    """

    def __init__(self, config: Any, generation_config: Any = None) -> None:
        self.config = config
        self.generation_config = generation_config

    def get_rope_index(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("positions are computed by verl from the processor, not by the MedVR agent loop")


class SessionFactory:
    """Builds sessions (fresh or forked) for one model and one ``medvr`` settings section.

    Args:
        settings: The ``medvr`` section (:class:`.settings.MedVRVerlSettings`).
        processor: The model's processor (its chat template renders the turns).
        hf_config: The model's config (``AutoConfig``).
        generation_config: Its generation config, for the end-of-turn ids (optional).
    """

    def __init__(self, settings: MedVRVerlSettings, processor: Any, hf_config: Any, generation_config: Any = None):
        self.settings = settings
        model = _ConfigOnlyModel(hf_config, generation_config)
        self.adapter: FamilyAdapter = adapter_class_for(getattr(hf_config, "model_type", ""))(model, processor)
        self.tokenizer = self.adapter.tokenizer
        self.vocab_size = len(self.tokenizer)
        self.renderer = ChatRenderer(processor)
        self.style = PromptStyle()
        self.eos_ids = end_of_turn_ids(model, self.tokenizer)
        self.suppressed_ids = self.adapter.suppressed_ids()
        self.bbox_format = self.adapter.bbox_format
        cap = settings.policy.max_tokens_per_image
        self.budget_kwargs = {"max_images": None, "max_image_tokens": None, "max_tokens_per_image": cap}

    # ------------------------------------------------------------------ envs
    def make_env(self) -> Any:
        """A new env for one trajectory."""
        env_cfg = self.settings.env
        if env_cfg.factory:
            env = import_object(env_cfg.factory, "medvr.env.factory")(**env_cfg.kwargs)
        else:
            import gymnasium as gym

            import medvr_env  # noqa: F401 - registers the MedVR env ids

            env = gym.make(env_cfg.id, **env_cfg.kwargs)
        base = env.unwrapped
        if base.bbox_format != self.bbox_format:
            base.set_bbox_format(self.bbox_format)  # the model's boxes land where it meant them
        return env

    def _conversation(self, env: Any, obs: dict[str, Any], info: dict[str, Any], key: Any) -> Conversation:
        return Conversation(env, obs, info, adapter=self.adapter, renderer=self.renderer,
                            budget=ImageBudget(**self.budget_kwargs), style=self.style, eos_ids=self.eos_ids,
                            max_turns=self.settings.policy.max_turns, key=key)

    def start(self, reset: dict[str, Any], key: Any, request_id: str) -> MedVRSession:
        """A fresh trajectory: its own env reset with ``reset`` (``{"seed": ..., "options": {...}}``)."""
        env = self.make_env()
        obs, info = env.reset(seed=reset.get("seed"), options=reset.get("options"))
        return MedVRSession(self, self._conversation(env, obs, info, key), reset, request_id)

    def fork(self, parent: MedVRSession, point: ForkPoint, key: Any) -> MedVRSession:
        """An EVR branch of ``parent`` at ``point``: a new env restored to the parent's state before that turn's
        action, the parent's conversation up to there, and the turn's tokens before the first coordinate."""
        env = self.make_env()
        env.reset(seed=parent.reset.get("seed"), options=parent.reset.get("options"))
        env.unwrapped.restore(point.snapshot)
        child = MedVRSession(self, point.conversation.fork(env, key=key), parent.reset, parent.request_id)
        child.parent, child.fork_turn, child.fork_token = parent.key, point.turn, point.token
        child.forced = Generation(point.ids[: point.token], point.logprobs[: point.token],
                                  point.entropies[: point.token])
        child.duplicate_of = point.call
        return child


class MedVRSession:
    """One trajectory: its env, its conversation, its fork points (see the module docstring)."""

    def __init__(self, factory: SessionFactory, conversation: Conversation, reset: dict[str, Any],
                 request_id: str) -> None:
        self.factory, self.conv, self.reset, self.request_id = factory, conversation, reset, request_id
        self.fork_points: list[ForkPoint] = []
        self.parent: Any = None
        self.fork_turn: int | None = None
        self.fork_token: int | None = None
        self.forced: Generation | None = None  # a branch's shared prefix of its first turn
        self.duplicate_of: str | None = None  # a branch whose first call equals this is discarded
        self.discarded = False
        self.generate_calls = 0
        self.entropy_sources: set[str] = set()

    @property
    def key(self) -> Any:
        return self.conv.key

    @property
    def env(self) -> Any:
        return self.conv.env

    @property
    def prompt_length(self) -> int:
        return len(self.conv.parts[0].ids)

    def images(self) -> list[Any]:
        """Every image in the sequence so far, in placeholder order."""
        return [im for p in self.conv.parts for im in p.images]

    async def run(self, generate: Generate, max_response_tokens: int) -> MedVRSession:
        """Play to the end of the episode (or of the response budget); returns ``self``."""
        conv, settings = self.conv, self.factory.settings
        while not conv.finished:
            forced, self.forced = self.forced or Generation([], [], []), None
            ids = conv.ids + forced.token_ids
            room = max_response_tokens - (len(ids) - self.prompt_length)
            if room < 1:
                conv.finished, conv.stop_reason = True, "response_length"
                break
            out = await generate(self.request_id, ids, self.images(), min(settings.policy.max_new_tokens, room))
            self.generate_calls += 1
            self.entropy_sources.add(out.entropy_source)
            if not out.token_ids and not forced.token_ids:
                conv.finished, conv.stop_reason = True, out.finish or "empty"
                break
            turn = TurnOutput(forced.token_ids + list(out.token_ids), forced.logprobs + list(out.logprobs),
                              forced.entropies + list(out.entropies), out.finish)
            before, snapshot = conv.fork(conv.env, key=conv.key), conv.base.snapshot()
            action = conv.add_turn(turn)
            record = conv.turns[-1]
            call = _call_key(conv.parse(record.text).call)
            if self.duplicate_of is not None:
                duplicate, self.duplicate_of = call == self.duplicate_of, None
                if duplicate:  # a branch that rewrote its parent's call: never reaches the env
                    self.discarded = True
                    conv.finished, conv.stop_reason = True, "duplicate"
                    break
            self._note_fork_point(record, turn, before, snapshot, call)
            _, _, terminated, truncated, _ = conv.env.step(action)
            conv.add_result(terminated or truncated)
        return self

    def _note_fork_point(self, record: Any, turn: TurnOutput, before: Conversation, snapshot: Any,
                         call: str) -> None:
        f = record.first_coordinate
        if f is None or not 1 <= f < len(turn.ids):
            return
        evr = self.factory.settings.evr
        coords = [h for h, m in zip(turn.entropies, record.coordinate_mask) if m]
        earlier = [h for t in self.conv.turns[:-1] for h in t.entropies]
        h_base = _mean((earlier + list(turn.entropies[:f]))[: evr.baseline_tokens])
        h_tool = rolling_max_mean(coords, evr.window)
        self.fork_points.append(ForkPoint(record.turn, f, before, snapshot, list(turn.ids), list(turn.logprobs),
                                          list(turn.entropies), h_tool, h_base, call))

    # ------------------------------------------------------------------ results
    def to_sample(self) -> TrainSample:
        """The trajectory as one training sample (prompt, completion, mask, log-probs, images, fields)."""
        rollout = self.conv.to_rollout()
        rollout.parent, rollout.fork_turn, rollout.fork_token = self.parent, self.fork_turn, self.fork_token
        return rollout_to_sample(rollout)


def _call_key(call: Any) -> str:
    return json.dumps(call.to_dict() if call is not None else None, sort_keys=True, default=str)


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(sum(values) / len(values)) if values else math.nan


__all__ = ["ForkPoint", "Generate", "Generation", "MedVRSession", "SessionFactory"]
