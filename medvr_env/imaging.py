"""Pixel operations on the hot path: cutting and resizing regions of a cached original.

OpenCV's resize is used because it measured several times faster than Pillow's for
the 128-2048 px crops an episode produces (see ``benchmarks/env_step.py``).
``INTER_AREA`` is used to shrink (it averages, so small findings do not alias away)
and ``INTER_CUBIC`` to magnify.
"""

from __future__ import annotations

import cv2
import numpy as np

from .boxes import Box

cv2.setNumThreads(1)  # env steps run in many processes; per-call thread pools only add overhead


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``image`` to ``size = (width, height)``; returns a new contiguous array."""
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return np.array(image, copy=True)
    shrinking = size[0] * size[1] < w * h
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def region(original: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels as a view into ``original`` (no copy)."""
    return original[box.y1 : box.y2, box.x1 : box.x2]


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scale ``(width, height)`` down (never up) so the longer side is at most ``max_side``."""
    longest = max(width, height)
    if longest <= max_side:
        return int(width), int(height)
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def scale_longest_to(width: int, height: int, side: int) -> tuple[int, int]:
    """Scale ``(width, height)`` up or down so the longer side equals ``side``."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))
