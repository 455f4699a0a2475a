"""What a trainer gets from each rollout.

A :class:`Rollout` is one episode played by the VLM policy:

- ``turns``: one :class:`TurnRecord` per model turn: the generated token ids and text, per-token log-probabilities
  and normalised entropies, masks of the tool-argument and box-coordinate tokens, the turn's entropy and tool
  entropy (what was sent to the env's entropy channel), why the turn ended, and which views were in context;
- ``segments``: the token sequences a trainer runs its forward pass on. Each :class:`Segment` is one exact model
  input: ``token_ids`` with ``generated`` (True for tokens the policy sampled in this segment, False for everything
  the env inserted: prompts, tool results, image placeholders), ``logprobs``/``entropies`` aligned with the tokens
  (NaN where not generated), and ``images`` in placeholder order. Without image-budget changes a rollout is one
  segment. When the budget evicts or shrinks an image already in context, the context the later turns saw is no
  longer a continuation of the earlier one, so a new segment starts; its earlier turns are context only
  (``generated`` False) since they were trained in the segment they were sampled in;
- ``episode``: the env's own record (views, boxes, rewards, grade).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medvr_env import Episode


@dataclass
class TurnRecord:
    """One model turn."""

    turn: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    entropies: list[float]
    argument_mask: list[bool]
    box_mask: list[bool]
    entropy: float | None
    tool_entropy: float | None
    finish: str  # "eos" | "stop" | "length"
    context_tokens: int  # tokens in context when the turn began
    views_in_context: list[int]  # env views shown as images when the turn began (evicted ones excluded)
    shown_sizes: dict[int, tuple[int, int]]  # view -> (width, height) the model saw it at
    segment: int
    coordinate_mask: list[bool] = field(default_factory=list)  # tokens of the box's numbers (EVR's entropy window)
    first_coordinate: int | None = None  # index of the first token of the box's first number (EVR's fork point)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["shown_sizes"] = {str(k): list(v) for k, v in self.shown_sizes.items()}
        return d


@dataclass
class Segment:
    """One model input sequence and what was sampled in it."""

    token_ids: list[int]
    generated: list[bool]
    logprobs: list[float]
    entropies: list[float]
    images: list[Any]  # PIL images, in placeholder order
    image_views: list[int]  # the env view of each image
    turn_spans: list[tuple[int, int, int]]  # (turn, start, end) of the turns sampled in this segment

    def __len__(self) -> int:
        return len(self.token_ids)

    def to_dict(self) -> dict[str, Any]:
        nan = lambda x: None if isinstance(x, float) and math.isnan(x) else x  # noqa: E731
        return {
            "token_ids": self.token_ids,
            "generated": self.generated,
            "logprobs": [nan(v) for v in self.logprobs],
            "entropies": [nan(v) for v in self.entropies],
            "image_views": self.image_views,
            "image_sizes": [list(im.size) for im in self.images],
            "turn_spans": [list(s) for s in self.turn_spans],
        }


@dataclass
class Rollout:
    """One episode played by the VLM policy (see the module docstring)."""

    key: Any
    turns: list[TurnRecord]
    segments: list[Segment]
    episode: Episode
    stop_reason: str
    rebuilds: int = 0  # times the context changed and was re-encoded (budget evictions)
    evictions: int = 0
    downscales: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    parent: Any = None  # EVR: the key of the trajectory this one branched from (None: an independent rollout)
    fork_turn: int | None = None  # EVR: the turn it branched at
    fork_token: int | None = None  # EVR: index in that turn of its first own token (the first coordinate token)
    shared_tokens: int = 0  # EVR: generated tokens inherited from the parent (not sampled again)

    @property
    def total_reward(self) -> float:
        return self.episode.total_reward

    @property
    def correct(self) -> bool:
        return bool(self.episode.grade and self.episode.grade["correct"])

    @property
    def images_per_turn(self) -> list[list[int]]:
        """The env views in context at each turn."""
        return [t.views_in_context for t in self.turns]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (no pixels)."""
        return {
            "key": self.key,
            "stop_reason": self.stop_reason,
            "total_reward": self.total_reward,
            "rebuilds": self.rebuilds,
            "evictions": self.evictions,
            "downscales": self.downscales,
            "parent": self.parent,
            "fork_turn": self.fork_turn,
            "fork_token": self.fork_token,
            "shared_tokens": self.shared_tokens,
            "turns": [t.to_dict() for t in self.turns],
            "segments": [s.to_dict() for s in self.segments],
            "episode": self.episode.to_dict(),
        }


__all__ = ["Rollout", "Segment", "TurnRecord"]
