"""Your own medical VQA data: a documented JSONL or CSV manifest next to the images.

Folder layout (``data_root=`` or ``$MEDVR_DATA/custom``)::

    <root>/train.jsonl        one manifest per split: train, validation, test
    <root>/test.csv           ... as JSON lines or CSV (not both for one split)
    <root>/images/...         images anywhere under the root (PNG, JPEG, TIFF, BMP, DICOM, ...)

or a single ``<root>/manifest.jsonl`` (or ``manifest.csv``) whose records all carry ``split``.
Splits are ``train``, ``validation`` (aliases ``val``, ``dev``) and ``test``.

Fields of a record (JSONL: one JSON object per line; CSV: a header row with these column names,
UTF-8; empty cells count as absent):

==============  ========  ===========================================================================
field           required  meaning
==============  ========  ===========================================================================
image           yes       image path relative to the root, e.g. ``images/case_001.png``; paths that
                          leave the root are refused
question        yes       the question text
answer          yes       the reference answer; for multiple choice the text of the correct option,
                          or its letter (``"B"``)
options         no        multiple-choice options in display order: a JSON list (``["CT", "MR"]``),
                          or in CSV ``CT|MR|X-ray`` (or a JSON list as text); lettered A, B, ...
answer_type     no        ``closed`` or ``open`` (any case); default ``closed`` for multiple choice
                          and yes/no answers, else ``open``
question_type   no        your category (``presence``, ``size``, ...), used by ``question_types=``
modality        no        ``CT``, ``MR``, ``CR``, ``US``, ...
organ           no        body part or organ
split           no        ``train``/``validation``/``test``; required in ``manifest.*``, and in a
                          per-split file it must match the file's split when given
boxes           no        evaluation-only boxes ``[[x1, y1, x2, y2], ...]`` in original-image pixels
                          (CSV: the same JSON as text, or ``x1 y1 x2 y2; x1 y1 x2 y2``)
id              no        a unique id; default ``<file name>:<line>``
==============  ========  ===========================================================================

Any other fields are kept in ``Sample.meta`` (as text for CSV). A record that breaks these rules
(missing field, answer not among the options, malformed box, duplicate id, wrong split) raises a
:class:`~medvr_env.data.files.DatasetFormatError` naming the file and line.

Example ``train.jsonl`` line::

    {"image": "images/ct_001.png", "question": "Is there a nodule?", "answer": "yes",
     "question_type": "presence", "modality": "CT", "organ": "lung", "boxes": [[120, 88, 160, 130]]}

and the same as ``train.csv``::

    image,question,answer,options,question_type,modality,organ,boxes
    images/ct_001.png,Is there a nodule?,yes,,presence,CT,lung,"[[120, 88, 160, 130]]"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from .files import DatasetFormatError, DatasetNotFoundError, FileDataset, closed_or_open, read_jsonl_numbered
from .images import UnsafePathError
from .pmc_vqa import read_csv
from .records import check_box, letter_index, text_field
from .sample import BoxTuple, Sample

KNOWN_FIELDS = ("image", "question", "answer", "options", "answer_type", "question_type", "modality", "organ",
                "split", "boxes", "id")
MANIFEST = "manifest"


class CustomVQADataset(FileDataset):
    """A user's own data in the generic JSONL/CSV format of the module docstring."""

    name = "custom"
    title = "Custom VQA data"
    default_dirname = "custom"
    homepage = "your own files; the format is documented in medvr_env/data/custom.py"
    layout = ("<split>.jsonl or <split>.csv (train, validation, test), or manifest.jsonl / manifest.csv "
              "with a split field")
    splits = ("train", "validation", "test")
    split_aliases = {"val": "validation", "dev": "validation", "valid": "validation"}

    def read_split(self, split: str) -> Iterable[Sample]:
        per_split = [self.root / f"{split}.{ext}" for ext in ("jsonl", "csv")]
        shared = [self.root / f"{MANIFEST}.{ext}" for ext in ("jsonl", "csv")]
        for group in (per_split, shared):
            present = [p for p in group if p.is_file()]
            if len(present) > 1:
                raise DatasetFormatError(f"both {present[0]} and {present[1]} exist; keep one manifest per split")
            if present:
                return self._read(present[0], split, selects=group is shared)
        raise DatasetNotFoundError(
            f"no manifest for split {split!r} in {self.root.resolve()}: tried "
            f"{[str(p.resolve()) for p in per_split + shared]}. The format is documented in "
            "medvr_env/data/custom.py (image, question, answer, options, answer_type, question_type, modality, "
            "organ, split, boxes, id)."
        )

    def _read(self, path: Path, split: str, selects: bool) -> Iterable[Sample]:
        if path.suffix == ".csv":
            header, rows = read_csv(path)
            missing = [c for c in ("image", "question", "answer") if c not in header]
            if missing:
                raise DatasetFormatError(f"{path}: missing column(s) {missing} (has {header})")
            numbered = [(number, {k: v for k, v in row.items() if k and v not in (None, "")})
                        for number, row in enumerate(rows, 2)]  # line 1 is the header
        else:
            numbered = read_jsonl_numbered(path)
        seen: set[str] = set()
        for line, record in numbered:
            where = f"{path.name} line {line}"
            record_split = text_field(record, "split", where, required=False)
            if record_split:
                record_split = self.split_aliases.get(record_split, record_split)
            if selects:
                if not record_split:
                    raise DatasetFormatError(f"{where}: records in {path.name} need a 'split' field")
                if record_split not in self.splits:
                    raise DatasetFormatError(f"{where}: unknown split {record_split!r}; splits: {list(self.splits)}")
                if record_split != split:
                    continue
            elif record_split and record_split != split:
                raise DatasetFormatError(f"{where}: split {record_split!r} in the {split!r} manifest")
            sample = _sample(record, where, split, path, line)
            try:
                self.path_of(sample.image_key)  # refuse paths that leave the root now, not at the first load
            except UnsafePathError as exc:
                raise UnsafePathError(f"{where}: {exc}") from None
            if sample.sample_id in seen:
                raise DatasetFormatError(f"{where}: duplicate id {sample.meta['id']!r}")
            seen.add(sample.sample_id)
            yield sample


def _list_or_text(record: dict[str, Any], key: str, where: str, split_text: Callable[[str], Any]) -> Any:
    """A list field given as a list, as JSON text (``"[...]"``), or as plain text split by ``split_text``;
    ``None`` when absent or empty."""
    raw = record.get(key)
    if raw is None or raw == "" or raw == []:
        return None
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if not text.startswith("["):
        return split_text(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{where}: {key} {text!r} is not JSON: {exc}") from None


def _options(record: dict[str, Any], where: str) -> list[str]:
    raw = _list_or_text(record, "options", where, lambda text: text.split("|"))
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(o, (str, int, float)) and not isinstance(o, bool)
                                            for o in raw):
        raise DatasetFormatError(f"{where}: options must be a list of texts, got {raw!r}")
    options = [str(o).strip() for o in raw]
    if len(options) < 2 or not all(options):
        raise DatasetFormatError(f"{where}: options need at least two non-empty entries, got {options!r}")
    if len({o.lower() for o in options}) != len(options):
        raise DatasetFormatError(f"{where}: options repeat an entry: {options!r}")
    return options


def _boxes(record: dict[str, Any], where: str) -> tuple[BoxTuple, ...]:
    raw = _list_or_text(record, "boxes", where,
                        lambda text: [part.replace(",", " ").split() for part in text.split(";") if part.strip()])
    if raw is None:
        return ()
    if isinstance(raw, list) and len(raw) == 4 and all(isinstance(v, (int, float)) for v in raw):
        raw = [raw]  # a single box
    if not isinstance(raw, list):
        raise DatasetFormatError(f"{where}: boxes must be a list of [x1, y1, x2, y2], got {raw!r}")
    return tuple(check_box(box, f"{where} boxes[{i}]") for i, box in enumerate(raw))


def _sample(record: dict[str, Any], where: str, split: str, path: Path, line: int) -> Sample:
    if not isinstance(record, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    options = _options(record, where)
    answer = text_field(record, "answer", where)
    if options:
        matches = [o for o in options if o.lower() == answer.lower()]
        if not matches and (index := letter_index(answer, len(options))) is not None:
            matches = [options[index]]
        if not matches:
            raise DatasetFormatError(f"{where}: answer {answer!r} is not one of the options {options!r} "
                                     "(nor an option letter)")
        answer = matches[0]
    answer_type = text_field(record, "answer_type", where, required=False).lower()
    if answer_type and answer_type not in ("closed", "open"):
        raise DatasetFormatError(f"{where}: answer_type must be 'closed' or 'open', got {answer_type!r}")
    sample_id = text_field(record, "id", where, required=False) or f"{path.name}:{line}"
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    return Sample(
        sample_id=f"custom/{split}/{sample_id}",
        question=text_field(record, "question", where),
        answer=answer,
        image_key=text_field(record, "image", where),
        options=tuple(options),
        answer_type=answer_type or closed_or_open(answer, options),  # type: ignore[arg-type]
        question_type=text_field(record, "question_type", where, required=False),
        modality=text_field(record, "modality", where, required=False),
        organ=text_field(record, "organ", where, required=False),
        split=split,
        eval_boxes=_boxes(record, where),
        meta={"id": sample_id, "manifest": path.name, "line": line, **extra},
    )
