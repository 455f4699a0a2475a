"""Metric functions against hand-computed cases, the majority baseline, and the eval harness end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import pytest

from agents.evaluate import EvalResult, evaluate, summarize_eval, table1_markdown
from agents.metrics import GroupAccuracy, accuracy_by, grounding, grounding_iou, union_area, union_iou
from agents.prior import AnswerPrior, MajorityAnswerAgent
from medvr_env.data.sample import Sample

from .dataset_fixtures import SKIP_VQA_RAD, VQA_RAD_ROOT
from .helpers import make_env

real = pytest.mark.skipif(not (VQA_RAD_ROOT / "testset.json").is_file(), reason=SKIP_VQA_RAD)


# ------------------------------------------------------------------ geometry
def test_union_area_counts_overlaps_once():
    assert union_area([(0, 0, 10, 10), (5, 5, 15, 15)]) == 175  # 100 + 100 - 25
    assert union_area([(0, 0, 10, 10), (0, 0, 10, 10), (2, 2, 3, 3)]) == 100
    assert union_area([]) == 0 and union_area([(5, 5, 5, 9)]) == 0  # degenerate box has no area


def test_union_iou_hand_computed():
    assert union_iou([(0, 0, 10, 10)], [(0, 0, 10, 10)]) == 1.0
    assert union_iou([(0, 0, 10, 10)], [(5, 0, 15, 10)]) == pytest.approx(50 / 150)
    # footprint of two zooms vs one box inside the first zoom: inter 4, union 100 + 100 (disjoint zooms)
    assert union_iou([(0, 0, 10, 10), (20, 20, 30, 30)], [(1, 1, 3, 3)]) == pytest.approx(4 / 200)
    assert union_iou([], [(0, 0, 1, 1)]) == 0.0 and union_iou([(0, 0, 1, 1)], []) == 0.0


def _episode_with(env, zooms, answer):
    env.reset(options={"index": 0})
    for box in zooms:
        env.step({"name": "zoom", "arguments": {"bbox_2d": box, "source": 0}})
    env.step({"name": "answer", "arguments": {"text": answer}})
    return env.episode.snapshot()


def test_grounding_iou_of_episodes():
    env = make_env(bbox_format="pixel", min_box_side=1)  # sample 0: 800x600 image, eval box (100,120)-(260,300)
    exact = _episode_with(env, [[100, 120, 260, 300]], "yes")
    half = _episode_with(env, [[100, 120, 180, 300]], "no")
    none = _episode_with(env, [], "yes")
    assert grounding_iou(exact) == pytest.approx(1.0)
    assert grounding_iou(half) == pytest.approx(0.5)
    assert grounding_iou(none) == 0.0
    g = grounding([exact, half, none])
    assert g.episodes == 3 and g.zoomed == 2
    assert g.miou == pytest.approx(0.5) and g.miou_when_zoomed == pytest.approx(0.75)
    env.reset(options={"index": 1})  # sample 1 has no eval boxes
    env.step({"name": "answer", "arguments": {"text": "liver"}})
    assert grounding_iou(env.episode) is None


def test_accuracy_by_and_summary_split_closed_open():
    env = make_env()
    eps = []
    for index, answer in [(0, "yes"), (1, "spleen"), (2, "B"), (3, "yes")]:  # right, wrong, right, wrong
        env.reset(options={"index": index})
        env.step({"name": "answer", "arguments": {"text": answer}})
        eps.append(env.episode.snapshot())
    by_type = accuracy_by(eps, lambda e: e.sample.answer_type)
    assert by_type == {"closed": GroupAccuracy(3, 2, 2 / 3), "open": GroupAccuracy(1, 0, 0.0)}
    result = summarize_eval(eps, env_id="x", dataset="arrays", split="test", agent="hand")
    assert result.accuracy == 0.5 and result.closed.correct == 2 and result.open.n == 1
    assert result.open_token_recall == 0.0  # "spleen" shares no token with "liver"
    assert "question type" in result.report() and "| accuracy | 50.0 |" in result.report()
    assert set(result.by_question_type) == {"presence", "organ", "diagnosis"}  # the empty type is dropped
    json.dumps(result.to_dict())


# ------------------------------------------------------------------ majority baseline
def _s(qtype, answer, answer_type="closed", options=()):
    return Sample(sample_id=f"{qtype}-{answer}", question="q", answer=answer, image_key="k",
                  question_type=qtype, answer_type=answer_type, options=options)


def test_answer_prior_counts_per_type_and_falls_back():
    train = [_s("PRES", "yes"), _s("PRES", "yes"), _s("PRES", "no"), _s("ABN", "no"),
             _s("ORGAN", "liver", "open"), _s("ORGAN", "Liver", "open"), _s("ORGAN", "brain", "open"),
             _s("DX", "b", options=("a", "b", "c")), _s("DX", "c", options=("a", "c", "b"))]
    prior = AnswerPrior.count(train)
    assert prior.answer(_s("PRES", "?")) == "yes"
    assert prior.answer(_s("ABN", "?")) == "no"
    assert prior.answer(_s("SIZE", "no")) == "yes"  # unseen type: closed majority overall (yes 2 : no 2, first seen)
    assert prior.answer(_s("PRES", "no")) == "yes"  # the reference answer is never read
    assert prior.answer(_s("ORGAN", "?", "open")) == "liver"
    assert prior.answer(_s("DX", "?", options=("x", "y", "z"))) == "B"  # position 1 in both training questions
    assert AnswerPrior.count([]).answer(_s("PRES", "?")) == "yes"


@real
def test_majority_baseline_on_real_vqa_rad_reads_only_the_training_split():
    result = evaluate("MedVR-VQA-RAD-v0", "majority", split="test", limit=60, progress=False,
                      env_kwargs={"data_root": str(VQA_RAD_ROOT)})
    assert result.episodes == 60 and result.tools.mean_steps == 1.0 and result.tools.zoom_rate == 0.0
    assert 0.3 < result.closed.accuracy < 0.8  # a language prior: far from perfect, well above zero
    agent = MajorityAnswerAgent()
    env = gym.make("MedVR-VQA-RAD-v0", data_root=str(VQA_RAD_ROOT), split="test")
    obs, info = env.reset(seed=0)
    agent.reset(env.unwrapped, obs, info)
    assert agent._prior.samples == 3064  # counted on train, not on the 451 test questions


# ------------------------------------------------------------------ harness
@real
def test_evaluate_real_slice_end_to_end(tmp_path):
    out = tmp_path / "traj.jsonl"
    result = evaluate("MedVR-VQA-RAD-v0", "scripted", split="test", limit=8, progress=False, trajectories=out,
                      env_kwargs={"data_root": str(VQA_RAD_ROOT)})
    lines = out.read_text().splitlines()
    assert result.episodes == 8 == len(lines)
    ids = [json.loads(line)["sample"]["sample_id"] for line in lines]
    assert ids == [f"vqa_rad/test/{s}" for s in _first_qids(8)]  # one episode per question, in order
    assert result.tools.zoom_rate == 1.0 and result.split == "test" and result.dataset == "vqa_rad"
    assert not (tmp_path / "traj.jsonl.partial").exists()


def _first_qids(n):
    return [r["qid"] for r in json.loads((VQA_RAD_ROOT / "testset.json").read_text())[:n]]


def test_evaluate_procedural_reports_grounding_and_keeps_partial_trajectories(tmp_path):
    result = evaluate("MedVR-VQA-v0", "scripted", split="test", limit=6, progress=False,
                      env_kwargs={"num_samples": 6})
    with_boxes = sum(1 for i in range(6) if gym.make("MedVR-VQA-v0", split="test", num_samples=6).unwrapped.dataset[i].eval_boxes)
    assert result.grounding.episodes == with_boxes > 0 and result.grounding.zoomed == with_boxes
    # the scripted agent zooms into all four quadrants: its footprint is the whole image, findings are tiny
    assert 0 < result.grounding.miou < 0.05

    class Crashes:
        name = "crashes"
        calls = 0

        def reset(self, env, obs, info):
            pass

        def act(self, obs, info):
            Crashes.calls += 1
            if Crashes.calls > 2:
                raise RuntimeError("agent bug")
            return {"name": "answer", "arguments": {"text": "yes"}}

    with pytest.raises(RuntimeError, match="agent bug"):
        evaluate("MedVR-VQA-v0", Crashes(), limit=5, progress=False, trajectories=tmp_path / "t.jsonl")
    assert len((tmp_path / "t.jsonl.partial").read_text().splitlines()) == 2 and not (tmp_path / "t.jsonl").exists()


def _result(dataset, agent, accuracy):
    g = GroupAccuracy(1, 1, accuracy)
    from agents.metrics import Grounding, ToolStats
    return EvalResult("id", dataset, "test", agent, 1, accuracy, g, None, None, {}, {}, {},
                      ToolStats(0, 0, 1, 0, 1), Grounding(0, None, None, 0), 0.0)


def test_table1_layout_and_averages():
    rows = [_result(d, "a", acc) for d, acc in
            [("vqa_rad", 0.6), ("slake", 0.7), ("pathvqa", 0.5), ("omnimedvqa", 0.9), ("procedural", 0.4)]]
    rows.append(_result("vqa_rad", "b", 0.36))
    table = table1_markdown(rows).splitlines()
    assert table[0] == "| Model | OMVQA | VQA-RAD | SLAKE | PathVQA | Mod. avg | procedural (test) |"
    assert table[2] == "| a | 90.0 | 60.0 | 70.0 | 50.0 | 60.0 | 40.0 |"
    assert table[3] == "| b | - | 36.0 | - | - | - | - |"  # no average unless all three are present


@real
def test_cli_eval_prints_the_table_and_writes_json(tmp_path):
    cmd = [sys.executable, "-m", "agents.cli", "eval", "--env", "MedVR-VQA-RAD-v0", "--agent", "majority",
           "--agent", "no-zoom", "--limit", "5", "--data-root", str(VQA_RAD_ROOT), "--out", str(tmp_path),
           "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| Model | VQA-RAD |" in done.stdout and "| majority |" in done.stdout and "| no-zoom |" in done.stdout
    results = json.loads(next(tmp_path.glob("eval_*/results.json")).read_text())
    assert [r["agent"] for r in results["results"]] == ["majority", "no-zoom"]
    assert all(r["episodes"] == 5 for r in results["results"])
    assert len(list(tmp_path.glob("eval_*/trajectories/*.jsonl"))) == 2


def test_cli_eval_missing_dataset_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "agents.cli", "eval", "--env", "MedVR-VQA-RAD-v0",
                           "--data-root", str(tmp_path / "absent"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "VQA-RAD not found: tried" in done.stderr and "Traceback" not in done.stderr
