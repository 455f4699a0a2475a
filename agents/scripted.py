"""Baselines that need no policy weights.

Looking agents read views with the patch reader (:mod:`agents.patch_reader`: a small CNN that tells
finding kinds from background spots at the magnification each view shows; trained on the procedural
train split, built into the cache on first use) and answer with its kind-aware rules:

- :class:`QuadrantSweepAgent` (``scripted``): reads the first view, zooms 2x on the four quadrants (the
  likeliest first), and answers from the most magnified reading of each spot;
- :class:`GuidedZoomAgent` (``guided``): reads the first view, then zooms 4x on the spots most likely to
  be the asked kind (up to 5 zooms): *where* chosen from the first view, no oracle;
- :class:`RandomZoomAgent` (``random-zooms``): the same number of 4x zooms at random places (what
  *where* is measured against);
- :class:`NoZoomAgent` (``no-zoom``): the same reader and rules on the first view only (what looking
  closer is measured against).

Kept for reference, kind-blind: :class:`BlobDetectorAgent` (``blob-detector``), a difference-of-Gaussians
contrast detector with polarity rules and a quadrant search. Its threshold fires on background texture
(about 11 times per first view), so it answers presence "yes" and count "4" most of the time, and its rules
cannot tell a nodule from a calcification however closely it looks. :class:`RandomAgent`: uniform over
the action mask, random boxes (chance level).

All of them act only on what the policy observes (``obs["image"]``, ``obs["view_box"]``,
the question and options), never on the sample's evaluation boxes (the ``oracle`` agent,
:mod:`agents.oracle`, does, and says so).
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from medvr_env import MedVRVQAEnv
from medvr_env.data.sample import option_letter
from medvr_env.grading import normalize_answer

from .patch_reader.candidates import blob_map, find_peaks
from .patch_reader.reading import Findings, asked_kind

QUADRANTS = ("upper left", "upper right", "lower left", "lower right")


@dataclass(frozen=True)
class Detection:
    """A blob found in some view, in original-image fractions (x, y), with its contrast score and size."""

    x: float
    y: float
    score: float
    radius: float
    polarity: int  # +1 bright, -1 dark


def normalised_entropy(weights: np.ndarray) -> float:
    """Entropy of a distribution divided by log(n); 0 for one outcome."""
    p = np.asarray(weights, dtype=np.float64)
    p = p[p > 0]
    if p.size <= 1:
        return 0.0
    p = p / p.sum()
    return float(-(p * np.log(p)).sum() / math.log(p.size))


def binary_entropy(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(-(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2))


@dataclass
class _Question:
    kind: str  # presence | count | location | side | comparison | other
    polarity: int  # +1 bright findings, -1 dark, 0 either


def read_question(question: str) -> _Question:
    """Route a question to an answer rule by its wording (the agent's only 'language model')."""
    q = question.lower()
    polarity = -1 if re.search(r"bleed|hemorrhag|dark", q) else (0 if "lesion" in q else 1)
    if "how many" in q or "number of" in q:
        kind = "count"
    elif "quadrant" in q:
        kind = "location"
    elif "larger" in q or "bigger" in q:
        kind = "comparison"
    elif "left or right" in q or "which side" in q:
        kind = "side"
    elif re.match(r"\s*(is|are|does|do|can|was|were|has|have)\b", q):
        kind = "presence"
    else:
        kind = "other"
    return _Question(kind, polarity)


@dataclass
class BlobDetectorAgent:
    """Kind-blind coarse-to-fine contrast search with self-reported uncertainty (the first scripted baseline).

    It ranks the quadrants by blob contrast, zooms into them (2x), detects blobs whose standardised
    contrast exceeds ``threshold`` and answers by polarity. Kept because it shows why looking did not seem
    to pay: a contrast threshold fires on background texture and polarity rules cannot tell kinds apart.

    Args:
        max_zooms: How many candidate spots to inspect.
        zoom_fraction: Side of each zoom box as a fraction of the original image side.
        coarse_sigma: Blob scale (pixels of the observation) for ranking candidates on the first view.
        fine_sigmas: Blob scales (pixels of the observation) for detecting findings in zoomed views.
        threshold: Standardised contrast above which a blob counts as a finding.
    """

    max_zooms: int = 4
    zoom_fraction: float = 0.5
    coarse_sigma: float = 1.0
    fine_sigmas: tuple[float, ...] = (1.2, 2.0)
    threshold: float = 6.0
    name: str = "blob-detector"
    _env: MedVRVQAEnv | None = field(default=None, repr=False)
    _plan: list[tuple[float, float]] = field(default_factory=list, repr=False)
    _plan_entropy: float = field(default=1.0, repr=False)
    _detections: list[Detection] = field(default_factory=list, repr=False)
    _question: _Question | None = field(default=None, repr=False)
    _zooms_done: int = 0

    def reset(self, env: MedVRVQAEnv, obs: dict[str, Any], info: dict[str, Any]) -> None:
        self._env = env
        self._question = read_question(obs["question"])
        self._detections = []
        self._zooms_done = 0
        self._plan, self._plan_entropy = self._candidates(obs)

    # ------------------------------------------------------------------ policy
    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        if self._zooms_done > 0:
            self._detections.extend(self._detect(obs))
        steps_left = self._env.max_steps - int(obs["step"])
        if self._plan and self._zooms_done < self.max_zooms and steps_left > 1 and "zoom" in self._env.tool_names:
            x, y = self._plan.pop(0)
            self._zooms_done += 1
            return {"name": "zoom", "arguments": {"bbox_2d": self._box_around(x, y), "source": 0},
                    "entropy": self._plan_entropy}
        if self._zooms_done == 0:  # nothing to inspect: answer from the first view
            self._detections = self._detect(obs)
        text, confidence = self._answer(obs)
        return {"name": "answer", "arguments": {"text": text}, "entropy": binary_entropy(confidence)}

    # ------------------------------------------------------------------ seeing
    @staticmethod
    def _gray(obs: dict[str, Any]) -> np.ndarray:
        return obs["image"].astype(np.float32).mean(axis=2)

    def _candidates(self, obs: dict[str, Any]) -> tuple[list[tuple[float, float]], float]:
        """Where to look, as centres in original-image fractions, most salient first, and the ranking's entropy.

        With ``zoom_fraction=0.5`` the four quadrants cover the whole image (coarse-to-fine
        coverage, ordered by blob contrast); smaller fractions zoom on the strongest spots.
        """
        gray = self._gray(obs)
        response = np.abs(blob_map(gray, self.coarse_sigma))
        size = gray.shape[0]
        margin = int(size * 0.04)
        response[:margin], response[-margin:], response[:, :margin], response[:, -margin:] = 0, 0, 0, 0
        if self.zoom_fraction >= 0.5:
            half = size // 2
            scores = np.array([response[r * half:(r + 1) * half, c * half:(c + 1) * half].max()
                               for r in (0, 1) for c in (0, 1)])
            order = np.argsort(-scores)[: self.max_zooms]
            centres = [(0.25 + 0.5 * (i % 2), 0.25 + 0.5 * (i // 2)) for i in order]
            return centres, normalised_entropy(np.exp(scores[order] - scores.max()))
        peaks = find_peaks(response, self.max_zooms, min_distance=int(size * self.zoom_fraction / 2), threshold=0.0)
        if not peaks:
            return [], 1.0
        scores = np.array([s for _, _, s in peaks])
        entropy = normalised_entropy(np.exp(scores - scores.max())) if len(peaks) > 1 else 0.0
        return [(x / size, y / size) for x, y, _ in peaks], entropy

    def _box_around(self, x: float, y: float) -> list[float]:
        """A zoom box centred on (x, y), in the env's bbox format on view 0."""
        half = self.zoom_fraction / 2
        x1 = min(max(x - half, 0.0), 1.0 - 2 * half)
        y1 = min(max(y - half, 0.0), 1.0 - 2 * half)
        box = [x1, y1, x1 + 2 * half, y1 + 2 * half]
        episode = self._env.episode
        w, h = episode.views[0].size
        scale = {"norm": (1.0, 1.0), "norm1000": (1000.0, 1000.0), "pixel": (float(w), float(h))}[self._env.bbox_format]
        return [round(v * scale[i % 2], 4) for i, v in enumerate(box)]

    def _detect(self, obs: dict[str, Any]) -> list[Detection]:
        """Blobs in the current observation, mapped to original-image fractions."""
        gray = self._gray(obs)
        size = gray.shape[0]
        x1, y1, x2, y2 = (float(v) for v in obs["view_box"])
        found: list[Detection] = []
        for sigma in self.fine_sigmas:
            response = blob_map(gray, sigma)
            for polarity in (1, -1):
                signed = response * polarity
                for px, py, score in find_peaks(signed, 8, min_distance=int(3 * sigma), threshold=self.threshold):
                    found.append(Detection(
                        x=x1 + (x2 - x1) * px / size, y=y1 + (y2 - y1) * py / size, score=score,
                        radius=sigma * math.sqrt(2) * (x2 - x1) / size, polarity=polarity,
                    ))
        return found

    # ------------------------------------------------------------------ answering
    def _relevant(self) -> list[Detection]:
        """Detections of the asked-for polarity, merged across scales and overlapping zooms."""
        want = self._question.polarity
        kept: list[Detection] = []
        for d in sorted(self._detections, key=lambda d: -d.score):
            if want and d.polarity != want:
                continue
            if all(math.hypot(d.x - k.x, d.y - k.y) > 0.02 for k in kept):
                kept.append(d)
        return kept

    def _answer(self, obs: dict[str, Any]) -> tuple[str, float]:
        found = self._relevant()
        best = found[0].score if found else 0.0
        confidence = 1.0 / (1.0 + math.exp(-(best - self.threshold) / 2.0))
        kind = self._question.kind
        if kind == "count":
            text = str(min(len(found), 4))
        elif kind == "location":
            d = found[0] if found else Detection(0.25, 0.25, 0, 0, 1)
            text = QUADRANTS[(d.y >= 0.5) * 2 + (d.x >= 0.5)]
        elif kind == "side":
            text = "left" if (found[0].x if found else 0.25) < 0.5 else "right"
        elif kind == "comparison":
            left = max((d.radius * d.score for d in found if d.x < 0.5), default=0.0)
            right = max((d.radius * d.score for d in found if d.x >= 0.5), default=0.0)
            text = "left" if left >= right else "right"
        else:
            text = "yes" if found else "no"
            confidence = max(confidence, 1 - confidence)
        return as_option(text, obs["options"]), confidence



def zoom_call(env: MedVRVQAEnv, box: Sequence[float], entropy: float) -> dict[str, Any]:
    """A zoom on ``box`` (fractions of the original, ``[x1, y1, x2, y2]``) of view 0, in the env's bbox format."""
    w, h = env.episode.views[0].size
    scale = {"norm": (1.0, 1.0), "norm1000": (1000.0, 1000.0), "pixel": (float(w), float(h))}[env.bbox_format]
    coords = [round(float(v) * scale[i % 2], 4) for i, v in enumerate(box)]
    return {"name": "zoom", "arguments": {"bbox_2d": coords, "source": 0}, "entropy": float(entropy)}


def box_around(x: float, y: float, side: float) -> tuple[float, float, float, float]:
    """A ``side`` x ``side`` box (fractions) centred on ``(x, y)``, shifted to lie inside the image."""
    x1 = min(max(x - side / 2, 0.0), 1.0 - side)
    y1 = min(max(y - side / 2, 0.0), 1.0 - side)
    return x1, y1, x1 + side, y1 + side


def sample_rng(env: MedVRVQAEnv, salt: str) -> np.random.Generator:
    """A generator seeded by the sample's id: the same sample gets the same draws in every run."""
    return np.random.default_rng([zlib.crc32(f"{salt}/{env.episode.sample.sample_id}".encode()), 0])


@dataclass
class PatchReaderAgent:
    """Reads every view it is shown with the patch reader, zooms where :meth:`plan` says, then answers.

    Args:
        reader: A patch-reader checkpoint path, a loaded reader, or ``None`` for the cached default
            (built on first use, a few CPU minutes).
        max_zooms: At most this many zooms (and never more than the step budget allows).
        zoom_fraction: Side of each zoom box, fraction of the image side (0.25: a 4x zoom).
        keep_unzoomed: After zooming, also count first-view detections that no zoom covered (see
            :meth:`~agents.patch_reader.reading.Findings.current`).
    """

    reader: Any = None
    max_zooms: int = 5
    zoom_fraction: float = 0.25
    keep_unzoomed: bool = False
    name: str = "patch-reader"
    _env: MedVRVQAEnv | None = field(default=None, repr=False)
    _findings: Findings = field(default_factory=Findings, repr=False)
    _plan: list[tuple[float, float, float, float]] = field(default_factory=list, repr=False)
    _plan_entropy: float = field(default=1.0, repr=False)
    _read_steps: set = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < float(self.zoom_fraction) <= 1.0:
            raise ValueError(f"zoom_fraction must be in (0, 1], got {self.zoom_fraction!r}")
        if isinstance(self.max_zooms, bool) or not isinstance(self.max_zooms, int) or self.max_zooms < 0:
            raise ValueError(f"max_zooms must be an integer >= 0, got {self.max_zooms!r}")

    def _classifier(self) -> Any:
        if not hasattr(self.reader, "classify"):
            from .patch_reader.store import load_reader

            self.reader = load_reader(self.reader)
        return self.reader

    def reset(self, env: MedVRVQAEnv, obs: dict[str, Any], info: dict[str, Any]) -> None:
        self._env = env
        self._classifier()
        self._findings = Findings(keep_unzoomed=self.keep_unzoomed)
        self._read_steps = set()
        self._plan, self._plan_entropy = [], 1.0

    # ------------------------------------------------------------------ policy
    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        step = int(obs["step"])
        if step not in self._read_steps:
            self._read_steps.add(step)
            self._findings.add_view(self._classifier(), obs["image"], obs["view_box"])
            if step == 0:
                budget = min(self.max_zooms, self._env.max_steps - 1) if "zoom" in self._env.tool_names else 0
                self._plan, self._plan_entropy = self.plan(obs, budget) if budget else ([], 0.0)
                self._plan = self._plan[:budget]
        if self._plan and self._env.max_steps - step > 1:
            return zoom_call(self._env, self._plan.pop(0), self._plan_entropy)
        text, confidence = self._findings.answer(obs["question"])
        return {"name": "answer", "arguments": {"text": as_option(text, obs["options"])},
                "entropy": binary_entropy(confidence)}

    def plan(self, obs: dict[str, Any], budget: int) -> tuple[list[tuple[float, float, float, float]], float]:
        """Zoom boxes (fractions of the original), in order, and the policy's entropy over them."""
        return [], 0.0


@dataclass
class NoZoomAgent(PatchReaderAgent):
    """The patch reader and its answer rules on the first view only: what looking closer is measured against."""

    max_zooms: int = 0
    name: str = "no-zoom"


@dataclass
class GuidedZoomAgent(PatchReaderAgent):
    """Zooms 4x on the first view's spots most likely to be the asked kind, then answers (no oracle).

    Spots are ranked by ``p(asked kind) + 0.5 * p(any finding)`` as read at the first view; each zoom
    goes to the best spot not already inside an earlier zoom box.
    """

    name: str = "guided"

    def plan(self, obs: dict[str, Any], budget: int) -> tuple[list[tuple[float, float, float, float]], float]:
        kind = asked_kind(obs["question"]) or "nodule"
        spots = sorted(self._findings.readings, key=lambda r: -(r.p(kind) + 0.5 * r.finding))
        side, inner = self.zoom_fraction, 0.15 * self.zoom_fraction
        boxes, scores = [], []
        for r in spots:
            if len(boxes) == budget:
                break
            if any(b[0] + inner <= r.x <= b[2] - inner and b[1] + inner <= r.y <= b[3] - inner for b in boxes):
                continue
            boxes.append(box_around(r.x, r.y, side))
            scores.append(r.p(kind) + 0.5 * r.finding)
        return boxes, normalised_entropy(np.asarray(scores)) if len(scores) > 1 else 0.0


@dataclass
class QuadrantSweepAgent(PatchReaderAgent):
    """The default scripted agent: zooms 2x on each quadrant (a sweep that covers the whole image), the
    quadrant holding the first view's likeliest spot of the asked kind first, then answers."""

    max_zooms: int = 4
    zoom_fraction: float = 0.5
    name: str = "scripted"

    def plan(self, obs: dict[str, Any], budget: int) -> tuple[list[tuple[float, float, float, float]], float]:
        kind = asked_kind(obs["question"]) or "nodule"
        scores = np.full(4, 1e-3)
        for r in self._findings.readings:
            q = (r.y >= 0.5) * 2 + (r.x >= 0.5)
            scores[q] = max(scores[q], r.p(kind) + 0.5 * r.finding)
        order = np.argsort(-scores, kind="stable")[:budget]
        centres = [(0.25 + 0.5 * (q % 2), 0.25 + 0.5 * (q // 2)) for q in order]
        return [box_around(x, y, self.zoom_fraction) for x, y in centres], normalised_entropy(scores[order])


@dataclass
class RandomZoomAgent(PatchReaderAgent):
    """``max_zooms`` 4x zooms at random places (seeded by the sample id), then answers: where looking is
    compared with looking anywhere, at the same budget."""

    name: str = "random-zooms"

    def plan(self, obs: dict[str, Any], budget: int) -> tuple[list[tuple[float, float, float, float]], float]:
        rng = sample_rng(self._env, "random-zooms")
        side = self.zoom_fraction
        return [box_around(*rng.uniform(side / 2, 1 - side / 2, 2), side) for _ in range(budget)], 1.0


def as_option(text: str, options_text: str) -> str:
    """For multiple choice, the letter of the option matching ``text`` (else the text itself)."""
    if not options_text:
        return text
    options = [line.split(". ", 1)[-1] for line in options_text.splitlines()]
    for i, option in enumerate(options):
        if normalize_answer(option) == normalize_answer(text):
            return option_letter(i)
    return option_letter(0)


@dataclass
class RandomAgent:
    """Uniformly random tool (within the action mask), random boxes and random answers: the chance baseline."""

    seed: int = 0
    name: str = "random"
    _env: MedVRVQAEnv | None = field(default=None, repr=False)
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0), repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def reset(self, env: MedVRVQAEnv, obs: dict[str, Any], info: dict[str, Any]) -> None:
        self._env = env

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        env = self._env
        allowed = np.flatnonzero(info["action_mask"])
        tool = env.tool_names[int(self._rng.choice(allowed))]
        answers = ["yes", "no", "left", "right", *QUADRANTS, "0", "1", "2", "3"]
        if obs["options"]:
            answers = [option_letter(i) for i in range(len(obs["options"].splitlines()))]
        x1, y1 = self._rng.uniform(0, 0.8, size=2)
        side = self._rng.uniform(0.1, 0.5)
        return {
            "tool": env.tool_names.index(tool),
            "bbox": np.array([x1, y1, min(1.0, x1 + side), min(1.0, y1 + side)], dtype=np.float32),
            "view": int(env.episode.current_view),
            "text": str(self._rng.choice(answers)),
        }
