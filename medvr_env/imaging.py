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
    """Resize ``image`` to ``size = (width, height)``; returns a new contiguous array.

    Shrinks by a factor ``k >= 2`` go in two steps: a ``k x k`` block average (OpenCV's
    fast integer ``INTER_AREA`` path) and then ``INTER_AREA`` to the exact size. On
    2048 px images this measured 2-3x faster than one non-integer ``INTER_AREA`` pass.
    The block average drops the ``w % k`` / ``h % k`` remainder, split between both
    edges, so content moves by less than half an output pixel (mean difference from
    the one-pass result: about 1.5 grey levels on a chest X-ray).
    """
    if image.ndim == 3 and image.strides[2] == 0:
        # A grayscale original stored once and broadcast to RGB (see medvr_env.data.images):
        # resize the single channel, then widen only the small output.
        return np.repeat(resize(image[:, :, 0], size)[:, :, None], image.shape[2], axis=2)
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return np.array(image, copy=True)
    if size[0] * size[1] >= w * h:
        return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    k = int(min(w / size[0], h / size[1]))
    if k >= 2:
        top, left = (h % k) // 2, (w % k) // 2
        image = image[top : top + h - h % k, left : left + w - w % k]
        image = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
        if image.shape[1::-1] == tuple(size):
            return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


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
