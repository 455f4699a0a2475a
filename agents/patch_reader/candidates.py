"""Where a view may hold a finding, and the patches the reader classifies there (NumPy and OpenCV only).

Everything is measured in fractions of the original image's side, so it does not depend on the
original's pixel size: the candidate detector looks for blobs of about :data:`FINDING_FRACTION` of the
side (11 px at 1024; procedural findings are 7.7-9.9 px), a patch covers :data:`PATCH_FRACTION` (48 px
at 1024) around its centre. A view is the observation (``obs["image"]``, ``S`` x ``S`` pixels) of the
box ``obs["view_box"]``; a typical finding spans about ``FINDING_FRACTION * S / box side`` observation
pixels there (2-2.4 px in a 224 px first view, 8-9.6 px after a 4x zoom). Patches are cut from the observation's own pixels and resampled to
:data:`PATCH_PIXELS`, so the reader sees exactly the detail the view shows: a blurred dot at the
first view, a shape after a zoom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

FINDING_FRACTION = 11.0 / 1024  # the blob scale candidates are looked for at, fraction of the image side
PATCH_FRACTION = 48.0 / 1024  # a patch's side, fraction of the image side
PATCH_PIXELS = 32  # patches are resampled to PATCH_PIXELS x PATCH_PIXELS
PATCH_UNIT = 64.0  # grey levels per unit of patch value (patches are median-subtracted, not standardised)
CLASSES: tuple[str, ...] = ("background", "nodule", "lesion", "calcification", "micro-bleed")
KIND_CLASSES: tuple[str, ...] = CLASSES[1:]
CANDIDATES_PER_POLARITY = 30


def blob_map(gray: np.ndarray, sigma: float) -> np.ndarray:
    """Difference of Gaussians, standardised by a robust global spread: large |value| = blob-like contrast."""
    fine = cv2.GaussianBlur(gray, (0, 0), sigma)
    coarse = cv2.GaussianBlur(gray, (0, 0), sigma * 3.0)
    dog = fine - coarse
    spread = 1.4826 * float(np.median(np.abs(dog - np.median(dog)))) + 1e-3
    return dog / spread


def find_peaks(response: np.ndarray, count: int, min_distance: int, threshold: float) -> list[tuple[int, int, float]]:
    """Up to ``count`` local maxima of ``response`` above ``threshold``, at least ``min_distance`` apart."""
    size = 2 * min_distance + 1
    local_max = response >= cv2.dilate(response, np.ones((size, size), np.uint8))
    ys, xs = np.nonzero(local_max & (response > threshold))
    order = np.argsort(-response[ys, xs])
    peaks: list[tuple[int, int, float]] = []
    for i in order:
        x, y = int(xs[i]), int(ys[i])
        if all((x - px) ** 2 + (y - py) ** 2 >= min_distance**2 for px, py, _ in peaks):
            peaks.append((x, y, float(response[y, x])))
            if len(peaks) == count:
                break
    return peaks


@dataclass(frozen=True)
class ViewGeometry:
    """A view as the policy observes it: its box in image fractions and its size in pixels."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 fractions of the original
    width: int
    height: int

    @classmethod
    def of(cls, image: np.ndarray, view_box: Sequence[float]) -> ViewGeometry:
        x1, y1, x2, y2 = (float(v) for v in view_box)
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"view_box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got {list(view_box)}")
        return cls((x1, y1, x2, y2), int(image.shape[1]), int(image.shape[0]))

    @property
    def pixels_per_fraction(self) -> float:
        """Observation pixels per image-side fraction (the view's magnification, in pixels)."""
        x1, y1, x2, y2 = self.box
        return 0.5 * (self.width / (x2 - x1) + self.height / (y2 - y1))

    @property
    def finding_pixels(self) -> float:
        """How many observation pixels a typical finding spans in this view."""
        return FINDING_FRACTION * self.pixels_per_fraction

    @property
    def scale_feature(self) -> float:
        """The view's magnification as one number near [-1, 1] (the reader's second input channel)."""
        return (math.log2(max(self.finding_pixels, 0.25)) - 2.5) / 1.5

    def to_image(self, px: float, py: float) -> tuple[float, float]:
        """Observation pixel (centre coordinates) -> image fractions."""
        x1, y1, x2, y2 = self.box
        return x1 + (x2 - x1) * (px + 0.5) / self.width, y1 + (y2 - y1) * (py + 0.5) / self.height

    def to_view(self, fx: float, fy: float) -> tuple[float, float]:
        """Image fractions -> observation pixel (centre coordinates)."""
        x1, y1, x2, y2 = self.box
        return (fx - x1) / (x2 - x1) * self.width - 0.5, (fy - y1) / (y2 - y1) * self.height - 0.5

    def contains(self, fx: float, fy: float, margin: float = 0.0) -> bool:
        """Whether image point ``(fx, fy)`` lies in the view, at least ``margin`` (fractions) inside."""
        x1, y1, x2, y2 = self.box
        return x1 + margin <= fx <= x2 - margin and y1 + margin <= fy <= y2 - margin


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) or (H, W) uint8 -> (H, W) float32 grey levels."""
    if image.ndim == 3:
        return image.astype(np.float32).mean(axis=2)
    return image.astype(np.float32)


def find_candidates(gray: np.ndarray, geometry: ViewGeometry,
                    per_polarity: int = CANDIDATES_PER_POLARITY) -> list[tuple[float, float, int, float]]:
    """Blob-like spots at the finding scale: ``(px, py, polarity, strength)``, strongest first per polarity.

    A difference of Gaussians at the scale a finding has in this view, its ``per_polarity`` strongest bright
    and dark peaks (no threshold: the reader, not a contrast rule, decides what is a finding).
    """
    size = geometry.finding_pixels
    sigma = max(0.7, size / 4.0)
    response = blob_map(gray, sigma)
    min_distance = max(2, int(round(0.6 * size)))
    out: list[tuple[float, float, int, float]] = []
    for polarity in (1, -1):
        for x, y, strength in find_peaks(response * polarity, per_polarity, min_distance, threshold=0.0):
            out.append((float(x), float(y), polarity, strength))
    return out


def cut_patches(gray: np.ndarray, points: Sequence[tuple[float, float]], geometry: ViewGeometry) -> np.ndarray:
    """``(N, PATCH_PIXELS, PATCH_PIXELS)`` float32 patches centred on observation pixels ``points``.

    Each covers :data:`PATCH_FRACTION` of the image side, sampled from the view's pixels (bilinear, edges
    reflected; blurred first when the view holds more pixels than the patch), minus its median, in units of
    :data:`PATCH_UNIT` grey levels.
    """
    n = PATCH_PIXELS
    side = PATCH_FRACTION * geometry.pixels_per_fraction  # observation pixels a patch spans
    step = side / n
    source = cv2.GaussianBlur(gray, (0, 0), 0.5 * step) if step > 1.5 else gray
    out = np.empty((len(points), n, n), np.float32)
    for i, (px, py) in enumerate(points):
        # patch pixel (u, v) centre samples source pixel (px + (u + 0.5 - n/2) * step, ...)
        matrix = np.array([[step, 0.0, px + (0.5 - n / 2) * step], [0.0, step, py + (0.5 - n / 2) * step]],
                          np.float32)
        patch = cv2.warpAffine(source, matrix, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        out[i] = (patch - np.median(patch)) / PATCH_UNIT
    return out


def blob_area(gray: np.ndarray, px: float, py: float, polarity: int, geometry: ViewGeometry) -> float:
    """Area (image-side fractions squared) of the blob at ``(px, py)``: the connected pixels at >= half its
    peak contrast over the local median. Coarse at the first view (a finding is 2-3 pixels there)."""
    reach = max(3, int(math.ceil(1.5 * geometry.finding_pixels)))
    h, w = gray.shape
    cx, cy = int(round(px)), int(round(py))
    x0, y0, x1, y1 = max(0, cx - reach), max(0, cy - reach), min(w, cx + reach + 1), min(h, cy + reach + 1)
    window = gray[y0:y1, x0:x1]
    signal = polarity * (window - np.median(window))
    lx, ly = cx - x0, cy - y0
    top, left = max(0, ly - 1), max(0, lx - 1)
    near = signal[top : ly + 2, left : lx + 2]
    if near.size == 0 or float(near.max()) <= 0:
        return 0.0
    peak = float(near.max())
    dy, dx = np.unravel_index(int(np.argmax(near)), near.shape)
    iy, ix = top + int(dy), left + int(dx)
    mask = (signal >= 0.5 * peak).astype(np.uint8)
    _, labels = cv2.connectedComponents(mask, connectivity=8)
    pixels = int((labels == labels[iy, ix]).sum())
    return pixels / geometry.pixels_per_fraction**2


__all__ = [
    "CANDIDATES_PER_POLARITY", "CLASSES", "FINDING_FRACTION", "KIND_CLASSES", "PATCH_FRACTION", "PATCH_PIXELS",
    "PATCH_UNIT", "ViewGeometry", "blob_area", "blob_map", "cut_patches", "find_candidates", "find_peaks", "to_gray",
]
