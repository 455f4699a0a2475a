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

from medvr_env.grading import normalize_answer

from .candidates import (
    CANDIDATES_PER_POLARITY,
    CLASSES,
    KIND_CLASSES,
    ViewGeometry,
    blob_area,
    cut_patches,
    find_candidates,
    to_gray,
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
    keep_unzoomed: bool = False  # after a zoom, also keep first-view readings of spots no zoom covered
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
        """Each spot as judged by the most magnified view holding it.

        Once the episode has zoomed, spots seen only at the least magnified level (the first view) are
        dropped unless ``keep_unzoomed``: there the reader mistakes background for findings far more often
        (its false-positive rate per candidate spot is several times that of a 4x view).
        """
        lowest = min((r.magnification for r in self.readings), default=0.0)
        zoomed = any(r.magnification > 1.2 * lowest for r in self.readings)
        kept = []
        for r in self.readings:
            if zoomed and not self.keep_unzoomed and r.magnification <= 1.2 * lowest:
                continue
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


    def distribution(self, question: str, answers: Sequence[str]) -> dict[str, float]:
        """A probability over ``answers`` (the answers that fit the question) from the readings so far.

        presence: ``p(yes)`` = the highest probability that a spot is the asked kind; count: the number of
        spots of the asked kind, each counted with its probability (Poisson-binomial over the 8 likeliest,
        more than 4 counted as 4); location / side: each quadrant / half weighted by its likeliest spot;
        comparison: a logistic of the log ratio of the two sides' blob areas. Answers outside the rule's
        range get nothing; an empty rule falls back to uniform.
        """
        kind = asked_kind(question) or "nodule"
        qkind = question_kind(question)
        spots = sorted(self.current(), key=lambda r: -r.p(kind))
        merged: list[Reading] = []
        for r in spots:
            if all(math.hypot(r.x - k.x, r.y - k.y) > self.merge_distance for k in merged):
                merged.append(r)
        probs: dict[str, float] = {}
        if qkind == "presence":
            p_yes = merged[0].p(kind) if merged else 0.5
            probs = {"yes": p_yes, "no": 1.0 - p_yes}
        elif qkind == "count":
            dist = np.zeros(5)
            dist[0] = 1.0
            for r in merged[:8]:
                p = r.p(kind)
                grown = dist * (1 - p)
                grown[1:] += dist[:-1] * p
                grown[4] += dist[4] * p  # more than 4 counts as 4
                dist = grown
            probs = {str(k): float(dist[k]) for k in range(5)}
        elif qkind in ("location", "side"):
            cells = QUADRANTS if qkind == "location" else ("left", "right")
            weights = np.full(len(cells), 1e-3)
            for r in merged:
                cell = (r.y >= 0.5) * 2 + (r.x >= 0.5) if qkind == "location" else int(r.x >= 0.5)
                weights[cell] = max(weights[cell], r.p(kind))
            probs = dict(zip(cells, (weights / weights.sum()).tolist()))
        elif qkind == "comparison":
            areas = []
            for left in (True, False):
                best = self.most_likely(kind, lambda r, left=left: (r.x < 0.5) == left)
                areas.append(max(best.area, 1e-8) if best is not None else 1e-8)
            p_left = 1.0 / (1.0 + math.exp(-4.0 * math.log(areas[0] / areas[1])))
            probs = {"left": p_left, "right": 1.0 - p_left}
        by_norm = {normalize_answer(k): v for k, v in probs.items()}
        out = {a: by_norm.get(normalize_answer(a), 0.0) for a in answers}
        total = sum(out.values())
        if total <= 0:
            return {a: 1.0 / len(answers) for a in answers} if answers else {}
        return {a: v / total for a, v in out.items()}


def normalised_entropy(probs: dict[str, float]) -> float:
    """``H(p) / log K`` over the ``K`` answers, in [0, 1] (0 for one answer)."""
    values = np.array([v for v in probs.values() if v > 0])
    if len(probs) <= 1 or values.size == 0:
        return 0.0
    return float(min(max(-(values * np.log(values)).sum() / math.log(len(probs)), 0.0), 1.0))


def _mean(values: list[float], default: float) -> float:
    return float(np.mean(values)) if values else default


__all__ = [
    "KIND_CLASSES",
    "MERGE_DISTANCE",
    "Findings",
    "Reading",
    "asked_kind",
    "normalised_entropy",
    "question_kind",
    "read_view",
]
