"""Small, deterministic in-test dataset and env factory (independent of the procedural dataset)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from medvr_env.data.sample import Sample, as_rgb_uint8
from medvr_env.env import MedVRVQAEnv

# (width, height) of each image; image i belongs to sample i.
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((800, 600), (512, 512), (2048, 1536), (640, 960))

SAMPLES: tuple[Sample, ...] = (
    Sample(
        sample_id="arr-0",
        question="Is there a nodule in the left lung?",
        answer="yes",
        image_key="0",
        answer_type="closed",
        question_type="presence",
        modality="CR",
        organ="chest",
        split="test",
        eval_boxes=((100.0, 120.0, 260.0, 300.0),),
    ),
    Sample(
        sample_id="arr-1",
        question="Which organ is shown?",
        answer="liver",
        image_key="1",
        answer_type="open",
        question_type="organ",
        modality="CT",
        split="test",
    ),
    Sample(
        sample_id="arr-2",
        question="What is the most likely finding?",
        answer="Pleural effusion",
        image_key="2",
        options=("Pneumonia", "Pleural effusion", "Pneumothorax", "Normal"),
        answer_type="closed",
        question_type="diagnosis",
        modality="CR",
        split="test",
    ),
    Sample(
        sample_id="arr-3",
        question="Is the kidney enlarged?",
        answer="no",
        image_key="3",
        answer_type="closed",
        modality="US",
        split="test",
    ),
)

YES_NO, OPEN, CHOICE, PORTRAIT = 0, 1, 2, 3


@lru_cache(maxsize=None)
def make_image(index: int, seed: int = 1234) -> np.ndarray:
    """A deterministic read-only (H, W, 3) uint8 image: gradients plus noise, so resizes are non-trivial.

    Cached: every ArrayDataset with the same seed shares the same (read-only) arrays.
    """
    w, h = IMAGE_SIZES[index]
    rng = np.random.default_rng(seed + index)
    xx = np.arange(w, dtype=np.uint16)[None, :]
    yy = np.arange(h, dtype=np.uint16)[:, None]
    image = rng.integers(0, 64, size=(h, w, 3), dtype=np.uint16)
    image[..., 0] += xx * 255 // max(w - 1, 1)
    image[..., 1] += yy * 255 // max(h - 1, 1)
    image[..., 2] += (xx + yy) % 256
    return as_rgb_uint8((image % 256).astype(np.uint8))


class ArrayDataset:
    """A VQADataset over a few in-memory numpy images of different sizes."""

    name = "array"

    def __init__(self, split: str = "test", seed: int = 1234) -> None:
        self.split = split
        self._samples = SAMPLES
        self._images = [make_image(i, seed) for i in range(len(IMAGE_SIZES))]

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Sample:
        if not isinstance(index, (int, np.integer)) or not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._samples[index]

    def load_image(self, sample: Sample) -> np.ndarray:
        return self._images[int(sample.image_key)]


def make_env(**kw: Any) -> MedVRVQAEnv:
    """``MedVRVQAEnv`` over :class:`ArrayDataset` (the dataset argument is fixed)."""
    return MedVRVQAEnv(dataset=ArrayDataset(), **kw)
