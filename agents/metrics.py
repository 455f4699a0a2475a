"""Evaluation metrics over finished episodes: grouped accuracy, tool use, grounding IoU.

Scoring follows the medical VQA literature (the grade each episode already holds,
from :func:`medvr_env.grading.grade_answer`): closed questions need the exact yes/no
(or option) answer, open questions a normalised exact match; token recall of open
answers is reported beside accuracy, as MEVF-style papers do.

Grounding: an episode's *footprint* is the union of the regions it zoomed or cropped
into (the mask CCA compares); its grounding IoU is the area IoU between that footprint
and the union of the sample's evaluation-only boxes. Episodes that never zoomed score 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

from medvr_env import Episode, StepRecord
from medvr_env.episode import Look

Rect = tuple[float, float, float, float]
VIEW_TOOLS = frozenset({"zoom", "crop"})
"""Deprecated: zooms and footprints are read from step records (``Episode.looks()``), not from tool names."""


def _zoomed(step: StepRecord | dict[str, Any]) -> bool:
    """Whether a step zoomed in: it made a view of a region it chose (a :class:`~medvr_env.episode.Look` with a box)."""
    look = Look.from_step(step)
    return look is not None and look.box is not None


@dataclass(frozen=True)
class GroupAccuracy:
    n: int
    correct: int
    accuracy: float


def is_correct(episode: Episode) -> bool:
    return bool(episode.grade and episode.grade.get("correct"))


def accuracy_by(episodes: Sequence[Episode], key: Callable[[Episode], str]) -> dict[str, GroupAccuracy]:
    """Accuracy per group, groups sorted by size (largest first), empty keys dropped."""
    groups: dict[str, list[bool]] = {}
    for episode in episodes:
        name = key(episode)
        if name:
            groups.setdefault(name, []).append(is_correct(episode))
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return {k: GroupAccuracy(len(v), sum(v), sum(v) / len(v)) for k, v in ordered}


def union_area(rects: Iterable[Rect]) -> float:
    """Exact area of a union of axis-aligned rectangles ``(x1, y1, x2, y2)``."""
    return _union_areas([r for r in rects], [])[0]


def union_iou(a: Sequence[Rect], b: Sequence[Rect]) -> float:
    """Area IoU between the union of rectangles ``a`` and the union of rectangles ``b`` (0 if either is empty)."""
    area_a, area_b, inter = _union_areas(list(a), list(b))
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _union_areas(a: list[Rect], b: list[Rect]) -> tuple[float, float, float]:
    """Areas of union(a), union(b) and their intersection, on the grid of all rectangle edges."""
    a = [r for r in a if r[2] > r[0] and r[3] > r[1]]
    b = [r for r in b if r[2] > r[0] and r[3] > r[1]]
    xs = sorted({v for r in a + b for v in (r[0], r[2])})
    ys = sorted({v for r in a + b for v in (r[1], r[3])})
    area_a = area_b = inter = 0.0
    for i in range(len(xs) - 1):
        cx = (xs[i] + xs[i + 1]) / 2
        for j in range(len(ys) - 1):
            cy = (ys[j] + ys[j + 1]) / 2
            cell = (xs[i + 1] - xs[i]) * (ys[j + 1] - ys[j])
            in_a = any(r[0] <= cx < r[2] and r[1] <= cy < r[3] for r in a)
            in_b = any(r[0] <= cx < r[2] and r[1] <= cy < r[3] for r in b)
            area_a += cell * in_a
            area_b += cell * in_b
            inter += cell * (in_a and in_b)
    return area_a, area_b, inter


def footprint(episode: Episode) -> list[Rect]:
    """The regions an episode zoomed or cropped into, in original-image pixels (its steps' applied boxes).

    Read from the step records (:attr:`medvr_env.Episode.footprint`), never from tool names.
    """
    return [tuple(box.as_list()) for box in episode.footprint]  # type: ignore[misc]


def grounding_iou(episode: Episode) -> float | None:
    """IoU of the episode's footprint with its sample's evaluation boxes; ``None`` if it has none."""
    if not episode.sample.eval_boxes:
        return None
    return union_iou(footprint(episode), episode.sample.eval_boxes)


@dataclass(frozen=True)
class ToolStats:
    zoom_rate: float
    mean_zooms: float
    mean_steps: float
    invalid_action_rate: float
    answered_rate: float


def tool_stats(episodes: Sequence[Episode]) -> ToolStats:
    n = len(episodes)
    zooms = [sum(1 for s in e.steps if _zoomed(s)) for e in episodes]
    steps = sum(e.num_steps for e in episodes)
    return ToolStats(
        zoom_rate=sum(1 for z in zooms if z) / n,
        mean_zooms=sum(zooms) / n,
        mean_steps=steps / n,
        invalid_action_rate=sum(1 for e in episodes for s in e.steps if s.error) / max(1, steps),
        answered_rate=sum(1 for e in episodes if e.stop_reason == "answered") / n,
    )


@dataclass(frozen=True)
class Grounding:
    """Grounding over the episodes whose samples have evaluation boxes."""

    episodes: int
    miou: float | None
    miou_when_zoomed: float | None
    zoomed: int


def grounding(episodes: Sequence[Episode]) -> Grounding:
    scored = [(grounding_iou(e), bool(footprint(e))) for e in episodes]
    scored = [(iou, zoomed) for iou, zoomed in scored if iou is not None]
    zoomed = [iou for iou, z in scored if z]
    return Grounding(
        episodes=len(scored),
        miou=sum(iou for iou, _ in scored) / len(scored) if scored else None,
        miou_when_zoomed=sum(zoomed) / len(zoomed) if zoomed else None,
        zoomed=len(zoomed),
    )


def as_dict(obj: Any) -> Any:
    """Dataclasses (and dicts of them) as plain JSON-friendly dicts."""
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj
