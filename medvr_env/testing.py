"""Conformance checks for people who add a dataset: call them from your own tests.

``check_dataset(MyDataset(split="test", ...))`` verifies what the env relies on: samples
that follow the :class:`~medvr_env.data.sample.Sample` schema, images as read-only
``(H, W, 3)`` uint8 arrays, evaluation boxes inside the image, multiple-choice answers
that name one of the options, a dataset that pickles (vector-env workers), and an env
that passes Gymnasium's ``check_env`` on it.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
from gymnasium.utils.env_checker import check_env

from .data.sample import Sample, VQADataset
from .grading import extract_option_letter, match_option_text


class DatasetCheckError(AssertionError):
    """A dataset breaks a rule the env relies on; the message says which sample and which rule."""


def check_dataset(dataset: VQADataset, *, max_samples: int = 20, check_env_too: bool = True) -> None:
    """Check the first ``max_samples`` samples of ``dataset`` (and an env built on it)."""
    for attr in ("name", "split"):
        if not isinstance(getattr(dataset, attr, None), str):
            raise DatasetCheckError(f"dataset.{attr} must be a string")
    if len(dataset) < 1:
        raise DatasetCheckError(f"dataset {dataset.name!r} split {dataset.split!r} is empty")
    seen: set[str] = set()
    for i in range(min(max_samples, len(dataset))):
        sample = dataset[i]
        where = f"{dataset.name}[{i}]"
        if not isinstance(sample, Sample):
            raise DatasetCheckError(f"{where} is a {type(sample).__name__}, not a Sample")
        if sample.sample_id in seen:
            raise DatasetCheckError(f"{where}: sample_id {sample.sample_id!r} is not unique")
        seen.add(sample.sample_id)
        _check_sample(sample, where)
        image = dataset.load_image(sample)
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
            raise DatasetCheckError(f"{where}: load_image must return an (H, W, 3) uint8 array, got "
                                    f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image))}")
        if image.flags.writeable:
            raise DatasetCheckError(f"{where}: load_image must return a read-only array (it may be shared)")
        h, w = image.shape[:2]
        for box in sample.eval_boxes:
            x1, y1, x2, y2 = box
            if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
                raise DatasetCheckError(f"{where}: eval box {box} is not inside the {w}x{h} image")
    try:
        clone = pickle.loads(pickle.dumps(dataset))
    except Exception as exc:  # noqa: BLE001 - any failure means vector workers cannot receive it
        raise DatasetCheckError(f"dataset {dataset.name!r} does not pickle (vector envs need it): {exc}") from exc
    if len(clone) != len(dataset) or clone[0] != dataset[0]:
        raise DatasetCheckError(f"dataset {dataset.name!r} changes when pickled")
    if check_env_too:
        from .env import MedVRVQAEnv

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(MedVRVQAEnv(dataset=dataset, split=dataset.split), skip_render_check=True)


def _check_sample(sample: Sample, where: str) -> None:
    if not sample.question.strip():
        raise DatasetCheckError(f"{where}: empty question")
    if not sample.answer.strip():
        raise DatasetCheckError(f"{where}: empty answer")
    if sample.answer_type not in ("closed", "open"):
        raise DatasetCheckError(f"{where}: answer_type must be 'closed' or 'open', got {sample.answer_type!r}")
    if sample.options:
        if sample.answer_type != "closed":
            raise DatasetCheckError(f"{where}: a multiple-choice question is closed")
        if match_option_text(sample.answer, list(sample.options)) is None and \
                extract_option_letter(sample.answer, len(sample.options)) is None:
            raise DatasetCheckError(f"{where}: answer {sample.answer!r} is none of the options {list(sample.options)}")
