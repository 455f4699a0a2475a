"""The one schema every dataset adapter produces: a :class:`Sample`.

A sample is pure metadata. Its pixels are loaded by the dataset that produced it
(``dataset.load_image(sample)``), which owns decoding and caching, so samples stay
cheap to create, copy, pickle and log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

AnswerType = Literal["closed", "open"]
BoxTuple = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One medical VQA item.

    Attributes:
        sample_id: Stable identifier, unique within its dataset and split.
        question: The question text as published (normalisation for observations happens in the env).
        answer: The reference answer. For multiple choice, the text of the correct option.
        image_key: What the dataset needs to find the pixels (a relative path, a generator key, ...).
        options: Answer options for multiple-choice questions, in display order (letters A, B, ... by position).
        answer_type: ``"closed"`` (yes/no or choice among options) or ``"open"`` (free text).
        question_type: Dataset-specific category (e.g. ``"presence"``, ``"PRES"``).
        modality: Imaging modality (``"CR"``, ``"CT"``, ``"MR"``, ``"US"``, ``"fundus"``, ...), if known.
        organ: Body part or organ, if known.
        split: The split this sample belongs to.
        eval_boxes: Boxes ``(x1, y1, x2, y2)`` in original-image pixels, for evaluation only.
            They are never shown to the policy.
        meta: Anything else worth keeping (dataset-specific fields), JSON-friendly values only.
    """

    sample_id: str
    question: str
    answer: str
    image_key: str
    options: tuple[str, ...] = ()
    answer_type: AnswerType = "open"
    question_type: str = ""
    modality: str = ""
    organ: str = ""
    split: str = ""
    eval_boxes: tuple[BoxTuple, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (used in trajectory logs)."""
        return {
            "sample_id": self.sample_id,
            "question": self.question,
            "answer": self.answer,
            "image_key": self.image_key,
            "options": list(self.options),
            "answer_type": self.answer_type,
            "question_type": self.question_type,
            "modality": self.modality,
            "organ": self.organ,
            "split": self.split,
            "eval_boxes": [list(b) for b in self.eval_boxes],
            "meta": dict(self.meta),
        }


@runtime_checkable
class VQADataset(Protocol):
    """What the env needs from a dataset.

    ``load_image`` returns an ``(H, W, 3)`` ``uint8`` RGB array. The array may be
    shared (cached); callers must not write to it, so implementations should mark it
    read-only (``arr.flags.writeable = False``).
    """

    name: str
    split: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def load_image(self, sample: Sample) -> np.ndarray: ...


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return a read-only ``(H, W, 3)`` uint8 view/copy of a grayscale, RGB or RGBA array."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = np.ascontiguousarray(arr[:, :, :3])
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr)
    arr.flags.writeable = False
    return arr


def option_letter(index: int) -> str:
    """``0 -> 'A'``, ``1 -> 'B'``, ... (options are lettered by position)."""
    if not 0 <= index < 26:
        raise ValueError(f"option index {index} out of range 0..25")
    return chr(ord("A") + index)


def format_options(options: Sequence[str]) -> str:
    """Render options the way the observation and prompts show them: ``"A. first\\nB. second"``."""
    return "\n".join(f"{option_letter(i)}. {text}" for i, text in enumerate(options))
