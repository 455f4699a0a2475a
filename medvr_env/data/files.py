"""The common base of every dataset read from files: where the data lives, filters, slicing, images.

An adapter subclasses :class:`FileDataset` and implements two things: ``read_split``
(parse the official manifest of one split into :class:`Sample` objects) and,
when images are not plain files under the root, ``read_pixels``. Everything else
(finding the root, the missing-dataset error, ``num_samples`` / ``start_index`` /
``question_types`` / ``answer_types``, the bounded image cache, safe paths) lives
here once.

Where the data is looked for, first match wins:

1. ``data_root=`` given to the env or dataset (the dataset's own folder);
2. ``$MEDVR_DATA/<default_dirname>`` when the ``MEDVR_DATA`` environment variable is set;
3. otherwise ``./data/<default_dirname>``, then ``../shared/data/<default_dirname>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

from .images import (DEFAULT_CACHE_BYTES, DEFAULT_MAX_PIXELS, ImageCache, decode_image, read_regular_file,
                     resolve_inside)
from .sample import AnswerType, Sample

DATA_ENV_VAR = "MEDVR_DATA"
DEFAULT_DATA_FOLDERS = ("data", os.path.join("..", "shared", "data"))
"""Searched, relative to the working directory, when neither ``data_root`` nor ``$MEDVR_DATA`` is given:
``./data/<folder>``, then ``../shared/data/<folder>`` (a shared data folder beside the checkout)."""
ANSWER_TYPES: tuple[AnswerType, ...] = ("closed", "open")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where we looked. The message says where we looked and where to get them."""


class DatasetFormatError(ValueError):
    """A manifest does not have the layout its dataset publishes (missing field, wrong type, ...)."""


def find_data_root(data_root: str | os.PathLike[str] | None, dataset: type[FileDataset]) -> Path:
    """The folder a dataset is read from; :class:`DatasetNotFoundError` when it does not exist."""
    if data_root is not None:
        root = Path(data_root).expanduser()
        how = "data_root="
    elif os.environ.get(DATA_ENV_VAR):
        root = Path(os.environ[DATA_ENV_VAR]).expanduser() / dataset.default_dirname
        how = f"${DATA_ENV_VAR}/{dataset.default_dirname}"
    else:
        tried = [Path(folder) / dataset.default_dirname for folder in DEFAULT_DATA_FOLDERS]
        for candidate in tried:
            if candidate.is_dir():
                return candidate
        raise DatasetNotFoundError(
            f"{dataset.title} not found: tried {', '.join(str(t.resolve()) for t in tried)}. Pass "
            f"data_root=/path/to/{dataset.default_dirname} (gym.make(..., data_root=...), or `medvr eval "
            f"--data-root ...`), or set {DATA_ENV_VAR} to the folder that holds {dataset.default_dirname}/. "
            f"Expected layout: {dataset.layout}. {dataset.title} is published at {dataset.homepage}"
        )
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"{dataset.title} not found: tried {root.resolve()} (from {how}), which is not a folder. "
            f"Expected layout: {dataset.layout}. {dataset.title} is published at {dataset.homepage}"
        )
    return root


def read_manifest_text(path: Path) -> str:
    """The text of a UTF-8 manifest (a BOM is dropped); errors name the file, and for bad UTF-8 the line and column.

    Only regular files are read, so a named pipe in place of a manifest is an error, not a hang.
    """
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"manifest not found: {path}") from None
    except OSError as exc:
        raise DatasetFormatError(f"cannot read manifest {path}: {exc}") from exc
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        start = bom + exc.start
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise DatasetFormatError(
            f"{path} line {line}, column {column}: byte {data[start:start + 1]!r} is not UTF-8 ({exc.reason}). "
            "Manifests must be UTF-8: re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None


def read_json(path: Path, text: str | None = None) -> Any:
    """Parse a JSON manifest (``text``: its contents, when already read); errors name the file and the position."""
    try:
        return json.loads(read_manifest_text(path) if text is None else text)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path} is not valid JSON: {exc}") from exc


def read_jsonl_numbered(path: Path, text: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of a JSON-lines manifest (blank lines skipped); errors name the file and line."""
    records = []
    for number, line in enumerate((read_manifest_text(path) if text is None else text).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path} line {number} is not valid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise DatasetFormatError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
        records.append((number, record))
    return records


def read_jsonl(path: Path, text: str | None = None) -> list[dict[str, Any]]:
    """Parse a JSON-lines manifest (blank lines skipped); errors name the file and line."""
    return [record for _, record in read_jsonl_numbered(path, text)]


def require_field(record: dict[str, Any], key: str, where: str) -> Any:
    """``record[key]``, or a :class:`DatasetFormatError` naming the record's location and the fields it has."""
    try:
        return record[key]
    except (KeyError, TypeError):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DatasetFormatError(f"{where}: missing field {key!r} (has {keys})") from None


def closed_or_open(answer: str, options: Sequence[str] = ()) -> AnswerType:
    """The literature's convention when a dataset does not say: yes/no or multiple choice is closed."""
    return "closed" if options or answer.strip().lower() in ("yes", "no") else "open"


class FileDataset:
    """Base class of datasets read from a folder in their official layout.

    Args:
        split: Which split to read; ``splits`` lists the valid names.
        data_root: The dataset's folder (else ``$MEDVR_DATA/<default_dirname>``).
        num_samples: Keep this many samples (after filters and ``start_index``); default all.
        start_index: Skip this many samples first.
        question_types: Keep only these question types (names as the dataset writes them).
        answer_types: Keep only ``"closed"`` and/or ``"open"`` questions.
        cache_bytes: Budget of the decoded-image cache.
        max_image_pixels: Refuse larger images before decoding them.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    default_dirname: ClassVar[str] = ""
    homepage: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    split_aliases: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        split: str = "test",
        data_root: str | os.PathLike[str] | None = None,
        num_samples: int | None = None,
        start_index: int = 0,
        question_types: str | Sequence[str] | None = None,
        answer_types: str | Sequence[str] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        split = self.split_aliases.get(split, split)
        if split not in self.splits:
            raise ValueError(f"{self.title} has no split {split!r}; splits: {list(self.splits)}")
        self.split = split
        self.root = find_data_root(data_root, type(self))
        self.max_image_pixels = int(max_image_pixels)
        self._cache = ImageCache(cache_bytes)
        all_samples = list(self.read_split(split))
        self.available_question_types: tuple[str, ...] = tuple(sorted({s.question_type for s in all_samples}))
        samples = _filter(all_samples, "question_types", question_types, self.available_question_types,
                          lambda s: s.question_type)
        samples = _filter(samples, "answer_types", answer_types, ANSWER_TYPES, lambda s: s.answer_type)
        self.samples: list[Sample] = _slice(samples, start_index, num_samples, self.title, split)
        self._config = {"data_root": str(self.root), "cache_bytes": cache_bytes, "max_image_pixels": max_image_pixels}

    # ------------------------------------------------------------ for subclasses
    def read_split(self, split: str) -> Iterable[Sample]:
        """Parse the official manifest of ``split`` into samples (in the file's order)."""
        raise NotImplementedError

    def read_pixels(self, sample: Sample) -> np.ndarray:
        """Decode one sample's image; the default reads ``root / image_key`` (relative paths only)."""
        return decode_image(self.path_of(sample.image_key), max_pixels=self.max_image_pixels)

    def path_of(self, relative: str) -> Path:
        """A manifest path resolved safely inside the dataset root."""
        return resolve_inside(self.root, relative)

    # ------------------------------------------------------------ VQADataset
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def load_image(self, sample: Sample) -> np.ndarray:
        """The sample's ``(H, W, 3)`` uint8 read-only image, decoded once and kept in a bounded cache."""
        return self._cache.get(sample.image_key, lambda: self.read_pixels(sample))

    @property
    def cache(self) -> ImageCache:
        return self._cache

    def with_split(self, split: str) -> FileDataset:
        """The same dataset (same root and options, no filters or slicing) on another split."""
        return type(self)(split=split, **self._config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, root={str(self.root)!r}, samples={len(self)})"


def _filter(samples: list[Sample], what: str, wanted, valid: Sequence[str], key) -> list[Sample]:
    if wanted is None:
        return samples
    requested = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [w for w in requested if w not in valid]
    if not requested or unknown:
        raise ValueError(f"invalid {what} {requested!r}" + (f": unknown {unknown!r}" if unknown else "")
                         + f"; valid: {list(valid)}")
    keep = set(requested)
    return [s for s in samples if key(s) in keep]


def _slice(samples: list[Sample], start_index: int, num_samples: int | None, title: str, split: str) -> list[Sample]:
    if not isinstance(start_index, int) or start_index < 0:
        raise ValueError(f"start_index must be an integer >= 0, got {start_index!r}")
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"num_samples must be an integer >= 1 or None, got {num_samples!r}")
    if start_index >= len(samples):
        raise ValueError(f"start_index={start_index} but {title} split {split!r} has {len(samples)} "
                         "samples after filters")
    end = len(samples) if num_samples is None else start_index + num_samples
    if end > len(samples):
        raise ValueError(f"num_samples={num_samples} from start_index={start_index} asks for more than the "
                         f"{len(samples)} samples {title} split {split!r} has after filters")
    return samples[start_index:end]
