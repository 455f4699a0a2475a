"""The procedural dataset (default data of MedVR-VQA-v0) and its background catalogue."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from medvr_env.data import ProceduralDataset, Sample, VQADataset
from medvr_env.data import backgrounds as bgmod
from medvr_env.data import procedural as proc
from medvr_env.data.backgrounds import BACKGROUNDS, SPLIT_BACKGROUNDS, load_background
from medvr_env.data.procedural import ANSWER_SETS, ANSWER_TYPES, KINDS, QUADRANTS, QUESTION_TYPES

SIZE = 1024


# --------------------------------------------------------------------------- helpers
def samples_of(ds: ProceduralDataset, n: int) -> list[Sample]:
    return [ds[i] for i in range(min(n, len(ds)))]


def box_span(box) -> float:
    x1, y1, x2, y2 = box
    return max(x2 - x1, y2 - y1)


def ring_difference(image: np.ndarray, box) -> float:
    """Mean grey level inside ``box`` minus the mean of the ring around it (one box width wide)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    ix1, iy1, ix2, iy2 = int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2))
    ox1, oy1 = max(int(np.floor(x1 - w)), 0), max(int(np.floor(y1 - h)), 0)
    ox2, oy2 = min(int(np.ceil(x2 + w)), image.shape[1]), min(int(np.ceil(y2 + h)), image.shape[0])
    gray = image[oy1:oy2, ox1:ox2].astype(np.float32).mean(axis=2)
    inner = np.zeros(gray.shape, bool)
    inner[iy1 - oy1 : iy2 - oy1, ix1 - ox1 : ix2 - ox1] = True
    return float(gray[inner].mean() - gray[~inner].mean())


def centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


@pytest.fixture(scope="module")
def train() -> ProceduralDataset:
    return ProceduralDataset(split="train", num_samples=400)


@pytest.fixture(scope="module")
def test_split() -> ProceduralDataset:
    return ProceduralDataset(split="test", num_samples=400)


@pytest.fixture(scope="module", params=QUESTION_TYPES)
def typed(request) -> tuple[str, list[Sample]]:
    qtype = request.param
    ds = ProceduralDataset(split="train", num_samples=30, seed=3, question_types=[qtype])
    return qtype, samples_of(ds, 30)


# --------------------------------------------------------------------------- protocol and determinism
def test_implements_the_dataset_protocol(train):
    assert isinstance(train, VQADataset)
    assert train.name == "procedural" and train.split == "train"
    assert len(train) == 400
    assert isinstance(train[0], Sample)
    assert train[-1] == train[399]


def test_same_arguments_give_identical_samples_and_pixels():
    a = ProceduralDataset(split="train", num_samples=12, seed=7)
    b = ProceduralDataset(split="train", num_samples=12, seed=7)
    for i in (0, 5, 11):
        assert a[i] == b[i]
        assert np.array_equal(a.load_image(a[i]), b.load_image(b[i]))
    # start_index shifts the global index: the same sample comes back
    shifted = ProceduralDataset(split="train", num_samples=5, seed=7, start_index=5)
    assert shifted[0] == a[5]
    assert np.array_equal(shifted.load_image(shifted[0]), a.load_image(a[5]))


def test_different_index_seed_or_split_gives_different_samples():
    ds = ProceduralDataset(split="train", num_samples=4, seed=0)
    other_seed = ProceduralDataset(split="train", num_samples=4, seed=1)
    other_split = ProceduralDataset(split="test", num_samples=4, seed=0)
    img0 = ds.load_image(ds[0])
    assert ds[0].image_key != ds[1].image_key
    assert not np.array_equal(img0, ds.load_image(ds[1]))
    assert not np.array_equal(img0, other_seed.load_image(other_seed[0]))
    assert not np.array_equal(img0, other_split.load_image(other_split[0]))
    assert ds[0].sample_id != other_seed[0].sample_id != other_split[0].sample_id


def test_pixels_are_regenerated_from_the_image_key_alone(train):
    sample = train[17]
    assert sample.image_key.startswith("procedural/train/0/17/")
    fresh = ProceduralDataset(split="test", num_samples=1, question_types=["count"])  # other split, other types
    assert np.array_equal(fresh.load_image(sample), train.load_image(sample))
    assert np.array_equal(fresh.load_image(sample.image_key), train.load_image(sample))


def test_getitem_draws_metadata_without_rendering(monkeypatch):
    def no_render(plan):
        raise AssertionError("__getitem__ must not render pixels")

    monkeypatch.setattr(proc, "_render", no_render)
    ds = ProceduralDataset(split="test", num_samples=10**9)  # lazy: nothing is generated up front
    sample = ds[123_456_789]
    assert sample.question and sample.answer
    with pytest.raises(AssertionError, match="must not render"):
        ds.load_image(sample)


def test_pickle_round_trip_keeps_samples_and_pixels(train):
    clone = pickle.loads(pickle.dumps(train))
    assert clone[3] == train[3]
    assert np.array_equal(clone.load_image(clone[3]), train.load_image(train[3]))


def test_images_are_read_only_uint8_rgb(train):
    for i in range(4):
        image = train.load_image(train[i])
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert not image.flags.writeable
        with pytest.raises(ValueError):
            image[0, 0, 0] = 1


def test_image_size_scales_images_and_boxes():
    small = ProceduralDataset(split="train", num_samples=20, image_size=256)
    big = ProceduralDataset(split="train", num_samples=20, image_size=1024)
    for i in range(20):
        s, b = small[i], big[i]
        assert small.load_image(s).shape == (256, 256, 3)
        assert (s.question, s.answer, s.meta["background"]) == (b.question, b.answer, b.meta["background"])
        for bs, bb in zip(s.eval_boxes, b.eval_boxes):
            assert np.allclose(np.array(bs) * 4, bb, atol=0.1)


# --------------------------------------------------------------------------- splits and backgrounds
def test_train_and_test_use_disjoint_backgrounds(train, test_split):
    train_names, test_names = set(SPLIT_BACKGROUNDS["train"]), set(SPLIT_BACKGROUNDS["test"])
    assert train_names and test_names and not train_names & test_names
    assert {BACKGROUNDS[n].filename for n in train_names}.isdisjoint(BACKGROUNDS[n].filename for n in test_names)
    used_train = {s.meta["background"] for s in samples_of(train, 150)}
    used_test = {s.meta["background"] for s in samples_of(test_split, 150)}
    assert used_train <= train_names and used_test <= test_names
    assert used_train == train_names and used_test == test_names  # every background is drawn
    for names in (train_names, test_names):
        assert len({BACKGROUNDS[n].modality for n in names}) >= 4  # modalities are mixed in both splits


def test_samples_carry_modality_organ_and_source(test_split):
    for s in samples_of(test_split, 20):
        entry = BACKGROUNDS[s.meta["background"]]
        assert (s.modality, s.organ, s.split) == (entry.modality, entry.organ, "test")
        assert entry.source in s.meta["source"] and s.meta["source"].startswith("Synthetic findings")


@pytest.mark.parametrize("name", sorted(BACKGROUNDS))
def test_backgrounds_decode_to_cached_read_only_rgb(name):
    image = load_background(name)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    assert min(image.shape[:2]) >= 200
    assert not image.flags.writeable
    assert load_background(name) is image  # cached per process
    assert 10 < float(image.mean()) < 245 and float(image.std()) > 15  # windowed, not blank or saturated
    assert BACKGROUNDS[name].source


def test_monochrome1_is_inverted_and_monochrome2_is_not():
    import pydicom
    from pydicom.data import get_testdata_file

    for filename, sign in (("RG1_UNCR.dcm", -1), ("MR2_UNCR.dcm", 1)):
        raw = pydicom.dcmread(get_testdata_file(filename, download=False)).pixel_array.astype(np.float64)
        out = bgmod._load_dicom(filename, "pydicom-data")
        corr = np.corrcoef(raw.ravel()[::37], out.astype(np.float64).ravel()[::37])[0, 1]
        assert sign * corr > 0.8, (filename, corr)


def test_ybr_dicom_is_not_converted_twice():
    rgb = bgmod._load_dicom("SC_rgb.dcm", "pydicom-data").astype(int)
    ybr = bgmod._load_dicom("SC_ybr_full_uncompressed.dcm", "pydicom-data").astype(int)
    assert rgb.shape == ybr.shape and rgb.ndim == 3
    assert np.abs(rgb - ybr).max() <= 8


def test_missing_background_file_names_the_package(monkeypatch):
    import pydicom.data

    monkeypatch.setattr(pydicom.data, "get_testdata_file", lambda *a, **k: None)
    with pytest.raises(bgmod.BackgroundUnavailableError, match="pip install pydicom-data"):
        bgmod._load_dicom("RG1_UNCR.dcm", "pydicom-data")
    with pytest.raises(KeyError, match="unknown background"):
        load_background("no_such_background")
    with pytest.raises(ValueError, match="valid splits"):
        bgmod.backgrounds_for_split("validation")


# --------------------------------------------------------------------------- questions and answers
def test_every_question_type_answers_from_its_documented_set(typed):
    qtype, samples = typed
    assert {s.question_type for s in samples} == {qtype}
    for s in samples:
        assert s.answer in ANSWER_SETS[qtype], (qtype, s.answer)
        assert s.answer_type == ANSWER_TYPES[qtype]
        assert s.question.endswith("?") and s.meta["target_kind"] in s.question
        if qtype.endswith("_mc"):
            assert len(s.options) == 4 and len(set(s.options)) == 4
            assert s.answer in s.options and set(s.options) <= set(ANSWER_SETS[qtype])
        else:
            assert s.options == ()
    assert len({s.answer for s in samples}) >= 2  # answers vary


def test_answer_types_match_the_documentation():
    assert {t for t, a in ANSWER_TYPES.items() if a == "open"} == {"location", "count"}
    assert set(ANSWER_TYPES) == set(QUESTION_TYPES) == set(ANSWER_SETS)


def test_answers_agree_with_the_findings(typed):
    qtype, samples = typed
    half = SIZE / 2
    for s in samples:
        kinds = s.meta["finding_kinds"]
        target = s.meta["target_kind"]
        targets = [f["box"] for f in s.meta["findings"] if f["kind"] == target]
        assert [list(b) for b in s.eval_boxes] == targets  # the eval boxes are exactly the asked-about findings
        assert len(kinds) <= 5  # up to 4 asked-about findings + 1 look-alike (count questions)
        if qtype == "presence":
            assert (s.answer == "yes") == bool(s.eval_boxes)
        elif qtype in ("count", "count_mc"):
            assert s.answer == str(len(s.eval_boxes))
        elif qtype in ("location", "location_mc"):
            (box,) = s.eval_boxes
            row = "upper" if box[3] < half else "lower" if box[1] > half else None
            col = "left" if box[2] < half else "right" if box[0] > half else None
            assert f"{row} {col}" == s.answer, (box, s.answer)
        elif qtype == "side":
            (box,) = s.eval_boxes
            assert ("left" if box[2] < half else "right" if box[0] > half else None) == s.answer
        elif qtype == "comparison":
            left, right = sorted(s.eval_boxes, key=lambda b: b[0])
            assert left[2] < half < right[0]
            bigger = "left" if box_span(left) > box_span(right) else "right"
            assert bigger == s.answer
            ratio = max(box_span(left), box_span(right)) / min(box_span(left), box_span(right))
            assert 1.2 <= ratio <= 1.45, ratio  # close enough to need a zoom (under 1 px apart at 224)
            assert target in ("nodule", "lesion")


def test_presence_is_balanced_and_covers_all_kinds():
    ds = ProceduralDataset(split="test", num_samples=120, question_types=["presence"])
    samples = samples_of(ds, 120)
    yes = sum(s.answer == "yes" for s in samples)
    assert 0.3 * len(samples) < yes < 0.7 * len(samples)
    assert {s.meta["target_kind"] for s in samples} == set(KINDS)
    assert all(s.eval_boxes == () for s in samples if s.answer == "no")


def test_location_mc_uses_all_quadrants_in_varied_order():
    ds = ProceduralDataset(split="train", num_samples=60, question_types=["location_mc"])
    samples = samples_of(ds, 60)
    assert {s.answer for s in samples} == set(QUADRANTS)
    assert len({s.options for s in samples}) > 5
    assert {s.options.index(s.answer) for s in samples} == {0, 1, 2, 3}  # the right letter varies


def polarity(finding: dict) -> int:
    return 1 if finding["contrast"] > 0 else -1


def test_every_sample_has_a_look_alike_of_the_asked_polarity(typed):
    """No answer follows from "is there a bright / dark dot": a finding of another kind with the asked kind's
    polarity is always there, a presence "no" included; count questions have exactly that one distractor."""
    qtype, samples = typed
    for s in samples:
        target = s.meta["target_kind"]
        relevant = [f for f in s.meta["findings"] if f["relevant"]]
        others = [f for f in s.meta["findings"] if not f["relevant"]]
        assert all(f["kind"] != target for f in others)
        signs = {polarity(f) for f in relevant} or {1, -1}
        assert any(polarity(f) in signs for f in others), (s.sample_id, s.meta["findings"])
        if qtype in ("count", "count_mc"):
            assert len(others) == 1
        else:
            assert 1 <= len(others) <= 2


def test_kinds_share_one_contrast_and_size_range():
    """Same-polarity kinds are the same dot at the first view: kind does not set contrast or (single) size."""
    ds = ProceduralDataset(split="train", num_samples=400, seed=4)
    contrast: dict[str, list[float]] = {k: [] for k in KINDS}
    size: dict[str, list[float]] = {k: [] for k in KINDS}
    for s in samples_of(ds, 400):
        for f in s.meta["findings"]:
            assert 35.0 <= abs(f["contrast"]) <= 85.0, f
            contrast[f["kind"]].append(abs(f["contrast"]))
            if not f["cluster"] and s.question_type != "comparison":
                size[f["kind"]].append(box_span(f["box"]))
    for kind in KINDS:
        assert len(contrast[kind]) >= 30, kind
        assert 60.0 <= float(np.median(contrast[kind])) <= 80.0, (kind, np.median(contrast[kind]))
        assert 7.2 <= min(size[kind]) and max(size[kind]) <= 10.1, (kind, min(size[kind]), max(size[kind]))
    medians = [float(np.median(size[k])) for k in KINDS]
    assert max(medians) - min(medians) < 0.8, medians


# --------------------------------------------------------------------------- geometry and visibility
def test_boxes_lie_inside_the_image_with_margin_and_apart(train, test_split):
    margin = 0.05 * SIZE
    for ds in (train, test_split):
        for s in samples_of(ds, 120):
            boxes = [f["box"] for f in s.meta["findings"]]
            for x1, y1, x2, y2 in boxes:
                assert margin <= x1 < x2 <= SIZE - margin and margin <= y1 < y2 <= SIZE - margin
                assert x2 - x1 > 4 and y2 - y1 > 4  # non-empty
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)  # no overlap
            for b in s.eval_boxes:
                assert 0 <= b[0] < b[2] <= SIZE and 0 <= b[1] < b[3] <= SIZE


def test_findings_are_too_small_at_224_but_clear_after_a_4x_zoom(train, test_split):
    seen = set()
    for ds in (train, test_split):
        for s in samples_of(ds, 150):
            for f in s.meta["findings"]:
                span = box_span(f["box"])
                full_view = span * 224 / SIZE  # whole image shown at 224 x 224
                zoom_view = span * 224 / 256  # a 256 px crop around it shown at 224 x 224 (4x the full view)
                limit = 3.0 if (s.question_type == "comparison" and f["relevant"]) else 2.3
                assert full_view <= limit, (s.sample_id, f)
                assert zoom_view >= 6.5, (s.sample_id, f)
                seen.add(f["kind"])
    assert seen == set(KINDS)


def test_nodules_stand_out_from_their_surroundings():
    ds = ProceduralDataset(split="train", num_samples=400, seed=11, question_types=["presence"])
    diffs = []
    for s in samples_of(ds, 400):
        if s.answer == "yes" and s.meta["target_kind"] == "nodule":
            image = ds.load_image(s)
            diffs.extend(ring_difference(image, box) for box in s.eval_boxes)
        if len(diffs) >= 25:
            break
    assert len(diffs) >= 25
    assert min(diffs) > 4.0, diffs
    assert float(np.median(diffs)) >= 15.0, diffs


def test_dark_findings_are_darker_than_their_surroundings():
    ds = ProceduralDataset(split="test", num_samples=300, seed=5, question_types=["count"])
    diffs = []
    for s in samples_of(ds, 300):
        if s.meta["target_kind"] == "micro-bleed" and s.eval_boxes:
            image = ds.load_image(s)
            diffs.extend(ring_difference(image, box) for box in s.eval_boxes)
        if len(diffs) >= 20:
            break
    assert len(diffs) >= 20
    assert float(np.median(diffs)) <= -15.0, diffs


def test_pixels_change_only_around_the_findings():
    ds = ProceduralDataset(split="train", num_samples=50, seed=2, question_types=["count"])
    sample = next(s for s in samples_of(ds, 50) if len(s.meta["findings"]) >= 2)
    image = ds.load_image(sample).astype(np.int16)
    plan = proc._make_plan(*proc._parse_key(sample.image_key))
    bare = proc._render(proc._Plan(**{**plan.__dict__, "findings": ()})).astype(np.int16)
    changed = np.argwhere(np.abs(image - bare).max(axis=2) > 3)
    assert len(changed)
    for y, x in changed:  # every changed pixel lies near some finding box
        assert any(b[0] - 12 <= x <= b[2] + 12 and b[1] - 12 <= y <= b[3] + 12 for b in sample.meta["finding_boxes"])
    for box in sample.meta["finding_boxes"]:  # and every finding changed pixels
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        assert np.abs(image[y1:y2, x1:x2] - bare[y1:y2, x1:x2]).max() >= 25


# --------------------------------------------------------------------------- arguments
def test_question_types_filter_and_normalise():
    ds = ProceduralDataset(split="train", num_samples=40, question_types=["count_mc", "side"])
    assert {s.question_type for s in samples_of(ds, 40)} == {"count_mc", "side"}
    same = ProceduralDataset(split="train", num_samples=40, question_types=("side", "count_mc", "side"))
    assert samples_of(ds, 10) == samples_of(same, 10)
    single = ProceduralDataset(split="train", num_samples=5, question_types="comparison")
    assert {s.question_type for s in samples_of(single, 5)} == {"comparison"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"split": "validation"}, ValueError, r"valid splits: \['train', 'test'\]"),
        ({"num_samples": 0}, ValueError, "num_samples must be >= 1"),
        ({"num_samples": 2.5}, TypeError, "num_samples must be an integer"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"start_index": -3}, ValueError, "start_index must be >= 0"),
        ({"image_size": 64}, ValueError, "image_size must be >= 128"),
        ({"question_types": ["presence", "colour"]}, ValueError, "valid names: .*'count_mc'"),
        ({"question_types": []}, ValueError, "must not be empty"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        ProceduralDataset(**kwargs)


def test_index_out_of_range_and_bad_keys():
    ds = ProceduralDataset(split="test", num_samples=3)
    assert ds[np.int64(2)] == ds[2]
    for bad in (3, -4, 100):
        with pytest.raises(IndexError, match="out of range"):
            ds[bad]
    with pytest.raises(TypeError):
        ds["0"]
    for key in ("procedural/train/0/1", "vqa-rad/images/1.jpg", "procedural/val/0/1/count/1024"):
        with pytest.raises(ValueError, match="image key"):
            ds.load_image(key)


def test_registered_as_the_default_dataset():
    from medvr_env.data.registry import make_dataset

    ds = make_dataset("procedural", split="test", num_samples=5)
    assert isinstance(ds, ProceduralDataset) and ds.split == "test" and len(ds) == 5


def test_no_forbidden_imports():
    code = (
        "import sys, medvr_env.data.procedural, medvr_env.data.backgrounds\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'agents'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_image_cache_size_is_configurable_and_bounded():
    from medvr_env.data.procedural import ProceduralDataset

    ds = ProceduralDataset("train", num_samples=3, image_size=128, image_cache=2)
    images = [ds.load_image(ds[i]) for i in range(3)]
    assert len(ds._images) == 2 and ds.load_image(ds[2]) is images[2]
    assert ds.with_split("test").image_cache == 2
    with pytest.raises(ValueError, match="image_cache"):
        ProceduralDataset("train", image_cache=0)
