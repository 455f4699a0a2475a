"""The patch reader: candidate spots, patches at the view's magnification, training plumbing, caching,
the kind-aware answer rules, and the agents that read with it (scripted, no-zoom, oracle)."""

from __future__ import annotations

import functools
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import medvr_env  # noqa: F401
from agents.base import make_agent
from agents.patch_reader import store
from agents.patch_reader.candidates import (
    CLASSES,
    FINDING_FRACTION,
    PATCH_PIXELS,
    ViewGeometry,
    blob_area,
    cut_patches,
    find_candidates,
)
from agents.patch_reader.reading import Findings, Reading, asked_kind, question_kind
from agents.runner import play_episode

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted(size: int = 224, blobs=((150, 60, 2.0, 60.0),), seed: int = 0) -> np.ndarray:
    """A noisy grey image with Gaussian blobs ``(x, y, sigma, contrast)``, as (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    image = rng.normal(110, 3, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    for x, y, sigma, contrast in blobs:
        image += contrast * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


# --------------------------------------------------------------------------- geometry and candidates
def test_view_geometry_maps_pixels_and_fractions_both_ways():
    first = ViewGeometry((0.0, 0.0, 1.0, 1.0), 224, 224)
    zoom = ViewGeometry((0.5, 0.25, 0.75, 0.5), 224, 224)
    assert first.finding_pixels == pytest.approx(FINDING_FRACTION * 224)  # ~2.4 px at the first view
    assert zoom.finding_pixels == pytest.approx(4 * first.finding_pixels)  # a 4x zoom shows it 4x larger
    assert zoom.scale_feature > first.scale_feature
    fx, fy = zoom.to_image(*zoom.to_view(0.6, 0.3))
    assert (fx, fy) == pytest.approx((0.6, 0.3))
    assert zoom.contains(0.6, 0.3) and not zoom.contains(0.4, 0.3)
    with pytest.raises(ValueError, match="x2 > x1"):
        ViewGeometry.of(np.zeros((8, 8, 3), np.uint8), [0.5, 0, 0.2, 1])


def test_candidates_find_bright_and_dark_blobs_with_their_polarity():
    image = planted(blobs=((150, 60, 1.0, 70.0), (40, 170, 1.0, -70.0)))
    geometry = ViewGeometry.of(image, [0, 0, 1, 1])
    spots = find_candidates(image.astype(np.float32).mean(axis=2), geometry, per_polarity=5)
    bright = [s for s in spots if s[2] == 1]
    dark = [s for s in spots if s[2] == -1]
    assert abs(bright[0][0] - 150) <= 1 and abs(bright[0][1] - 60) <= 1  # strongest first
    assert abs(dark[0][0] - 40) <= 1 and abs(dark[0][1] - 170) <= 1
    assert len(bright) <= 5 and len(dark) <= 5


def test_patches_cover_the_same_image_fraction_at_every_magnification():
    gray = planted(blobs=((112, 112, 4.0, 60.0),))[:, :, 0].astype(np.float32)
    first = ViewGeometry((0, 0, 1, 1), 224, 224)
    zoom = ViewGeometry((0.375, 0.375, 0.625, 0.625), 224, 224)  # 4x
    for geometry in (first, zoom):
        patches = cut_patches(gray, [(111.5, 111.5), (20.0, 20.0)], geometry)
        assert patches.shape == (2, PATCH_PIXELS, PATCH_PIXELS) and patches.dtype == np.float32
        centre = patches[0, 12:20, 12:20].max()
        assert centre == pytest.approx(patches[0].max())  # the blob is at the patch centre
        assert patches[0].max() > 0.3 and abs(patches[1]).max() < 0.3  # blob vs flat noise (units of 64 grey)
    # the same blob fills a 4x larger part of a first-view patch than of a 4x-zoom patch
    small = planted(blobs=((112, 112, 1.5, 60.0),))[:, :, 0].astype(np.float32)
    wide = cut_patches(small, [(112.0, 112.0)], first)[0]
    narrow = cut_patches(small, [(112.0, 112.0)], zoom)[0]
    assert (wide > 0.5 * wide.max()).sum() > 4 * (narrow > 0.5 * narrow.max()).sum()


def test_blob_area_grows_with_the_blob():
    image = planted(blobs=((60, 60, 2.0, 60.0), (160, 160, 3.0, 60.0)))
    gray = image[:, :, 0].astype(np.float32)
    geometry = ViewGeometry((0, 0, 1, 1), 224, 224)
    small = blob_area(gray, 60, 60, 1, geometry)
    large = blob_area(gray, 160, 160, 1, geometry)
    assert large / small == pytest.approx(2.25, rel=0.35)  # area ~ sigma^2
    assert blob_area(gray, 60, 60, -1, geometry) == 0.0  # no dark blob there


# --------------------------------------------------------------------------- training, saving, caching
def test_a_tiny_reader_trains_and_its_loss_falls():
    from agents.patch_reader.model import PatchReader, PatchReaderConfig
    from agents.patch_reader.train import build_patch_set, fit, measure
    from medvr_env.data.procedural import ProceduralDataset

    data = build_patch_set(ProceduralDataset("train", num_samples=3, image_size=512), progress=False)
    assert len(data) > 60 and set(np.unique(data.labels)) <= set(range(len(CLASSES)))
    assert (data.labels == 0).any() and (data.labels > 0).any() and data.candidate.any()
    reader = PatchReader(PatchReaderConfig(channels=(8, 8, 8), hidden=16))
    losses = fit(reader, data, epochs=8, batch_size=32, lr=3e-3, progress=False)
    assert losses[-1] < 0.8 * losses[0], losses
    report = measure(reader, data)
    assert set(report) <= {"first", "2x", "4x", "8x"} and "first" in report
    assert all(0.0 <= (m["false_positive_rate"] or 0.0) <= 1.0 for m in report.values())
    probs = reader.classify(data.patches[:5].astype(np.float32), 0.0)
    assert probs.shape == (5, len(CLASSES)) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_save_is_atomic_and_load_round_trips(tmp_path):
    from agents.patch_reader.model import PatchReader
    from agents.patch_reader.testing import tiny_reader

    reader = tiny_reader(seed=1)
    path = reader.save(tmp_path / "r.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["r.pt"]  # no temp file left
    patches = np.random.default_rng(0).normal(size=(3, 32, 32)).astype(np.float32)
    assert np.allclose(PatchReader.load(path).classify(patches, 0.5), reader.classify(patches, 0.5), atol=1e-6)

    before = path.read_bytes()
    reader.config.meta["unpicklable"] = lambda: None
    with pytest.raises(Exception, match="pickle"):
        reader.save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.pt"]

    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable patch-reader checkpoint"):
        PatchReader.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="medvr train-patch-reader"):
        PatchReader.load(tmp_path / "missing.pt")


def test_cache_folder_follows_medvr_cache_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDVR_CACHE", str(tmp_path / "a"))
    assert store.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("MEDVR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.cache_dir() == tmp_path / "xdg" / "medvr"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert store.cache_dir().parts[-2:] == (".cache", "medvr")
    from medvr_env.data.procedural import GENERATOR

    assert GENERATOR in store.default_path().name  # a reader of an older task is never picked up


def test_default_reader_is_built_on_first_use_then_loaded(monkeypatch, tmp_path, capsys):
    from agents.patch_reader import train as train_mod
    from agents.patch_reader.model import PatchReaderConfig

    monkeypatch.setenv("MEDVR_CACHE", str(tmp_path))
    monkeypatch.setattr(store, "_LOADED", {})
    calls = []
    tiny = functools.partial(train_mod.train_patch_reader, train_samples=2, test_samples=0, epochs=1,
                             config=PatchReaderConfig(channels=(4, 4, 4), hidden=8), image_size=256)

    def counted(**kwargs):
        calls.append(kwargs)
        return tiny(**kwargs)

    monkeypatch.setattr(train_mod, "train_patch_reader", counted)
    first = store.load_reader(progress=False)
    assert store.default_path().is_file() and len(calls) == 1
    assert "building the patch reader" in capsys.readouterr().err
    assert store.load_reader() is first and len(calls) == 1  # cached in the process
    monkeypatch.setattr(store, "_LOADED", {})
    store.load_reader()
    assert len(calls) == 1  # and on disk
    with pytest.raises(FileNotFoundError, match="train-patch-reader --out"):
        store.load_reader(tmp_path / "elsewhere.pt")


def test_importing_the_package_does_not_import_torch():
    code = "import sys, agents.patch_reader, agents.scripted; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- answer rules
def reading(x, y, kind="nodule", p=0.9, area=1e-4, magnification=224.0, polarity=1) -> Reading:
    probs = [1.0 - p if kind != "background" else p] + [0.0] * 4
    if kind != "background":
        probs[CLASSES.index(kind)] = p
    return Reading(x, y, tuple(probs), polarity, area, magnification)


@pytest.mark.parametrize(
    "question, expected",
    [
        ("Is there a nodule in this image?", ("presence", "nodule")),
        ("How many micro-bleeds are there?", ("count", "micro-bleed")),
        ("In which quadrant of the image is the calcification?", ("location", "calcification")),
        ("Is the lesion on the left or right side of the image?", ("side", "lesion")),
        ("Which lesion is larger, the one on the left or the one on the right?", ("comparison", "lesion")),
    ],
)
def test_questions_are_routed_by_type_and_kind(question, expected):
    assert (question_kind(question), asked_kind(question)) == expected


def test_rules_count_and_locate_only_the_asked_kind():
    f = Findings(readings=[reading(0.2, 0.2, "nodule"), reading(0.8, 0.7, "calcification", 0.95),
                           reading(0.7, 0.8, "nodule", 0.8), reading(0.21, 0.21, "nodule", 0.7),  # a duplicate
                           reading(0.5, 0.5, "background", 0.9)])
    assert f.answer("How many nodules are there?")[0] == "2"
    assert f.answer("How many calcifications are there?")[0] == "1"
    assert f.answer("Is there a micro-bleed in this image?")[0] == "no"
    assert f.answer("Is there a calcification in this image?")[0] == "yes"
    assert f.answer("In which quadrant of the image is the calcification?")[0] == "lower right"
    assert f.answer("In which quadrant of the image is the nodule?")[0] == "upper left"  # the most confident
    assert f.answer("Is the calcification on the left or right side of the image?")[0] == "right"


def test_comparison_reads_blob_areas_per_side():
    f = Findings(readings=[reading(0.2, 0.5, area=2e-4), reading(0.8, 0.5, area=3e-4),
                           reading(0.3, 0.3, "calcification", area=9e-4)])
    assert f.answer("Which nodule is larger, the one on the left or the one on the right?")[0] == "right"


def test_a_more_magnified_view_overrules_the_first_view():
    f = Findings(readings=[reading(0.3, 0.3, "nodule", magnification=224.0)],
                 views=[ViewGeometry((0, 0, 1, 1), 224, 224)])
    assert f.answer("Is there a nodule in this image?")[0] == "yes"
    f.views.append(ViewGeometry((0.2, 0.2, 0.45, 0.45), 224, 224))  # a 4x zoom on it ...
    f.readings.append(reading(0.3, 0.3, "calcification", magnification=896.0))  # ... reads a calcification
    assert f.answer("Is there a nodule in this image?")[0] == "no"
    assert f.answer("How many calcifications are there?")[0] == "1"
    f.readings.append(reading(0.8, 0.8, "nodule", magnification=224.0))  # first view only, no zoom went there
    assert f.answer("How many nodules are there?")[0] == "0"  # after zooming, unzoomed first-view spots drop
    f.keep_unzoomed = True
    assert f.answer("How many nodules are there?")[0] == "1"


# --------------------------------------------------------------------------- agents
def test_oracle_zooms_once_on_every_finding_plus_decoys_and_refuses_train():
    env = gym.make("MedVR-VQA-v0", split="test", num_samples=12)
    agent = make_agent("oracle")
    for i in range(6):
        episode = play_episode(env, agent, options={"index": i})
        findings = episode.sample.meta["findings"]
        boxes = [v.box for v in episode.views[1:]]
        assert len(boxes) == len(findings) + 2 and episode.stop_reason == "answered"
        for f in findings:
            x1, y1, x2, y2 = f["box"]
            assert any(b.x1 <= x1 and b.y1 <= y1 and x2 <= b.x2 and y2 <= b.y2 for b in boxes), (f, boxes)
        assert all(abs(b.width - 256) <= 2 for b in boxes)  # 4x zooms
    again = play_episode(env, agent, options={"index": 0})
    first = play_episode(env, agent, options={"index": 0})
    assert [v.box for v in again.views] == [v.box for v in first.views]  # seeded by the sample id
    train_env = gym.make("MedVR-VQA-v0", split="train", num_samples=4)
    with pytest.raises(ValueError, match="evaluation-only"):
        play_episode(train_env, agent, options={"index": 0})
    measured = play_episode(train_env, make_agent("oracle", allow_train_split=True), options={"index": 0})
    assert measured.stop_reason == "answered"


def test_looking_agents_zoom_as_documented():
    env = gym.make("MedVR-VQA-v0", split="test", num_samples=8)
    for i in range(3):
        none = play_episode(env, make_agent("no-zoom"), options={"index": i})
        assert len(none.views) == 1 and none.num_steps == 1
        guided = play_episode(env, make_agent("guided"), options={"index": i})
        assert 1 <= len(guided.views) - 1 <= 5 and all(abs(v.box.width - 256) <= 2 for v in guided.views[1:])
        sweep = play_episode(env, make_agent("scripted"), options={"index": i})  # the quadrant sweep
        assert sorted((v.box.x1, v.box.y1) for v in sweep.views[1:]) == [(0, 0), (0, 512), (512, 0), (512, 512)]
        assert all(0.0 <= s.entropy <= 1.0 for s in sweep.steps)
    from agents.scripted import RandomZoomAgent

    a = play_episode(env, RandomZoomAgent(max_zooms=3), options={"index": 1})
    b = play_episode(env, RandomZoomAgent(max_zooms=3), options={"index": 1})
    assert len(a.views) == 4 and [v.box for v in a.views] == [v.box for v in b.views]


# --------------------------------------------------------------------------- answer distribution, estimator
def test_answer_distribution_follows_the_readings():
    f = Findings(readings=[reading(0.2, 0.2, "nodule", 0.9), reading(0.8, 0.8, "nodule", 0.8),
                           reading(0.7, 0.3, "calcification", 0.9)])
    count = f.distribution("How many nodules are there?", ["0", "1", "2", "3", "4"])
    assert max(count, key=count.get) == "2" and sum(count.values()) == pytest.approx(1.0)
    assert count["2"] == pytest.approx(0.9 * 0.8, abs=0.01)  # both nodules, each with its probability
    where = f.distribution("In which quadrant of the image is the calcification?", list(QUADRANTS_))
    assert max(where, key=where.get) == "upper right"
    presence = f.distribution("Is there a micro-bleed in this image?", ["yes", "no"])
    assert presence["no"] > 0.9
    options = f.distribution("How many nodules are there?", ["1", "2"])  # multiple choice: the options only
    assert set(options) == {"1", "2"} and options["2"] > options["1"]
    from agents.patch_reader.reading import normalised_entropy

    assert normalised_entropy({"a": 0.5, "b": 0.5}) == pytest.approx(1.0)
    assert normalised_entropy({"a": 1.0, "b": 0.0}) == 0.0


QUADRANTS_ = ("upper left", "upper right", "lower left", "lower right")


def test_estimator_reads_the_view_the_policy_sees():
    from agents.patch_reader.estimator import PatchReaderEstimator

    env = gym.make("MedVR-VQA-Tensor-v0", num_samples=4,
                   uncertainty_estimator="agents.patch_reader.estimator:PatchReaderEstimator")
    obs, _ = env.reset(seed=0)
    estimator = env.unwrapped.estimator
    assert isinstance(estimator, PatchReaderEstimator) and estimator.resolution == 128 == obs["image"].shape[0]
    assert obs["view_entropy"][1] == 1.0 and 0.0 <= obs["view_entropy"][0] <= 1.0
    episode = env.unwrapped.episode
    dist = estimator.distribution(episode)
    assert set(dist) and sum(dist.values()) == pytest.approx(1.0)
    found = estimator.findings(episode)
    assert found.views[0].width == 128 and found.views[0].box == (0.0, 0.0, 1.0, 1.0)
    assert estimator.view_findings(episode, 0) is estimator.view_findings(episode, 0)  # cached per view
    assert len(found.views) == 1
    obs, *_ = env.step(np.array([1, 5, 0]))  # a zoom into grid cell 5: the estimator now reads both views
    both = estimator.findings(env.unwrapped.episode)
    assert len(both.views) == 2 and both.views[1].pixels_per_fraction > 3 * both.views[0].pixels_per_fraction
    assert obs["reader_answer"].sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="resolution"):
        PatchReaderEstimator(resolution=8)


def test_without_torch_the_scripted_agents_say_how_to_install_it(monkeypatch, tmp_path):
    """A plain `pip install -e .` has no torch: the patch reader's error is one line with the fix, not a traceback."""
    import sys

    from agents.base import AgentSetupError
    from agents.patch_reader import store

    monkeypatch.setenv("MEDVR_CACHE", str(tmp_path))
    monkeypatch.setattr(store, "_LOADED", {})
    monkeypatch.delitem(sys.modules, "agents.patch_reader.model", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails as if it were not installed
    with pytest.raises(AgentSetupError, match=r"needs PyTorch.*pip install torch==2\.13\.0.*--agent blob-detector"):
        store.load_reader()
