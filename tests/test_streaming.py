"""Runs and evaluations stream: summaries from running totals, no finished episode kept, resumable evaluations.

The reference summaries below are the list-based computations ``medvr run``/``eval`` used
before they streamed (every episode kept until the end); the streamed numbers must equal
them exactly, not approximately.
"""

from __future__ import annotations

import gc
import json
import random
import re
import weakref
import zlib
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import medvr_env  # noqa: F401  (registers the ids)
from agents.evaluate import EvalResult, evaluate
from agents.metrics import EpisodeStats, GroupAccuracy, MetricTally, RunningSum, footprint, grounding_iou
from agents.runner import Interrupted, RunSummary, run_episodes
from medvr_env.data.images import ImageDecodeError

from .dataset_fixtures import VQA_RAD_ROOT


class ZoomThenAnswer:
    """A deterministic agent for these tests: zoom into the centre once (or not), then answer ``yes`` / option A.

    ``interrupt_at``: raise ``KeyboardInterrupt`` (as Ctrl-C would) when starting that episode (0-based).
    """

    name = "zoom-then-answer"

    def __init__(self, zoom: bool = True, bad_action: bool = False, interrupt_at: int | None = None) -> None:
        self.zoom, self.bad_action, self.interrupt_at = zoom, bad_action, interrupt_at
        self.resets = 0

    def reset(self, env, obs, info) -> None:
        if self.resets == self.interrupt_at:
            raise KeyboardInterrupt
        self.resets += 1
        self.env, self.plan = env, (["bad"] if self.bad_action else []) + (["zoom"] if self.zoom else []) + ["answer"]

    def act(self, obs, info):
        move = self.plan.pop(0)
        if move == "bad":
            return "this is not a tool call"
        if move == "zoom":
            w, h = self.env.episode.views[0].size
            scale = {"norm": (1, 1), "norm1000": (1000, 1000), "pixel": (w, h)}[self.env.bbox_format]
            box = [0.25 * scale[0], 0.3 * scale[1], 0.7 * scale[0], 0.75 * scale[1]]
            return {"name": "zoom", "arguments": {"bbox_2d": box}, "entropy": 0.5}
        return {"name": "answer", "arguments": {"text": "A" if obs["options"] else "yes"}}


class Mixed(ZoomThenAnswer):
    """Zooms and errs differently from question to question (by its id), so that every metric varies."""

    def reset(self, env, obs, info) -> None:
        k = zlib.crc32(env.episode.sample.sample_id.encode())
        self.zoom, self.bad_action = k % 3 != 0, k % 4 == 1
        super().reset(env, obs, info)


# ------------------------------------------------------------------ the list-based reference
def _reference_run(episodes) -> RunSummary:
    n = len(episodes)
    zooms = [sum(1 for look in e.looks() if look.box is not None) for e in episodes]
    steps = sum(e.num_steps for e in episodes)
    return RunSummary(
        episodes=n,
        accuracy=sum(1 for e in episodes if e.grade and e.grade.get("correct")) / n,
        zoom_rate=sum(1 for z in zooms if z) / n,
        mean_steps=steps / n,
        mean_zooms=sum(zooms) / n,
        invalid_action_rate=sum(1 for e in episodes for s in e.steps if s.error) / max(1, steps),
        answered_rate=sum(1 for e in episodes if e.stop_reason == "answered") / n,
        mean_reward=sum(e.total_reward for e in episodes) / n,
    )


def _reference_groups(episodes, key):
    groups = {}
    for e in episodes:
        if key(e):
            groups.setdefault(key(e), []).append(bool(e.grade and e.grade.get("correct")))
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return {k: GroupAccuracy(len(v), sum(v), sum(v) / len(v)) for k, v in ordered}


def _reference_eval(episodes) -> dict:
    by_type = _reference_groups(episodes, lambda e: e.sample.answer_type)
    recall = [float((e.grade or {}).get("recall", 0.0)) for e in episodes if e.sample.answer_type == "open"]
    scored = [(grounding_iou(e), bool(footprint(e))) for e in episodes]
    scored = [(iou, z) for iou, z in scored if iou is not None]
    zoomed = [iou for iou, z in scored if z]
    run = _reference_run(episodes)
    return {
        "episodes": len(episodes), "accuracy": run.accuracy,
        "closed": by_type.get("closed"), "open": by_type.get("open"),
        "open_token_recall": sum(recall) / len(recall) if recall else None,
        "by_question_type": _reference_groups(episodes, lambda e: e.sample.question_type),
        "by_organ": _reference_groups(episodes, lambda e: e.sample.organ),
        "by_modality": _reference_groups(episodes, lambda e: e.sample.modality),
        "tools": (run.zoom_rate, run.mean_zooms, run.mean_steps, run.invalid_action_rate, run.answered_rate),
        "grounding": (len(scored), sum(i for i, _ in scored) / len(scored) if scored else None,
                      sum(zoomed) / len(zoomed) if zoomed else None, len(zoomed)),
    }


def _as_reference(result: EvalResult) -> dict:
    t, g = result.tools, result.grounding
    return {
        "episodes": result.episodes, "accuracy": result.accuracy, "closed": result.closed, "open": result.open,
        "open_token_recall": result.open_token_recall, "by_question_type": result.by_question_type,
        "by_organ": result.by_organ, "by_modality": result.by_modality,
        "tools": (t.zoom_rate, t.mean_zooms, t.mean_steps, t.invalid_action_rate, t.answered_rate),
        "grounding": (g.episodes, g.miou, g.miou_when_zoomed, g.zoomed),
    }


# ------------------------------------------------------------------ exact running means
def test_running_sum_equals_builtin_sum_bit_for_bit():
    rng = random.Random(0)
    for trial in range(2000):
        n = rng.randint(1, 50)
        if trial % 3 == 0:
            xs = [rng.random() for _ in range(n)]
        elif trial % 3 == 1:
            xs = [rng.uniform(-1, 1) * 10 ** rng.randint(-12, 12) for _ in range(n)]
        else:
            xs = [rng.choice([0.1, -0.05, 1e16, -1e16, 1.0, 0.0, -0.2, 3.3]) for _ in range(n)]
        running = RunningSum()
        for x in xs:
            running.add(x)
        assert running.value == sum(xs) and running.count == n, xs
    assert RunningSum().mean() is None


def test_streamed_run_summary_equals_the_list_based_one():
    env = gym.make("MedVR-VQA-v0", dataset_kwargs={"num_samples": 12})
    episodes = []
    summary = run_episodes(env, Mixed(), 12, seed=4, progress=False, on_episode=episodes.append)
    reference = _reference_run(episodes)
    assert summary == reference
    assert 0 < summary.zoom_rate < 1 and 0 < summary.invalid_action_rate < 1  # the metrics really vary
    for e in episodes:  # a trajectory line gives the same stats as the live episode (what --resume re-reads)
        record = json.loads(json.dumps(e.to_dict()))
        assert EpisodeStats.from_record(record) == EpisodeStats.from_episode(e)


def test_streamed_eval_equals_the_list_based_one_with_grounding():
    episodes = []
    result = evaluate("MedVR-VQA-v0", Mixed(), split="test", limit=12, env_kwargs={"num_samples": 12},
                      progress=False, on_episode=episodes.append)
    assert len(episodes) == 12 and _as_reference(result) == _reference_eval(episodes)
    assert result.grounding.episodes > 0 and result.grounding.miou > 0


@pytest.mark.skipif(not (VQA_RAD_ROOT / "testset.json").is_file(), reason="real VQA-RAD not present")
def test_streamed_eval_equals_the_list_based_one_on_vqa_rad_open_questions():
    episodes = []
    result = evaluate("MedVR-VQA-RAD-v0", Mixed(), split="test", limit=40, progress=False,
                      env_kwargs={"data_root": str(VQA_RAD_ROOT)}, on_episode=episodes.append)
    assert _as_reference(result) == _reference_eval(episodes)
    assert result.open is not None and result.open_token_recall is not None and len(result.by_organ) > 1


# ------------------------------------------------------------------ nothing is kept
def _alive(refs):
    gc.collect()
    return [i for i, ref in enumerate(refs) if ref() is not None]


def test_run_keeps_no_finished_episode():
    # image_cache=1: the dataset keeps only the image in use, so any other live image would be a leak
    env = gym.make("MedVR-VQA-v0", dataset_kwargs={"num_samples": 5, "image_cache": 1})
    episodes, images, checked = [], [], []

    def watch(episode):
        episodes.append(weakref.ref(episode))
        images.append(weakref.ref(episode.original))
        # while episode k is reported, earlier episodes are gone, and so are their images
        # (unless the sample was drawn again: then it is the same cached array)
        assert _alive(episodes) == [len(episodes) - 1]
        assert all(images[i]() is episode.original for i in _alive(images))
        checked.append(True)

    run_episodes(env, ZoomThenAnswer(), 5, seed=0, progress=False, on_episode=watch)
    assert len(checked) == 5
    env.close()
    del env
    assert _alive(episodes) == [] and _alive(images) == []


def test_evaluate_keeps_no_finished_episode(tmp_path):
    refs, alive_at = [], []

    def watch(episode):
        refs.append(weakref.ref(episode))
        alive_at.append(_alive(refs))

    evaluate("MedVR-VQA-v0", ZoomThenAnswer(), split="test", limit=6, env_kwargs={"num_samples": 6}, progress=False,
             trajectories=tmp_path / "t.jsonl", on_episode=watch)
    assert alive_at == [[k] for k in range(6)] and _alive(refs) == []


# ------------------------------------------------------------------ interrupt and resume
def _numbers(result: EvalResult) -> dict:
    d = result.to_dict()
    d.pop("seconds")
    for f in d["failed"]:  # PIL names the buffer it read from by its address
        f["reason"] = re.sub(r" at 0x[0-9a-f]+", "", f["reason"])
    return d


def test_interrupted_evaluation_resumes_to_the_uninterrupted_numbers(tmp_path):
    kwargs = {"split": "test", "limit": 9, "env_kwargs": {"num_samples": 9}, "progress": False}
    whole = evaluate("MedVR-VQA-v0", Mixed(), trajectories=tmp_path / "whole.jsonl", **kwargs)

    path = tmp_path / "cut.jsonl"
    with pytest.raises(Interrupted) as caught:
        evaluate("MedVR-VQA-v0", Mixed(interrupt_at=4), trajectories=path, **kwargs)
    assert (caught.value.done, caught.value.total, caught.value.partial.episodes) == (4, 9, 4)
    partial = Path(f"{path}.partial")
    assert len(partial.read_text().splitlines()) == 4 and not path.exists()
    with partial.open("a") as fh:  # a kill mid-write leaves half a line: resume replays that question
        fh.write('{"sample": {"sample_id": "procedu')

    played = []
    resumed = evaluate("MedVR-VQA-v0", Mixed(), trajectories=path, resume=True, on_episode=played.append, **kwargs)
    assert len(played) == 5  # only the questions not finished before
    assert _numbers(resumed) == _numbers(whole)
    assert path.read_text() != "" and not partial.exists()
    assert [json.loads(line)["sample"]["sample_id"] for line in path.read_text().splitlines()] == \
        [json.loads(line)["sample"]["sample_id"] for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    # resuming a finished evaluation re-reads it and plays nothing
    again = evaluate("MedVR-VQA-v0", Mixed(), trajectories=path, resume=True, on_episode=played.append, **kwargs)
    assert len(played) == 5 and _numbers(again) == _numbers(whole)


def test_resume_refuses_trajectories_of_another_evaluation(tmp_path):
    path = tmp_path / "t.jsonl"
    evaluate("MedVR-VQA-v0", ZoomThenAnswer(), split="test", limit=3, env_kwargs={"num_samples": 5},
             trajectories=path, progress=False)
    with pytest.raises(ValueError, match="record of sample .* resume with the same"):
        evaluate("MedVR-VQA-v0", ZoomThenAnswer(), split="train", limit=3, env_kwargs={"num_samples": 5},
                 trajectories=path, progress=False, resume=True)
    with pytest.raises(ValueError, match="holds 3 records but this evaluation has 4 questions"):
        evaluate("MedVR-VQA-v0", ZoomThenAnswer(), split="test", limit=4, env_kwargs={"num_samples": 5},
                 trajectories=path, progress=False, resume=True)


def test_run_interrupted_carries_the_summary_of_what_finished(tmp_path):
    env = gym.make("MedVR-VQA-v0", dataset_kwargs={"num_samples": 8})
    with pytest.raises(Interrupted) as caught:
        run_episodes(env, ZoomThenAnswer(interrupt_at=3), 8, progress=False, trajectories=tmp_path / "t.jsonl")
    assert caught.value.partial.episodes == 3 and caught.value.done == 3
    assert len((tmp_path / "t.jsonl.partial").read_text().splitlines()) == 3


# ------------------------------------------------------------------ unreadable images
def _custom_dataset(root: Path, broken: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(5):
        path = root / "images" / f"case_{i}.png"
        if i == broken:
            path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        else:
            Image.fromarray(rng.integers(0, 255, (96, 96), dtype=np.uint8)).save(path)
        lines.append(json.dumps({"image": f"images/case_{i}.png", "question": f"Is there a nodule {i}?",
                                 "answer": "yes" if i % 2 else "no", "question_type": "presence",
                                 "boxes": [[10, 10, 40, 40]]}))
    (root / "test.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("broken", [2, 0])  # 0: the very first reset of the env would fail
def test_skip_bad_samples_records_unreadable_images_as_failed(tmp_path, broken):
    root = _custom_dataset(tmp_path / "data", broken=broken)
    kwargs = {"split": "test", "env_kwargs": {"data_root": str(root)}, "progress": False}
    with pytest.raises(ImageDecodeError, match=f"case_{broken}.png"):  # strict by default
        evaluate("MedVR-VQA-Custom-v0", ZoomThenAnswer(), **kwargs)
    path = tmp_path / "t.jsonl"
    result = evaluate("MedVR-VQA-Custom-v0", ZoomThenAnswer(), skip_bad_samples=True, trajectories=path, **kwargs)
    assert result.episodes == 4 and len(result.failed) == 1
    failed = result.failed[0]
    assert failed["sample_id"] == f"custom/test/test.jsonl:{broken + 1}" and failed["error"] == "ImageDecodeError"
    assert f"case_{broken}.png" in failed["reason"]
    report = result.report()
    assert "failed samples (unreadable, not scored) | 1" in report and f"case_{broken}.png" in report
    assert json.loads(json.dumps(result.to_dict()))["failed"] == [failed]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 5 and records[broken]["failed"]["error"] == "ImageDecodeError"
    # the failed sample's line is re-read on resume like any other, and a resume can start at a bad sample
    Path(f"{path}.partial").write_text("".join(f"{json.dumps(r)}\n" for r in records[:broken]))
    path.unlink()
    again = evaluate("MedVR-VQA-Custom-v0", ZoomThenAnswer(), skip_bad_samples=True, trajectories=path, resume=True,
                     **kwargs)
    assert _numbers(again) == _numbers(result)


def test_metric_tally_refuses_an_empty_summary():
    with pytest.raises(ValueError, match="no episodes"):
        RunSummary.from_tally(MetricTally())
