"""PathVQA (He et al., 2020; MIT): pathology VQA, yes/no and open questions.

**Hugging Face parquet release** (``flaviagiammarino/path-vqa``, the copy the literature uses now;
read by default)::

    <root>/data/train-00000-of-0000N-<hash>.parquet        about 19.7k rows in all
    <root>/data/validation-00000-of-0000N-<hash>.parquet    about 6.3k rows
    <root>/data/test-00000-of-0000N-<hash>.parquet          about 6.7k rows

with columns ``image`` (a struct ``{bytes, path}``: the encoded JPEG and its original file name),
``question`` and ``answer``. Only ``question``, ``answer`` and ``image.path`` are read when the split
is opened; a sample keeps its file, row group and row, and its image bytes are read on demand, one
row group at a time (the last row group read is kept, so sequential access does not re-read it).
No image bytes are held otherwise. pyarrow is needed for this layout (``pip install "medvr[data]"``).

**Original release** (github.com/UCSD-AI4H/PathVQA, Google Drive ``pvqa``)::

    <root>/qas/train/train_qa.pkl   [{"image": "train_0422", "question": ..., "answer": ...}, ...]
    <root>/qas/val/val_qa.pkl
    <root>/qas/test/test_qa.pkl
    <root>/qas/train_vqa.pkl        the LXMERT-style copy: {"img_id", "sent", "label": {answer: score},
                                    "answer_type": "yes/no" | "other", "question_id", ...}
    <root>/images/{train,val,test}/<image>.jpg

Its annotations are Python pickles, and unpickling runs whatever code the file names, so they are
read only when you pass ``trust_pickle=True`` for a copy you trust (``{split}_qa.pkl`` first, else
``{split}_vqa.pkl``). Without it a :class:`UntrustedPickleError` explains this and points to the
parquet release. When both layouts are present the parquet release is used.

**Labels.** Yes/no answers are ``closed``, all others ``open`` (the convention of the PathVQA paper
and of every later report). The release has no question categories, so ``question_type`` is derived
from the question the way the PathVQA paper groups them: ``"yes/no"`` for closed questions, else its
leading question word (``what``, ``where``, ``how``, ``how much/many``, ``when``, ``whose``, ``which``,
``who``, ``why``), else ``"other"``.
"""

from __future__ import annotations

import pickle
import re
import threading
from bisect import bisect_right
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .files import DatasetFormatError, DatasetNotFoundError, FileDataset, closed_or_open
from .images import ImageDecodeError, decode_image, read_regular_file
from .records import text_field
from .sample import Sample

PARQUET_DIR = "data"
PICKLE_SPLIT_DIRS = {"train": "train", "validation": "val", "test": "test"}
QUESTION_WORDS = ("what", "where", "how", "when", "whose", "which", "who", "why")
INSTALL_HINT = 'pip install "medvr[data]" (or pip install pyarrow)'


class UntrustedPickleError(PermissionError):
    """A dataset is only available as pickle files and ``trust_pickle=True`` was not given."""


def import_pyarrow_parquet():
    """``pyarrow.parquet``, or an ImportError saying how to install it (it is an optional dependency)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(f"reading parquet datasets (PathVQA's Hugging Face release) needs pyarrow: "
                          f"{INSTALL_HINT}") from exc
    return pq


def question_category(question: str, answer_type: str) -> str:
    """The PathVQA paper's question groups: yes/no, or the leading question word."""
    if answer_type == "closed":
        return "yes/no"
    words = re.findall(r"[a-z]+", question.lower())
    if words[:2] in (["how", "much"], ["how", "many"]):
        return "how much/many"
    return words[0] if words and words[0] in QUESTION_WORDS else "other"


class PathVQADataset(FileDataset):
    """PathVQA from the Hugging Face parquet release, or the original pickles with ``trust_pickle=True``.

    Args:
        trust_pickle: Allow reading the original release's ``.pkl`` annotations (unpickling runs code).
        The other arguments are :class:`~medvr_env.data.files.FileDataset`'s.
    """

    name = "pathvqa"
    title = "PathVQA"
    default_dirname = "pathvqa"
    homepage = ("https://huggingface.co/datasets/flaviagiammarino/path-vqa (parquet; original release: "
                "https://github.com/UCSD-AI4H/PathVQA)")
    layout = ("data/{train,validation,test}-*.parquet (Hugging Face), or qas/<split>/<split>_qa.pkl and "
              "images/<split>/ (original, needs trust_pickle=True)")
    splits = ("train", "validation", "test")
    split_aliases = {"val": "validation", "validate": "validation", "dev": "validation"}

    def __init__(
        self,
        split: str = "test",
        *,
        trust_pickle: bool = False,
        **kwargs: Any,
    ) -> None:
        self.trust_pickle = bool(trust_pickle)
        self.layout_used = ""
        self._files: list[Path] = []
        self._row_group_starts: list[list[int]] = []
        self._init_parquet_state()
        super().__init__(split, **kwargs)
        self._config.update(trust_pickle=self.trust_pickle)

    def _init_parquet_state(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[int, Any] = {}
        self._last_group: tuple[int, int, list[Any]] | None = None

    # Pickled datasets (vector-env workers) reopen their parquet files lazily.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_handles", "_last_group"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_parquet_state()

    # ------------------------------------------------------------ reading
    def read_split(self, split: str) -> Iterable[Sample]:
        files = sorted((self.root / PARQUET_DIR).glob(f"{split}-*.parquet"))
        if files:
            self.layout_used = "parquet"
            return self._read_parquet(split, files)
        folder = PICKLE_SPLIT_DIRS[split]
        pickles = [self.root / "qas" / folder / f"{folder}_qa.pkl", self.root / "qas" / f"{folder}_vqa.pkl"]
        found = next((p for p in pickles if p.is_file()), None)
        if found is None:
            raise DatasetNotFoundError(
                f"PathVQA split {split!r} not found in {self.root.resolve()}: tried "
                f"{self.root.resolve() / PARQUET_DIR / (split + '-*.parquet')} (Hugging Face parquet release) and "
                f"{[str(p.resolve()) for p in pickles]} (original release). {self.title} is published at "
                f"{self.homepage}"
            )
        if not self.trust_pickle:
            raise UntrustedPickleError(
                f"PathVQA split {split!r} is only available here as the original release's pickle file {found}. "
                "Unpickling runs arbitrary code named in the file, so MedVR reads it only when you pass "
                "trust_pickle=True (dataset_kwargs={'trust_pickle': True}) for a copy you trust. The Hugging Face "
                "parquet release (https://huggingface.co/datasets/flaviagiammarino/path-vqa, files "
                "data/<split>-*.parquet) has the same questions and is read without this risk."
            )
        self.layout_used = "pickle"
        return self._read_pickle(split, found, folder)

    def _read_parquet(self, split: str, files: list[Path]) -> Iterable[Sample]:
        pq = import_pyarrow_parquet()
        import pyarrow as pa
        self._files = files
        self._row_group_starts = []
        offset = 0
        for file_index, path in enumerate(files):
            try:
                pf = pq.ParquetFile(path)
                names = set(pf.schema_arrow.names)
                missing = {"image", "question", "answer"} - names
                if missing:
                    raise DatasetFormatError(f"{path}: missing column(s) {sorted(missing)} (has {sorted(names)}); "
                                             "expected image {bytes, path}, question, answer")
                image_type = pf.schema_arrow.field("image").type
                image_fields = [image_type.field(i).name for i in range(image_type.num_fields)] \
                    if isinstance(image_type, pa.StructType) else []
                if "bytes" not in image_fields:
                    raise DatasetFormatError(f"{path}: column 'image' must be a struct with a 'bytes' field "
                                             f"(the Hugging Face Image feature), got {image_type}")
                columns = ["question", "answer"] + (["image.path"] if "path" in image_fields else [])
                table = pf.read(columns=columns)
            except DatasetFormatError:
                raise
            except Exception as exc:  # pyarrow raises several types for damaged files
                raise DatasetFormatError(f"cannot read parquet file {path}: {type(exc).__name__}: {exc}") from exc
            starts, total = [], 0
            for g in range(pf.metadata.num_row_groups):
                starts.append(total)
                total += pf.metadata.row_group(g).num_rows
            self._row_group_starts.append(starts)
            questions = table.column("question").to_pylist()
            answers = table.column("answer").to_pylist()
            paths = table.column("image").combine_chunks().field("path").to_pylist() \
                if "path" in image_fields else [None] * table.num_rows
            for row, (question, answer, image_path) in enumerate(zip(questions, answers, paths)):
                where = f"{path.name} row {row}"
                record = {"question": question, "answer": answer}
                yield self._sample(
                    record, where, split, sample_index=offset + row,
                    question_key="question", answer=text_field(record, "answer", where),
                    image_key=f"{PARQUET_DIR}/{path.name}#{row}",
                    meta={"file": path.name, "row": row, "image_path": image_path or ""},
                )
            offset += table.num_rows

    def _read_pickle(self, split: str, path: Path, folder: str) -> Iterable[Sample]:
        try:
            records = pickle.loads(read_regular_file(path))  # noqa: S301 - only with trust_pickle=True, see read_split
        except Exception as exc:
            raise DatasetFormatError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(records, list):
            raise DatasetFormatError(f"{path}: expected a list of records, got {type(records).__name__}")
        lxmert = path.name.endswith("_vqa.pkl")
        for i, record in enumerate(records):
            where = f"{path.name} record {i}"
            if not isinstance(record, dict):
                raise DatasetFormatError(f"{where}: expected a dict, got {type(record).__name__}")
            if lxmert:
                labels = require_dict(record, "label", where)
                if not labels:
                    raise DatasetFormatError(f"{where}: 'label' has no answer")
                answer = str(max(labels, key=lambda a: labels[a])).strip()
                image, question_key = text_field(record, "img_id", where), "sent"
                extra = {"question_id": str(record.get("question_id", "")),
                         "answer_type_original": str(record.get("answer_type", ""))}
            else:
                answer = text_field(record, "answer", where)
                image, question_key, extra = text_field(record, "image", where), "question", {}
            yield self._sample(record, where, split, sample_index=i, question_key=question_key, answer=answer,
                               image_key=f"images/{folder}/{image}.jpg", meta={"image": image, **extra})

    def _sample(self, record: dict[str, Any], where: str, split: str, *, sample_index: int, question_key: str,
                answer: str, image_key: str, meta: dict[str, Any]) -> Sample:
        question = text_field(record, question_key, where)
        answer_type = closed_or_open(answer)
        return Sample(
            sample_id=f"pathvqa/{split}/{sample_index}",
            question=question,
            answer=answer,
            image_key=image_key,
            answer_type=answer_type,
            question_type=question_category(question, answer_type),
            modality="pathology",
            split=split,
            meta=meta,
        )

    # ------------------------------------------------------------ pixels
    def read_pixels(self, sample: Sample) -> np.ndarray:
        if self.layout_used != "parquet":
            return super().read_pixels(sample)
        file_name, row = sample.meta["file"], int(sample.meta["row"])
        file_index = next((i for i, f in enumerate(self._files) if f.name == file_name), None)
        if file_index is None:
            raise ImageDecodeError(f"{sample.sample_id}: parquet file {file_name} is not part of this split")
        starts = self._row_group_starts[file_index]
        group = bisect_right(starts, row) - 1
        data = self._row_group_bytes(file_index, group)[row - starts[group]]
        label = f"{self._files[file_index]} row {row}" + (f" ({sample.meta['image_path']})"
                                                           if sample.meta.get("image_path") else "")
        if not data:
            raise ImageDecodeError(f"image {label} has no bytes in the parquet file")
        return decode_image(data, name=label, max_pixels=self.max_image_pixels)

    def _row_group_bytes(self, file_index: int, group: int) -> list[Any]:
        """The ``image.bytes`` of one row group (the last one read is kept)."""
        with self._lock:
            if self._last_group is not None and self._last_group[:2] == (file_index, group):
                return self._last_group[2]
            handle = self._handles.get(file_index)
            if handle is None:
                handle = import_pyarrow_parquet().ParquetFile(self._files[file_index])
                self._handles[file_index] = handle
            try:
                table = handle.read_row_group(group, columns=["image.bytes"])
            except Exception as exc:
                raise ImageDecodeError(f"cannot read row group {group} of {self._files[file_index]}: "
                                       f"{type(exc).__name__}: {exc}") from exc
            values = table.column("image").combine_chunks().field("bytes").to_pylist()
            self._last_group = (file_index, group, values)
            return values


def require_dict(record: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = record.get(key)
    if not isinstance(value, dict):
        raise DatasetFormatError(f"{where}: field {key!r} must be a dict of answer -> score, got {value!r}")
    return value
