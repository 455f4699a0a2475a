"""Where an episode looked, against the evaluation-only boxes: three measures.

- ``iou``: the union IoU of the footprint (the applied boxes of the episode's looks) with the evaluation boxes, as
  ``agents.metrics.grounding_iou`` computes it (the issue's "grounding mIoU"). On the procedural task it is small by
  construction: a finding's box is ~10 px of a 1024 px image and a zoom box is at least ``min_box_side`` = 28 px
  (the SFT zooms are >= 256 px), so even a zoom centred on the finding scores IoU <= 0.13 (<= 0.0015 at 256 px).
- ``window_iou``: the union IoU of the footprint with the *reading windows*: each evaluation box grown about its
  centre to a quarter of the image side (a 4x zoom, the magnification at which the patch reader tells finding
  kinds apart, issue 10), shifted inside the image. A zoom that frames the finding the way a reader needs scores
  near 1; a zoom elsewhere scores 0.
- ``coverage``: the share of evaluation boxes whose centre lies inside the footprint (did the zoom contain the
  finding at all).

Episodes without a look score 0 on all three; samples without evaluation boxes are not scored (``None``).
These read evaluation boxes: they are for measuring, and for arm 6's reward only (:mod:`.rewards`).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from agents.metrics import union_iou

READING_FRACTION = 0.25
Rect = tuple[float, float, float, float]


def reading_window(box: Sequence[float], image_size: tuple[int, int], fraction: float = READING_FRACTION) -> Rect:
    """``box`` grown about its centre to at least ``fraction`` of the image's shorter side, kept inside the image."""
    width, height = image_size
    side = fraction * min(width, height)
    x1, y1, x2, y2 = (float(v) for v in box)
    out = []
    for lo, hi, limit in ((x1, x2, width), (y1, y2, height)):
        size = max(hi - lo, side)
        start = (lo + hi) / 2 - size / 2
        start = min(max(start, 0.0), max(0.0, limit - size))
        out.append((start, min(float(limit), start + size)))
    (ax1, ax2), (ay1, ay2) = out
    return ax1, ay1, ax2, ay2


def coverage(footprint: Iterable[Sequence[float]], targets: Sequence[Sequence[float]]) -> float:
    """Share of ``targets`` whose centre lies inside at least one footprint box (0 when ``targets`` is empty)."""
    boxes = [tuple(float(v) for v in b) for b in footprint]
    if not targets:
        return 0.0
    hit = 0
    for t in targets:
        cx, cy = (t[0] + t[2]) / 2, (t[1] + t[3]) / 2
        hit += any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes)
    return hit / len(targets)


def footprint_grounding(footprint: Sequence[Sequence[float]], eval_boxes: Sequence[Sequence[float]],
                        image_size: tuple[int, int]) -> dict[str, float] | None:
    """The three measures of one footprint (original pixels); ``None`` when there are no evaluation boxes."""
    if not eval_boxes:
        return None
    prints = [tuple(float(v) for v in b) for b in footprint]
    targets = [tuple(float(v) for v in b) for b in eval_boxes]
    windows = [reading_window(b, image_size) for b in targets]
    return {"iou": union_iou(prints, targets), "window_iou": union_iou(prints, windows),
            "coverage": coverage(prints, targets)}


def episode_grounding(episode: Any) -> dict[str, float] | None:
    """:func:`footprint_grounding` of a live :class:`medvr_env.Episode` (its looks' applied boxes)."""
    prints = [box.as_list() for box in episode.footprint]
    return footprint_grounding(prints, episode.sample.eval_boxes, tuple(episode.image_size))


__all__ = ["READING_FRACTION", "coverage", "episode_grounding", "footprint_grounding", "reading_window"]
