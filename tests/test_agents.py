"""Bundled agents, the runner and the `medvr` command, on the real default env."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import medvr_env  # noqa: F401
from agents.base import make_agent
from agents.cli import main
from agents.runner import run_episodes, summarize, write_jsonl
from agents.scripted import binary_entropy, blob_map, find_peaks, normalised_entropy, read_question

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "question, kind, polarity",
    [
        ("Is there a nodule in this image?", "presence", 1),
        ("How many micro-bleeds are there?", "count", -1),
        ("In which quadrant of the image is the calcification?", "location", 1),
        ("Is the lesion on the left or right side of the image?", "side", 0),
        ("Which nodule is larger, the one on the left or the one on the right?", "comparison", 1),
        ("What modality is this?", "other", 1),
    ],
)
def test_question_routing(question, kind, polarity):
    q = read_question(question)
    assert (q.kind, q.polarity) == (kind, polarity)


def test_blob_detector_finds_a_planted_blob():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 3, (224, 224)).astype(np.float32)
    yy, xx = np.mgrid[:224, :224]
    image += 60 * np.exp(-((xx - 150) ** 2 + (yy - 60) ** 2) / (2 * 3.0**2))
    peaks = find_peaks(blob_map(image, 2.0), 3, min_distance=6, threshold=6.0)
    assert peaks and abs(peaks[0][0] - 150) <= 1 and abs(peaks[0][1] - 60) <= 1


def test_entropy_helpers():
    assert normalised_entropy(np.ones(4)) == pytest.approx(1.0)
    assert normalised_entropy(np.array([1.0, 0, 0])) == 0.0
    assert binary_entropy(0.5) == pytest.approx(1.0) and binary_entropy(0.999) < 0.02


@pytest.mark.parametrize("name", ["scripted", "no-zoom", "random"])
def test_agents_finish_episodes_and_report_uncertainty(name):
    env = gym.make("MedVR-VQA-v0", dataset_kwargs={"num_samples": 40})
    episodes = []
    summary = run_episodes(env, make_agent(name), 6, seed=1, progress=False, on_episode=episodes.append)
    assert summary.episodes == 6 and len(episodes) == 6
    assert all(e.stop_reason in ("answered", "max_steps", "too_many_errors") for e in episodes)
    if name == "scripted":
        assert summary.zoom_rate == 1.0 and summary.invalid_action_rate == 0.0
        assert all(s.entropy_source == "policy" and 0 <= s.entropy <= 1 for e in episodes for s in e.steps)
        for e in episodes:  # zooms land where the agent asked, on view 0
            assert all(v.parent == 0 and v.tool == "zoom" for v in e.views[1:])
    if name == "no-zoom":
        assert summary.zoom_rate == 0.0 and summary.mean_steps == 1.0


def test_scripted_agent_speaks_every_bbox_format():
    for fmt in ("pixel", "norm", "norm1000"):
        env = gym.make("MedVR-VQA-v0", bbox_format=fmt)
        episodes = []
        summary = run_episodes(env, make_agent("scripted"), 2, seed=3, progress=False, on_episode=episodes.append)
        assert summary.invalid_action_rate == 0.0
        boxes = {fmt: [v.box for v in episodes[0].views[1:]]}
        side = episodes[0].image_size[0] * 0.5
        assert all(abs(b.width - side) <= 2 for b in boxes[fmt]), boxes


def test_summary_counts_by_hand():
    env = gym.make("MedVR-VQA-v0")
    env.reset(seed=0)
    env.step({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5]}})
    env.step("not a valid action")
    env.step("<answer>yes</answer>")
    s = summarize([env.unwrapped.episode])
    assert (s.mean_steps, s.mean_zooms, s.zoom_rate, s.answered_rate) == (3, 1, 1.0, 1.0)
    assert s.invalid_action_rate == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no episodes"):
        summarize([])


def test_jsonl_is_written_atomically(tmp_path):
    path = write_jsonl(tmp_path / "a" / "t.jsonl", [{"x": 1}, {"y": np.arange(2)}])
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"x": 1}, {"y": [0, 1]}]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left

    def boom():
        yield {"ok": 1}
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_jsonl(path, boom())
    assert path.read_text().splitlines() == lines  # the old file survives a failed write


def test_cli_run_writes_trajectories_and_summary(tmp_path, capsys):
    rc = main(["run", "--episodes", "3", "--out", str(tmp_path), "--no-progress", "--seed", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "accuracy" in out and "zoom rate" in out and "mean steps" in out
    run_dir = next(tmp_path.iterdir())
    records = [json.loads(line) for line in (run_dir / "trajectories.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["steps"] and r["views"] for r in records)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["episodes"] == 3 and 0.0 <= summary["accuracy"] <= 1.0


def test_cli_errors_and_listings(capsys):
    assert main(["run", "--env", "Nope-v0", "--episodes", "1"]) == 2
    assert "unknown env id" in capsys.readouterr().err
    assert main(["run", "--agent", "nobody", "--episodes", "1"]) == 2
    assert "unknown agent" in capsys.readouterr().err
    assert main(["run", "--episodes", "0"]) == 2
    assert main(["envs"]) == 0
    assert "MedVR-VQA-Text-v0" in capsys.readouterr().out
    assert main(["tools", "--schema"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("think", "zoom", "crop", "relook", "answer")) and "bbox_2d" in out


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "agents.cli", "envs"], capture_output=True, text=True, check=True)
    assert "MedVR-VQA-v0" in proc.stdout


def test_custom_tool_example_runs_both_paths():
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "custom_tool.py")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "window" in proc.stdout
    assert "text step -> error=- view=1" in proc.stdout  # window made view 1 through the text path
    assert "structured step -> error=- view=1" in proc.stdout and "WindowLevel" in proc.stdout
