"""Fixture writers, one per public dataset, each in that dataset's official layout (see dataset_fixtures).

Every builder writes a miniature copy of a release into an empty folder: the same file names,
field names, nesting, path conventions and language fields as the published files (the sources
read to check them are listed in each adapter's module docstring), a handful of records per split,
and small images drawn here. The expected values the tests compare against are the module-level
constants below (boxes in pixels, record counts), so a builder and its tests change together.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .dataset_fixtures import fixture_builder

# ----------------------------------------------------------------------------------------------- images


def drawn_image(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A small synthetic 'scan': dark background, a bright ellipse and a square, position from ``seed``."""
    im = Image.new("RGB", (width, height), (12 + seed % 5, 14, 18))
    draw = ImageDraw.Draw(im)
    cx, cy = width * (0.3 + 0.1 * (seed % 4)), height * (0.4 + 0.05 * (seed % 3))
    draw.ellipse([cx - width * 0.2, cy - height * 0.2, cx + width * 0.2, cy + height * 0.2],
                 fill=(180, 170 - 10 * (seed % 3), 160))
    draw.rectangle([width * 0.65, height * 0.6, width * 0.8, height * 0.8], fill=(240, 240, 60 + 20 * (seed % 5)))
    return im.convert(mode)


def png16(width: int, height: int) -> Image.Image:
    """A 16-bit grayscale PNG source: a horizontal ramp 0..60000 with a bright disc."""
    ramp = np.tile(np.linspace(0, 60000, width, dtype=np.float64), (height, 1))
    yy, xx = np.mgrid[:height, :width]
    ramp[(yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (min(width, height) / 5) ** 2] = 65535
    return Image.fromarray(ramp.astype(np.uint16))


def encode(im: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def save(im: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def write_json(path: Path, data, *, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=indent), encoding="utf-8")


def write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------- SLAKE

SLAKE_DETECTION = {  # img_id -> detection.json content: [{label: [x, y, w, h]}]
    1: [{"Liver": [10, 20, 30, 40]}, {"Lung Cancer": [60, 8, 20, 15]}],
    2: [],
    3: [{"Heart": [40, 30, 25, 20]}],
}
SLAKE_MASK_REGIONS = {  # img_id -> [(value, (x1, y1, x2, y2))], the regions painted into mask.png
    1: [(1, (10, 20, 40, 60)), (3, (70, 10, 90, 30))],
    3: [(255, (5, 5, 15, 25))],
}
SLAKE_SIZES = {1: (128, 96), 2: (96, 96), 3: (112, 80)}


def _slake_record(qid, img_id, question, answer, lang, answer_type, content_type, location, modality):
    return {"img_id": img_id, "img_name": f"xmlab{img_id}/source.jpg", "question": question, "answer": answer,
            "q_lang": lang, "location": location, "modality": modality, "answer_type": answer_type,
            "base_type": "vqa", "content_type": content_type, "triple": ["vhead", "_", "_"], "qid": qid}


SLAKE_SPLITS = {
    "train": [
        _slake_record(1, 1, "What modality is used to take this image?", "CT", "en", "OPEN", "Modality", "Lung", "CT"),
        _slake_record(2, 1, "Does the picture contain liver?", "No", "en", "CLOSED", "Organ", "Lung", "CT"),
        _slake_record(3, 1, "图片中包含肝脏吗?", "不包含", "zh", "CLOSED", "Organ", "肺", "CT"),
        _slake_record(4, 2, "Where is/are the abnormality located?", "Left Lung, Right", "en", "OPEN", "Position",
                      "Lung", "X-Ray"),
        _slake_record(5, 2, "Is the lung healthy?", "No", "en", "CLOSED", "Abnormality", "Lung", "X-Ray"),
    ],
    "validate": [
        _slake_record(6, 3, "Which organ is abnormal, heart or lung?", "Heart", "en", "CLOSED", "Abnormality",
                      "Chest_heart", "X-Ray"),
        _slake_record(7, 3, "这张图片的成像方式是什么?", "X光", "zh", "OPEN", "Modality", "胸腔", "X-Ray"),
    ],
    "test": [
        _slake_record(8, 3, "How many organs are there in this image?", "2", "en", "OPEN", "Quantity", "Chest_heart",
                      "X-Ray"),
        _slake_record(9, 1, "Is this a transverse section?", "Yes", "en", "CLOSED", "Plane", "Lung", "CT"),
        _slake_record(10, 1, "主要器官是什么?", "肺", "zh", "OPEN", "Organ", "肺", "CT"),
    ],
}


@fixture_builder("slake")
def build_slake(root: Path) -> None:
    for split, records in SLAKE_SPLITS.items():
        write_json(root / f"{split}.json", records)
    for img_id, (w, h) in SLAKE_SIZES.items():
        folder = root / "imgs" / f"xmlab{img_id}"
        # xmlab2 is grayscale, like SLAKE's X-rays; the others RGB.
        save(drawn_image(w, h, img_id, mode="L" if img_id == 2 else "RGB"), folder / "source.jpg")
        write_json(folder / "detection.json", SLAKE_DETECTION[img_id])
        if img_id in SLAKE_MASK_REGIONS:
            mask = np.zeros((h, w), np.uint8)
            for value, (x1, y1, x2, y2) in SLAKE_MASK_REGIONS[img_id]:
                mask[y1:y2, x1:x2] = value
            save(Image.fromarray(mask), folder / "mask.png")
        # xmlab2 has no mask.png: a missing mask just adds no box.


# ----------------------------------------------------------------------------------------------- PathVQA

PATHVQA_ROWS = {  # split -> [(image path, question, answer)]
    "train": [
        ("train_0000.jpg", "Where are liver stem cells (oval cells) located?", "in the canals of hering"),
        ("train_0000.jpg", "Are the hepatocytes shown?", "yes"),
        ("train_0001.jpg", "What have lost their nuclei?", "neutrophils"),
        ("train_0002.jpg", "How many lobules are visible?", "2"),
        ("train_0002.jpg", "Is this a gross specimen?", "no"),
    ],
    "validation": [
        ("val_0000.jpg", "What is present?", "granuloma"),
        ("val_0001.jpg", "Is inflammation present?", "yes"),
    ],
    "test": [
        ("test_0000.jpg", "Does this image show fibrosis?", "no"),
        ("test_0001.png", "What does this image show?", "fibrinoid necrosis"),  # stored as a 16-bit PNG
        ("test_0002.jpg", "Whose cells are shown?", "the patient's"),  # grayscale JPEG
    ],
}


def _pathvqa_image(split: str, index: int, name: str) -> bytes:
    if name.endswith(".png"):
        return encode(png16(80, 64), "PNG")
    mode = "L" if (split, index) == ("test", 2) else "RGB"
    return encode(drawn_image(96, 72, index + len(split), mode=mode), "JPEG")


@fixture_builder("pathvqa")
def build_pathvqa(root: Path) -> None:
    """The Hugging Face parquet release: data/<split>-00000-of-00001.parquet, image = {bytes, path}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for split, rows in PATHVQA_ROWS.items():
        images = [{"bytes": _pathvqa_image(split, i, name), "path": name} for i, (name, _, _) in enumerate(rows)]
        table = pa.table({
            "image": pa.array(images, type=image_type),
            "question": pa.array([q for _, q, _ in rows], type=pa.string()),
            "answer": pa.array([a for _, _, a in rows], type=pa.string()),
        })
        (root / "data").mkdir(parents=True, exist_ok=True)
        # Two rows per row group, so the train split spans three groups (lazy per-group reads are exercised).
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet", row_group_size=2)


PATHVQA_ORIGINAL = {  # folder -> records as the original release pickles them
    "train": [{"image": "train_0000", "question": "What have lost their nuclei?", "answer": "neutrophils"},
              {"image": "train_0001", "question": "Is this an autopsy specimen?", "answer": "yes"}],
    "val": [{"image": "val_0000", "question": "What is present?", "answer": "granuloma"}],
}
PATHVQA_ORIGINAL_LXMERT_TEST = [  # qas/test_vqa.pkl, the LXMERT-style copy
    {"answer_type": "other", "img_id": "test_0000", "label": {"hyaline arteriolosclerosis": 1},
     "question_id": 200000, "question_type": "what", "sent": "What is shown?"},
    {"answer_type": "yes/no", "img_id": "test_0001", "label": {"no": 1}, "question_id": 200001,
     "question_type": "is", "sent": "Is there fibrosis?"},
]


@fixture_builder("pathvqa_original")
def build_pathvqa_original(root: Path) -> None:
    """The original release: qas/<split>/<split>_qa.pkl, qas/<split>_vqa.pkl, images/<split>/<image>.jpg."""
    for folder, records in PATHVQA_ORIGINAL.items():
        (root / "qas" / folder).mkdir(parents=True, exist_ok=True)
        (root / "qas" / folder / f"{folder}_qa.pkl").write_bytes(pickle.dumps(records))
        for i, record in enumerate(records):
            save(drawn_image(64, 64, i), root / "images" / folder / f"{record['image']}.jpg")
    (root / "qas" / "test_vqa.pkl").write_bytes(pickle.dumps(PATHVQA_ORIGINAL_LXMERT_TEST))
    for i, record in enumerate(PATHVQA_ORIGINAL_LXMERT_TEST):
        save(drawn_image(64, 48, i + 3), root / "images" / "test" / f"{record['img_id']}.jpg")


# ----------------------------------------------------------------------------------------------- PMC-VQA

PMC_HEADER = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]
PMC_ROWS = {
    "train.csv": [
        ["PMC1064097_F1.jpg", "What is the uptake pattern in the breast?", "Focal uptake pattern",
         "A:Diffuse uptake pattern", "B:Focal uptake pattern", "C:No uptake pattern",
         "D:Cannot determine from the information given", "B"],
        ["PMC1064097_F2.jpg", "Which imaging modality was used?", "MRI", " A:CT", " B:MRI", " C:PET", " D:Ultrasound",
         "B"],
        ["PMC2170123_F3.jpg", "What is the stain used in the image?", "H&E", "A:H&E", "B:PAS", "C:Giemsa",
         "D:Trichrome", "A"],
    ],
    "test.csv": [
        ["PMC3012345_F1.jpg", "Where is the lesion located?", "Left lobe", "A:Right lobe", "B:Left lobe",
         "C:Both lobes", "D:Not visible", "B"],
        ["PMC3012345_F2.jpg", "What does the arrow indicate?", "Calcification", "A:Calcification", "B:Cyst",
         "C:Air", "D:Artifact", "A"],
    ],
    "test_clean.csv": [
        ["PMC3012345_F1.jpg", "Where is the lesion located?", "Left lobe", "A:Right lobe", "B:Left lobe",
         "C:Both lobes", "D:Not visible", "B"],
    ],
    "train_2.csv": [
        ["PMC4567890_F1_2.jpg", "What is shown by the arrowhead?", "Thrombus", "A:Thrombus", "B:Plaque",
         "C:Stent", "D:Catheter", "A"],
    ],
    "test_2.csv": [
        ["PMC4567890_F4_1.jpg", "Which view is this?", "Sagittal", "A:Axial", "B:Coronal", "C:Sagittal",
         "D:Oblique", "C"],
    ],
}


@fixture_builder("pmc_vqa")
def build_pmc_vqa(root: Path) -> None:
    for name, rows in PMC_ROWS.items():
        write_csv(root / name, PMC_HEADER, rows)
        folder = "figures" if "_2" in name else "images"  # version 2's archive unpacks to its own folder
        for i, row in enumerate(rows):
            path = root / folder / row[0]
            if not path.exists():  # JPEG figures; the *_F2 ones grayscale
                save(drawn_image(120, 90, i + len(name), mode="L" if row[0].endswith("F2.jpg") else "RGB"), path)


# ----------------------------------------------------------------------------------------------- OmniMedVQA

OMNI_FILES = {
    ("Open-access", "ACRIMA"): [
        {"dataset": "ACRIMA", "question_id": "ACRIMA_0000", "question_type": "Disease Diagnosis",
         "question": "What is the diagnosis of this fundus image?", "gt_answer": "Glaucoma",
         "image_path": "Images/ACRIMA/Im001_ACRIMA.png", "option_A": "Normal", "option_B": "Glaucoma",
         "option_C": "Cataract", "option_D": "Diabetic retinopathy", "modality_type": "Fundus Photography"},
        {"dataset": "ACRIMA", "question_id": "ACRIMA_0001", "question_type": "Modality Recognition",
         "question": "What imaging modality is this?", "gt_answer": "Fundus photography",
         "image_path": "Images/ACRIMA/Im002_ACRIMA.png", "option_A": "OCT", "option_B": "Fundus photography",
         "option_C": "CT", "modality_type": "Fundus Photography"},
    ],
    ("Open-access", "Chest CT Scan"): [
        {"dataset": "Chest CT Scan", "question_id": "Chest CT Scan_0000", "question_type": "Anatomy Identification",
         "question": "Which organ is shown?", "gt_answer": "Lung",
         "image_path": "Images/Chest CT Scan/test/adenocarcinoma/000108.png", "option_A": "Lung",
         "option_B": "Liver", "modality_type": "CT"},
        # The release has one record writing `modality` instead of `modality_type`.
        {"dataset": "Chest CT Scan", "question_id": "Chest CT Scan_0001", "question_type": "Disease Diagnosis",
         "question": "Is there an abnormality?", "gt_answer": "Adenocarcinoma",
         "image_path": "Images/Chest CT Scan/test/adenocarcinoma/000109.png", "option_A": "Normal",
         "option_B": "Adenocarcinoma", "option_C": "Squamous cell carcinoma", "option_D": "Large cell carcinoma",
         "modality": "CT"},
    ],
    ("Restricted-access", "AIDA"): [
        {"dataset": "AIDA", "question_id": "AIDA_0000", "question_type": "Lesion Grading",
         "question": "What grade is the lesion?", "gt_answer": "Grade 2",
         "image_path": "Images/AIDA/case_0001.png", "option_A": "Grade 1", "option_B": "Grade 2",
         "option_C": "Grade 3", "option_D": "Grade 4", "modality_type": "Microscopy Images"},
    ],
}


@fixture_builder("omnimedvqa")
def build_omnimedvqa(root: Path) -> None:
    for (access, source), records in OMNI_FILES.items():
        write_json(root / "QA_information" / access / f"{source}.json", records, indent=4)
        for i, record in enumerate(records):
            mode = "L" if source == "Chest CT Scan" else "RGB"
            save(drawn_image(100, 100, i + len(source), mode=mode), root / record["image_path"])


# ----------------------------------------------------------------------------------------------- MedXpertQA

def _mxq(qid: str, question: str, options: list[str], label: str, images: list[str], task: str, system: str,
         qtype: str) -> dict:
    choices = " ".join(f"({letter}) {text}" for letter, text in zip("ABCDE", options))
    return {"id": qid, "question": f"{question} Answer Choices: {choices}",
            "options": dict(zip("ABCDE", options)), "label": label, "images": images,
            "medical_task": task, "body_system": system, "question_type": qtype}


MEDXPERTQA_SPLITS = {
    "test": [
        _mxq("MM-2000", "A 62-year-old woman ... Which test is most appropriate next?",
             ["Endoscopic ultrasound", "Cholescintigraphy", "ERCP", "Abdominal ultrasound", "MRCP"], "D",
             ["MM-2000-a.jpeg"], "Diagnosis", "Digestive", "Reasoning"),
        _mxq("MM-2001", "A 78-year-old man presents with shortness of breath. What is the next step?",
             ["D-dimer", "Chest radiograph", "Bronchoscopy", "Complete blood count", "Echocardiogram"], "B",
             ["MM-2001-a.jpeg", "MM-2001-b.jpeg"], "Diagnosis", "Cardiovascular", "Reasoning"),
        _mxq("MM-2002", "Which artery labeled in Figure A supplies the spinal cord?",
             ["C", "D", "A", "B", "None of the above"], "C",
             ["MM-2002-a.jpeg", "MM-2002-b.jpeg", "MM-2002-c.jpeg", "MM-2002-d.jpeg"], "Basic Medicine",
             "Cardiovascular", "Understanding"),
    ],
    "dev": [
        _mxq("MM-0", "What is the most likely diagnosis?", ["Gout", "Pseudogout", "Septic arthritis",
                                                          "Osteoarthritis", "Rheumatoid arthritis"], "A",
             ["MM-0-a.jpeg"], "Diagnosis", "Skeletal", "Understanding"),
    ],
}
MEDXPERTQA_SIZES = {"a": (80, 60), "b": (40, 40), "c": (60, 30), "d": (50, 50)}  # width, height by image suffix


@fixture_builder("medxpertqa")
def build_medxpertqa(root: Path) -> None:
    for split, records in MEDXPERTQA_SPLITS.items():
        write_jsonl(root / "MM" / f"{split}.jsonl", records)
        for record in records:
            for i, name in enumerate(record["images"]):
                w, h = MEDXPERTQA_SIZES[name[-6]]
                save(drawn_image(w, h, i), root / "images" / name)


# ----------------------------------------------------------------------------------------------- custom

CUSTOM_TRAIN = [
    {"id": "ct-1", "image": "images/ct_001.png", "question": "Is there a nodule?", "answer": "yes",
     "question_type": "presence", "modality": "CT", "organ": "lung", "boxes": [[12, 10, 30, 26]]},
    {"id": "mr-1", "image": "images/mr_001.png", "question": "Which sequence is this?", "answer": "B",
     "options": ["T1", "T2", "FLAIR"], "question_type": "modality", "modality": "MR", "organ": "brain",
     "site": "hospital-a"},
    {"id": "us-1", "image": "images/us_001.png", "question": "What organ is shown?", "answer": "Kidney",
     "answer_type": "open", "question_type": "organ", "modality": "US", "organ": "abdomen"},
]
CUSTOM_TEST_HEADER = ["image", "question", "answer", "options", "answer_type", "question_type", "modality", "organ",
                      "boxes"]
CUSTOM_TEST_ROWS = [
    ["images/ct_001.png", "Which side is the nodule on?", "left", "left|right", "", "position", "CT", "lung",
     "12 10 30 26; 40 20 60 40"],
    ["images/us_001.png", "Is the kidney enlarged?", "no", "", "closed", "size", "US", "abdomen", ""],
]


@fixture_builder("custom")
def build_custom(root: Path) -> None:
    save(png16(64, 48), root / "images" / "ct_001.png")  # 16-bit grayscale
    save(drawn_image(72, 64, 1, mode="L"), root / "images" / "mr_001.png")  # 8-bit grayscale
    save(drawn_image(64, 64, 2, mode="RGBA"), root / "images" / "us_001.png")  # RGBA
    write_jsonl(root / "train.jsonl", CUSTOM_TRAIN)
    write_csv(root / "test.csv", CUSTOM_TEST_HEADER, CUSTOM_TEST_ROWS)
