"""PMC-VQA (Zhang et al., 2023; CC BY-SA): multiple-choice VQA on figures from PubMed Central papers.

Read from the CSV files of the official release (huggingface.co/datasets/xmcmic/PMC-VQA, mirrored as
``RadGenome/PMC-VQA``) with its image archives unpacked::

    <root>/train.csv         version 1: 227k questions on 149k images
    <root>/test.csv
    <root>/test_clean.csv    the manually checked 2k-question test set most papers report
    <root>/images/           images.zip unpacked: the figures of version 1
    <root>/train_2.csv       version 2 (non-compound figures); the README writes train2.csv, also accepted
    <root>/test_2.csv
    <root>/images_2/         images_2.zip unpacked (figures/ and images/ are tried too)

Every CSV has the columns ``Figure_path`` (a file name inside the image folder), ``Question``,
``Answer`` (``Anwser`` in early copies), ``Choice A`` .. ``Choice D`` (written ``"A:Diffuse uptake
pattern"``) and ``Answer_label`` (the correct letter); extra columns (``Caption``, an index, ...)
are ignored. The ``A:`` prefixes are removed from the options, empty choices are dropped, and the
sample's answer is the text of the labelled option (the ``Answer`` text when the label is missing).
Every question is multiple choice, hence ``closed``. PMC-VQA has no question categories, organs or
modalities, so those fields are empty.

``version=1`` (default) reads ``train.csv``/``test.csv``/``test_clean.csv``; ``version=2`` reads
``train_2.csv``/``test_2.csv`` (it has no clean test set). The image folder is the first of the
version's candidates that holds the first row's figure (``image_dir=`` overrides it).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable

from .files import DatasetFormatError, DatasetNotFoundError, FileDataset, read_manifest_text
from .images import resolve_inside
from .records import LETTERS, letter_index, strip_letter_prefix, text_field
from .sample import Sample

CHOICE_COLUMNS = tuple(f"Choice {letter}" for letter in "ABCD")
MANIFESTS = {
    1: {"train": ["train.csv"], "test": ["test.csv"], "test_clean": ["test_clean.csv"]},
    2: {"train": ["train_2.csv", "train2.csv"], "test": ["test_2.csv", "test2.csv"]},
}
IMAGE_DIRS = {1: ["images"], 2: ["images_2", "figures", "images2", "images"]}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of a CSV manifest (UTF-8, with or without BOM); errors name the file."""
    text = read_manifest_text(path)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise DatasetFormatError(f"{path} is not a readable UTF-8 CSV file: {exc}") from exc
    return header, [{(k or "").strip(): v for k, v in row.items()} for row in rows]


class PMCVQADataset(FileDataset):
    """PMC-VQA from its CSV files (see the module docstring).

    Args:
        version: ``1`` (``train.csv``, ``test.csv``, ``test_clean.csv``) or ``2`` (``*_2.csv``).
        image_dir: The image folder relative to the root, when it is not one of the release's names.
        The other arguments are :class:`~medvr_env.data.files.FileDataset`'s.
    """

    name = "pmc_vqa"
    title = "PMC-VQA"
    default_dirname = "pmc_vqa"
    homepage = "https://huggingface.co/datasets/xmcmic/PMC-VQA (also RadGenome/PMC-VQA)"
    layout = "train.csv, test.csv, test_clean.csv and images/ (version 1); train_2.csv, test_2.csv and images_2/ (v2)"
    splits = ("train", "test", "test_clean")
    split_aliases = {"clean": "test_clean", "test-clean": "test_clean"}

    def __init__(
        self,
        split: str = "test",
        *,
        version: int | str = 1,
        image_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.version = _parse_version(version)
        self.image_dir_arg = image_dir
        self.image_dir = ""
        super().__init__(split, **kwargs)
        self._config.update(version=self.version, image_dir=image_dir)

    def read_split(self, split: str) -> Iterable[Sample]:
        names = MANIFESTS[self.version].get(split)
        if names is None:
            raise ValueError(f"PMC-VQA version {self.version} has no split {split!r}; "
                             f"splits: {sorted(MANIFESTS[self.version])}")
        manifest = next((self.root / n for n in names if (self.root / n).is_file()), None)
        if manifest is None:
            raise DatasetNotFoundError(
                f"PMC-VQA version {self.version} split {split!r} not found: tried "
                f"{[str(self.root.resolve() / n) for n in names]}. Expected layout: {self.layout}. "
                f"{self.title} is published at {self.homepage}"
            )
        header, rows = read_csv(manifest)
        missing = [c for c in ("Figure_path", "Question", *CHOICE_COLUMNS) if c not in header]
        if missing or not {"Answer_label", "Answer", "Anwser"} & set(header):
            raise DatasetFormatError(
                f"{manifest}: missing column(s) {missing or ['Answer_label or Answer']} (has {header}); "
                "expected Figure_path, Question, Answer, Choice A..D, Answer_label"
            )
        if rows:
            self.image_dir = self._find_image_dir(text_field(rows[0], "Figure_path", f"{manifest.name} row 1"))
        for number, row in enumerate(rows, 1):
            yield self._sample(row, f"{manifest.name} row {number}", split, number)

    def _find_image_dir(self, first_figure: str) -> str:
        candidates = [self.image_dir_arg] if self.image_dir_arg else IMAGE_DIRS[self.version]
        existing = [c for c in candidates if (self.root / c).is_dir()]
        for folder in existing:
            if resolve_inside(self.root, f"{folder}/{first_figure}").is_file():
                return folder
        if existing:
            return existing[0]
        raise DatasetNotFoundError(
            f"PMC-VQA images not found: tried the folders {[str(self.root.resolve() / c) for c in candidates]} "
            f"(unpack images.zip / images_2.zip there). {self.title} is published at {self.homepage}"
        )

    def _sample(self, row: dict[str, Any], where: str, split: str, number: int) -> Sample:
        figure = text_field(row, "Figure_path", where)
        options, letters = [], []
        for column in CHOICE_COLUMNS:
            letter = column[-1]
            text = strip_letter_prefix(text_field(row, column, where, required=False), letter)
            if text:
                options.append(text)
                letters.append(letter)
        if len(options) < 2:
            raise DatasetFormatError(f"{where}: needs at least two non-empty choices, got {options!r}")
        label = text_field(row, "Answer_label", where, required=False).upper()
        answer_text = text_field(row, "Answer", where, required=False) or \
            text_field(row, "Anwser", where, required=False)
        if label:
            index = letter_index(label, len(LETTERS))
            if index is None or LETTERS[index] not in letters:
                raise DatasetFormatError(f"{where}: Answer_label {label!r} is not one of the choices {letters}")
            answer = options[letters.index(LETTERS[index])]
        elif answer_text:
            answer = _answer_from_text(answer_text, options, letters)
        else:
            raise DatasetFormatError(f"{where}: neither Answer_label nor Answer is given")
        return Sample(
            sample_id=f"pmc_vqa/v{self.version}/{split}/{number}",
            question=text_field(row, "Question", where),
            answer=answer,
            image_key=f"{self.image_dir}/{figure}",
            options=tuple(options),
            answer_type="closed",
            split=split,
            meta={"figure_path": figure, "answer_label": label, "answer_text": answer_text,
                  "option_letters": letters, "version": self.version},
        )


def _answer_from_text(answer_text: str, options: list[str], letters: list[str]) -> str:
    """The option an ``Answer`` cell names (``"B:Focal uptake"`` or ``"Focal uptake"``), else the text itself."""
    for letter, option in zip(letters, options):
        if strip_letter_prefix(answer_text, letter).lower() == option.lower():
            return option
    return answer_text


def _parse_version(version: int | str) -> int:
    text = str(version).strip().lower().lstrip("v")
    if text not in ("1", "2"):
        raise ValueError(f"PMC-VQA version must be 1 or 2, got {version!r}")
    return int(text)
