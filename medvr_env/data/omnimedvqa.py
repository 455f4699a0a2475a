"""OmniMedVQA (Hu et al., CVPR 2024): multiple-choice VQA over 73 public medical image collections.

Read in the layout of the official release (``OmniMedVQA.zip`` from
huggingface.co/datasets/foreverbeliever/OmniMedVQA, unpacked)::

    <root>/QA_information/Open-access/<source>.json         e.g. ACRIMA.json, "Chest CT Scan.json"
    <root>/QA_information/Restricted-access/<source>.json   sources whose images are licensed separately
    <root>/Images/<source>/...                               the images

Each ``<source>.json`` is a JSON list (JSON lines are accepted too) of records such as
``{"dataset": "ACRIMA", "question_id": "ACRIMA_0001", "question_type": "Disease Diagnosis",
"question": "...", "gt_answer": "Glaucoma", "image_path": "Images/ACRIMA/Im001.png",
"option_A": "...", "option_B": "...", "option_C": "...", "option_D": "...", "modality_type": "Fundus Photography"}``.
``image_path`` is relative to the OmniMedVQA root. Questions have two to four options
(``option_C``/``option_D`` are absent when unused); the answer is ``gt_answer``, which is one of them.
A few records write ``modality`` instead of ``modality_type``; both are read. ``question_type`` is
one of Disease Diagnosis, Anatomy Identification, Modality Recognition, Lesion Grading and Other
Biological Attributes. Every question is multiple choice, hence ``closed``. Records name no organ.

OmniMedVQA is a test-only benchmark: its one split is ``"test"`` (alias ``"all"``). ``access``
selects ``"open"`` sources (default: the restricted sources' images are not in the public archive),
``"restricted"`` or ``"all"``; ``sources=`` keeps only the named sources (file names without ``.json``).
Sources are read in name order, open-access first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from .files import DatasetFormatError, DatasetNotFoundError, FileDataset, read_json, read_jsonl, read_manifest_text
from .records import one_of, text_field
from .sample import Sample

ACCESS_DIRS = {"open": "Open-access", "restricted": "Restricted-access"}
ACCESS = ("open", "restricted", "all")
OPTION_KEYS = ("option_A", "option_B", "option_C", "option_D")


def read_json_or_jsonl(path: Path) -> list[Any]:
    """A JSON list, or JSON lines; errors name the file."""
    text = read_manifest_text(path)  # read once: the first character decides the format
    if text.lstrip().startswith("["):
        data = read_json(path, text)
        if not isinstance(data, list):
            raise DatasetFormatError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        return data
    return read_jsonl(path, text)


class OmniMedVQADataset(FileDataset):
    """OmniMedVQA from its per-source ``QA_information`` JSON files (see the module docstring).

    Args:
        access: ``"open"`` (default), ``"restricted"`` or ``"all"``.
        sources: Keep only these sources (e.g. ``["ACRIMA", "Chest CT Scan"]``).
        The other arguments are :class:`~medvr_env.data.files.FileDataset`'s.
    """

    name = "omnimedvqa"
    title = "OmniMedVQA"
    default_dirname = "omnimedvqa"
    homepage = "https://huggingface.co/datasets/foreverbeliever/OmniMedVQA (OmniMedVQA.zip)"
    layout = "QA_information/Open-access/<source>.json, QA_information/Restricted-access/<source>.json, Images/"
    splits = ("test",)
    split_aliases = {"all": "test"}

    def __init__(
        self,
        split: str = "test",
        *,
        access: str = "open",
        sources: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.access = one_of(access, ACCESS, "OmniMedVQA access")
        self.sources = None if sources is None else ([sources] if isinstance(sources, str) else list(sources))
        if self.sources is not None and not self.sources:
            raise ValueError("sources must name at least one OmniMedVQA source, or be None for all")
        self.available_sources: tuple[str, ...] = ()
        super().__init__(split, **kwargs)
        self._config.update(access=self.access, sources=self.sources)

    def read_split(self, split: str) -> Iterable[Sample]:
        qa_root = self.root / "QA_information"
        kinds = ["open", "restricted"] if self.access == "all" else [self.access]
        files = [(kind, path) for kind in kinds
                 for path in sorted((qa_root / ACCESS_DIRS[kind]).glob("*.json"))]
        if not files:
            raise DatasetNotFoundError(
                f"OmniMedVQA question files not found: tried "
                f"{[str((qa_root / ACCESS_DIRS[k]).resolve()) for k in kinds]} (no *.json there). "
                f"Expected layout: {self.layout}. "
                f"{self.title} is published at {self.homepage}"
            )
        self.available_sources = tuple(sorted({p.stem for _, p in files}))
        if self.sources is not None:
            unknown = [s for s in self.sources if s not in self.available_sources]
            if unknown:
                raise ValueError(f"unknown OmniMedVQA sources {unknown} for access={self.access!r}; "
                                 f"available: {list(self.available_sources)}")
            files = [(kind, p) for kind, p in files if p.stem in self.sources]
        for kind, path in files:
            for i, record in enumerate(read_json_or_jsonl(path)):
                yield _sample(record, f"{ACCESS_DIRS[kind]}/{path.name} record {i}", split, kind, path.stem)


def _sample(record: Any, where: str, split: str, access: str, source: str) -> Sample:
    if not isinstance(record, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    options = [text_field(record, key, where, required=False) for key in OPTION_KEYS]
    options = [o for o in options if o]
    if len(options) < 2:
        raise DatasetFormatError(f"{where}: needs at least option_A and option_B (has {sorted(record)})")
    answer = text_field(record, "gt_answer", where)
    matches = [o for o in options if o.lower() == answer.lower()]
    modality = text_field(record, "modality_type", where, required=False) or \
        text_field(record, "modality", where, required=False)
    question_id = text_field(record, "question_id", where)
    return Sample(
        sample_id=f"omnimedvqa/{access}/{source}/{question_id}",
        question=text_field(record, "question", where),
        answer=matches[0] if matches else answer,
        image_key=text_field(record, "image_path", where),
        options=tuple(options),
        answer_type="closed",
        question_type=text_field(record, "question_type", where, required=False),
        modality=modality,
        split=split,
        meta={"source": source, "access": access, "dataset": text_field(record, "dataset", where, required=False),
              "question_id": question_id, "answer_in_options": bool(matches)},
    )

