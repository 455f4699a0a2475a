"""The one authoritative record of an episode.

Observations, rendering, grading, credit assignment and the trajectory log all read
from :class:`Episode`. It holds the original image, every view (a region of the
original in original pixels, the size it was delivered at, its parent view and any
pixel filters), and every step (raw action, parsed call, error, entropy, reward
terms). View pixels are derived from the cached original on demand, so a view is a
few integers and forking an episode copies two short lists.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from . import imaging
from .boxes import Box
from .data.sample import Sample


class PixelFilter(Protocol):
    """A pointwise transform of view pixels (for example a window/level), inherited by child views."""

    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class View:
    """One image the agent was shown.

    Attributes:
        index: Position in ``Episode.views`` (0 is the full original).
        box: Region of the original, in original pixels.
        size: Delivered image size ``(width, height)``; ``"pixel"`` boxes are relative to it.
        parent: The view this one was derived from (``None`` for the original).
        tool: Name of the tool that made it (``"reset"`` for the original).
        step: Step that made it (0 for the original).
        filters: Pixel filters applied after resizing, in order.
    """

    index: int
    box: Box
    size: tuple[int, int]
    parent: int | None
    tool: str
    step: int
    filters: tuple[PixelFilter, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "box": self.box.as_list(),
            "size": list(self.size),
            "parent": self.parent,
            "tool": self.tool,
            "step": self.step,
            "filters": [f.describe() for f in self.filters],
        }


@dataclass(frozen=True)
class StepRecord:
    """What happened at one step. Immutable once written."""

    step: int
    raw: str
    call: dict[str, Any] | None
    tool: str | None
    error: dict[str, str] | None
    applied_box: list[int] | None
    new_view: int | None
    current_view: int
    entropy: float | None
    entropy_source: str | None
    tool_entropy: float | None
    token_entropies: tuple[float | None, ...] | None
    reward_terms: dict[str, float]
    feedback: str
    answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["token_entropies"] = list(self.token_entropies) if self.token_entropies is not None else None
        return d


@dataclass(frozen=True)
class Look:
    """A step that made a new view, read from what the step recorded (never from the tool's name).

    A look is any step whose record has ``new_view`` set. Its ``box`` is the step's
    ``applied_box``: the region of the original image (original pixels) the agent chose,
    which only region tools (``zoom``, ``crop``, or any tool returning an ``applied_box``)
    record. A look without a box showed something already chosen again: ``relook`` of
    the original or of an earlier view, or a re-rendering such as a window/level tool.

    *The footprint* of an episode is the boxes of its looks (``Episode.footprint``): where
    the agent zoomed in. ``relook`` is a look (it counts as looking again, e.g. for
    entropy-guided regrounding) but adds nothing to the footprint: re-showing the whole
    image or an earlier view picks no new region, and counting it would let every
    ``relook`` of the original cover the full image in CCA's consensus.

    Attributes:
        step: ``StepRecord.step`` of the look (1-based; its position in ``Episode.steps`` is ``step - 1``).
        view: Index of the view it created.
        box: The applied box in original pixels, or ``None`` when the look chose no new region.
        tool: The tool's name, for display only; nothing may branch on it.
    """

    step: int
    view: int
    box: Box | None
    tool: str | None = None

    @classmethod
    def from_step(cls, step: StepRecord | dict[str, Any]) -> Look | None:
        """The look a step made (a :class:`StepRecord` or its ``to_dict()``), or ``None`` if it made no view."""
        if isinstance(step, StepRecord):
            number, view, box, tool = step.step, step.new_view, step.applied_box, step.tool
        else:
            number, view, box, tool = step.get("step"), step.get("new_view"), step.get("applied_box"), step.get("tool")
        if view is None:
            return None
        return cls(int(number), int(view), Box(*map(int, box)) if box is not None else None, tool)


def looks_in_steps(steps: Sequence[StepRecord | dict[str, Any]]) -> list[Look]:
    """Every look in ``steps`` (records or their ``to_dict()``s), in order; one reading for episodes and logs."""
    return [look for look in map(Look.from_step, steps) if look is not None]


@dataclass
class Episode:
    """A running or finished episode: the sample, its original image, views and steps."""

    sample: Sample
    original: np.ndarray = field(repr=False)
    views: list[View] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    current_view: int = 0
    stop_reason: str = ""
    grade: dict[str, Any] | None = None
    _pixels: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls, sample: Sample, original: np.ndarray, max_view_side: int) -> Episode:
        """Begin an episode whose view 0 is the whole original, shrunk to fit ``max_view_side``."""
        h, w = original.shape[:2]
        first = View(0, Box.full(w, h), imaging.fit_within(w, h, max_view_side), None, "reset", 0)
        return cls(sample=sample, original=original, views=[first])

    # ---------------------------------------------------------------- geometry
    @property
    def image_size(self) -> tuple[int, int]:
        """Original image size ``(width, height)``."""
        return int(self.original.shape[1]), int(self.original.shape[0])

    @property
    def view(self) -> View:
        """The view the agent is looking at now."""
        return self.views[self.current_view]

    def add_view(self, box: Box, size: tuple[int, int], parent: int | None, tool: str, filters=()) -> View:
        """Append a new view and make it current."""
        view = View(len(self.views), box, (int(size[0]), int(size[1])), parent, tool, len(self.steps) + 1, tuple(filters))
        self.views.append(view)
        self.current_view = view.index
        return view

    # ---------------------------------------------------------------- pixels
    def render_view(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """Pixels of view ``index`` at ``size`` (default: its delivered size), cut from the original.

        Delivered-size renders are cached (read-only); other sizes are fresh arrays.
        """
        view = self.views[index]
        if size is None:
            cached = self._pixels.get(index)
            if cached is not None:
                return cached
        pixels = imaging.resize(imaging.region(self.original, view.box), size or view.size)
        for f in view.filters:
            pixels = f(pixels)
        if size is None:
            pixels.flags.writeable = False
            self._pixels[index] = pixels
        return pixels

    # ---------------------------------------------------------------- history
    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def entropy_trace(self) -> list[float | None]:
        """The uncertainty reported (or estimated) at each step; ``None`` where nothing was available."""
        return [s.entropy for s in self.steps]

    @property
    def consecutive_errors(self) -> int:
        """Number of invalid actions at the end of the history."""
        n = 0
        for s in reversed(self.steps):
            if s.error is None:
                break
            n += 1
        return n

    def looks(self) -> list[Look]:
        """Every step that made a new view, with the box it applied (see :class:`Look`)."""
        return looks_in_steps(self.steps)

    @property
    def footprint(self) -> list[Box]:
        """Where the agent zoomed in: the applied boxes of its looks, in original pixels (see :class:`Look`)."""
        return [look.box for look in self.looks() if look.box is not None]

    @property
    def zoom_boxes(self) -> list[Box]:
        """Deprecated name of :attr:`footprint` (kept for old callers)."""
        return self.footprint

    @property
    def answer(self) -> str | None:
        for s in reversed(self.steps):
            if s.answer is not None:
                return s.answer
        return None

    @property
    def total_reward(self) -> float:
        return float(sum(sum(s.reward_terms.values()) for s in self.steps))

    # ---------------------------------------------------------------- fork & log
    def snapshot(self) -> Episode:
        """A cheap independent copy: lists are copied, immutable records and pixel arrays shared."""
        clone = copy.copy(self)
        clone.views = list(self.views)
        clone.steps = list(self.steps)
        clone._pixels = dict(self._pixels)
        clone.grade = copy.deepcopy(self.grade)
        return clone

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record (no pixels); one line of a trajectory ``.jsonl`` file."""
        return {
            "sample": self.sample.to_dict(),
            "image_size": list(self.image_size),
            "views": [v.to_dict() for v in self.views],
            "steps": [s.to_dict() for s in self.steps],
            "current_view": self.current_view,
            "stop_reason": self.stop_reason,
            "grade": self.grade,
            "total_reward": self.total_reward,
        }
