"""The language-prior baseline: answer every question with its question type's most common training answer.

It never looks at the image, so it measures how much of a benchmark can be answered
from the question alone (VQA-RAD's closed questions are famously prior-heavy). The
prior is counted on the dataset's training split (``dataset.with_split("train")``),
never on the split being evaluated:

- multiple choice: the most common correct option *position* for the question type;
- yes/no questions: the more common of yes and no for the question type;
- open questions: the most common normalised answer for the question type.

Groups are ``(question_type, answer_type, has options)``, all read from the question's
metadata, never from its answer; a group the training split lacks falls back to the
answer type's overall majority. Datasets without a training split
(OmniMedVQA, MedXpertQA) get option A and "yes", and the agent says so once.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from medvr_env import MedVRVQAEnv
from medvr_env.data.sample import Sample, VQADataset, option_letter
from medvr_env.grading import match_option_text, normalize_answer, parse_yes_no

TRAIN_SPLIT = "train"


@dataclass
class AnswerPrior:
    """Majority answers counted from training samples, per ``(question_type, answer_type, multiple choice)``."""

    by_group: dict[tuple[str, str, bool], str] = field(default_factory=dict)
    by_answer_type: dict[tuple[str, bool], str] = field(default_factory=dict)
    samples: int = 0

    @classmethod
    def count(cls, samples: list[Sample]) -> AnswerPrior:
        groups: dict[tuple[str, str, bool], Counter] = {}
        fallback: dict[tuple[str, bool], Counter] = {}
        for s in samples:
            answer = _training_answer(s)
            if answer is None:
                continue
            choice = bool(s.options)
            groups.setdefault((s.question_type, s.answer_type, choice), Counter())[answer] += 1
            fallback.setdefault((s.answer_type, choice), Counter())[answer] += 1
        # most_common breaks ties by first occurrence, which keeps the prior deterministic.
        return cls({k: c.most_common(1)[0][0] for k, c in groups.items()},
                   {k: c.most_common(1)[0][0] for k, c in fallback.items()}, len(samples))

    def answer(self, sample: Sample) -> str:
        """The prior's answer; reads the question's type and options, never its reference answer."""
        choice = bool(sample.options)
        guess = (self.by_group.get((sample.question_type, sample.answer_type, choice))
                 or self.by_answer_type.get((sample.answer_type, choice)))
        if choice:
            return option_letter(min(int(guess or 0), len(sample.options) - 1))
        return guess if guess is not None else "yes"


def _training_answer(sample: Sample) -> str | None:
    """What the prior counts: the correct option's position, "yes"/"no", or the normalised answer."""
    if sample.options:
        index = match_option_text(sample.answer, list(sample.options))
        return None if index is None else str(index)
    return parse_yes_no(sample.answer) or normalize_answer(sample.answer) or None


def training_samples(dataset: VQADataset) -> list[Sample] | None:
    """The training split's samples of ``dataset``, or ``None`` when it has no training split."""
    if dataset.split == TRAIN_SPLIT:
        warnings.warn("the majority baseline is evaluated on the training split it counts its prior from",
                      stacklevel=3)
    with_split = getattr(dataset, "with_split", None)
    splits = getattr(dataset, "splits", (TRAIN_SPLIT,))
    if with_split is None or TRAIN_SPLIT not in splits:
        return None
    train = with_split(TRAIN_SPLIT)
    return [train[i] for i in range(len(train))]


@dataclass
class MajorityAnswerAgent:
    """Answers at once with the training split's majority answer for the question's type (no image)."""

    name: str = "majority"
    _prior: AnswerPrior | None = field(default=None, repr=False)
    _prior_source: int | None = field(default=None, repr=False)
    _env: MedVRVQAEnv | None = field(default=None, repr=False)

    def reset(self, env: MedVRVQAEnv, obs: dict[str, Any], info: dict[str, Any]) -> None:
        self._env = env
        if self._prior is None or self._prior_source != id(env.dataset):
            samples = training_samples(env.dataset)
            if samples is None:
                warnings.warn(f"{getattr(env.dataset, 'name', 'this dataset')} has no training split: the majority "
                              "baseline answers option A / 'yes'", stacklevel=2)
            self._prior, self._prior_source = AnswerPrior.count(samples or []), id(env.dataset)

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        return {"name": "answer", "arguments": {"text": self._prior.answer(self._env.episode.sample)}}
