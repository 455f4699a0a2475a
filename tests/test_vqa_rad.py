"""VQA-RAD on the real data in ../shared (skipped with a reason when absent), and the OSF release layout."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from medvr_env.data.files import DATA_ENV_VAR, DatasetFormatError, DatasetNotFoundError
from medvr_env.data.images import UnsafePathError
from medvr_env.data.vqa_rad import OSF_IMAGES, OSF_MANIFEST, VQARADDataset

from .dataset_fixtures import SKIP_VQA_RAD, VQA_RAD_ROOT

real = pytest.mark.skipif(not (VQA_RAD_ROOT / "testset.json").is_file(), reason=SKIP_VQA_RAD)


@real
def test_real_splits_have_the_published_sizes_and_fields():
    test = VQARADDataset(split="test", data_root=VQA_RAD_ROOT)
    train = VQARADDataset(split="train", data_root=VQA_RAD_ROOT)
    assert len(test) == 451 and len(train) == 3064
    assert sum(s.answer_type == "closed" for s in test) == 272
    assert sum(s.answer_type == "open" for s in test) == 179
    assert {s.organ for s in test} == {"HEAD", "CHEST", "ABD"}
    assert set(test.available_question_types) <= {"PRES", "POS", "ABN", "SIZE", "MODALITY", "PLANE", "ORGAN",
                                                  "COUNT", "COLOR", "ATTRIB", "OTHER"}
    first = test[0]
    assert first.sample_id == "vqa_rad/test/11" and first.answer == "yes"
    assert first.question == "Is there evidence of an aortic aneurysm?" and first.image_key == "images/synpic42202.jpg"
    combined = [s for s in test if len(s.meta["question_types"]) > 1]
    assert combined and all(s.question_type == s.meta["question_types"][0] for s in combined)


@real
def test_real_images_decode_and_are_cached():
    ds = VQARADDataset(split="test", data_root=VQA_RAD_ROOT, num_samples=3)
    image = ds.load_image(ds[0])
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and min(image.shape[:2]) >= 256
    assert ds.load_image(ds[0]) is image and ds.cache.hits == 1


@real
def test_filters_and_slicing():
    closed_pres = VQARADDataset(split="test", data_root=VQA_RAD_ROOT, question_types=["PRES"], answer_types="closed")
    assert len(closed_pres) > 50 and all(s.question_type == "PRES" and s.answer_type == "closed" for s in closed_pres)
    full = VQARADDataset(split="test", data_root=VQA_RAD_ROOT)
    window = VQARADDataset(split="test", data_root=VQA_RAD_ROOT, start_index=10, num_samples=5)
    assert [s.sample_id for s in window] == [s.sample_id for s in full.samples[10:15]]
    with pytest.raises(ValueError, match="unknown \\['NOPE'\\].*valid"):
        VQARADDataset(split="test", data_root=VQA_RAD_ROOT, question_types=["NOPE"])
    with pytest.raises(ValueError, match="answer_types"):
        VQARADDataset(split="test", data_root=VQA_RAD_ROOT, answer_types="maybe")
    with pytest.raises(ValueError, match="451 samples"):
        VQARADDataset(split="test", data_root=VQA_RAD_ROOT, num_samples=500)
    with pytest.raises(ValueError, match="no split 'validation'"):
        VQARADDataset(split="validation", data_root=VQA_RAD_ROOT)


@real
def test_registered_id_through_gym_make_and_env_var(monkeypatch):
    env = gym.make("MedVR-VQA-RAD-v0", data_root=str(VQA_RAD_ROOT), split="test", num_samples=4, answer_types="open")
    obs, info = env.reset(seed=0)
    assert env.unwrapped.dataset.split == "test" and len(env.unwrapped.dataset) == 4
    assert obs["image"].shape == (224, 224, 3) and obs["question"]
    _, reward, terminated, _, info = env.step({"name": "answer", "arguments": {"text": env.unwrapped.episode.sample.answer}})
    assert terminated and info["is_success"] and reward > 0
    monkeypatch.setenv(DATA_ENV_VAR, str(VQA_RAD_ROOT.parent))
    assert len(gym.make("MedVR-VQA-RAD-v0", split="test").unwrapped.dataset) == 451


def test_missing_root_says_where_it_looked_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError,
                       match=f"tried {tmp_path}/data/vqa_rad, .*/shared/data/vqa_rad. Pass data_root=.*MEDVR_DATA.*osf.io/89kps"):
        VQARADDataset(split="test")
    (tmp_path / "data" / "vqa_rad" / "images").mkdir(parents=True)
    record = {"qid": 1, "image_name": "a.jpg", "question": "q?", "answer": "yes", "answer_type": "CLOSED"}
    (tmp_path / "data" / "vqa_rad" / "testset.json").write_text(json.dumps([record]))
    assert len(VQARADDataset(split="test")) == 1  # ./data/vqa_rad is the default folder
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match=f"tried {tmp_path}/elsewhere/vqa_rad .*MEDVR_DATA"):
        gym.make("MedVR-VQA-RAD-v0")
    (tmp_path / "elsewhere" / "vqa_rad").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="expected testset.json"):
        VQARADDataset(split="test")


def _osf_fixture(root):
    """The OSF release: one JSON with every record (extra OSF fields included), images in 'VQA_RAD Image Folder'."""
    (root / OSF_IMAGES).mkdir(parents=True)
    for name, value in (("synpic100.jpg", 60), ("synpic200.jpg", 180)):
        Image.fromarray(np.full((40, 50), value, np.uint8)).save(root / OSF_IMAGES / name)
    common = {"qid_linked_id": "", "image_case_url": "https://medpix.nlm.nih.gov/case?id=x", "evaluation": "not evaluated",
              "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL"}
    records = [
        {"qid": "0", "phrase_type": "freeform", "image_name": "synpic100.jpg", "image_organ": "HEAD",
         "question": "Is there a mass?", "question_type": "PRES", "answer": "Yes", "answer_type": "CLOSED", **common},
        {"qid": "1", "phrase_type": "test_freeform", "image_name": "synpic200.jpg", "image_organ": "CHEST",
         "question": "How many ribs are fractured?", "question_type": "COUNT", "answer": 2, "answer_type": "OPEN ",
         **common},
        {"qid": "2", "phrase_type": "test_para", "image_name": "synpic200.jpg", "image_organ": "CHEST",
         "question": "Where is the lesion?", "question_type": "Pos, Pres", "answer": "left lower lobe",
         "answer_type": "OPEN", **common},
        {"qid": "3", "phrase_type": "frame", "image_name": "synpic100.jpg", "image_organ": "HEAD",
         "question": "Is this an MRI?", "question_type": "ATRIB", "answer": "no", "answer_type": "CLOSED", **common},
    ]
    (root / OSF_MANIFEST).write_text(json.dumps(records))


def test_osf_release_layout(tmp_path):
    _osf_fixture(tmp_path)
    test = VQARADDataset(split="test", data_root=tmp_path)
    train = VQARADDataset(split="train", data_root=tmp_path)
    assert [s.sample_id for s in test] == ["vqa_rad/test/1", "vqa_rad/test/2"]
    assert [s.sample_id for s in train] == ["vqa_rad/train/0", "vqa_rad/train/3"]
    count, where = test[0], test[1]
    assert count.answer == "2" and count.answer_type == "open" and count.question_type == "COUNT"
    assert where.question_type == "POS" and where.meta["question_types"] == ["POS", "PRES"]
    assert train[1].question_type == "ATTRIB"  # the OSF file's spelling ATRIB is normalised
    assert test.load_image(count)[0, 0, 0] == 180


def test_malformed_manifests_name_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "testset.json").write_text("[{\"qid\": 1, ")
    with pytest.raises(DatasetFormatError, match="testset.json is not valid JSON"):
        VQARADDataset(split="test", data_root=tmp_path)
    (tmp_path / "testset.json").write_text(json.dumps([{"qid": 1, "question": "q", "answer": "a", "answer_type": "OPEN"}]))
    with pytest.raises(DatasetFormatError, match="testset.json record 0: missing field 'image_name'"):
        VQARADDataset(split="test", data_root=tmp_path)


def test_manifest_path_traversal_is_rejected(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "secret.png")
    record = {"qid": 1, "image_name": "../../secret.png", "question": "q?", "answer": "yes", "answer_type": "CLOSED"}
    (tmp_path / "data" / "testset.json").write_text(json.dumps([record]))
    ds = VQARADDataset(split="test", data_root=tmp_path / "data")
    with pytest.raises(UnsafePathError, match="outside the dataset root"):
        ds.load_image(ds[0])


def test_corrupt_image_in_a_dataset_names_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "synpic1.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    record = {"qid": 1, "image_name": "synpic1.jpg", "question": "q?", "answer": "yes", "answer_type": "CLOSED"}
    (tmp_path / "testset.json").write_text(json.dumps([record]))
    env = gym.make("MedVR-VQA-RAD-v0", data_root=str(tmp_path), split="test")
    with pytest.raises(ValueError, match="synpic1.jpg"):
        env.reset(seed=0)


@real
def test_real_vqa_rad_passes_the_dataset_conformance_check():
    from medvr_env.testing import check_dataset

    check_dataset(VQARADDataset(split="test", data_root=VQA_RAD_ROOT), max_samples=30)


def test_conformance_check_catches_a_broken_dataset():
    from medvr_env.testing import DatasetCheckError, check_dataset

    from .helpers import ArrayDataset

    class WritableImages(ArrayDataset):
        def load_image(self, sample):
            return np.zeros((32, 32, 3), np.uint8)  # writeable: the env's shared cache could be corrupted

    with pytest.raises(DatasetCheckError, match="read-only"):
        check_dataset(WritableImages(), check_env_too=False)
    check_dataset(ArrayDataset(), check_env_too=False)
