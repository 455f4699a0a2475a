"""Procedural medical VQA: small synthetic findings on real medical images.

:class:`ProceduralDataset` is the default data behind ``MedVR-VQA-v0``. Each sample takes
a random square crop of a real background image (:mod:`medvr_env.data.backgrounds`; the
``train`` and ``test`` splits use different images), resizes it to ``image_size``
(``cv2.INTER_AREA`` when shrinking, through a fast integer-factor step; ``cv2.INTER_LINEAR``
when enlarging), flips it horizontally at random, jitters brightness and contrast a little, and blends in 0-4 small
synthetic findings:

=================  ============================================================
kind               look
=================  ============================================================
``nodule``         round or slightly oval soft-edged blob, brighter
``lesion``         irregular blob (a core and 2-4 merged Gaussian lobes), brighter or darker
``calcification``  compact dot with a sharp edge, brighter; sometimes a cluster of 3-5 specks
``micro-bleed``    compact round dot, darker
=================  ============================================================

Every kind draws its peak contrast against the local background from one range (55-85
grey levels; the placer lowers it, not below 35, only where no spot has room), and every
single finding draws its size from one range, so findings of the same polarity are the
same faint dot in a 224 px view of the whole image: what kind a finding is shows only
after a zoom (shape: lesion outline, cluster specks; edge sharpness: calcification vs
nodule). Findings are placed on tissue (not on air or saturated areas), at least 5% from
the border and apart from each other. At ``image_size=1024`` a finding's box is 7.7-9.9 px
across (<= 2.2 px at 224, >= 6.7 px when a 256 px crop is shown at 224; clusters up to
10.6 px). The larger finding of a ``comparison`` question is 1.25-1.4x the smaller one (up
to ~11.9 px; the two differ by under 1 px at 224). All sizes scale with ``image_size``.
(These are 0.8x the sizes of the look-value study's variant V1: at full size the first view
still answered 8.6 points above chance with the patch reader, at 0.8x 5.6; a 0.6x variant
blinds the first view entirely.)

Every sample, a ``presence`` question answered "no" included, has at least one look-alike
distractor: a finding of another kind with the asked kind's polarity (nodule,
calcification and bright lesion look alike; so do micro-bleed and dark lesion), plus 0-1
random other findings (none in ``count`` questions). So neither "is there a bright dot"
nor "how many dark dots" answers a question: the asked kind has to be told apart.

Question types (``question_types=``), their answers and answer types:

===============  ============================================================  ==========================  ======
type             question                                                      answers                     type
===============  ============================================================  ==========================  ======
``presence``     Is there a {finding} in this image?                           ``yes`` / ``no`` (~50/50)   closed
``location``     In which quadrant of the image is the {finding}?              :data:`QUADRANTS`           open
``side``         Is the {finding} on the left or right side of the image?      ``left`` / ``right``        closed
``count``        How many {finding}s are there?                                ``"0"`` .. ``"4"``          open
``comparison``   Which {finding} is larger, the one on the left or the one     ``left`` / ``right``        closed
                 on the right?
``location_mc``  as ``location``, with the four quadrants as options           an option's text            closed
``count_mc``     as ``count``, with four counts as options (ascending)         an option's text            closed
===============  ============================================================  ==========================  ======

"left", "right", "upper" and "lower" always mean the sides of the image as displayed,
not the patient's sides (images are flipped at random, so anatomical sides carry no
meaning here). ``location`` / ``side`` questions have exactly one finding of the asked
kind, fully inside its quadrant / half and clear of the midlines; other kinds
appear as distractors (anywhere). ``comparison`` is asked about nodules and lesions only.
Calcification clusters appear only in ``presence`` questions and as distractors, so
every counted or located calcification is a single dot.

``Sample.eval_boxes`` holds the box ``(x1, y1, x2, y2)``, in pixels of the
``image_size`` x ``image_size`` image, of each finding the question is about (empty for
a ``presence`` question answered "no"); ``meta["findings"]`` lists every finding.

Determinism: sample ``i`` depends only on ``(split, seed, start_index + i)`` and the
enabled question types (which pick the question type); its pixels depend only on
``Sample.image_key`` (``"procedural/{split}/{seed}/{index}/{question_type}/{image_size}"``),
from which :meth:`ProceduralDataset.load_image` regenerates them. ``__getitem__`` draws
only the metadata (it consults a small per-background placement map, built once per
process); rendering happens in ``load_image``, which keeps the last few images.
"""

from __future__ import annotations

import functools
import math
import operator
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from .backgrounds import SPLIT_BACKGROUNDS, SPLITS, get_background, load_background
from .sample import Sample, as_rgb_uint8

__all__ = [
    "ANSWER_SETS",
    "ANSWER_TYPES",
    "COUNTS",
    "KINDS",
    "QUADRANTS",
    "QUESTION_TYPES",
    "SIDES",
    "ProceduralDataset",
]

KINDS: tuple[str, ...] = ("nodule", "lesion", "calcification", "micro-bleed")
QUESTION_TYPES: tuple[str, ...] = ("presence", "location", "side", "count", "comparison", "location_mc", "count_mc")
QUADRANTS: tuple[str, ...] = ("upper left", "upper right", "lower left", "lower right")
SIDES: tuple[str, ...] = ("left", "right")
COUNTS: tuple[str, ...] = ("0", "1", "2", "3", "4")
ANSWER_SETS: dict[str, tuple[str, ...]] = {
    "presence": ("yes", "no"),
    "location": QUADRANTS,
    "side": SIDES,
    "count": COUNTS,
    "comparison": SIDES,
    "location_mc": QUADRANTS,
    "count_mc": COUNTS,
}
ANSWER_TYPES: dict[str, str] = {
    "presence": "closed",
    "location": "open",
    "side": "closed",
    "count": "open",
    "comparison": "closed",
    "location_mc": "closed",
    "count_mc": "closed",
}
MAX_FINDINGS = 4
GENERATOR = "medvr-procedural-v3"

_MIN_IMAGE_SIZE = 128
_REF = 1024.0  # sizes below are in pixels at image_size 1024 and scale with image_size
_SIZE_SCALE = 0.8  # every finding size below is multiplied by this (see the module docstring)
_SIZE = {  # box side (longer side of the box), px at 1024: one range for every single finding
    "single": (9.6, 12.4),
    "cluster": (10.4, 13.2),
}
_COMPARE_SMALL = (9.6, 10.6)
_COMPARE_RATIO = (1.25, 1.4)
_CONTRAST = (55.0, 85.0)  # |peak grey levels| against the local background, every kind (sign = polarity)
_MIN_CONTRAST = 35.0  # the floor when the placer finds no spot with room for the drawn contrast
_LOOK_ALIKES = {  # kinds that look like the asked kind at the first view (same polarity, same size and contrast)
    ("nodule", 1): (("calcification", 1), ("lesion", 1)),
    ("calcification", 1): (("nodule", 1), ("lesion", 1)),
    ("lesion", 1): (("nodule", 1), ("calcification", 1)),
    ("micro-bleed", -1): (("lesion", -1),),
    ("lesion", -1): (("micro-bleed", -1),),
}
_LESION_FILL = (0.15, 0.5)  # smoothstep edges that turn a lesion's summed Gaussians into a filled blob
_CLUSTER_P = 0.35
_MARGIN = 0.05  # of the image side, between any box and the border
_MIDLINE_GAP = 0.04  # between a located finding's box and the midline(s)
_SEPARATION = 0.03  # between the boxes of two findings
_THRESHOLD = 0.15  # a box encloses where a finding's profile is >= 15% of its peak
_TISSUE = (25.0, 225.0)  # local mean range findings are placed in
_SD_LIMITS = (8.0, 12.0, 18.0, 30.0, math.inf)  # local roughness accepted, relaxed stage by stage
_TRIES_PER_STAGE = 48
_MAP_SHORT_SIDE = 128
_DIRECTIONS = tuple((math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 8, endpoint=False))
_IMAGE_CACHE = 8
_PLAN_CACHE = 64

Box = tuple[float, float, float, float]
Lobe = tuple[float, float, float, float, float, float]  # dx, dy, sx, sy, theta, weight (radius units)


def _stable_code(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


_STREAM_QUESTION = _stable_code("medvr/procedural/question-type")
_STREAM_PLAN = _stable_code("medvr/procedural/plan")


# --------------------------------------------------------------------------- finding shapes
def _c(p: float, weight: float = 1.0) -> float:
    """Distance (in lobe scale units) where ``weight * exp(-d**p)`` falls to the box threshold."""
    return math.log(max(weight, _THRESHOLD * 1.0001) / _THRESHOLD) ** (1.0 / p)


@dataclass(frozen=True)
class _Shape:
    """A finding's profile in radius units (radius = half the box's longer side)."""

    lobes: tuple[Lobe, ...]
    exponent: float
    combine: str  # "max", or "sum" (renormalised to peak 1, then filled with _lesion_fill)
    texture: float
    half_extent: tuple[float, float]  # box half-width / half-height in radius units
    cluster: bool = False


def _ellipse_extent(ax: float, ay: float, theta: float) -> tuple[float, float]:
    c, s = math.cos(theta), math.sin(theta)
    return math.hypot(ax * c, ay * s), math.hypot(ax * s, ay * c)


def _lesion_fill(prof: np.ndarray) -> np.ndarray:
    """Smoothstep of a peak-1 profile: a filled, soft-edged blob with the outline of its upper level sets."""
    lo, hi = _LESION_FILL
    x = np.clip((prof - lo) / (hi - lo), 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def _ellipse(exponent: float, theta: float, squash: float, texture: float) -> _Shape:
    """One elliptic lobe, scaled so that its box's longer side is exactly 2 radii."""
    hx, hy = _ellipse_extent(1.0, 1.0 - squash, theta)
    k = 1.0 / max(hx, hy)
    ax, ay = k, k * (1.0 - squash)
    lobe = (0.0, 0.0, ax / _c(exponent), ay / _c(exponent), theta, 1.0)
    return _Shape((lobe,), exponent, "max", texture, (hx * k, hy * k))


def _eval_lobes(lobes: Sequence[Lobe], exponent: float, combine: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Profile of ``lobes`` at offsets ``xs`` (row) and ``ys`` (column), radius units."""
    out = np.zeros((ys.shape[0], xs.shape[1]), np.float32)
    for dx, dy, sx, sy, theta, weight in lobes:
        u, v = xs - dx, ys - dy
        c, s = math.cos(theta), math.sin(theta)
        ur, vr = (u * c + v * s) / sx, (v * c - u * s) / sy
        value = weight * np.exp(-np.power(ur * ur + vr * vr, exponent / 2.0))
        if combine == "sum":
            out += value
        else:
            np.maximum(out, value, out=out)
    return out


def _shape(rng: np.random.Generator, kind: str, cluster: bool) -> _Shape:
    if kind == "nodule":
        return _ellipse(3.0, float(rng.uniform(0, math.pi)), float(rng.uniform(0.0, 0.18)), 0.12)
    if kind == "micro-bleed":
        return _ellipse(4.0, float(rng.uniform(0, math.pi)), float(rng.uniform(0.0, 0.1)), 0.10)
    if kind == "calcification" and not cluster:
        p = 6.0
        return _Shape(((0.0, 0.0, 1.0 / _c(p), 1.0 / _c(p), 0.0, 1.0),), p, "max", 0.06, (1.0, 1.0))
    if kind == "calcification":
        p, lobes, hy = 4.0, [], 0.0
        n = int(rng.integers(3, 6))
        for i in range(n):
            rho = float(rng.uniform(0.25, 0.4))
            if i < 2:  # the two end dots fix the box width at exactly 2 radii
                dx, dy, w = (rho - 1.0 if i == 0 else 1.0 - rho), float(rng.uniform(-0.45, 0.45)), 1.0
            else:
                dx, dy = float(rng.uniform(-0.55, 0.55)), float(rng.uniform(-0.55, 0.55))
                w = float(rng.uniform(0.8, 1.0))
            reach = rho * _c(p, w) / _c(p)
            hy = max(hy, abs(dy) + reach)
            lobes.append((dx, dy, rho / _c(p), rho / _c(p), 0.0, w))
        return _Shape(tuple(lobes), p, "max", 0.06, (1.0, hy), cluster=True)
    if kind == "lesion":
        grid = np.linspace(-3.0, 3.0, 121, dtype=np.float32)
        for _ in range(20):  # a core lobe plus 2-4 lobes around it; redrawn until the blob is in one piece
            raw = [(0.0, 0.0, float(rng.uniform(0.35, 0.5)), float(rng.uniform(0.35, 0.5)), 0.0, 1.0)]
            for _ in range(int(rng.integers(2, 5))):
                r, a = float(rng.uniform(0.3, 0.65)), float(rng.uniform(0, 2 * math.pi))
                raw.append((r * math.cos(a), r * math.sin(a), float(rng.uniform(0.22, 0.4)),
                            float(rng.uniform(0.22, 0.4)), float(rng.uniform(0, math.pi)), float(rng.uniform(0.6, 1.0))))
            prof = _eval_lobes(raw, 2.0, "sum", grid[None, :], grid[:, None])
            prof = _lesion_fill(prof / prof.max())
            pieces, _ = cv2.connectedComponents((prof >= 0.5).astype(np.uint8))
            if pieces == 2:  # background + one blob
                break
        rows, cols = np.nonzero(prof >= _THRESHOLD)
        step = float(grid[1] - grid[0])
        x1, x2 = float(grid[cols.min()]) - step / 2, float(grid[cols.max()]) + step / 2
        y1, y2 = float(grid[rows.min()]) - step / 2, float(grid[rows.max()]) + step / 2
        cx, cy, scale = (x1 + x2) / 2, (y1 + y2) / 2, 2.0 / max(x2 - x1, y2 - y1)
        lobes = tuple(
            ((dx - cx) * scale, (dy - cy) * scale, sx * scale, sy * scale, t, w) for dx, dy, sx, sy, t, w in raw
        )
        return _Shape(lobes, 2.0, "sum", 0.15, ((x2 - x1) * scale / 2, (y2 - y1) * scale / 2))
    raise ValueError(f"unknown finding kind {kind!r}")


# --------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class _Finding:
    kind: str
    u: float  # centre, fraction of the image side
    v: float
    size: float  # box longer side, fraction of the image side
    contrast: float  # signed peak grey levels
    shape: _Shape
    seed: int  # texture noise

    def box(self, image_size: int) -> Box:
        r = self.size * image_size / 2.0
        hx, hy = self.shape.half_extent
        cx, cy = self.u * image_size, self.v * image_size
        return (round(cx - hx * r, 2), round(cy - hy * r, 2), round(cx + hx * r, 2), round(cy + hy * r, 2))


@dataclass(frozen=True)
class _Plan:
    split: str
    seed: int
    index: int
    question_type: str
    image_size: int
    background: str
    crop: tuple[int, int, int]  # x0, y0, side in background pixels
    flip: bool
    alpha: float
    beta: float
    findings: tuple[_Finding, ...]
    relevant: tuple[int, ...]  # indices of the findings the question is about
    target: str
    question: str
    answer: str
    options: tuple[str, ...]
    extra: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        return f"procedural/{self.split}/{self.seed}/{self.index}/{self.question_type}/{self.image_size}"


@dataclass(frozen=True)
class _PlacementMap:
    mean: np.ndarray
    sd: np.ndarray
    factor: float  # background pixels per map pixel
    height: int
    width: int


@functools.lru_cache(maxsize=None)
def _placement_map(name: str) -> _PlacementMap:
    """Local mean and roughness of a background's grey levels (once per process)."""
    bg = load_background(name)
    h, w = bg.shape[:2]
    gray = cv2.cvtColor(bg, cv2.COLOR_RGB2GRAY).astype(np.float32)
    factor = min(h, w) / _MAP_SHORT_SIDE
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if factor > 1 else cv2.INTER_LINEAR)
    mean = cv2.blur(small, (3, 3))
    sd = np.sqrt(np.maximum(cv2.blur(small * small, (3, 3)) - mean * mean, 0.0))
    mean.flags.writeable = False
    sd.flags.writeable = False
    return _PlacementMap(mean, sd, factor, h, w)


class _Placer:
    """Chooses finding centres: inside a region, apart from each other, on suitable tissue."""

    def __init__(self, rng: np.random.Generator, pmap: _PlacementMap, crop: tuple[int, int, int],
                 flip: bool, alpha: float, beta: float) -> None:
        self.rng, self.pmap, self.crop, self.flip = rng, pmap, crop, flip
        self.alpha, self.beta = alpha, beta
        self.placed: list[tuple[float, float, float]] = []  # u, v, half extent

    def _cells(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, side = self.crop
        bx = x0 + ((1.0 - u) if self.flip else u) * side
        by = y0 + v * side
        m = self.pmap
        rows = np.clip((by / m.factor).astype(np.int64), 0, m.mean.shape[0] - 1)
        cols = np.clip((bx / m.factor).astype(np.int64), 0, m.mean.shape[1] - 1)
        return rows, cols

    def local(self, u: np.ndarray, v: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
        """Local mean grey level after the jitter, and roughness: the larger of the local standard deviation and
        the largest change of the local mean at distance ``reach`` (fraction of the image) in 8 directions."""
        m = self.pmap
        rows, cols = self._cells(u, v)
        mean = m.mean[rows, cols]
        rough = m.sd[rows, cols]
        for du, dv in _DIRECTIONS:
            rr, cc = self._cells(u + du * reach, v + dv * reach)
            rough = np.maximum(rough, np.abs(m.mean[rr, cc] - mean))
        return self.alpha * (mean - 128.0) + 128.0 + self.beta, self.alpha * rough

    def place(self, half: float, region: tuple[float, float, float, float], sign: int,
              contrast: float, min_contrast: float) -> tuple[float, float, float]:
        """``(u, v, contrast)`` for a finding of box half-extent ``half`` (fractions) with centre in ``region``.

        Candidates come in batches, one per roughness stage; the first candidate that is apart from the placed
        findings, on tissue, with room for ``contrast`` and smooth enough wins. Failing that, the best candidate
        seen is used with the contrast cut to the room there (but not below ``min_contrast``)."""
        ux1, vy1, ux2, vy2 = region
        if ux2 < ux1 or vy2 < vy1:
            raise RuntimeError(f"empty placement region {region}")
        best: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
        for sd_limit in _SD_LIMITS:
            u = self.rng.uniform(ux1, ux2, _TRIES_PER_STAGE)
            v = self.rng.uniform(vy1, vy2, _TRIES_PER_STAGE)
            apart = np.ones(u.shape, bool)
            for pu, pv, ph in self.placed:
                apart &= np.maximum(np.abs(u - pu), np.abs(v - pv)) >= half + ph + _SEPARATION
            if not apart.any():
                continue
            mean, rough = self.local(u, v, 3.0 * half)
            tissue = (mean >= _TISSUE[0]) & (mean <= _TISSUE[1])
            room = 250.0 - mean if sign > 0 else mean - 5.0
            good = apart & tissue & (room >= contrast) & (rough <= sd_limit)
            if good.any():
                i = int(np.argmax(good))
                self.placed.append((float(u[i]), float(v[i]), half))
                return float(u[i]), float(v[i]), contrast
            for i in np.flatnonzero(apart):
                score = (float(tissue[i]), min(float(room[i]), contrast), -float(rough[i]))
                if best is None or score > best[0]:
                    best = (score, (float(u[i]), float(v[i]), max(min_contrast, min(contrast, float(room[i])))))
        if best is None:
            raise RuntimeError("could not place a finding without overlap")
        u_best, v_best, c_best = best[1]
        self.placed.append((u_best, v_best, half))
        return u_best, v_best, c_best


def _region(half: float, quadrant: int | None = None, side: int | None = None) -> tuple[float, float, float, float]:
    """Centre region (fractions) keeping the box inside the margin and, if asked, one quadrant / half."""
    lo, hi = _MARGIN + half, 1.0 - _MARGIN - half
    mid_lo, mid_hi = 0.5 - _MIDLINE_GAP - half, 0.5 + _MIDLINE_GAP + half
    x1, y1, x2, y2 = lo, lo, hi, hi
    if quadrant is not None:
        side = quadrant % 2
        y1, y2 = (lo, mid_lo) if quadrant < 2 else (mid_hi, hi)
    if side is not None:
        x1, x2 = (lo, mid_lo) if side == 0 else (mid_hi, hi)
    return x1, y1, x2, y2


def _choose_question_type(split: str, seed: int, index: int, types: Sequence[str]) -> str:
    rng = np.random.default_rng([_STREAM_QUESTION, _stable_code(split), seed, index])
    return types[int(rng.integers(len(types)))]


def _make_plan(split: str, seed: int, index: int, question_type: str, image_size: int) -> _Plan:
    """Everything about one sample except its pixels; depends only on the arguments."""
    rng = np.random.default_rng([_STREAM_PLAN, _stable_code(split), seed, index, QUESTION_TYPES.index(question_type)])
    names = SPLIT_BACKGROUNDS[split]
    background = names[int(rng.integers(len(names)))]
    pmap = _placement_map(background)
    side = max(8, int(round(rng.uniform(0.6, 1.0) * min(pmap.height, pmap.width))))
    crop = (int(rng.integers(0, pmap.width - side + 1)), int(rng.integers(0, pmap.height - side + 1)), side)
    flip = bool(rng.random() < 0.5)
    alpha, beta = float(rng.uniform(0.85, 1.15)), float(rng.uniform(-15.0, 15.0))
    placer = _Placer(rng, pmap, crop, flip, alpha, beta)
    findings: list[_Finding] = []

    def add(kind: str, *, size_px: float | None = None, cluster: bool = False, sign: int | None = None,
            quadrant: int | None = None, half_side: int | None = None) -> int:
        shape = _shape(rng, kind, cluster)
        if size_px is None:
            size_px = float(rng.uniform(*_SIZE["cluster" if cluster else "single"]))
        size = size_px * _SIZE_SCALE / _REF
        half = size / 2.0 * max(shape.half_extent)
        if sign is None:
            sign = (1 if rng.random() < 0.5 else -1) if kind == "lesion" else (-1 if kind == "micro-bleed" else 1)
        contrast = float(rng.uniform(*_CONTRAST))
        u, v, contrast = placer.place(half, _region(half, quadrant, half_side), sign, contrast, _MIN_CONTRAST)
        findings.append(_Finding(kind, u, v, size, sign * contrast, shape, int(rng.integers(2**31))))
        return len(findings) - 1

    def add_distractors(target: str, target_sign: int, others: int) -> None:
        """One look-alike of the target's polarity (what the first view cannot tell apart), then ``others``
        random kinds; calcification distractors are sometimes clusters."""
        options = _LOOK_ALIKES[(target, target_sign)]
        kind, sign = options[int(rng.integers(len(options)))]
        add(kind, sign=sign)
        rest = [k for k in KINDS if k != target]
        for _ in range(others):
            kind = rest[int(rng.integers(len(rest)))]
            add(kind, cluster=kind == "calcification" and bool(rng.random() < _CLUSTER_P))

    def sign_of(kind: str) -> int:
        """The polarity a target of ``kind`` is drawn with (lesions: either)."""
        return (1 if rng.random() < 0.5 else -1) if kind == "lesion" else (-1 if kind == "micro-bleed" else 1)

    base = question_type.removesuffix("_mc")
    options: tuple[str, ...] = ()
    extra: dict[str, Any] = {}
    if base == "comparison":
        target = ("nodule", "lesion")[int(rng.integers(2))]
    else:
        target = KINDS[int(rng.integers(len(KINDS)))]
    plural = target + "s"
    sign = sign_of(target)

    if base == "presence":
        present = bool(rng.random() < 0.5)
        n_target = (1 if rng.random() < 0.7 else 2) if present else 0
        cluster_ok = target == "calcification"
        relevant = [add(target, sign=sign, cluster=cluster_ok and bool(rng.random() < _CLUSTER_P))
                    for _ in range(n_target)]
        add_distractors(target, sign, int(rng.integers(0, 2)))
        question, answer = f"Is there a {target} in this image?", ("yes" if present else "no")
    elif base == "location":
        quadrant = int(rng.integers(4))
        relevant = [add(target, sign=sign, quadrant=quadrant)]
        add_distractors(target, sign, int(rng.integers(0, 2)))
        question, answer = f"In which quadrant of the image is the {target}?", QUADRANTS[quadrant]
        if question_type == "location_mc":
            options = tuple(QUADRANTS[i] for i in rng.permutation(len(QUADRANTS)))
        extra["quadrant"] = answer
    elif base == "side":
        half_side = int(rng.integers(2))
        relevant = [add(target, sign=sign, half_side=half_side)]
        add_distractors(target, sign, int(rng.integers(0, 2)))
        question, answer = f"Is the {target} on the left or right side of the image?", SIDES[half_side]
        extra["side"] = answer
    elif base == "count":
        n_target = int(rng.integers(0, MAX_FINDINGS + 1))
        relevant = [add(target, sign=sign) for _ in range(n_target)]
        add_distractors(target, sign, 0)
        question, answer = f"How many {plural} are there?", str(n_target)
        if question_type == "count_mc":
            others = [c for c in range(MAX_FINDINGS + 1) if c != n_target]
            dropped = others[int(rng.integers(len(others)))]
            options = tuple(str(c) for c in range(MAX_FINDINGS + 1) if c != dropped)
    elif base == "comparison":
        larger = int(rng.integers(2))
        small = float(rng.uniform(*_COMPARE_SMALL))
        big = small * float(rng.uniform(*_COMPARE_RATIO))
        relevant = [add(target, size_px=(big if larger == s else small), sign=sign, half_side=s) for s in (0, 1)]
        add_distractors(target, sign, int(rng.integers(0, 2)))
        question = f"Which {target} is larger, the one on the left or the one on the right?"
        answer = SIDES[larger]
        extra["larger"] = answer
    else:  # pragma: no cover - validated by the callers
        raise ValueError(f"unknown question type {question_type!r}")

    return _Plan(
        split=split, seed=seed, index=index, question_type=question_type, image_size=image_size,
        background=background, crop=crop, flip=flip, alpha=alpha, beta=beta,
        findings=tuple(findings), relevant=tuple(relevant), target=target,
        question=question, answer=answer, options=options, extra=tuple(extra.items()),
    )


# --------------------------------------------------------------------------- rendering
def _profile(finding: _Finding, image_size: int) -> tuple[np.ndarray, int, int]:
    """The finding's intensity profile (peak about 1) on its pixel patch, and the patch's top-left corner."""
    r = finding.size * image_size / 2.0
    cx, cy = finding.u * image_size, finding.v * image_size
    reach = int(math.ceil(1.6 * r)) + 2
    x0, y0 = max(0, int(math.floor(cx)) - reach), max(0, int(math.floor(cy)) - reach)
    x1, y1 = min(image_size, int(math.floor(cx)) + reach + 1), min(image_size, int(math.floor(cy)) + reach + 1)
    xs = ((np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / r)[None, :]
    ys = ((np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / r)[:, None]
    shape = finding.shape
    prof = _eval_lobes(shape.lobes, shape.exponent, shape.combine, xs, ys)
    if shape.combine == "sum":
        prof = _lesion_fill(prof / max(float(prof.max()), 1e-6))
    noise = np.random.default_rng(finding.seed).standard_normal(prof.shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(1.0, 0.25 * r))
    noise /= max(float(noise.std()), 1e-6)
    prof *= np.clip(1.0 + shape.texture * noise, 0.0, None)
    return prof, x0, y0


@functools.lru_cache(maxsize=None)
def _working_background(name: str) -> np.ndarray:
    """The background as rendered: 2-D when its three channels are equal (a third of the work), else RGB."""
    bg = load_background(name)
    if np.array_equal(bg[:, :, 0], bg[:, :, 1]) and np.array_equal(bg[:, :, 0], bg[:, :, 2]):
        gray = np.ascontiguousarray(bg[:, :, 0])
        gray.flags.writeable = False
        return gray
    return bg


def _resize_square(view: np.ndarray, size: int) -> np.ndarray:
    """Resize a square view to ``size`` x ``size``: ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging.

    A non-integer shrink goes through cv2's slow general area path; instead the view is first enlarged (linear)
    to the next integer multiple ``k * size`` and then shrunk by exactly ``k`` with ``INTER_AREA`` (fast path).
    The result matches a direct ``INTER_AREA`` resize to within a few grey levels at ~3x the speed."""
    side = view.shape[0]
    if side == size:
        return view.copy()
    if side < size:
        return cv2.resize(view, (size, size), interpolation=cv2.INTER_LINEAR)
    k = math.ceil(side / size)
    if k * size != side:
        view = cv2.resize(view, (k * size, k * size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(view, (size, size), interpolation=cv2.INTER_AREA)


def _render(plan: _Plan) -> np.ndarray:
    size = plan.image_size
    bg = _working_background(plan.background)
    x0, y0, side = plan.crop
    img = _resize_square(bg[y0 : y0 + side, x0 : x0 + side], size)
    if plan.flip:
        img = cv2.flip(img, 1)
    lut = np.clip(np.rint(plan.alpha * (np.arange(256, dtype=np.float32) - 128.0) + 128.0 + plan.beta), 0, 255)
    img = cv2.LUT(img, lut.astype(np.uint8))
    for finding in plan.findings:
        prof, px, py = _profile(finding, size)
        patch = img[py : py + prof.shape[0], px : px + prof.shape[1]]
        values = patch.astype(np.float32)
        local = float(values.mean())  # the patch's mean grey level before blending
        # Blend towards white (bright findings) or black (dark ones) so that colour channels never clip and the
        # grey-level peak contrast is ``finding.contrast`` against the local mean.
        if finding.contrast > 0:
            weight = np.minimum(prof * (finding.contrast / max(255.0 - local, 1.0)), 1.0)
            target = 255.0 - values
        else:
            weight = np.minimum(prof * (-finding.contrast / max(local, 1.0)), 1.0)
            target = -values
        if values.ndim == 3:
            weight = weight[:, :, None]
        patch[...] = np.clip(np.rint(values + weight * target), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return as_rgb_uint8(img)


def _parse_key(key: str) -> tuple[str, int, int, str, int]:
    parts = str(key).split("/")
    try:
        if len(parts) != 6 or parts[0] != "procedural":
            raise ValueError
        split, seed, index, qtype, size = parts[1], int(parts[2]), int(parts[3]), parts[4], int(parts[5])
    except ValueError:
        raise ValueError(
            f"not a procedural image key: {key!r} (expected 'procedural/<split>/<seed>/<index>/<type>/<size>')"
        ) from None
    if split not in SPLITS or qtype not in QUESTION_TYPES or seed < 0 or index < 0 or size < _MIN_IMAGE_SIZE:
        raise ValueError(f"invalid procedural image key {key!r}")
    return split, seed, index, qtype, size


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# --------------------------------------------------------------------------- dataset
class ProceduralDataset:
    """Synthetic findings on real medical backgrounds; see the module docstring.

    Args:
        split: ``"train"`` or ``"test"`` (different background images and seed streams).
        num_samples: Number of samples (``len``).
        seed: Non-negative seed; together with split and index it fixes every sample.
        start_index: Sample ``i`` is generated as global index ``start_index + i``.
        image_size: Side of the square images, at least 128.
        question_types: Subset of :data:`QUESTION_TYPES` to generate (default: all).
        image_cache: How many rendered images to keep (about 3 MB each at 1024 px; a render
            costs about 50 ms). RL that revisits a fixed set of samples wants ``num_samples``.
    """

    name = "procedural"
    splits = SPLITS

    def __init__(
        self,
        split: str = "train",
        num_samples: int = 1000,
        seed: int = 0,
        start_index: int = 0,
        image_size: int = 1024,
        question_types: Sequence[str] | None = None,
        image_cache: int = _IMAGE_CACHE,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for the procedural dataset; valid splits: {list(SPLITS)}")
        self.split = split
        self.num_samples = _check_int("num_samples", num_samples, 1)
        self.seed = _check_int("seed", seed, 0)
        self.start_index = _check_int("start_index", start_index, 0)
        self.image_size = _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
        self.image_cache = _check_int("image_cache", image_cache, 1)
        if question_types is None:
            types = QUESTION_TYPES
        else:
            requested = [question_types] if isinstance(question_types, str) else list(question_types)
            unknown = [t for t in requested if t not in QUESTION_TYPES]
            if unknown or not requested:
                raise ValueError(
                    f"invalid question_types {requested!r}: unknown {unknown!r}; valid names: {list(QUESTION_TYPES)}"
                    if unknown
                    else f"question_types must not be empty; valid names: {list(QUESTION_TYPES)}"
                )
            types = tuple(t for t in QUESTION_TYPES if t in requested)
        self.question_types: tuple[str, ...] = types
        self.backgrounds: tuple[str, ...] = SPLIT_BACKGROUNDS[split]
        self._init_caches()

    def _init_caches(self) -> None:
        self._lock = threading.Lock()
        self._plans: OrderedDict[tuple, _Plan] = OrderedDict()
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_lock", "_plans", "_images"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_caches()

    def __repr__(self) -> str:
        return (
            f"ProceduralDataset(split={self.split!r}, num_samples={self.num_samples}, seed={self.seed}, "
            f"start_index={self.start_index}, image_size={self.image_size}, question_types={list(self.question_types)})"
        )

    def __len__(self) -> int:
        return self.num_samples

    def with_split(self, split: str) -> ProceduralDataset:
        """The same generator (seed, size, question types, number of samples) on another split."""
        return ProceduralDataset(split=split, num_samples=self.num_samples, seed=self.seed,
                                 image_size=self.image_size, question_types=self.question_types,
                                 image_cache=self.image_cache)

    def _plan(self, split: str, seed: int, index: int, qtype: str, size: int) -> _Plan:
        key = (split, seed, index, qtype, size)
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
        plan = _make_plan(split, seed, index, qtype, size)
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > _PLAN_CACHE:
                self._plans.popitem(last=False)
        return plan

    def __getitem__(self, index: int) -> Sample:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"sample index must be an integer, got {type(index).__name__}") from None
        if i < 0:
            i += self.num_samples
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample index {index} out of range for {self.num_samples} samples")
        global_index = self.start_index + i
        qtype = _choose_question_type(self.split, self.seed, global_index, self.question_types)
        plan = self._plan(self.split, self.seed, global_index, qtype, self.image_size)
        return self._sample(plan)

    def _sample(self, plan: _Plan) -> Sample:
        size = plan.image_size
        boxes = [f.box(size) for f in plan.findings]
        source = get_background(plan.background).source
        meta: dict[str, Any] = {
            "generator": GENERATOR,
            "background": plan.background,
            "source": f"Synthetic findings drawn by the MedVR procedural generator on: {source}",
            "seed": plan.seed,
            "index": plan.index,
            "image_size": size,
            "target_kind": plan.target,
            "finding_kinds": [f.kind for f in plan.findings],
            "finding_boxes": [list(b) for b in boxes],
            "findings": [
                {
                    "kind": f.kind,
                    "box": list(b),
                    "contrast": round(f.contrast, 1),
                    "cluster": f.shape.cluster,
                    "relevant": i in plan.relevant,
                }
                for i, (f, b) in enumerate(zip(plan.findings, boxes))
            ],
            "crop": list(plan.crop),
            "flip": plan.flip,
        }
        meta.update(plan.extra)
        bg = get_background(plan.background)
        return Sample(
            sample_id=f"procedural/{plan.split}/{plan.seed}/{plan.index}",
            question=plan.question,
            answer=plan.answer,
            image_key=plan.key,
            options=plan.options,
            answer_type=ANSWER_TYPES[plan.question_type],  # type: ignore[arg-type]
            question_type=plan.question_type,
            modality=bg.modality,
            organ=bg.organ,
            split=plan.split,
            eval_boxes=tuple(boxes[i] for i in plan.relevant),
            meta=meta,
        )

    def load_image(self, sample: Sample | str) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 read-only image of ``sample`` (or of an image key), regenerated from its key."""
        key = sample if isinstance(sample, str) else sample.image_key
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
                return image
        image = _render(self._plan(*_parse_key(key)))
        with self._lock:
            self._images[key] = image
            while len(self._images) > self.image_cache:
                self._images.popitem(last=False)
        return image
