"""The issue-13 experiment grid (experiments/evr_cca): arms, rewards, budget, aggregation maths, and the whole
machinery end to end on a tiny random-weight Qwen2.5-VL (two arms, one seed, one GRPO step each, two test
questions), including resume: a finished run is skipped, an interrupted one picks up where it stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from experiments.evr_cca.aggregate import (arm_curve, comparison_table, question_type_table, smooth, summary_table,
                                           t_interval, targets, tokens_to_reach, welch_difference)
from experiments.evr_cca.arms import ARMS, arm_by_key, arm_document, deep_merge, read_arm_file, read_base, \
    write_arm_configs
from experiments.evr_cca.grounding import coverage, footprint_grounding, reading_window


# ---------------------------------------------------------------------- arms (no torch)
def test_arm_configs_differ_from_the_base_only_where_the_table_says(tmp_path):
    paths = write_arm_configs(out_dir=tmp_path)
    assert [p.stem for p in paths] == [a.key for a in ARMS]
    docs = {p.stem: read_arm_file(p) for p in paths}
    base = read_base()
    arm1, train1 = docs["arm1_outcome"]
    assert train1["env"]["kwargs"]["tools"] == ["answer"] and train1["rewards"]["format"] == 0.0
    _, train2 = docs["arm2_tools"]
    _, train5 = docs["arm5_evr_cca"]
    arm6, train6 = docs["arm6_box"]
    assert train2["rewards"]["tool"] == 0.0 and not train2["cca"]["enabled"] and not train2["evr"]["enabled"]
    assert train5["cca"]["enabled"] and train5["evr"]["enabled"] and train5["rewards"]["tool"] == 1.0
    # arm 6 is arm 5 with the tool reward's reference swapped: CCA off, the box reward on, everything else equal
    assert arm6["tool_reward"] == "box" and not train6["cca"]["enabled"]
    assert {k: v for k, v in train6.items() if k != "cca"} == {k: v for k, v in train5.items() if k != "cca"}
    for _, train in docs.values():  # shared: warm start, data, group, learning rate
        assert train["model"] == base["model"] and train["grpo"] == base["grpo"]
        assert train["env"]["kwargs"]["dataset_kwargs"] == base["env"]["kwargs"]["dataset_kwargs"]
    assert arm_by_key("5") is arm_by_key("evr_cca") is arm_by_key("arm5_evr_cca")
    with pytest.raises(KeyError, match="unknown arm"):
        arm_by_key("arm7")


def test_deep_merge_and_bad_arm_overrides():
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]}) == {"a": {"b": 1, "c": 3}, "l": [2]}
    bad = SimpleNamespace(id=9, name="x", key="arm9_x", description="", overrides={"cca": {"etta": 1}},
                          tool_reward="none")
    with pytest.raises(ValueError, match="did you mean 'eta'"):
        arm_document(bad, read_base())


# ---------------------------------------------------------------------- grounding measures (hand-computed)
def test_reading_window_and_coverage():
    # a 10 px finding at (100, 100) in a 1000 x 800 image: window side 200 (a quarter of the shorter side)
    assert reading_window((95, 95, 105, 105), (1000, 800)) == (0.0, 0.0, 200.0, 200.0)  # shifted inside
    assert reading_window((495, 395, 505, 405), (1000, 800)) == (400.0, 300.0, 600.0, 500.0)
    assert reading_window((0, 0, 400, 300), (1000, 800)) == (0.0, 0.0, 400.0, 300.0)  # already larger: unchanged
    assert coverage([(0, 0, 50, 50)], [(10, 10, 20, 20), (60, 60, 70, 70)]) == 0.5
    assert coverage([], [(10, 10, 20, 20)]) == 0.0
    g = footprint_grounding([(400, 300, 600, 500)], [(495, 395, 505, 405)], (1000, 800))
    assert g["window_iou"] == pytest.approx(1.0) and g["coverage"] == 1.0
    assert g["iou"] == pytest.approx(100 / 40000)
    assert footprint_grounding([], [(495, 395, 505, 405)], (1000, 800)) == {"iou": 0.0, "window_iou": 0.0,
                                                                           "coverage": 0.0}
    assert footprint_grounding([(0, 0, 10, 10)], [], (100, 100)) is None


# ---------------------------------------------------------------------- aggregation maths (hand-computed)
def test_t_interval_and_welch_difference_on_hand_made_numbers():
    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2) = 4.302653
    assert t_interval([5.0])[0] == 5.0 and math.isnan(t_interval([5.0])[1])
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 0.0)
    # a = [1, 2, 3], b = [4, 6, 8]: var/n = 1/3 and 4/3, se = sqrt(5/3), dof = (5/3)^2 / ((1/9 + 16/9) / 2) = 50/17
    diff, lo, hi = welch_difference([1, 2, 3], [4, 6, 8])
    from scipy import stats

    half = stats.t.ppf(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert diff == -4.0 and lo == pytest.approx(-4 - half) and hi == pytest.approx(-4 + half)
    assert math.isnan(welch_difference([1.0], [2.0, 3.0])[1])


def _record(arm: int, seed: int, acc: float, miou: float, window: float, qt: dict[str, float]) -> dict:
    key = next(a.key for a in ARMS if a.id == arm)
    return {"arm": {"id": arm, "key": key}, "seed": seed,
            "eval": {"accuracy": acc, "miou": miou, "window_iou": window, "coverage": 0.5, "tool_rate": 1.0,
                     "zooms_per_episode": 1.0, "generated_tokens_per_episode": 40.0,
                     "by_question_type": {k: {"accuracy": v, "n": 10} for k, v in qt.items()}},
            "training": {"branch_rate": 0.25, "generated_tokens": 1000.0}}


def test_summary_comparison_and_targets_tables():
    records = [_record(2, s, a, 0.001, 0.2, {"count": a}) for s, a in enumerate([0.40, 0.42, 0.44])]
    records += [_record(5, s, a, 0.002, 0.6, {"count": a}) for s, a in enumerate([0.60, 0.62, 0.64])]
    records += [_record(6, s, a, 0.003, 0.7, {"count": a}) for s, a in enumerate([0.70, 0.70, 0.70])]
    table = summary_table(records)
    half = 4.302653 * 2.0 / math.sqrt(3)  # accuracy in %: sd 2 points over 3 seeds
    assert f"| arm2_tools | 3 | 42.0 ± {half:.1f} |" in table
    assert f"| arm6_box | 3 | 70.0 ± 0.0 |" in table
    assert f"| arm2_tools | 3 | 42.0 ± {half:.1f} |" in question_type_table(records)
    assert "| arm | seeds | count (n=10) |" in question_type_table(records)
    comp = comparison_table(records)
    assert "| arm5_evr_cca − arm2_tools | accuracy (%) | +20.0 |" in comp
    row = next(line for line in comp.splitlines() if line.startswith("| arm5_evr_cca − arm2_tools | accuracy"))
    assert row.endswith("| no |")  # 20 points apart with sd 2: outside the seed noise
    rows = targets(records, None, budget=1000)
    assert rows[0]["met"] is True  # arm 5's interval lies above arm 2's
    assert rows[1]["met"] is False and "arm 5 0.0020, arm 6 0.0030" in rows[1]["evidence"]  # mIoU far below 0.5
    assert rows[2]["met"] is None  # no learning curves given


def test_curves_smoothing_interpolation_and_tokens_to_reach():
    assert smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    grid = np.array([10.0, 20.0, 30.0, 40.0])
    seed0 = (np.array([10.0, 20.0, 30.0]), np.array([0.0, 0.5, 1.0]))
    seed1 = (np.array([10.0, 20.0, 30.0, 40.0]), np.array([0.0, 0.5, 1.0, 1.0]))
    mean, lo, hi = arm_curve([seed0, seed1], grid, k=1)
    assert mean[:3].tolist() == [0.0, 0.5, 1.0] and mean[3] == 1.0  # only seed 1 reached 40 tokens
    assert lo[0] == hi[0] == 0.0
    assert tokens_to_reach(grid, mean, 0.5) == 20.0 and tokens_to_reach(grid, mean, 2.0) is None
    # target 3 on a 100-token budget (grid 1..100): arm 2 reaches its final 0.5 at 51, 52, 53 tokens; arm 3 at
    # 21, 22, 23: 30 tokens sooner, every seed 1 token apart (sd 1), so the Welch interval is 30 ± t·sqrt(2/3)
    def curve(at: int) -> np.ndarray:
        return np.asarray([0.1] * (at - 1) + [0.5] * (101 - at))

    mean2 = [0.1] * 50 + [0.5] * 50
    seeds = {"arm2_tools": [curve(51), curve(52), curve(53)], "arm3_evr": [curve(21), curve(22), curve(23)]}
    rows = targets([], {"arm2_tools": {"medvr/accuracy": mean2}}, 100, seeds)
    assert rows[2]["met"] is True and "arm 2 [51, 52, 53], arm 3 [21, 22, 23]; arm 3 − arm 2 = -30" in rows[2]["evidence"]
    seeds["arm3_evr"] = [curve(21), curve(52), curve(90)]  # sooner on average, but inside the seed noise
    assert targets([], {"arm2_tools": {"medvr/accuracy": mean2}}, 100, seeds)[2]["met"] is False


# ---------------------------------------------------------------------- the token budget
def test_token_budget_counts_sampled_tokens_and_resumes(tmp_path):
    pytest.importorskip("transformers")
    from experiments.evr_cca.budget import TokenBudget, cumulative_tokens, step_tokens

    assert step_tokens({"medvr/generated_tokens": 30.0}, 4) == 120.0
    # EVR: the engine's count of sampled tokens (a shared prefix once), not the per-trajectory mean
    assert step_tokens({"medvr/generated_tokens": 30.0, "evr/generated_tokens": 80.0}, 4) == 80.0
    assert step_tokens({"loss": 1.0}, 4) is None
    lines = [{"step": 1, "medvr/generated_tokens": 10.0}, {"step": 2, "medvr/generated_tokens": 20.0},
             {"step": 3, "medvr/generated_tokens": 30.0}]
    assert cumulative_tokens(lines, 2) == [(1, 20.0), (2, 60.0), (3, 120.0)]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4, "medvr/gen')  # a cut last line
    budget = TokenBudget(100, 2, metrics)
    control = SimpleNamespace(should_training_stop=False)
    budget.on_train_begin(None, SimpleNamespace(global_step=2), control)  # resumed at step 2: 60 tokens spent
    assert budget.used == 60.0 and budget.steps == 2
    budget.on_log(None, None, control, logs={"train_runtime": 1.0})
    assert not control.should_training_stop
    budget.on_log(None, None, control, logs={"medvr/generated_tokens": 15.0})
    assert budget.used == 90.0 and not control.should_training_stop
    budget.on_log(None, None, control, logs={"medvr/generated_tokens": 5.0})
    assert budget.used == 100.0 and control.should_training_stop and budget.spent


# ---------------------------------------------------------------------- arm 6's box reward (no model)
def test_box_reward_scores_zooms_on_the_reading_window_and_needs_a_correct_answer():
    pytest.importorskip("agents.credit")
    import gymnasium as gym

    import medvr_env  # noqa: F401
    from experiments.evr_cca.rewards import grounding_probe, make_box_reward

    episodes = []
    env = gym.make("MedVR-VQA-v0", dataset_kwargs={"num_samples": 40}, bbox_format="pixel")
    sample = env.unwrapped.dataset[0]
    size = env.unwrapped.dataset.image_size
    window = [int(round(v)) for v in reading_window(sample.eval_boxes[0], (size, size))]
    for box in (window, window, [0, 0, 100, 100] if window[0] > 200 else [size - 100, size - 100, size, size]):
        env.reset(seed=0, options={"index": 0})
        env.step({"name": "zoom", "arguments": {"bbox_2d": box}})
        env.step({"name": "answer", "arguments": {"text": "x"}})
        episodes.append(env.unwrapped.episode)
    env.reset(seed=0, options={"index": 0})
    env.step({"name": "answer", "arguments": {"text": "x"}})
    episodes.append(env.unwrapped.episode)  # no look
    logged = {}
    reward = make_box_reward(eta=0.5)
    out = reward(completions=[""] * 4, episode=episodes, accuracy=[1.0, 0.0, 1.0, 1.0],
                 log_metric=logged.__setitem__)
    # on the window and correct: 1.0; on the window but wrong: 0; elsewhere and correct: 0.5; no look: 0
    assert out == [1.0, 0.0, 0.5, 0.0] and logged["box/agrees"] == 0.25
    # a sample without evaluation boxes has no reference: a correct zoom gets 0.5, as CCA without a consensus
    boxless = next(i for i in range(len(env.unwrapped.dataset)) if not env.unwrapped.dataset[i].eval_boxes)
    env.reset(seed=0, options={"index": boxless})
    env.step({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 300, 300]}})
    env.step({"name": "answer", "arguments": {"text": "x"}})
    assert reward(completions=[""], episode=[env.unwrapped.episode], accuracy=[1.0]) == [0.5]
    probe = grounding_probe(completions=[""] * 4, episode=episodes, log_metric=logged.__setitem__)
    assert probe == [0.0] * 4
    assert logged["probe/coverage"] == 0.5 and logged["probe/window_iou"] == pytest.approx(0.5, abs=0.02)


# ---------------------------------------------------------------------- the grid, end to end
@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    pytest.importorskip("trl")
    from agents.testing import build_tiny_vlm

    return build_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("tiny_qwen25_grid"))


def _small_base(tmp_path: Path, model: Path) -> Path:
    base = deep_merge(read_base(), {
        "model": str(model),
        "env": {"kwargs": {"max_steps": 2, "dataset_kwargs": {"num_samples": 4}}},
        "policy": {"max_new_tokens": 8, "max_turns": 2, "device": "cpu"},
        "grpo": {"num_generations": 2, "per_device_train_batch_size": 2, "save_steps": 1, "disable_tqdm": True},
    })
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(base), encoding="utf-8")
    return path


@pytest.mark.usefixtures("one_torch_thread")
def test_grid_end_to_end_skips_finished_runs_and_restarts_interrupted_ones(tmp_path, tiny_qwen):
    from experiments.evr_cca.run_grid import launch_inline, run_grid

    calls: list[tuple[str, int]] = []

    def launcher(arm_file, seed, folder, model, budget, questions, threads):
        calls.append((Path(arm_file).stem, seed))
        launch_inline(arm_file, seed, folder, model, budget, questions, threads)

    settings = dict(arms=[arm_by_key(1), arm_by_key(6)], seeds=[0], budget=1, warmstart=str(tiny_qwen),
                    runs_dir=tmp_path / "runs", results=tmp_path / "results", configs_dir=tmp_path / "configs",
                    base=_small_base(tmp_path, tiny_qwen), eval_questions=2, launcher=launcher, progress=False)
    summary = run_grid(**settings)
    assert calls == [("arm1_outcome", 0), ("arm6_box", 0)]
    assert summary["grid"]["failures"] == []
    results = tmp_path / "results"
    for key in ("arm1_outcome", "arm6_box"):
        record = json.loads((results / "runs" / key / "seed0.json").read_text())
        assert record["trained"]["steps"] == 1  # a budget of 1 token: one GRPO step
        assert record["eval"]["questions"] == 2 and 0.0 <= record["eval"]["accuracy"] <= 1.0
        assert record["training"]["generated_tokens"] >= 1 and record["rollouts_per_step"] == 2
        assert (results / "runs" / key / "seed0.curve.jsonl").read_text().count("\n") == 1
        assert not list((tmp_path / "runs" / key / "seed0" / "train").glob("checkpoint-*"))  # deleted after final
    arm1 = json.loads((results / "runs" / "arm1_outcome" / "seed0.json").read_text())
    assert arm1["eval"]["tool_rate"] == 0.0  # no tools offered, so no look
    text = (results / "summary.md").read_text()
    assert "| arm1_outcome | 1 |" in text and "| arm6_box | 1 |" in text
    assert (results / "curves.png").stat().st_size > 10_000
    assert json.loads((results / "grid.json").read_text())["planned_runs"] == 2

    # a finished grid: every run is skipped
    calls.clear()
    run_grid(**settings)
    assert calls == []

    # a run interrupted during its evaluation: only it runs again, from its evaluation (training is not repeated)
    folder = tmp_path / "runs" / "arm6_box" / "seed0"
    trained = (folder / "trained.json").read_text()
    (folder / "result.json").unlink()
    (folder / "eval.json").unlink()
    run_grid(**settings)
    assert calls == [("arm6_box", 0)]
    assert (folder / "result.json").is_file() and (folder / "trained.json").read_text() == trained

    # the warm start's reference row: the same questions, with tools and without
    from experiments.evr_cca.run_grid import aggregate, evaluate_warmstart

    done = evaluate_warmstart(str(tiny_qwen), results, 2, settings["base"])
    assert done["tools"]["questions"] == done["no_tools"]["questions"] == 2 and done["no_tools"]["tool_rate"] == 0.0
    aggregate(results, json.loads((results / "grid.json").read_text()))
    assert "| no tools |" in (results / "summary.md").read_text()
