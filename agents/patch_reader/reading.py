"""Reading views with the patch reader, and answering procedural questions from what was read.

Torch-free: the reader is anything with ``classify(patches, scale) -> (N, len(CLASSES))`` probabilities
(:class:`~agents.patch_reader.model.PatchReader`).

:func:`read_view` finds candidate spots in one observation and classifies them. :class:`Findings`
collects the readings of every view of an episode; where views overlap, a spot is judged by the most
magnified view that holds it (a zoom that shows background where the first view guessed a finding
overrules the first view). Its answer rules know finding kinds:

- presence: any detection of the asked kind;
- count: the number of detections of the asked kind (at most 4);
- location / side: the spot most likely to be the asked kind;
- comparison: the blob area of the spot most likely to be the asked kind on each side.

A detection is a spot whose most probable class is a finding kind with probability >= ``threshold``
(0.5), merged with detections closer than ``merge_distance`` (25 px at 1024). Both are set a priori.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from .candidates import (
    CANDIDATES_PER_POLARITY, CLASSES, KIND_CLASSES, ViewGeometry, blob_area, cut_patches, find_candidates, to_gray,
)

QUADRANTS = ("upper left", "upper right", "lower left", "lower right")
MERGE_DISTANCE = 25.0 / 1024
KIND_WORDS = {  # question wording -> kind (the procedural vocabulary, and a few synonyms)
    "micro-bleed": ("micro-bleed", "microbleed", "bleed", "hemorrhag", "haemorrhag"),
    "calcification": ("calcification", "calcif"),
    "nodule": ("nodule",),
    "lesion": ("lesion", "mass"),
}


class Classifier(Protocol):
    def classify(self, patches: np.ndarray, scale: float) -> np.ndarray: ...


@dataclass(frozen=True)
class Reading:
    """One candidate spot of one view: where (image fractions), what the reader thinks, how big it looks."""

    x: float
    y: float
    probs: tuple[float, ...]  # over CLASSES
    polarity: int
    area: float  # image fractions squared
    magnification: float  # observation pixels per image fraction of the view it was read in

    @property
    def finding(self) -> float:
        """Probability that the spot is a finding of any kind."""
        return 1.0 - self.probs[0]

    @property
    def kind(self) -> str:
        """The most probable class (``"background"`` or a kind)."""
        return CLASSES[int(np.argmax(self.probs))]

    def p(self, kind: str) -> float:
        return self.probs[CLASSES.index(kind)]


def read_view(reader: Classifier, image: np.ndarray, view_box: Sequence[float],
              per_polarity: int = CANDIDATES_PER_POLARITY) -> list[Reading]:
    """Classify the candidate spots of one observation (``obs["image"]`` and ``obs["view_box"]``)."""
    geometry = ViewGeometry.of(image, view_box)
    gray = to_gray(image)
    spots = find_candidates(gray, geometry, per_polarity)
    if not spots:
        return []
    patches = cut_patches(gray, [(x, y) for x, y, _, _ in spots], geometry)
    probs = reader.classify(patches, geometry.scale_feature)
    out = []
    for (px, py, polarity, _), p in zip(spots, probs):
        fx, fy = geometry.to_image(px, py)
        out.append(Reading(fx, fy, tuple(float(v) for v in p), polarity, blob_area(gray, px, py, polarity, geometry),
                           geometry.pixels_per_fraction))
    return out


def asked_kind(question: str) -> str | None:
    """The finding kind a question asks about, from its wording (``None`` if it names none)."""
    q = question.lower()
    for kind, words in KIND_WORDS.items():
        if any(w in q for w in words):
            return kind
    return None


def question_kind(question: str) -> str:
    """presence | count | location | side | comparison | other, from the wording."""
    q = question.lower()
    if "how many" in q or "number of" in q:
        return "count"
    if "quadrant" in q:
        return "location"
    if "larger" in q or "bigger" in q:
        return "comparison"
    if "left or right" in q or "which side" in q:
        return "side"
    if re.match(r"\s*(is|are|does|do|can|was|were|has|have)\b", q):
        return "presence"
    return "other"


@dataclass
class Findings:
    """The readings of every view an episode showed, and the kind-aware answer rules."""

    threshold: float = 0.5
    merge_distance: float = MERGE_DISTANCE
    views: list[ViewGeometry] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)

    def add_view(self, reader: Classifier, image: np.ndarray, view_box: Sequence[float]) -> list[Reading]:
        """Read one observation and keep its readings."""
        read = read_view(reader, image, view_box)
        self.views.append(ViewGeometry.of(image, view_box))
        self.readings.extend(read)
        return read

    # ------------------------------------------------------------------ combining views
    def current(self) -> list[Reading]:
        """Each spot as judged by the most magnified view holding it; duplicates merged (best kept)."""
        kept = []
        for r in self.readings:
            overruled = any(v.pixels_per_fraction > 1.2 * r.magnification and v.contains(r.x, r.y, 0.5 * MERGE_DISTANCE)
                            for v in self.views)
            if not overruled:
                kept.append(r)
        return kept

    def detections(self, kind: str | None = None) -> list[Reading]:
        """Spots read as a finding (of ``kind``, if given), most confident first, merged across views."""
        found = []
        for r in sorted(self.current(), key=lambda r: -r.finding):
            label = r.kind
            if label == "background" or max(r.probs[1:]) < self.threshold:
                continue
            if kind is not None and label != kind:
                continue
            if all(math.hypot(r.x - k.x, r.y - k.y) > self.merge_distance for k in found):
                found.append(r)
        return found

    def most_likely(self, kind: str, where: Any = None) -> Reading | None:
        """The spot with the highest probability of being ``kind`` (optionally among spots ``where(r)`` holds)."""
        pool = [r for r in self.current() if where is None or where(r)]
        return max(pool, key=lambda r: r.p(kind), default=None)

    # ------------------------------------------------------------------ answering
    def answer(self, question: str) -> tuple[str, float]:
        """``(answer text, confidence)`` for a procedural-style question."""
        kind = asked_kind(question) or "nodule"
        qkind = question_kind(question)
        if qkind == "count":
            found = self.detections(kind)
            return str(min(len(found), 4)), _mean([r.p(kind) for r in found], default=0.5)
        if qkind in ("location", "side"):
            best = self.most_likely(kind)
            if best is None:
                return (QUADRANTS[0] if qkind == "location" else "left"), 0.25
            if qkind == "side":
                return ("left" if best.x < 0.5 else "right"), best.p(kind)
            return QUADRANTS[(best.y >= 0.5) * 2 + (best.x >= 0.5)], best.p(kind)
        if qkind == "comparison":
            sides = []
            for left in (True, False):
                on_side = [r for r in self.detections(kind) if (r.x < 0.5) == left]
                best = on_side[0] if on_side else self.most_likely(kind, lambda r, left=left: (r.x < 0.5) == left)
                sides.append(best.area if best is not None else 0.0)
            total = sides[0] + sides[1]
            return ("left" if sides[0] >= sides[1] else "right"), (max(sides) / total if total > 0 else 0.5)
        best = self.most_likely(kind)
        p_yes = best.p(kind) if best is not None else 0.0
        return ("yes" if self.detections(kind) else "no"), max(p_yes, 1.0 - p_yes)


def _mean(values: list[float], default: float) -> float:
    return float(np.mean(values)) if values else default


__all__ = ["Findings", "KIND_CLASSES", "MERGE_DISTANCE", "Reading", "asked_kind", "question_kind", "read_view"]
