"""Groups of rollouts of one prompt (GRPO / EVR): footprints, the CCA consensus, each member's credit, the branch tree.

The group record
----------------
A trajectory record (``Episode.to_dict()``) that belongs to a group carries one extra
field, ``"group"``, written by the trainer or the rollout code::

    "group": {
        "id": "omni-123/round-4",   # required: records sharing an id form one group
        "index": 3,                 # position in the group (default: order of appearance)
        "parent": 0,                # index of the rollout it was forked from; null for a root rollout
        "fork_step": 2,             # steps 1..fork_step are shared with the parent (StepRecord.step numbering)
        "fork_token": 17,           # optional: token offset inside the forking turn (step fork_step + 1)
        "iou": 0.62,                # optional: the footprint's IoU with the consensus, as the trainer computed it
        "tool_reward": 1.0          # optional: R_tool the trainer paid
    }

``agents.vlm`` group rollouts can be written as they are: ``index`` and ``parent`` may be
rollout keys ``[sample, id]`` (the ``id`` is used), and ``fork_turn`` (0-based, the turn
holding the child's first own token) is read as ``fork_step`` when that is absent. For example::

    record = rollout.episode.to_dict()
    record["group"] = {"id": f"{rollout.key[0]}/{round}", "index": rollout.key, "parent": rollout.parent,
                       "fork_turn": rollout.fork_turn, "fork_token": rollout.fork_token}

Footprints are read from the record's own steps (``applied_box`` of each look), never
from a separate list. The consensus is recomputed with :func:`agents.credit.consensus_credit`
when :mod:`agents.credit` is importable, and shown beside the recorded numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np

from medvr_env.episode import looks_in_steps

from .records import ReportInputError
from .svg import SERIES_COLOURS

_FONT = 'font-family="system-ui,sans-serif" font-size="11"'


@dataclass
class Member:
    """One rollout of a group: what the group view needs from its record."""

    index: int
    parent: int | None
    fork_step: int | None
    fork_token: int | None
    recorded_iou: float | None
    recorded_tool_reward: float | None
    record: dict[str, Any]  # trimmed: sample id, image size, steps (looks), grade
    episode: int | None = None  # its number in the page's episode list, when shown
    iou: float | None = None
    tool_reward: float | None = None
    case: str | None = None

    @property
    def correct(self) -> bool:
        return bool((self.record.get("grade") or {}).get("correct"))

    @property
    def steps(self) -> int:
        return len(self.record.get("steps") or [])

    @property
    def boxes(self) -> list[list[int]]:
        return [look.box.as_list() for look in looks_in_steps(self.record["steps"]) if look.box is not None]


@dataclass
class Group:
    """One group of rollouts and, once :meth:`score` ran, its consensus."""

    id: str
    sample: dict[str, Any]
    image_size: tuple[int, int]
    source: int = 0  # index of the trajectory source its records came from (for loading the image)
    members: list[Member] = field(default_factory=list)
    consensus: np.ndarray | None = None
    credit_error: str | None = None

    def add(self, record: dict[str, Any], episode: int | None) -> None:
        info = record["group"]
        where = f"group {self.id!r}"
        trimmed = {"sample": {"sample_id": record["sample"].get("sample_id", "")},
                   "image_size": record["image_size"], "grade": record.get("grade"),
                   "steps": [{k: s.get(k) for k in ("step", "tool", "new_view", "applied_box")}
                             for s in record.get("steps") or []]}
        fork_step = info.get("fork_step", info.get("fork_turn"))  # EVR's 0-based fork turn = complete shared steps
        self.members.append(Member(
            index=_int(_key_id(info.get("index", len(self.members))), f"{where} index"),
            parent=_int(_key_id(info.get("parent")), f"{where} parent", optional=True),
            fork_step=_int(fork_step, f"{where} fork_step", optional=True),
            fork_token=_int(info.get("fork_token"), f"{where} fork_token", optional=True),
            recorded_iou=_float(info.get("iou")), recorded_tool_reward=_float(info.get("tool_reward")),
            record=trimmed, episode=episode))

    def score(self) -> None:
        """Recompute the consensus and every member's IoU and tool reward with ``agents.credit`` (if importable)."""
        try:
            from agents.credit import consensus_credit
        except ImportError as exc:  # pragma: no cover - agents.credit ships with agents
            self.credit_error = f"agents.credit is not importable ({exc}); showing the recorded numbers only"
            return
        try:
            credit = consensus_credit([m.record for m in self.members])
        except (ValueError, TypeError) as exc:
            self.credit_error = f"consensus not computed: {exc}"
            return
        self.consensus = credit.consensus
        for member, result in zip(self.members, credit.members):
            member.iou, member.tool_reward, member.case = result.iou, result.tool_reward, str(result.case.value)


class GroupCollector:
    """Gathers the groups among streamed records, in order of first appearance (at most ``max_groups`` groups).

    Only what the group view needs is kept of each member, so a long run costs little memory.
    """

    def __init__(self, max_groups: int) -> None:
        self.max_groups = max_groups
        self.groups: dict[str, Group] = {}
        self.skipped: set[str] = set()

    def add(self, record: dict[str, Any], *, source: int, episode: int | None) -> None:
        """Add ``record`` if it carries a ``group`` field; ``episode`` is its number in the page's list, if shown."""
        info = record.get("group")
        if info is None:
            return
        if not isinstance(info, dict) or "id" not in info:
            raise ReportInputError(f"a record's 'group' must be an object with an 'id' (see agents/report/groups.py),"
                                   f" got {info!r}")
        gid = str(info["id"])
        if gid not in self.groups:
            if len(self.groups) >= self.max_groups:
                self.skipped.add(gid)
                return
            self.groups[gid] = Group(gid, record["sample"], tuple(record["image_size"]), source)
        self.groups[gid].add(record, episode)

    def finish(self) -> list[Group]:
        """The groups, members in index order, each scored (consensus, IoU, tool reward)."""
        for group in self.groups.values():
            group.members.sort(key=lambda m: m.index)
            group.score()
        return list(self.groups.values())


def consensus_png_rgba(mask: np.ndarray) -> np.ndarray:
    """The consensus mask as an RGBA image (one pixel per grid cell): translucent yellow where it holds."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = (255, 221, 0, 120)
    return rgba


def branch_tree(group: Group, width: int = 380) -> str:
    """The group's rollouts as rows over their steps; a forked rollout starts at its parent's row at the fork step."""
    members = _tree_order(group.members)
    longest = max((m.steps for m in members), default=1) or 1
    left, right, row_h, top = 40, 96, 18, 22
    height = top + row_h * len(members) + 20
    plot_w = width - left - right

    def px(step: float) -> float:
        return left + plot_w * step / longest

    rows = {m.index: top + row_h * (k + 0.5) for k, m in enumerate(members)}
    body = [f'<text x="4" y="13" {_FONT} font-weight="600">branch tree (x: step)</text>']
    for member in members:
        y = rows[member.index]
        start = member.fork_step if member.parent is not None and member.fork_step is not None else 0
        colour = "#2e8b57" if member.correct else "#c0392b"
        if member.parent is not None and member.parent in rows:
            body.append(f'<path d="M{px(start):.1f},{rows[member.parent]:.1f} V{y:.1f}" stroke="#888" fill="none" '
                        f'stroke-dasharray="2 2"/>')
        body.append(f'<line x1="{px(start):.1f}" x2="{px(member.steps):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="{colour}" stroke-width="2"/>')
        for step in range(start + 1, member.steps + 1):
            looked = any(s.get("step") == step and s.get("new_view") is not None
                         for s in member.record["steps"])
            shape = (f'<rect x="{px(step) - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="{colour}"/>' if looked
                     else f'<circle cx="{px(step):.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>')
            body.append(shape)
        label = f"#{member.index}"
        fork = "" if member.parent is None else f" forked from #{member.parent} at step {member.fork_step}" + (
            f", token {member.fork_token}" if member.fork_token is not None else "")
        reward = member.tool_reward if member.tool_reward is not None else member.recorded_tool_reward
        body.append(f'<text x="4" y="{y + 4:.1f}" {_FONT}>{label}<title>{escape(label + fork)}</title></text>')
        body.append(f'<text x="{width - right + 6}" y="{y + 4:.1f}" {_FONT} fill="#555">'
                    f'{"✓" if member.correct else "✗"} R_tool {"–" if reward is None else f"{reward:.2f}"}</text>')
    body.append(f'<text x="{left}" y="{height - 5}" {_FONT} fill="#555">0</text>'
                f'<text x="{px(longest):.1f}" y="{height - 5}" {_FONT} fill="#555" text-anchor="end">{longest}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="tree" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}">{"".join(body)}</svg>')


def _tree_order(members: list[Member]) -> list[Member]:
    """Depth-first from the roots, children after their parent (so fork connectors run downwards)."""
    children: dict[int | None, list[Member]] = {}
    known = {m.index for m in members}
    for m in members:
        children.setdefault(m.parent if m.parent in known else None, []).append(m)
    ordered: list[Member] = []
    stack = list(reversed(children.get(None, [])))
    seen: set[int] = set()
    while stack:
        m = stack.pop()
        if m.index in seen:
            continue
        seen.add(m.index)
        ordered.append(m)
        stack.extend(reversed(children.get(m.index, [])))
    return ordered + [m for m in members if m.index not in seen]  # cycles: appended as they are


def member_colour(k: int) -> str:
    return SERIES_COLOURS[k % len(SERIES_COLOURS)]


def _key_id(value: Any) -> Any:
    """A rollout key ``[sample, id]`` (as ``agents.vlm`` group rollouts name them) stands for its ``id``."""
    return value[1] if isinstance(value, (list, tuple)) and len(value) == 2 else value


def _int(value: Any, what: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ReportInputError(f"{what} must be an integer{' or null' if optional else ''}, got {value!r}")
    return int(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


__all__ = ["Group", "GroupCollector", "Member", "branch_tree", "consensus_png_rgba", "member_colour"]
