"""The language-prior baseline: answer every question with its question type's most common training answer.

It never looks at the image, so it measures how much of a benchmark can be answered
from the question alone (VQA-RAD's closed questions are famously prior-heavy). The
prior is counted on the dataset's training split (``dataset.with_split("train")``),
never on the split being evaluated:

- multiple choice: the most common correct option *position* for the question type;
- yes/no questions: the more common of yes and no for the question type;
- open questions: the most common normalised answer for the question type.

Groups are ``(question_type, answer_type)``; a group the training split lacks falls
back to the answer type's overall majority. Datasets without a training split
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
    """Majority answers counted from training samples."""

    by_group: dict[tuple[str, str, str], str] = field(default_factory=dict)
    by_kind: dict[str, str] = field(default_factory=dict)
    samples: int = 0

    @classmethod
    def count(cls, samples: list[Sample]) -> AnswerPrior:
        groups: dict[tuple[str, str, str], Counter] = {}
        kinds: dict[str, Counter] = {}
        for s in samples:
            kind, answer = _kind_and_answer(s)
            if answer is None:
                continue
            groups.setdefault((s.question_type, s.answer_type, kind), Counter())[answer] += 1
            kinds.setdefault(kind, Counter())[answer] += 1
        # most_common breaks ties by first occurrence, which keeps the prior deterministic.
        return cls({k: c.most_common(1)[0][0] for k, c in groups.items()},
                   {k: c.most_common(1)[0][0] for k, c in kinds.items()}, len(samples))

    def answer(self, sample: Sample) -> str:
        kind, _ = _kind_and_answer(sample)
        guess = self.by_group.get((sample.question_type, sample.answer_type, kind)) or self.by_kind.get(kind)
        if kind == "choice":
            position = int(guess) if guess is not None else 0
            return option_letter(min(position, len(sample.options) - 1))
        return guess if guess is not None else "yes"


def _kind_and_answer(sample: Sample) -> tuple[str, str | None]:
    """("choice", position) | ("yes_no", "yes"/"no") | ("open", normalised answer)."""
    if sample.options:
        index = match_option_text(sample.answer, list(sample.options))
        return "choice", (str(index) if index is not None else None)
    polarity = parse_yes_no(sample.answer) if sample.answer_type == "closed" else None
    if polarity is not None:
        return "yes_no", polarity
    return "open", normalize_answer(sample.answer) or None


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
