"""Evaluation metrics over finished episodes: grouped accuracy, tool use, grounding IoU.

Scoring follows the medical VQA literature (the grade each episode already holds,
from :func:`medvr_env.grading.grade_answer`): closed questions need the exact yes/no
(or option) answer, open questions a normalised exact match; token recall of open
answers is reported beside accuracy, as MEVF-style papers do.

Grounding: an episode's *footprint* is the union of the regions it zoomed or cropped
into (the mask CCA compares); its grounding IoU is the area IoU between that footprint
and the union of the sample's evaluation-only boxes. Episodes that never zoomed score 0.

Streaming: :class:`MetricTally` keeps running totals of every metric, fed one
:class:`EpisodeStats` (a few numbers per episode, from a live episode or a trajectory
line) at a time, so runs drop each episode with its pixels as soon as it finishes. Its
float sums add exactly as ``sum()`` adds a list (:class:`RunningSum`); the list-based
functions here (``tool_stats``, ``grounding``, ``accuracy_by``) give the same numbers.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

from medvr_env import Episode, StepRecord
from medvr_env.episode import Look, looks_in_steps

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


def accuracy_by(episodes: Iterable[Episode], key: Callable[[Episode], str]) -> dict[str, GroupAccuracy]:
    """Accuracy per group, groups sorted by size (largest first), empty keys dropped."""
    counts: dict[str, list[int]] = {}
    for episode in episodes:
        _count(counts, key(episode), is_correct(episode))
    return _group_accuracies(counts)


def _count(counts: dict[str, list[int]], name: str, correct: bool) -> None:
    """Add one answer to ``counts[name] = [questions, correct]`` (empty names are not a group)."""
    if name:
        tally = counts.setdefault(name, [0, 0])
        tally[0] += 1
        tally[1] += bool(correct)


def _group_accuracies(counts: dict[str, list[int]]) -> dict[str, GroupAccuracy]:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return {k: GroupAccuracy(n, c, c / n) for k, (n, c) in ordered}


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


def tool_stats(episodes: Iterable[Episode]) -> ToolStats:
    return MetricTally.of(episodes).tool_stats()


@dataclass(frozen=True)
class Grounding:
    """Grounding over the episodes whose samples have evaluation boxes."""

    episodes: int
    miou: float | None
    miou_when_zoomed: float | None
    zoomed: int


def grounding(episodes: Iterable[Episode]) -> Grounding:
    return MetricTally.of(episodes).grounding()


# ------------------------------------------------------------------ streaming
_COMPENSATED_SUM = sys.version_info >= (3, 12)


class RunningSum:
    """Floats added one at a time, with the same result as the builtin ``sum()`` of the whole list, bit for bit.

    Python 3.12 made ``sum()`` of floats compensated (Neumaier); a plain ``+=`` would
    then drift from it in the last digits. Streamed means therefore equal the means the
    list-based summaries reported.
    """

    __slots__ = ("_compensation", "_total", "count")

    def __init__(self) -> None:
        self.count = 0
        self._total: float = 0
        self._compensation = 0.0

    def add(self, x: float) -> None:
        x = float(x)
        total = self._total
        if self.count and _COMPENSATED_SUM:
            t = total + x
            self._compensation += (total - t) + x if abs(total) >= abs(x) else (x - t) + total
            self._total = t
        else:  # sum() adds the first term to its int start value, then (before 3.12) plainly
            self._total = total + x
        self.count += 1

    @property
    def value(self) -> float:
        c = self._compensation
        return self._total + c if c and math.isfinite(c) else self._total

    def mean(self) -> float | None:
        return self.value / self.count if self.count else None


@dataclass(frozen=True)
class EpisodeStats:
    """The few numbers of one finished episode that every summary is computed from (no pixels, no text).

    Built from a live :class:`~medvr_env.Episode` or from its trajectory record
    (``Episode.to_dict()``, e.g. re-read by ``medvr eval --resume``); both give equal stats.
    """

    sample_id: str
    correct: bool
    answer_type: str
    question_type: str
    organ: str
    modality: str
    recall: float | None  # token recall of open answers (None for other answer types)
    steps: int
    zooms: int
    errors: int
    answered: bool
    total_reward: float
    grounding_iou: float | None  # None when the sample has no evaluation boxes
    zoomed: bool  # the footprint is not empty

    @classmethod
    def from_episode(cls, episode: Episode) -> EpisodeStats:
        sample = episode.sample
        return cls._make(
            sample.sample_id, episode.grade, sample.answer_type, sample.question_type, sample.organ, sample.modality,
            [(_zoomed(s), s.error) for s in episode.steps], episode.stop_reason, episode.total_reward,
            footprint(episode), sample.eval_boxes,
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EpisodeStats:
        """Stats from one trajectory line; ``KeyError``/``TypeError`` if it is not an episode record."""
        sample = record["sample"]
        prints = [tuple(look.box.as_list()) for look in looks_in_steps(record["steps"]) if look.box is not None]
        return cls._make(
            sample["sample_id"], record["grade"], sample["answer_type"], sample["question_type"], sample["organ"],
            sample["modality"], [(_zoomed(s), s["error"]) for s in record["steps"]], record["stop_reason"],
            float(record["total_reward"]), prints, [tuple(b) for b in sample["eval_boxes"]],
        )

    @classmethod
    def _make(cls, sample_id: str, grade: dict[str, Any] | None, answer_type: str, question_type: str, organ: str,
              modality: str, steps: list[tuple[bool, Any]], stop_reason: str, total_reward: float,
              prints: list[Rect], eval_boxes: Sequence[Rect]) -> EpisodeStats:
        return cls(
            sample_id=sample_id,
            correct=bool(grade and grade.get("correct")),
            answer_type=answer_type, question_type=question_type, organ=organ, modality=modality,
            recall=float((grade or {}).get("recall", 0.0)) if answer_type == "open" else None,
            steps=len(steps),
            zooms=sum(1 for zoomed, _ in steps if zoomed),
            errors=sum(1 for _, error in steps if error),
            answered=stop_reason == "answered",
            total_reward=total_reward,
            grounding_iou=union_iou(prints, eval_boxes) if eval_boxes else None,
            zoomed=bool(prints),
        )


class MetricTally:
    """Running totals of every reported metric; constant memory however many episodes are added.

    ``add`` takes an :class:`EpisodeStats` (or an episode, converted at once), so a
    runner can drop each episode, pixels and all, as soon as it has finished.
    """

    GROUPS = ("answer_type", "question_type", "organ", "modality")

    def __init__(self) -> None:
        self.episodes = 0
        self.correct = 0
        self.steps = 0
        self.zooms = 0
        self.zoomed_episodes = 0
        self.errors = 0
        self.answered = 0
        self.reward = RunningSum()
        self.recall = RunningSum()
        self.iou = RunningSum()
        self.iou_when_zoomed = RunningSum()
        self.groups: dict[str, dict[str, list[int]]] = {name: {} for name in self.GROUPS}

    @classmethod
    def of(cls, episodes: Iterable[Episode | EpisodeStats]) -> MetricTally:
        tally = cls()
        for episode in episodes:
            tally.add(episode)
        return tally

    def add(self, episode: Episode | EpisodeStats) -> EpisodeStats:
        stats = episode if isinstance(episode, EpisodeStats) else EpisodeStats.from_episode(episode)
        self.episodes += 1
        self.correct += stats.correct
        self.steps += stats.steps
        self.zooms += stats.zooms
        self.zoomed_episodes += stats.zooms > 0
        self.errors += stats.errors
        self.answered += stats.answered
        self.reward.add(stats.total_reward)
        if stats.recall is not None:
            self.recall.add(stats.recall)
        if stats.grounding_iou is not None:
            self.iou.add(stats.grounding_iou)
            if stats.zoomed:
                self.iou_when_zoomed.add(stats.grounding_iou)
        for name in self.GROUPS:
            _count(self.groups[name], getattr(stats, name), stats.correct)
        return stats

    @property
    def accuracy(self) -> float:
        return self.correct / self._n()

    def accuracy_by(self, group: str) -> dict[str, GroupAccuracy]:
        """Accuracy per value of ``group`` (one of :attr:`GROUPS`), largest group first."""
        return _group_accuracies(self.groups[group])

    def tool_stats(self) -> ToolStats:
        n = self._n()
        return ToolStats(
            zoom_rate=self.zoomed_episodes / n,
            mean_zooms=self.zooms / n,
            mean_steps=self.steps / n,
            invalid_action_rate=self.errors / max(1, self.steps),
            answered_rate=self.answered / n,
        )

    def grounding(self) -> Grounding:
        return Grounding(episodes=self.iou.count, miou=self.iou.mean(), miou_when_zoomed=self.iou_when_zoomed.mean(),
                         zoomed=self.iou_when_zoomed.count)

    def _n(self) -> int:
        if not self.episodes:
            raise ValueError("no episodes to summarise")
        return self.episodes


def as_dict(obj: Any) -> Any:
    """Dataclasses (and dicts of them) as plain JSON-friendly dicts."""
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj
