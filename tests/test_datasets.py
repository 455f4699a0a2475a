"""The public-dataset adapters on miniature copies of each official layout (tests/dataset_layouts.py).

Per adapter: the fixture parses into the expected samples (answer and question types, options,
organ / modality, evaluation boxes in pixels), images decode to read-only (H, W, 3) uint8, splits
and their aliases, the selection filters, dataset-specific switches (SLAKE's language, PathVQA's
trust_pickle, PMC-VQA's version, OmniMedVQA's access and sources, MedXpertQA's image tiling), and a
malformed manifest raising DatasetFormatError that names the file. Each registered id then runs an
episode through gym.make with its data_root.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import medvr_env  # noqa: F401  (registers the ids)
from medvr_env.data.custom import CustomVQADataset
from medvr_env.data.files import DATA_ENV_VAR, DatasetFormatError, DatasetNotFoundError
from medvr_env.data.images import UnsafePathError, decode_image
from medvr_env.data.medxpertqa import MedXpertQADataset, tile_images
from medvr_env.data.omnimedvqa import OmniMedVQADataset
from medvr_env.data.pathvqa import PathVQADataset, UntrustedPickleError, question_category
from medvr_env.data.pmc_vqa import PMCVQADataset
from medvr_env.data.registry import DATASETS, make_dataset
from medvr_env.data.sample import option_letter
from medvr_env.data.slake import SLAKEDataset, mask_label_boxes
from medvr_env.importing import import_object
from medvr_env.testing import check_dataset

from . import dataset_layouts as L
from .dataset_fixtures import data_root

NEW_DATASETS = ("slake", "pathvqa", "pmc_vqa", "omnimedvqa", "medxpertqa", "custom")
ENV_IDS = {
    "MedVR-SLAKE-v0": "slake",
    "MedVR-PathVQA-v0": "pathvqa",
    "MedVR-PMC-VQA-v0": "pmc_vqa",
    "MedVR-OmniMedVQA-v0": "omnimedvqa",
    "MedVR-MedXpertQA-v0": "medxpertqa",
    "MedVR-VQA-Custom-v0": "custom",
}
SPLITS = {
    "slake": ("train", "validate", "test"),
    "pathvqa": ("train", "validation", "test"),
    "pmc_vqa": ("train", "test", "test_clean"),
    "omnimedvqa": ("test",),
    "medxpertqa": ("test", "dev"),
    "custom": ("train", "test"),
}


def copy_fixture(name: str, tmp_path: Path) -> Path:
    """A private, writable copy of a fixture root (the shared one must stay intact)."""
    target = tmp_path / name
    shutil.copytree(data_root(name), target)
    return target


def assert_image(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert array.dtype == np.uint8 and array.shape == (*shape, 3)
    assert not array.flags.writeable
    assert array.max() > array.min()  # not a blank decode


# ----------------------------------------------------------------------------------------------- all adapters


@pytest.mark.parametrize("name", NEW_DATASETS)
def test_every_split_loads_and_every_image_decodes(name):
    for split in SPLITS[name]:
        ds = make_dataset(name, split=split, data_root=data_root(name))
        assert len(ds) > 0 and ds.split == split
        assert len({s.sample_id for s in ds.samples}) == len(ds)
        for sample in ds.samples:
            assert sample.split == split and sample.question and sample.answer
            image = ds.load_image(sample)
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert not image.flags.writeable
            if sample.options:
                assert sample.answer in sample.options and sample.answer_type == "closed"
            for x1, y1, x2, y2 in sample.eval_boxes:
                assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
            json.dumps(sample.to_dict(), ensure_ascii=False)  # meta stays JSON-friendly


@pytest.mark.parametrize("name", NEW_DATASETS)
def test_adapters_pass_the_dataset_conformance_checks(name):
    check_dataset(make_dataset(name, split=SPLITS[name][-1], data_root=data_root(name)))


@pytest.mark.parametrize("name", NEW_DATASETS)
def test_registered_names_resolve_to_the_adapters(name):
    assert name in DATASETS
    ds = make_dataset(name, split=SPLITS[name][0], data_root=data_root(name))
    assert ds.name == name and ds.default_dirname == name


@pytest.mark.parametrize("name", NEW_DATASETS)
def test_filters_and_slicing(name):
    root, split = data_root(name), SPLITS[name][0]
    full = make_dataset(name, split=split, data_root=root)
    qtype = full.samples[-1].question_type
    by_type = make_dataset(name, split=split, data_root=root, question_types=[qtype])
    assert [s.sample_id for s in by_type.samples] == [s.sample_id for s in full.samples if s.question_type == qtype]
    closed = [s.sample_id for s in full.samples if s.answer_type == "closed"]
    if closed:
        assert [s.sample_id for s in make_dataset(name, split=split, data_root=root,
                                                  answer_types="closed").samples] == closed
    if len(full) >= 2:
        sliced = make_dataset(name, split=split, data_root=root, start_index=1, num_samples=1)
        assert [s.sample_id for s in sliced.samples] == [full.samples[1].sample_id]
    with pytest.raises(ValueError, match="unknown"):
        make_dataset(name, split=split, data_root=root, question_types=["no such type"])
    with pytest.raises(ValueError, match="has no split"):
        make_dataset(name, split="no_such_split", data_root=root)


@pytest.mark.parametrize("name", NEW_DATASETS)
def test_missing_root_names_the_path_and_where_to_get_the_data(name, tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        make_dataset(name, split=SPLITS[name][0], data_root=tmp_path / "absent")
    message = str(info.value)
    assert str((tmp_path / "absent").resolve()) in message
    assert import_object(DATASETS[name], "dataset").homepage in message


@pytest.mark.parametrize("name", NEW_DATASETS)
def test_empty_root_says_which_manifest_was_tried(name, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="tried"):
        make_dataset(name, split=SPLITS[name][0], data_root=tmp_path)


@pytest.mark.parametrize("name", NEW_DATASETS)
def test_medvr_data_env_var_finds_the_default_folder(name, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(data_root(name).parent))
    ds = make_dataset(name, split=SPLITS[name][0])
    assert ds.root == data_root(name).parent / name and len(ds) > 0


# ----------------------------------------------------------------------------------------------- SLAKE


def test_slake_english_train_samples():
    ds = SLAKEDataset("train", data_root=data_root("slake"))
    assert [s.sample_id for s in ds.samples] == ["slake/train/1", "slake/train/2", "slake/train/4", "slake/train/5"]
    first, second, third = ds.samples[0], ds.samples[1], ds.samples[2]
    assert (first.question, first.answer, first.answer_type) == ("What modality is used to take this image?", "CT",
                                                                  "open")
    assert (second.answer, second.answer_type, second.question_type) == ("No", "closed", "Organ")
    assert (first.question_type, first.modality, first.organ) == ("Modality", "CT", "Lung")
    assert third.modality == "X-Ray" and third.question_type == "Position"
    assert first.image_key == "imgs/xmlab1/source.jpg"
    assert first.meta["q_lang"] == "en" and first.meta["base_type"] == "vqa" and first.meta["img_id"] == 1
    assert first.meta["triple"] == ["vhead", "_", "_"]


def test_slake_eval_boxes_are_detection_then_mask_regions_in_pixels():
    sample = SLAKEDataset("train", data_root=data_root("slake")).samples[0]
    detection = [(x, y, x + w, y + h) for entry in L.SLAKE_DETECTION[1] for x, y, w, h in entry.values()]
    mask = [box for _, box in L.SLAKE_MASK_REGIONS[1]]
    assert sample.eval_boxes == tuple(tuple(float(v) for v in b) for b in detection + mask)
    assert sample.eval_boxes[0] == (10.0, 20.0, 40.0, 60.0)  # detection [10, 20, 30, 40] is x, y, w, h
    assert sample.meta["eval_box_labels"] == ["Liver", "Lung Cancer", "mask:1", "mask:3"]


def test_slake_image_without_mask_or_detection_has_no_boxes_and_mask_boxes_can_be_skipped():
    ds = SLAKEDataset("train", data_root=data_root("slake"))
    assert ds.samples[2].eval_boxes == () and ds.samples[2].meta["eval_box_labels"] == []
    no_masks = SLAKEDataset("train", data_root=data_root("slake"), mask_boxes=False)
    assert no_masks.samples[0].eval_boxes == ((10.0, 20.0, 40.0, 60.0), (60.0, 8.0, 80.0, 23.0))


def test_slake_images_load_in_their_own_size():
    ds = SLAKEDataset("train", data_root=data_root("slake"))
    for sample in ds.samples:
        w, h = L.SLAKE_SIZES[sample.meta["img_id"]]
        assert_image(ds.load_image(sample), (h, w))
    gray = ds.load_image(ds.samples[2])  # xmlab2 is a grayscale JPEG: three equal channels
    assert np.array_equal(gray[:, :, 0], gray[:, :, 2])


def test_slake_language_selection():
    root = data_root("slake")
    assert [s.sample_id for s in SLAKEDataset("train", data_root=root, language="zh").samples] == ["slake/train/3"]
    everything = SLAKEDataset("train", data_root=root, language="all")
    assert [s.meta["q_lang"] for s in everything.samples] == ["en", "en", "zh", "en", "en"]
    zh = SLAKEDataset("test", data_root=root, language="zh").samples[0]
    assert (zh.question, zh.answer, zh.answer_type) == ("主要器官是什么?", "肺", "open")
    with pytest.raises(ValueError, match="language"):
        SLAKEDataset("train", data_root=root, language="fr")
    # with_split keeps the language
    assert [s.meta["q_lang"] for s in SLAKEDataset("train", data_root=root, language="zh").with_split("test")] == ["zh"]


@pytest.mark.parametrize("alias", ["val", "validation", "validate", "dev"])
def test_slake_validation_split_aliases(alias):
    ds = SLAKEDataset(alias, data_root=data_root("slake"))
    assert ds.split == "validate" and [s.sample_id for s in ds.samples] == ["slake/validate/6"]


def test_slake_reads_validation_json_mirrors(tmp_path):
    root = copy_fixture("slake", tmp_path)
    (root / "validate.json").rename(root / "validation.json")
    assert [s.sample_id for s in SLAKEDataset("val", data_root=root).samples] == ["slake/validate/6"]


def test_slake_mask_label_boxes(tmp_path):
    mask = np.zeros((20, 30, 3), np.uint8)
    mask[2:5, 3:9] = (255, 0, 0)
    mask[10:20, 0:1] = (0, 0, 255)
    Image.fromarray(mask).save(tmp_path / "color.png")
    assert mask_label_boxes(tmp_path / "color.png") == [(255, (0.0, 10.0, 1.0, 20.0)),
                                                        (255 << 16, (3.0, 2.0, 9.0, 5.0))]
    noisy = (np.arange(20 * 30).reshape(20, 30) % 200).astype(np.uint8)
    noisy[:, :2] = 0
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    assert mask_label_boxes(tmp_path / "noisy.png") == [(0, (2.0, 0.0, 30.0, 20.0))]
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty.png")
    assert mask_label_boxes(tmp_path / "empty.png") == []


def test_slake_malformed_files_name_the_file(tmp_path):
    root = copy_fixture("slake", tmp_path)
    (root / "imgs" / "xmlab1" / "detection.json").write_text('[{"Liver": [10, 20, 30]}]')
    with pytest.raises(DatasetFormatError, match=r"detection\.json entry 0"):
        SLAKEDataset("train", data_root=root)
    records = json.loads((root / "test.json").read_text())
    del records[0]["answer_type"]
    (root / "test.json").write_text(json.dumps(records))
    with pytest.raises(DatasetFormatError, match=r"test\.json record 0: missing field 'answer_type'"):
        SLAKEDataset("test", data_root=root)
    (root / "validate.json").write_text('{"not": "a list"}')
    with pytest.raises(DatasetFormatError, match=r"validate\.json: expected a JSON list"):
        SLAKEDataset("validate", data_root=root)
    (root / "train.json").write_text("[{")
    with pytest.raises(DatasetFormatError, match=r"train\.json is not valid JSON"):
        SLAKEDataset("train", data_root=root)


def test_slake_image_path_escaping_the_root_is_refused(tmp_path):
    root = copy_fixture("slake", tmp_path)
    records = json.loads((root / "test.json").read_text())
    records[0]["img_name"] = "../../outside/source.jpg"
    (root / "test.json").write_text(json.dumps(records))
    with pytest.raises(UnsafePathError, match="outside the dataset root"):
        SLAKEDataset("test", data_root=root)


# ----------------------------------------------------------------------------------------------- PathVQA


def test_pathvqa_parquet_samples():
    ds = PathVQADataset("train", data_root=data_root("pathvqa"))
    assert ds.layout_used == "parquet" and len(ds) == len(L.PATHVQA_ROWS["train"])
    assert [s.question for s in ds.samples] == [q for _, q, _ in L.PATHVQA_ROWS["train"]]
    assert [s.answer for s in ds.samples] == [a for _, _, a in L.PATHVQA_ROWS["train"]]
    assert [s.answer_type for s in ds.samples] == ["open", "closed", "open", "open", "closed"]
    assert [s.question_type for s in ds.samples] == ["where", "yes/no", "what", "how much/many", "yes/no"]
    assert ds.samples[0].meta == {"file": "train-00000-of-00001.parquet", "row": 0, "image_path": "train_0000.jpg"}
    assert all(s.modality == "pathology" and s.options == () for s in ds.samples)


def test_pathvqa_images_decode_from_the_parquet_bytes_lazily():
    ds = PathVQADataset("test", data_root=data_root("pathvqa"))
    assert ds._last_group is None  # nothing read beyond questions and answers yet
    for i, sample in enumerate(ds.samples):
        name = L.PATHVQA_ROWS["test"][i][0]
        expected = decode_image(L._pathvqa_image("test", i, name))
        assert np.array_equal(ds.load_image(sample), expected)
    assert ds._last_group[:2] == (0, 1)  # only the last row group's bytes are held
    assert_image(ds.load_image(ds.samples[1]), (64, 80))  # the 16-bit PNG, windowed to 8 bits
    row = ds.load_image(ds.samples[1])[5, :, 0].astype(int)  # a row away from the disc: the ramp 0..60000 of 65535
    assert np.abs(row - np.round(np.linspace(0, 60000, 80) * 255 / 65535)).max() <= 1


def test_pathvqa_dataset_pickles_without_open_files():
    ds = PathVQADataset("train", data_root=data_root("pathvqa"))
    ds.load_image(ds.samples[4])
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._last_group is None and clone._handles == {}
    assert np.array_equal(clone.load_image(clone.samples[4]), ds.load_image(ds.samples[4]))


@pytest.mark.parametrize("alias", ["val", "validation", "validate"])
def test_pathvqa_validation_aliases(alias):
    assert [s.answer for s in PathVQADataset(alias, data_root=data_root("pathvqa")).samples] == ["granuloma", "yes"]


def _malicious_pickle(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps([Payload()])


def test_pathvqa_original_pickles_are_refused_without_trust_pickle(tmp_path):
    root = copy_fixture("pathvqa_original", tmp_path)
    marker = tmp_path / "pickle-ran-code"
    (root / "qas" / "train" / "train_qa.pkl").write_bytes(_malicious_pickle(marker))
    with pytest.raises(UntrustedPickleError) as info:
        PathVQADataset("train", data_root=root)
    message = str(info.value)
    assert "trust_pickle=True" in message and "arbitrary code" in message
    assert "huggingface.co/datasets/flaviagiammarino/path-vqa" in message and "train_qa.pkl" in message
    assert not marker.exists()  # the file was never unpickled


def test_pathvqa_original_pickles_load_with_trust_pickle():
    root = data_root("pathvqa_original")
    train = PathVQADataset("train", data_root=root, trust_pickle=True)
    assert train.layout_used == "pickle"
    assert [(s.question, s.answer, s.answer_type) for s in train.samples] == [
        ("What have lost their nuclei?", "neutrophils", "open"), ("Is this an autopsy specimen?", "yes", "closed")]
    assert train.samples[0].image_key == "images/train/train_0000.jpg"
    assert_image(train.load_image(train.samples[0]), (64, 64))
    test = PathVQADataset("test", data_root=root, trust_pickle=True)  # only the LXMERT-style test_vqa.pkl here
    assert [(s.question, s.answer, s.answer_type) for s in test.samples] == [
        ("What is shown?", "hyaline arteriolosclerosis", "open"), ("Is there fibrosis?", "no", "closed")]
    assert test.samples[1].meta["question_id"] == "200001"
    assert_image(test.load_image(test.samples[1]), (48, 64))
    val = PathVQADataset("val", data_root=root, trust_pickle=True)
    assert val.samples[0].image_key == "images/val/val_0000.jpg"
    # with_split keeps trust_pickle
    assert val.with_split("train").trust_pickle is True


def test_pathvqa_env_passes_trust_pickle_through_dataset_kwargs():
    root = str(data_root("pathvqa_original"))
    with pytest.raises(UntrustedPickleError):
        gym.make("MedVR-PathVQA-v0", data_root=root)
    env = gym.make("MedVR-PathVQA-v0", data_root=root, dataset_kwargs={"trust_pickle": True})
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (224, 224, 3) and info["sample_id"].startswith("pathvqa/train/")


def test_pathvqa_without_pyarrow_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r'pip install "medvr\[data\]"'):
        PathVQADataset("train", data_root=data_root("pathvqa"))


def test_pathvqa_malformed_parquet_names_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = copy_fixture("pathvqa", tmp_path)
    path = root / "data" / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"question": ["q"], "image": [{"bytes": b"x", "path": "a"}]}), path)
    with pytest.raises(DatasetFormatError, match=r"test-00000-of-00001\.parquet: missing column\(s\) \['answer'\]"):
        PathVQADataset("test", data_root=root)
    (root / "data" / "validation-00000-of-00001.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(DatasetFormatError, match=r"cannot read parquet file .*validation-00000-of-00001\.parquet"):
        PathVQADataset("validation", data_root=root)


def test_pathvqa_question_categories():
    assert question_category("How much fluid is present?", "open") == "how much/many"
    assert question_category("Is this benign?", "closed") == "yes/no"
    assert question_category("Name the lesion.", "open") == "other"


# ----------------------------------------------------------------------------------------------- PMC-VQA


def test_pmc_vqa_options_without_prefixes_and_answer_from_label():
    ds = PMCVQADataset("train", data_root=data_root("pmc_vqa"))
    first, second = ds.samples[0], ds.samples[1]
    assert first.options == ("Diffuse uptake pattern", "Focal uptake pattern", "No uptake pattern",
                             "Cannot determine from the information given")
    assert first.answer == "Focal uptake pattern" and first.answer_type == "closed"
    assert second.options == ("CT", "MRI", "PET", "Ultrasound") and second.answer == "MRI"  # " A:CT" style cells
    assert first.image_key == "images/PMC1064097_F1.jpg" and first.meta["answer_label"] == "B"
    assert ds.image_dir == "images" and all(s.question_type == "" for s in ds.samples)
    assert_image(ds.load_image(first), (90, 120))


def test_pmc_vqa_test_clean_and_version_2():
    root = data_root("pmc_vqa")
    clean = PMCVQADataset("test_clean", data_root=root)
    assert len(clean) == 1 and clean.samples[0].answer == "Left lobe"
    assert PMCVQADataset("clean", data_root=root).split == "test_clean"
    v2 = PMCVQADataset("train", data_root=root, version=2)
    assert v2.image_dir == "figures" and v2.samples[0].answer == "Thrombus"
    assert_image(v2.load_image(v2.samples[0]), (90, 120))
    assert PMCVQADataset("test", data_root=root, version="v2").samples[0].answer == "Sagittal"
    with pytest.raises(ValueError, match="no split 'test_clean'"):
        PMCVQADataset("test_clean", data_root=root, version=2)
    with pytest.raises(ValueError, match="version"):
        PMCVQADataset("train", data_root=root, version=3)


def test_pmc_vqa_early_column_names_and_extra_columns(tmp_path):
    root = tmp_path / "pmc"
    L.write_csv(root / "test.csv", ["", "Figure_path", "Caption", "Question", "Anwser", "Choice A", "Choice B",
                                    "Choice C", "Choice D", "Answer_label"],
                [["0", "f.jpg", "A caption", "Which?", " B:Second", " A:First", " B:Second", " C:Third", " D:Fourth",
                  ""]])
    L.save(L.drawn_image(32, 32, 0), root / "images" / "f.jpg")
    sample = PMCVQADataset("test", data_root=root).samples[0]
    assert sample.options == ("First", "Second", "Third", "Fourth") and sample.answer == "Second"


def test_pmc_vqa_malformed_csv_names_the_file(tmp_path):
    root = copy_fixture("pmc_vqa", tmp_path)
    rows = [list(r) for r in L.PMC_ROWS["test.csv"]]
    rows[1][-1] = "E"
    L.write_csv(root / "test.csv", L.PMC_HEADER, rows)
    with pytest.raises(DatasetFormatError, match=r"test\.csv row 2: Answer_label 'E'"):
        PMCVQADataset("test", data_root=root)
    L.write_csv(root / "train.csv", L.PMC_HEADER[:4], [r[:4] for r in L.PMC_ROWS["train.csv"]])
    with pytest.raises(DatasetFormatError, match=r"train\.csv: missing column\(s\)"):
        PMCVQADataset("train", data_root=root)


def test_pmc_vqa_missing_image_folder(tmp_path):
    root = copy_fixture("pmc_vqa", tmp_path)
    shutil.rmtree(root / "images")
    with pytest.raises(DatasetNotFoundError, match="unpack images.zip"):
        PMCVQADataset("train", data_root=root)
    moved = PMCVQADataset("train", data_root=root, image_dir="figures")  # an explicit folder is used as given
    assert moved.samples[0].image_key == "figures/PMC1064097_F1.jpg"


# ----------------------------------------------------------------------------------------------- OmniMedVQA


def test_omnimedvqa_open_access_samples():
    ds = OmniMedVQADataset(data_root=data_root("omnimedvqa"))
    assert ds.split == "test" and len(ds) == 4
    first = ds.samples[0]
    assert first.sample_id == "omnimedvqa/open/ACRIMA/ACRIMA_0000"
    assert first.options == ("Normal", "Glaucoma", "Cataract", "Diabetic retinopathy")
    assert (first.answer, first.answer_type, first.question_type) == ("Glaucoma", "closed", "Disease Diagnosis")
    assert first.modality == "Fundus Photography" and first.image_key == "Images/ACRIMA/Im001_ACRIMA.png"
    assert ds.samples[1].options == ("OCT", "Fundus photography", "CT")  # no option_D
    assert ds.samples[2].options == ("Lung", "Liver")
    assert ds.samples[3].modality == "CT"  # the record that writes `modality`
    assert_image(ds.load_image(ds.samples[2]), (100, 100))  # a path with spaces
    assert ds.available_sources == ("ACRIMA", "Chest CT Scan")
    assert ds.available_question_types == ("Anatomy Identification", "Disease Diagnosis", "Modality Recognition")


def test_omnimedvqa_access_and_sources():
    root = data_root("omnimedvqa")
    restricted = OmniMedVQADataset("all", data_root=root, access="restricted")
    assert [s.sample_id for s in restricted.samples] == ["omnimedvqa/restricted/AIDA/AIDA_0000"]
    assert restricted.samples[0].question_type == "Lesion Grading" and restricted.split == "test"
    assert len(OmniMedVQADataset(data_root=root, access="all")) == 5
    acrima = OmniMedVQADataset(data_root=root, sources="ACRIMA")
    assert {s.meta["source"] for s in acrima.samples} == {"ACRIMA"} and len(acrima) == 2
    assert acrima.with_split("test").sources == ["ACRIMA"]
    with pytest.raises(ValueError, match="unknown OmniMedVQA sources .*available: \\['ACRIMA', 'Chest CT Scan'\\]"):
        OmniMedVQADataset(data_root=root, sources=["AIDA"])  # restricted, but access="open"
    with pytest.raises(ValueError, match="access"):
        OmniMedVQADataset(data_root=root, access="public")
    with pytest.raises(ValueError, match="has no split 'train'"):
        OmniMedVQADataset("train", data_root=root)


def test_omnimedvqa_accepts_json_lines(tmp_path):
    root = copy_fixture("omnimedvqa", tmp_path)
    path = root / "QA_information" / "Open-access" / "ACRIMA.json"
    L.write_jsonl(path, json.loads(path.read_text()))
    assert len(OmniMedVQADataset(data_root=root, sources=["ACRIMA"])) == 2


def test_omnimedvqa_malformed_record_names_the_file(tmp_path):
    root = copy_fixture("omnimedvqa", tmp_path)
    path = root / "QA_information" / "Open-access" / "ACRIMA.json"
    records = json.loads(path.read_text())
    del records[1]["gt_answer"]
    path.write_text(json.dumps(records))
    with pytest.raises(DatasetFormatError, match=r"Open-access/ACRIMA\.json record 1: missing field 'gt_answer'"):
        OmniMedVQADataset(data_root=root)


# ----------------------------------------------------------------------------------------------- MedXpertQA


def test_medxpertqa_samples():
    ds = MedXpertQADataset("test", data_root=data_root("medxpertqa"))
    assert [s.sample_id for s in ds.samples] == ["medxpertqa/test/MM-2000", "medxpertqa/test/MM-2001",
                                                 "medxpertqa/test/MM-2002"]
    first = ds.samples[0]
    assert first.options[3] == "Abdominal ultrasound" and first.answer == "Abdominal ultrasound"
    assert first.question.startswith("A 62-year-old woman") and "Answer Choices:" in first.question
    assert (first.answer_type, first.question_type, first.organ) == ("closed", "Reasoning", "Digestive")
    assert first.meta["medical_task"] == "Diagnosis" and first.meta["label"] == "D"
    assert ds.samples[2].answer == "A" and ds.samples[2].meta["label"] == "C"  # options that are letters
    dev = MedXpertQADataset("validation", data_root=data_root("medxpertqa"))
    assert dev.split == "dev" and dev.samples[0].answer == "Gout"


def test_medxpertqa_tiles_several_images_deterministically():
    root = data_root("medxpertqa")
    ds = MedXpertQADataset("test", data_root=root)
    two = ds.load_image(ds.samples[1])  # a: 80x60, b: 40x40 scaled to 60x60, 8 px gap
    assert two.shape == (60, 80 + 8 + 60, 3)
    a = decode_image(root / "images" / "MM-2001-a.jpeg")
    assert np.array_equal(two[:, :80], a)  # the tallest image is not resampled
    assert not two[:, 80:88].any()  # the gap is black
    four = ds.load_image(ds.samples[2])  # 2 per row: (80+8+60) over (120+8+60), rows of height 60
    assert four.shape == (60 + 8 + 60, 120 + 8 + 60, 3)
    assert not four[60:68].any() and not four[:60, 148:].any()
    ds.cache.clear()
    assert np.array_equal(ds.load_image(ds.samples[2]), four)
    assert_image(ds.load_image(ds.samples[0]), (60, 80))  # a single image is returned as is


def test_tile_images_keeps_grayscale_as_one_broadcast_channel():
    gray = np.broadcast_to(np.full((10, 20), 100, np.uint8)[:, :, None], (10, 20, 3))
    tiled = tile_images([gray, gray])
    assert tiled.shape == (10, 48, 3) and tiled.strides[2] == 0 and not tiled.flags.writeable
    assert tiled[0, 0, 0] == 100 and tiled[0, 20:28].max() == 0
    mixed = tile_images([gray, np.full((10, 20, 3), (5, 6, 7), np.uint8)])
    assert mixed.strides[2] != 0 and mixed[0, -1].tolist() == [5, 6, 7] and mixed[0, 0].tolist() == [100] * 3


def test_tile_images_respects_the_pixel_budget():
    images = [np.full((100, 100, 3), 200, np.uint8), np.full((50, 200, 3), 100, np.uint8)]
    tiled = tile_images(images, max_pixels=5_000)
    assert tiled.shape[0] * tiled.shape[1] <= 5_000 and tiled.max() == 200


def test_medxpertqa_malformed_jsonl_names_the_file(tmp_path):
    root = copy_fixture("medxpertqa", tmp_path)
    records = [json.loads(line) for line in (root / "MM" / "test.jsonl").read_text().splitlines()]
    records[1]["label"] = "F"
    L.write_jsonl(root / "MM" / "test.jsonl", records)
    with pytest.raises(DatasetFormatError, match=r"test\.jsonl record 1 .*label 'F'"):
        MedXpertQADataset("test", data_root=root)
    (root / "MM" / "dev.jsonl").write_text('{"id": "MM-0",\n')
    with pytest.raises(DatasetFormatError, match=r"dev\.jsonl line 1 is not valid JSON"):
        MedXpertQADataset("dev", data_root=root)


# ----------------------------------------------------------------------------------------------- custom


def test_custom_jsonl_records():
    ds = CustomVQADataset("train", data_root=data_root("custom"))
    ct, mr, us = ds.samples
    assert ct.sample_id == "custom/train/ct-1" and ct.eval_boxes == ((12.0, 10.0, 30.0, 26.0),)
    assert (ct.answer_type, ct.question_type, ct.modality, ct.organ) == ("closed", "presence", "CT", "lung")
    assert mr.options == ("T1", "T2", "FLAIR") and mr.answer == "T2" and mr.answer_type == "closed"  # letter "B"
    assert mr.meta["site"] == "hospital-a"  # extra fields are kept
    assert us.answer_type == "open" and us.options == ()
    assert_image(ds.load_image(ct), (48, 64))  # 16-bit PNG, windowed
    assert_image(ds.load_image(mr), (64, 72))
    assert_image(ds.load_image(us), (64, 64))  # RGBA composited


def test_custom_csv_records():
    ds = CustomVQADataset("test", data_root=data_root("custom"))
    first, second = ds.samples
    assert first.sample_id == "custom/test/test.csv:2" and first.options == ("left", "right")
    assert first.eval_boxes == ((12.0, 10.0, 30.0, 26.0), (40.0, 20.0, 60.0, 40.0))
    assert (second.answer, second.answer_type, second.options, second.eval_boxes) == ("no", "closed", (), ())


def test_custom_single_manifest_with_split_field(tmp_path):
    root = tmp_path / "mine"
    L.save(L.drawn_image(32, 32, 0), root / "a.png")
    L.write_jsonl(root / "manifest.jsonl", [
        {"image": "a.png", "question": "q1", "answer": "yes", "split": "train"},
        {"image": "a.png", "question": "q2", "answer": "no", "split": "val"},
        {"image": "a.png", "question": "q3", "answer": "x", "split": "test"},
    ])
    assert [s.question for s in CustomVQADataset("train", data_root=root).samples] == ["q1"]
    assert [s.question for s in CustomVQADataset("validation", data_root=root).samples] == ["q2"]
    assert [s.sample_id for s in CustomVQADataset("test", data_root=root).samples] == ["custom/test/manifest.jsonl:3"]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"question": "q", "answer": "a"}, "missing field 'image'"),
        ({"image": "a.png", "question": "q", "answer": "maybe", "options": ["yes", "no"]}, "not one of the options"),
        ({"image": "a.png", "question": "q", "answer": "yes", "boxes": [[10, 10, 5, 20]]}, r"boxes\[0\]"),
        ({"image": "a.png", "question": "q", "answer": "yes", "answer_type": "maybe"}, "answer_type"),
        ({"image": "a.png", "question": "q", "answer": "yes", "split": "test"}, "split 'test' in the 'train'"),
        ({"image": "a.png", "question": "q", "answer": "yes", "options": "yes"}, "at least two"),
    ],
)
def test_custom_malformed_records_name_file_and_line(tmp_path, record, message):
    root = tmp_path / "mine"
    L.save(L.drawn_image(32, 32, 0), root / "a.png")
    L.write_jsonl(root / "train.jsonl", [{"image": "a.png", "question": "fine", "answer": "yes"}, record])
    with pytest.raises(DatasetFormatError, match=rf"train\.jsonl line 2\b.*{message}"):
        CustomVQADataset("train", data_root=root)


def test_custom_duplicate_ids_ambiguous_manifests_and_escaping_paths(tmp_path):
    root = tmp_path / "mine"
    L.save(L.drawn_image(32, 32, 0), root / "a.png")
    L.write_jsonl(root / "train.jsonl", [{"id": "x", "image": "a.png", "question": "q", "answer": "a"}] * 2)
    with pytest.raises(DatasetFormatError, match="line 2: duplicate id 'x'"):
        CustomVQADataset("train", data_root=root)
    L.write_csv(root / "train.csv", ["image", "question", "answer"], [["a.png", "q", "a"]])
    with pytest.raises(DatasetFormatError, match="keep one manifest per split"):
        CustomVQADataset("train", data_root=root)
    L.write_jsonl(root / "test.jsonl", [{"image": "../secret.png", "question": "q", "answer": "a"}])
    with pytest.raises(UnsafePathError, match=r"test\.jsonl line 1"):
        CustomVQADataset("test", data_root=root)


def test_custom_manifest_that_is_not_utf8_names_file_line_and_column(tmp_path):
    root = tmp_path / "mine"
    L.save(L.drawn_image(32, 32, 0), root / "a.png")
    good = json.dumps({"image": "a.png", "question": "fine", "answer": "yes"}).encode()
    bad = '{"image": "a.png", "question": "Größe?", "answer": "yes"}'.encode("latin-1")
    (root / "train.jsonl").write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(DatasetFormatError, match=r"train\.jsonl line 2, column 35: byte b'\\xf6' is not UTF-8"):
        CustomVQADataset("train", data_root=root)
    (root / "train.jsonl").unlink()
    (root / "train.csv").write_bytes(b"image,question,answer\n" + "a.png,Größe?,yes\n".encode("cp1252"))
    with pytest.raises(DatasetFormatError, match=r"train\.csv line 2, column 9: .*not UTF-8"):
        CustomVQADataset("train", data_root=root)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes need a POSIX system")
def test_named_pipe_in_place_of_an_image_or_manifest_is_an_error_not_a_hang(tmp_path):
    import os

    from medvr_env.data.images import ImageDecodeError
    from medvr_env.data.slake import mask_label_boxes

    import signal

    def hung(*_):
        raise TimeoutError("reading a named pipe blocked: only regular files may be read")

    signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)  # a regression would otherwise hang CI
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    os.mkfifo(root / "images" / "x.png")  # nobody ever writes to it: reading it blocking would wait forever
    L.write_jsonl(root / "train.jsonl", [{"image": "images/x.png", "question": "q", "answer": "yes"}])
    env = gym.make("MedVR-VQA-Custom-v0", data_root=str(root), split="train")
    with pytest.raises(ImageDecodeError, match=r"x\.png is a named pipe, not a regular file"):
        env.reset(seed=0)
    with pytest.raises(ImageDecodeError, match="is a folder"):
        decode_image(root / "images")
    os.mkfifo(root / "mask.png")
    with pytest.raises(DatasetFormatError, match="named pipe"):
        mask_label_boxes(root / "mask.png")
    from medvr_env.data.files import read_json

    os.mkfifo(root / "manifest.json")
    with pytest.raises(DatasetFormatError, match="named pipe"):
        read_json(root / "manifest.json")
    signal.alarm(0)


# ----------------------------------------------------------------------------------------------- envs


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_registered_id_runs_an_episode(env_id):
    name = ENV_IDS[env_id]
    env = gym.make(env_id, data_root=str(data_root(name)))
    assert env.spec.kwargs["dataset"] == name
    dataset = env.unwrapped.dataset
    for index in range(len(dataset)):
        obs, info = env.reset(seed=index, options={"index": index})
        sample = dataset[index]
        assert obs["image"].shape == (224, 224, 3) and info["sample_id"] == sample.sample_id
        if sample.options:
            assert obs["options"].startswith("A. ")
        obs, reward, terminated, truncated, info = env.step(
            {"name": "zoom", "arguments": {"bbox_2d": [0.1, 0.1, 0.6, 0.6]}})
        assert not terminated and info["num_views"] == 2 and info["error"] == ""
        # Multiple choice is answered with the option letter (MedXpertQA has options that are themselves letters).
        answer = option_letter(sample.options.index(sample.answer)) if sample.options else sample.answer
        obs, reward, terminated, truncated, info = env.step({"name": "answer", "arguments": {"text": answer}})
        assert terminated and info["stop_reason"] == "answered" and info["is_success"], (env_id, sample.sample_id)
    env.close()


def test_env_selection_kwargs_and_dataset_kwargs_reach_the_adapter():
    root = str(data_root("slake"))
    env = gym.make("MedVR-SLAKE-v0", data_root=root, split="test", answer_types="closed",
                   dataset_kwargs={"language": "all"})
    assert [s.sample_id for s in env.unwrapped.dataset.samples] == ["slake/test/9"]
    zh = gym.make("MedVR-SLAKE-v0", data_root=root, dataset_kwargs={"language": "zh"})
    assert [s.meta["q_lang"] for s in zh.unwrapped.dataset.samples] == ["zh"]
    with pytest.raises(TypeError, match="does not take \\['lang'\\]"):
        gym.make("MedVR-SLAKE-v0", data_root=root, dataset_kwargs={"lang": "zh"})


def test_missing_dataset_error_through_gym_make(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="huggingface.co/datasets/TsinghuaC3I/MedXpertQA"):
        gym.make("MedVR-MedXpertQA-v0", data_root=str(tmp_path / "nowhere"))
