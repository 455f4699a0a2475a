"""agents.credit on hand-computed cases: looks and footprints, masks, CCA consensus and every edge case,
the online CCAReward wrapper (bank, state, caps, vector envs, SB3 PPO), and record-based looks elsewhere."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest

from agents.credit import (
    AGREE_REWARD,
    LOOKED_REWARD,
    CCAReward,
    Case,
    consensus_credit,
    episode_footprint,
    footprint_mask,
    grid_shape,
    load_vec_bank_state,
    mask_iou,
    mask_overlap,
    merge_bank_states,
    read_footprint,
    vec_bank_state,
)
from agents.metrics import footprint, tool_stats
from medvr_env import Box
from medvr_env.episode import Look, looks_in_steps
from medvr_env.wrappers import EntropyRegrounding

from .helpers import make_env

# Sample 0 of the helper dataset: an 800 x 600 image, answer "yes". GRID cuts it into 100 x 100 pixel cells.
GRID = (8, 6)
TOP_LEFT = [0, 0, 400, 300]  # cells: columns 0-3, rows 0-2 (12 cells)
FAR = [400, 300, 800, 600]  # columns 4-7, rows 3-5: disjoint from TOP_LEFT
SHIFTED = [200, 0, 600, 300]  # columns 2-5, rows 0-2: 6 cells shared with TOP_LEFT
LEFT_HALF = [0, 0, 200, 300]  # columns 0-1, rows 0-2: 6 cells, all inside TOP_LEFT


def _zoom(box, source=0):
    return {"name": "zoom", "arguments": {"bbox_2d": box, "source": source}}


RELOOK = {"name": "relook", "arguments": {}}
THINK = {"name": "think", "arguments": {"text": "hm"}}


def _answer(text):
    return {"name": "answer", "arguments": {"text": text}}


@pytest.fixture(scope="module")
def env():
    return make_env(bbox_format="pixel", min_box_side=1)


def play(env, actions, index=0):
    env.reset(options={"index": index})
    for action in actions:
        env.step(action)
    return env.episode.snapshot()


def episode(env, boxes, answer="yes", relook=False, index=0):
    return play(env, [*(_zoom(b) for b in boxes), *([RELOOK] if relook else []), _answer(answer)], index)


# ------------------------------------------------------------------ torch-free import
def test_importing_agents_credit_does_not_import_torch():
    code = "import sys, agents.credit; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ looks, read from step records
def test_looks_come_from_step_records_and_relook_adds_no_footprint(env):
    ep = play(env, [THINK, _zoom(TOP_LEFT), {"name": "zoom", "arguments": {"bbox_2d": [1, 2]}},  # invalid: no view
                    RELOOK, {"name": "crop", "arguments": {"bbox_2d": FAR, "source": 0}}, _answer("yes")])
    looks = ep.looks()
    assert [(lk.step, lk.view, lk.box, lk.tool) for lk in looks] == [
        (2, 1, Box(*TOP_LEFT), "zoom"), (4, 2, None, "relook"), (5, 3, Box(*FAR), "crop")]
    assert ep.footprint == [Box(*TOP_LEFT), Box(*FAR)] == ep.zoom_boxes
    assert looks_in_steps(ep.to_dict()["steps"]) == looks  # the record reads the same
    assert Look.from_step(ep.steps[0]) is None  # think made no view
    assert footprint(ep) == [tuple(TOP_LEFT), tuple(FAR)]
    assert tool_stats([ep]).mean_zooms == 2  # zoom and crop, not relook or the invalid call


def test_a_custom_tool_named_zoom_that_makes_no_region_is_no_footprint():
    """Meaning comes from the record: a view without an applied box is a look, never a footprint."""
    step = {"step": 3, "new_view": 2, "applied_box": None, "tool": "zoom"}
    assert Look.from_step(step) == Look(3, 2, None, "zoom")
    assert Look.from_step({"step": 1, "new_view": None, "applied_box": None, "tool": "crop"}) is None


# ------------------------------------------------------------------ masks
def test_footprint_mask_hand_computed():
    m = footprint_mask([[0, 0, 50, 50], [50, 50, 100, 100]], (100, 100), grid=4)
    assert m.astype(int).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert grid_shape((800, 600), GRID) == (6, 8) and grid_shape((800, 600), 64) == (64, 64)
    assert footprint_mask([TOP_LEFT], (800, 600), GRID).sum() == 12
    assert not footprint_mask([], (800, 600)).any()
    # the pixel grid marks exactly the box's own pixels (x2, y2 exclusive)
    px = footprint_mask([Box(2, 1, 5, 3)], (8, 4), "pixels")
    assert px.shape == (4, 8) and px.sum() == 6 and px[1:3, 2:5].all()
    # a box smaller than a cell covers no cell centre: it marks the cell under its own centre
    tiny = footprint_mask([[130, 10, 140, 20]], (800, 600), GRID)
    assert tiny.sum() == 1 and tiny[0, 1]


def test_mask_iou_and_overlap():
    a = footprint_mask([TOP_LEFT], (800, 600), GRID)
    b = footprint_mask([SHIFTED], (800, 600), GRID)
    assert mask_iou(a, b) == pytest.approx(6 / 18) and mask_overlap(b, a) == pytest.approx(0.5)
    empty = np.zeros_like(a)
    assert mask_iou(empty, empty) == 0.0 and mask_overlap(empty, a) == 0.0
    with pytest.raises(ValueError, match="same grid"):
        mask_iou(a, np.zeros((3, 3), bool))


@pytest.mark.parametrize("grid", [0, -3, (4,), (4, 0), "half", 2.5, True])
def test_bad_grid_is_a_clear_error(grid):
    with pytest.raises(ValueError, match="grid must be"):
        footprint_mask([TOP_LEFT], (800, 600), grid)


@pytest.mark.parametrize("size", [(0, 10), (10,), "800x600", (800.5, 600)])
def test_bad_image_size_is_a_clear_error(size):
    with pytest.raises(ValueError, match="image_size"):
        footprint_mask([TOP_LEFT], size)


def test_episode_footprint_of_an_episode_equals_that_of_its_record(env):
    ep = episode(env, [TOP_LEFT, FAR], relook=True)
    assert np.array_equal(episode_footprint(ep, GRID), episode_footprint(ep.to_dict(), GRID))
    assert episode_footprint(ep, GRID).sum() == 24
    fp = read_footprint(ep.to_dict())
    assert (fp.sample_id, fp.image_size, fp.correct, fp.final_step) == ("arr-0", (800, 600), True, 4)
    with pytest.raises(ValueError, match="needs"):
        read_footprint({"steps": []})
    with pytest.raises(TypeError, match="Episode"):
        read_footprint(42)


# ------------------------------------------------------------------ CCA over a group
@pytest.fixture(scope="module")
def group(env):
    """A: TOP_LEFT; B: TOP_LEFT then relook; C: SHIFTED; D: correct without looking; E: TOP_LEFT, wrong."""
    return [episode(env, [TOP_LEFT]), episode(env, [TOP_LEFT], relook=True), episode(env, [SHIFTED]),
            episode(env, []), episode(env, [TOP_LEFT], answer="no")]


def test_paper_voters_correct_ones_that_did_not_look_raise_the_bar(group):
    # 4 correct voters (D votes for no cell): a cell needs > 2 votes. TOP_LEFT ∩ SHIFTED has 3 (A, B, C).
    credit = consensus_credit(group, grid=GRID)
    assert credit.num_voters == 4 and credit.correct == [True, True, True, True, False]
    consensus = footprint_mask([[200, 0, 400, 300]], (800, 600), GRID)
    assert np.array_equal(credit.consensus, consensus)
    assert credit.votes.max() == 3 and credit.votes.sum() == 12 + 12 + 12
    assert credit.ious == pytest.approx([0.5, 0.5, 0.5, None, 0.5])  # 6 cells of 12 for A, B, C and E
    assert credit.cases == [Case.DISAGREES, Case.DISAGREES, Case.DISAGREES, Case.NO_LOOK, Case.INCORRECT]
    assert credit.tool_rewards == [0.5, 0.5, 0.5, 0.0, 0.0]


def test_only_looking_voters_hand_computed(group):
    # voters A, B, C: a cell needs >= 2 votes -> TOP_LEFT (12 cells). C: 6 shared of 18 -> 1/3.
    credit = consensus_credit(group, grid=GRID, voters="correct_looking")
    assert credit.num_voters == 3 and credit.consensus.sum() == 12
    assert credit.ious == pytest.approx([1.0, 1.0, 1 / 3, None, 1.0])
    assert credit.cases == [Case.AGREES, Case.AGREES, Case.DISAGREES, Case.NO_LOOK, Case.INCORRECT]
    assert credit.tool_rewards == [AGREE_REWARD, AGREE_REWARD, LOOKED_REWARD, 0.0, 0.0]
    assert [m.voted for m in credit.members] == [True, True, True, False, False]


def test_per_step_credit_scores_each_look(group):
    credit = consensus_credit(group, grid=GRID, voters="correct_looking")
    b = credit.members[1]
    assert [(lk.step, lk.view, lk.box, lk.iou, lk.overlap) for lk in b.looks] == [
        (1, 1, TOP_LEFT, 1.0, 1.0), (2, 2, None, None, None)]  # the relook is a look without a region
    c = credit.members[2].looks[0]
    assert c.iou == pytest.approx(1 / 3) and c.overlap == pytest.approx(0.5)
    assert [m.final_step for m in credit.members] == [2, 3, 2, 1, 2]
    assert json.loads(json.dumps(credit.to_dict()))["members"][1]["case"] == "agrees"


def test_records_give_the_same_credit_as_episodes(group):
    a = consensus_credit(group, grid=GRID)
    b = consensus_credit([e.to_dict() for e in group], grid=GRID)
    assert a.tool_rewards == b.tool_rewards and a.ious == b.ious and np.array_equal(a.consensus, b.consensus)


def test_no_correct_trajectory_gives_no_consensus_and_no_reward(env):
    wrong = [episode(env, [TOP_LEFT], answer="no"), episode(env, [FAR], answer="no")]
    credit = consensus_credit(wrong, grid=GRID)
    assert credit.no_correct and credit.consensus is None and credit.num_voters == 0
    assert credit.cases == [Case.INCORRECT] * 2 and credit.tool_rewards == [0.0, 0.0] and credit.ious == [None, None]


def test_exactly_one_correct_gets_half_unless_min_correct_is_one(env):
    pair = [episode(env, [TOP_LEFT]), episode(env, [TOP_LEFT], answer="no")]
    credit = consensus_credit(pair, grid=GRID)  # min_correct = 2
    assert credit.consensus is None and credit.cases == [Case.TOO_FEW_CORRECT, Case.INCORRECT]
    assert credit.tool_rewards == [0.5, 0.0] and credit.ious == [None, None]
    literal = consensus_credit(pair, grid=GRID, min_correct=1)  # M̂ = M_1: agrees with itself
    assert literal.cases == [Case.AGREES, Case.INCORRECT] and literal.tool_rewards == [1.0, 0.0]
    assert literal.ious == [1.0, 1.0]  # the wrong one is scored for diagnostics, but gets nothing


def test_correct_without_looking_gets_no_look_reward(env):
    pair = [episode(env, []), episode(env, [])]
    credit = consensus_credit(pair, grid=GRID)
    assert credit.cases == [Case.NO_LOOK] * 2 and credit.tool_rewards == [0.0, 0.0]
    assert consensus_credit(pair, grid=GRID, no_look_reward=0.25).tool_rewards == [0.25, 0.25]


def test_empty_consensus_gives_iou_zero_and_half(env):
    disjoint = [episode(env, [TOP_LEFT]), episode(env, [FAR])]  # each cell has 1 vote of 2: no majority
    credit = consensus_credit(disjoint, grid=GRID)
    assert credit.consensus is not None and not credit.consensus.any()
    assert credit.cases == [Case.EMPTY_CONSENSUS] * 2 and credit.ious == [0.0, 0.0]
    assert credit.tool_rewards == [0.5, 0.5]


def test_iou_must_be_strictly_above_eta(env):
    # voters A, B (TOP_LEFT) and F (LEFT_HALF): consensus TOP_LEFT; F's IoU is exactly 6/12 = 0.5
    trio = [episode(env, [TOP_LEFT]), episode(env, [TOP_LEFT]), episode(env, [LEFT_HALF])]
    assert consensus_credit(trio, grid=GRID).cases[2] == Case.DISAGREES
    assert consensus_credit(trio, grid=GRID, eta=0.4).cases[2] == Case.AGREES


def test_correct_flags_can_come_from_the_caller(env):
    pair = [episode(env, [TOP_LEFT], answer="no"), episode(env, [TOP_LEFT], answer="no")]
    credit = consensus_credit(pair, grid=GRID, correct=[True, True])
    assert credit.tool_rewards == [1.0, 1.0]
    with pytest.raises(ValueError, match="one flag per trajectory"):
        consensus_credit(pair, correct=[True])


def test_a_group_of_several_samples_or_bad_settings_is_an_error(env):
    mixed = [episode(env, [TOP_LEFT]), episode(env, [[0, 0, 100, 100]], index=1)]
    with pytest.raises(ValueError, match="one sample"):
        consensus_credit(mixed)
    one = [episode(env, [TOP_LEFT])]
    for kwargs, match in [({"eta": 1.0}, "eta"), ({"min_correct": 0}, "min_correct"),
                          ({"voters": "all"}, "voters"), ({"no_look_reward": float("nan")}, "no_look_reward")]:
        with pytest.raises(ValueError, match=match):
            consensus_credit(one, **kwargs)
    with pytest.raises(ValueError, match="non-empty"):
        consensus_credit([])


def test_default_grid_works_on_the_original_image(env):
    credit = consensus_credit([episode(env, [TOP_LEFT]), episode(env, [TOP_LEFT])])
    assert credit.grid_shape == (64, 64) and credit.tool_rewards == [1.0, 1.0]


# ------------------------------------------------------------------ the online wrapper
def _wrapped(**kw):
    return CCAReward(make_env(bbox_format="pixel", min_box_side=1), **{"grid": GRID, **kw})


def finish(wrapper, actions, index=0):
    wrapper.reset(options={"index": index})
    for action in actions:
        out = wrapper.step(action)
    return out


def test_wrapper_bank_across_episodes_hand_computed():
    w = _wrapped()
    expected = [  # (actions, case, tool reward, voters, banked)
        ([_zoom(TOP_LEFT), _answer("yes")], "too_few_correct", 0.5, 1, 1),
        ([_zoom(TOP_LEFT), _answer("yes")], "agrees", 1.0, 2, 2),
        ([_zoom(FAR), _answer("yes")], "disagrees", 0.5, 3, 3),  # votes: TOP_LEFT 2 of 3
        ([_zoom(TOP_LEFT), _answer("no")], "incorrect", 0.0, 3, 3),  # wrong: scored, not banked
        ([_answer("yes")], "no_look", 0.0, 4, 4),  # banked: it votes for nothing from now on
        ([_zoom(TOP_LEFT), _answer("yes")], "agrees", 1.0, 5, 5),  # TOP_LEFT: 3 votes of 5
    ]
    for actions, case, tool, voters, banked in expected:
        _, reward, terminated, _, info = finish(w, actions)
        assert terminated and info["cca"]["case"] == case, info["cca"]
        assert info["cca"]["tool_reward"] == tool and info["reward_terms"]["tool"] == tool
        assert (info["cca"]["voters"], info["cca"]["banked"]) == (voters, banked)
        assert reward == pytest.approx(float(info["is_success"]) + tool)
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
    assert w.bank_size == (1, 5)


def test_wrapper_pays_only_on_the_last_step_and_on_truncation():
    w = CCAReward(make_env(bbox_format="pixel", min_box_side=1, max_steps=2), grid=GRID)
    w.reset(options={"index": 0})
    _, reward, terminated, truncated, info = w.step(_zoom(TOP_LEFT))
    assert not (terminated or truncated) and "cca" not in info and info["reward_terms"]["tool"] == 0.0
    _, reward, terminated, truncated, info = w.step(THINK)
    assert truncated and info["cca"]["case"] == "incorrect" and reward == 0.0 and w.bank_size == (0, 0)


def test_tool_weight_scales_the_paid_term():
    w = _wrapped(tool_weight=2.0, min_correct=1)
    _, reward, *_, info = finish(w, [_zoom(TOP_LEFT), _answer("yes")])
    assert info["cca"]["tool_reward"] == 1.0 and info["reward_terms"]["tool"] == 2.0 and reward == 3.0


def test_wrapper_voters_option_matches_the_group_function():
    w = _wrapped(voters="correct_looking")
    finish(w, [_answer("yes")])  # banked, but votes for nothing under this rule
    _, _, *_, info = finish(w, [_zoom(TOP_LEFT), _answer("yes")])
    assert info["cca"]["voters"] == 1 and info["cca"]["case"] == "too_few_correct"


def test_bank_state_round_trips_through_state_dict_and_an_atomic_file(tmp_path):
    a = _wrapped()
    for box in (TOP_LEFT, FAR, TOP_LEFT):
        finish(a, [_zoom(box), _answer("yes")])
    finish(a, [_zoom([0, 0, 320, 480]), _answer("no")], index=3)  # sample 3's answer is "no"
    state = a.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert [s["sample_id"] for s in state["samples"]] == ["arr-0", "arr-3"]
    path = a.save(tmp_path / "bank.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.json"]  # no temp file left behind
    b, c = _wrapped(), _wrapped(bank_file=path)
    b.load_state_dict(state)
    nxt = [_zoom(SHIFTED), _answer("yes")]
    results = [finish(w, nxt)[-1]["cca"] for w in (a, b, c)]
    assert results[0] == results[1] == results[2] and results[0]["voters"] == 4
    assert a.state_dict() == b.state_dict() == c.state_dict()


@pytest.mark.parametrize("state, match", [
    ({}, "not a CCA bank"), ({"format": "medvr-cca-bank", "version": 99}, "version"),
    ({"format": "medvr-cca-bank", "version": 1, "samples": [{"sample_id": "x"}]}, "malformed"),
    ({"format": "medvr-cca-bank", "version": 1, "samples": [{"sample_id": "x", "image_size": [8, 8],
                                                               "footprints": [[[0, 0, 1]]]}]}, "boxes"),
])
def test_a_bad_bank_state_is_a_clear_error(state, match):
    with pytest.raises(ValueError, match=match):
        _wrapped().load_state_dict(state)


def test_missing_or_corrupt_bank_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CCA bank file"):
        _wrapped(bank_file=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a CCA bank file"):
        _wrapped().load(tmp_path / "bad.json")


def test_bank_memory_is_bounded_per_sample_and_in_samples():
    w = _wrapped(max_per_sample=2, max_samples=1)
    for box in (TOP_LEFT, FAR, SHIFTED):
        finish(w, [_zoom(box), _answer("yes")])
    assert w.bank_size == (1, 2)
    assert w.state_dict()["samples"][0]["footprints"] == [[FAR], [SHIFTED]]  # the newest two
    finish(w, [_answer("no")], index=3)  # a second sample evicts the least recently finished one
    assert [s["sample_id"] for s in w.state_dict()["samples"]] == ["arr-3"]
    small = _wrapped(max_per_sample=1)
    small.load_state_dict(_full_state())
    assert small.bank_size == (1, 1)


def _full_state():
    w = _wrapped()
    for box in (TOP_LEFT, FAR):
        finish(w, [_zoom(box), _answer("yes")])
    return w.state_dict()


def test_merge_bank_states_concatenates_and_keeps_the_newest():
    a, b = _full_state(), _full_state()
    merged = merge_bank_states([a, b], max_per_sample=3)
    assert merged["samples"][0]["footprints"] == [[FAR], [TOP_LEFT], [FAR]]


@pytest.mark.parametrize("kwargs, match", [({"eta": -0.1}, "eta"), ({"max_per_sample": 0}, "max_per_sample"),
                                           ({"tool_weight": "x"}, "tool_weight"), ({"grid": "half"}, "grid")])
def test_wrapper_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _wrapped(**kwargs)


def test_wrapper_needs_a_medvr_env():
    with pytest.raises(TypeError, match="MedVR env"):
        CCAReward(gym.make("CartPole-v1"))


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
def test_wrapper_passes_check_env_pickles_and_rebuilds_from_its_spec():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("MedVR-VQA-Tensor-v0", dataset_kwargs={"num_samples": 4, "image_size": 128})
    wrapped = CCAReward(env, min_correct=1)
    check_env(wrapped, skip_render_check=True)
    clone = pickle.loads(pickle.dumps(wrapped))
    assert isinstance(clone, CCAReward) and clone.min_correct == 1
    rebuilt = gym.make(wrapped.spec)
    assert isinstance(rebuilt, CCAReward) and rebuilt.min_correct == 1


def test_gymnasium_vector_env_and_merged_banks():
    envs = gym.make_vec("MedVR-VQA-Tensor-v0", num_envs=2, vectorization_mode="sync",
                        wrappers=[lambda e: CCAReward(e, min_correct=1)],
                        dataset_kwargs={"num_samples": 2, "image_size": 128})
    envs.reset(seed=0)
    envs.action_space.seed(0)
    finished = []
    for _ in range(60):
        *_, terminated, truncated, infos = envs.step(envs.action_space.sample())
        if "cca" in infos:
            finished += [case for case, done in zip(infos["cca"]["case"], infos["_cca"]) if done]
    assert finished and set(finished) <= {c.value for c in Case}
    state = vec_bank_state(envs)
    banked = sum(len(s["footprints"]) for s in state["samples"])
    assert banked == sum(c != "incorrect" for c in finished)
    load_vec_bank_state(envs, state)
    assert all(s == state for s in envs.call("state_dict"))
    envs.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_cca_wrapper_under_sb3_maskable_ppo_on_a_registered_id():
    pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class Collect(BaseCallback):
        def __init__(self):
            super().__init__()
            self.terminal = []

        def _on_step(self) -> bool:
            self.terminal += [info for info, done in zip(self.locals["infos"], self.locals["dones"]) if done]
            return True

    # two yes/no samples, 3 steps at most: the masked policy answers, zooms and is right often enough
    # to reach every rule and to fill the bank past its cap of 16 footprints per sample
    vec = make_vec_env("MedVR-VQA-Tensor-v0", n_envs=2, seed=0, wrapper_class=CCAReward, env_kwargs={
        "dataset_kwargs": {"num_samples": 2, "image_size": 128, "question_types": ["presence"]}, "max_steps": 3})
    model = sb3_contrib.MaskablePPO("MultiInputPolicy", vec, n_steps=64, batch_size=64, n_epochs=1, seed=0,
                                    device="cpu", policy_kwargs={"net_arch": [16]})
    collect = Collect()
    model.learn(256, callback=collect)
    assert model.num_timesteps >= 256 and len(collect.terminal) >= 50
    for info in collect.terminal:
        cca = info["cca"]
        assert info["reward_terms"]["tool"] == cca["tool_reward"] in (0.0, 0.5, 1.0)
        assert (cca["case"] == "incorrect") == (not info["is_success"])
    cases = {info["cca"]["case"] for info in collect.terminal}
    assert {"incorrect", "no_look"} < cases and cases & {"empty_consensus", "agrees", "disagrees"}
    # each worker banks its own correct episodes; the merged bank keeps the newest 16 per sample
    correct: dict[str, int] = {}
    for info in collect.terminal:
        if info["is_success"]:
            correct[info["sample_id"]] = correct.get(info["sample_id"], 0) + 1
    state = vec_bank_state(vec)
    banked = {s["sample_id"]: len(s["footprints"]) for s in state["samples"]}
    assert banked == {k: min(16, n) for k, n in correct.items()}
    vec.close()


# ------------------------------------------------------------------ regrounding reads looks from records
def _regrounding(**kw):
    env = EntropyRegrounding(make_env(bbox_format="pixel", min_box_side=1), **kw)
    env.reset(options={"index": 0})
    return env


def test_regrounding_counts_a_relook_as_a_look_from_the_record():
    env = _regrounding()
    env.step({**THINK, "entropy": 0.2})
    _, _, *_, info = env.step({**RELOOK, "entropy": 0.6})
    assert info["regrounding"]["p"] == pytest.approx(0.7)
    _, _, *_, info = env.step({**THINK, "entropy": 0.9})  # not a look: no view was made
    assert info["regrounding"]["p"] == 0.0


def test_regrounding_look_tools_is_deprecated_but_still_filters():
    with pytest.warns(DeprecationWarning, match="look_tools"):
        env = _regrounding(look_tools=["zoom"])
    env.step({**THINK, "entropy": 0.2})
    assert env.step({**RELOOK, "entropy": 0.6})[-1]["regrounding"]["p"] == 0.0
    assert env.step({**_zoom(TOP_LEFT), "entropy": 0.6})[-1]["regrounding"]["p"] == pytest.approx(0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _regrounding()  # the default warns about nothing


def test_batch_credit_groups_members_by_sample_and_keeps_the_batch_order(env):
    from agents.credit import batch_consensus_credit

    a0, b0 = episode(env, [TOP_LEFT]), episode(env, [TOP_LEFT])
    a3, b3 = (play(env, [_zoom(box), _answer("no")], index=3) for box in ([0, 0, 320, 480], [320, 480, 640, 960]))
    batch = [a0, a3, b0.to_dict(), b3]
    credits = batch_consensus_credit(batch, grid=GRID)
    assert [c.case for c in credits] == [Case.AGREES, Case.EMPTY_CONSENSUS, Case.AGREES, Case.EMPTY_CONSENSUS]
    assert [c.tool_reward for c in credits] == [1.0, 0.5, 1.0, 0.5]
    flipped = batch_consensus_credit(batch, grid=GRID, correct=[True, False, True, True])
    assert [c.case for c in flipped] == [Case.AGREES, Case.INCORRECT, Case.AGREES, Case.TOO_FEW_CORRECT]
    record = a0.to_dict()
    del record["sample"]
    with pytest.raises(ValueError, match="no sample_id"):
        batch_consensus_credit([record])


def test_docstring_examples_run():
    import doctest

    import agents.credit.footprint
    import medvr_env.branching

    for module in (agents.credit.footprint, medvr_env.branching):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
