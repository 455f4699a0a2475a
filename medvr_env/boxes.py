"""Boxes and the coordinate conventions agents speak.

Inside the env every box is an integer :class:`Box` in original-image pixels
(``x2``/``y2`` exclusive, so ``original[y1:y2, x1:x2]`` is exactly the region).
Agents give boxes relative to the view they act on, in one of three formats:

- ``"pixel"``: pixels of that view's delivered image (``View.size``),
- ``"norm"``: fractions 0-1 of that view,
- ``"norm1000"``: 0-1000 of that view (Qwen2-VL / Qwen3-VL convention).

:func:`box_from_agent` maps agent coordinates back to original pixels, clamps them
to the view, grows tiny boxes to a minimum side and rejects inverted, degenerate or
absurd-aspect boxes with a specific :class:`~medvr_env.errors.ErrorCode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

from .errors import ErrorCode, ToolError

BBoxFormat = Literal["pixel", "norm", "norm1000"]
BBOX_FORMATS: tuple[str, ...] = ("pixel", "norm", "norm1000")
_SCALE = {"norm": 1.0, "norm1000": 1000.0}


@dataclass(frozen=True)
class Box:
    """An integer box in original-image pixels; ``x2``/``y2`` are exclusive."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    def as_list(self) -> list[int]:
        return [self.x1, self.y1, self.x2, self.y2]

    def iou(self, other: Box) -> float:
        """Intersection over union with another box (0 when both are empty)."""
        iw = min(self.x2, other.x2) - max(self.x1, other.x1)
        ih = min(self.y2, other.y2) - max(self.y1, other.y1)
        inter = max(0, iw) * max(0, ih)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    @classmethod
    def full(cls, width: int, height: int) -> Box:
        return cls(0, 0, int(width), int(height))


def check_format(bbox_format: str) -> BBoxFormat:
    """Validate a ``bbox_format`` value, with a message listing the valid ones."""
    if bbox_format not in BBOX_FORMATS:
        raise ValueError(f"bbox_format must be one of {BBOX_FORMATS}, got {bbox_format!r}")
    return bbox_format  # type: ignore[return-value]


def _scale(view_box: Box, view_size: tuple[int, int], bbox_format: str) -> tuple[float, float]:
    """Original pixels per agent unit along x and y."""
    if bbox_format == "pixel":
        return view_box.width / view_size[0], view_box.height / view_size[1]
    unit = _SCALE[bbox_format]
    return view_box.width / unit, view_box.height / unit


def box_to_agent(box: Box, view_box: Box, view_size: tuple[int, int], bbox_format: str) -> list[float]:
    """Express an original-pixel box in an agent's coordinates on a view (inverse of :func:`box_from_agent`)."""
    sx, sy = _scale(view_box, view_size, bbox_format)
    coords = [
        (box.x1 - view_box.x1) / sx,
        (box.y1 - view_box.y1) / sy,
        (box.x2 - view_box.x1) / sx,
        (box.y2 - view_box.y1) / sy,
    ]
    digits = 0 if bbox_format in ("pixel", "norm1000") else 4
    return [round(c, digits) if digits else float(round(c)) for c in coords]


def box_from_agent(
    coords: Sequence[float],
    *,
    view_box: Box,
    view_size: tuple[int, int],
    bbox_format: str,
    image_size: tuple[int, int],
    min_side: int = 28,
    max_aspect: float = 100.0,
) -> Box:
    """Map agent coordinates on a view to a valid box in original-image pixels.

    Args:
        coords: ``[x1, y1, x2, y2]`` in ``bbox_format`` units on the view.
        view_box: The view's region in original pixels.
        view_size: The view's delivered image size ``(width, height)`` (for ``"pixel"``).
        bbox_format: ``"pixel"``, ``"norm"`` or ``"norm1000"``.
        image_size: The original image size ``(width, height)``.
        min_side: Sides shorter than this (original pixels) are grown about the centre.
        max_aspect: Boxes whose long/short side ratio exceeds this are rejected.

    Raises:
        ToolError: with ``NON_FINITE``, ``INVERTED_BOX``, ``DEGENERATE_BOX``,
            ``BOX_OUTSIDE_VIEW`` or ``ABSURD_ASPECT``.
    """
    if len(coords) != 4:
        raise ToolError(ErrorCode.WRONG_TYPE, f"a box needs 4 numbers [x1, y1, x2, y2], got {len(coords)}")
    x1, y1, x2, y2 = (float(c) for c in coords)
    if not all(math.isfinite(c) for c in (x1, y1, x2, y2)):
        raise ToolError(ErrorCode.NON_FINITE, "box coordinates must be finite numbers")
    if x2 < x1 or y2 < y1:
        raise ToolError(ErrorCode.INVERTED_BOX, f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] needs x1 < x2 and y1 < y2")
    if x2 == x1 or y2 == y1:
        raise ToolError(ErrorCode.DEGENERATE_BOX, f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has zero width or height")

    sx, sy = _scale(view_box, view_size, bbox_format)
    ox1, ox2 = view_box.x1 + x1 * sx, view_box.x1 + x2 * sx
    oy1, oy2 = view_box.y1 + y1 * sy, view_box.y1 + y2 * sy
    cx1, cy1 = max(ox1, view_box.x1), max(oy1, view_box.y1)
    cx2, cy2 = min(ox2, view_box.x2), min(oy2, view_box.y2)
    if cx2 <= cx1 or cy2 <= cy1:
        unit = {"pixel": f"pixels of the {view_size[0]}x{view_size[1]} view", "norm": "0-1", "norm1000": "0-1000"}
        raise ToolError(
            ErrorCode.BOX_OUTSIDE_VIEW,
            f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the view; coordinates are in {unit[bbox_format]}",
        )
    w, h = cx2 - cx1, cy2 - cy1
    if max(w, h) / min(w, h) > max_aspect:
        raise ToolError(ErrorCode.ABSURD_ASPECT, f"box aspect ratio {max(w, h) / min(w, h):.0f} exceeds {max_aspect:g}")

    img_w, img_h = image_size
    bx1, bx2 = _grow(cx1, cx2, min_side, img_w)
    by1, by2 = _grow(cy1, cy2, min_side, img_h)
    return Box(bx1, by1, bx2, by2)


def _grow(lo: float, hi: float, min_side: int, limit: int) -> tuple[int, int]:
    """Round outward to whole pixels and grow to ``min_side`` about the centre, staying in ``[0, limit]``."""
    a, b = int(math.floor(lo)), int(math.ceil(hi))
    side = min(max(min_side, b - a), limit)
    if b - a < side:
        centre = (lo + hi) / 2.0
        a = int(round(centre - side / 2.0))
        a = min(max(a, 0), limit - side)
        b = a + side
    return a, b
