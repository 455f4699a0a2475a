"""VQA-RAD (Lau et al., Scientific Data 2018; CC0) in either of its two published layouts.

**data_RAD** (the MEVF / MICCAI-2019 redistribution nearly every paper evaluates on)::

    <root>/trainset.json   3,064 records
    <root>/testset.json      451 records (the standard test set)
    <root>/images/synpic*.jpg

**OSF release** (osf.io/89kps): one ``VQA_RAD Dataset Public.json`` with all 3,515
records and the images in ``VQA_RAD Image Folder/``. It has no split files; the
test set is the records whose ``phrase_type`` starts with ``test_`` (``test_freeform``,
``test_para``), which is how the data_RAD split was made.

Records carry ``qid``, ``image_name``, ``image_organ`` (HEAD / CHEST / ABD), ``question``,
``answer``, ``answer_type`` (CLOSED / OPEN), ``question_type`` (PRES, POS, ABN, SIZE,
MODALITY, PLANE, ORGAN, COUNT, COLOR, ATTRIB, OTHER) and ``phrase_type``. A few
records list two question types (``"PRES, POS"``): the first is the sample's
``question_type`` and all of them are kept in ``meta["question_types"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .files import DatasetFormatError, DatasetNotFoundError, FileDataset, read_json, require_field
from .sample import Sample

OSF_MANIFEST = "VQA_RAD Dataset Public.json"
OSF_IMAGES = "VQA_RAD Image Folder"
QUESTION_TYPE_SPELLINGS = {"ATRIB": "ATTRIB", "PRSE": "PRES", "POSITION": "POS"}


class VQARADDataset(FileDataset):
    """VQA-RAD, read from the data_RAD layout or the OSF release JSON (detected from the files present)."""

    name = "vqa_rad"
    title = "VQA-RAD"
    default_dirname = "vqa_rad"
    homepage = "https://osf.io/89kps/ (CC0; the data_RAD split is redistributed with MEVF, github.com/aioz-ai/MICCAI19-MedVQA)"
    layout = f"trainset.json, testset.json and images/ (data_RAD), or '{OSF_MANIFEST}' and '{OSF_IMAGES}/' (OSF)"
    splits = ("train", "test")

    def read_split(self, split: str) -> Iterable[Sample]:
        data_rad = self.root / f"{split}set.json"
        osf = self.root / OSF_MANIFEST
        if data_rad.is_file():
            records, image_dir = read_json(data_rad), "images"
            source = data_rad
        elif osf.is_file():
            records = [r for r in read_json(osf) if _osf_split(r) == split]
            image_dir, source = OSF_IMAGES, osf
        else:
            raise DatasetNotFoundError(
                f"VQA-RAD manifest not found in {self.root.resolve()}: expected {data_rad.name} (data_RAD layout) "
                f"or '{OSF_MANIFEST}' (OSF release). {self.title} is published at {self.homepage}"
            )
        if not isinstance(records, list):
            raise DatasetFormatError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
        for i, record in enumerate(records):
            yield _sample(record, f"{source.name} record {i}", split, image_dir)


def _osf_split(record: dict[str, Any]) -> str:
    return "test" if str(record.get("phrase_type", "")).strip().lower().startswith("test") else "train"


def _question_types(raw: Any) -> list[str]:
    names = [part.strip().upper() for part in str(raw).split(",") if part.strip()]
    return [QUESTION_TYPE_SPELLINGS.get(n, n) for n in names] or ["OTHER"]


def _sample(record: dict[str, Any], where: str, split: str, image_dir: str) -> Sample:
    qtypes = _question_types(record.get("question_type", "OTHER"))
    answer_type = str(require_field(record, "answer_type", where)).strip().upper()
    if answer_type not in ("CLOSED", "OPEN"):
        raise DatasetFormatError(f"{where}: answer_type must be CLOSED or OPEN, got {answer_type!r}")
    image_name = str(require_field(record, "image_name", where))
    return Sample(
        sample_id=f"vqa_rad/{split}/{require_field(record, 'qid', where)}",
        question=str(require_field(record, "question", where)).strip(),
        answer=str(require_field(record, "answer", where)).strip(),
        image_key=str(Path(image_dir) / image_name),
        answer_type="closed" if answer_type == "CLOSED" else "open",
        question_type=qtypes[0],
        modality="",  # VQA-RAD does not label modality per record
        organ=str(record.get("image_organ", "")).strip().upper(),
        split=split,
        meta={"question_types": qtypes, "phrase_type": str(record.get("phrase_type", "")),
              "image_name": image_name},
    )
