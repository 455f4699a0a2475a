"""SB3 encodings (observations, MultiDiscrete / Discrete actions, masks), word ids and the regrounding wrapper.

Pure gymnasium / numpy: no torch, no stable-baselines3.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import medvr_env  # noqa: F401
from medvr_env.entropy import ConstantEstimate
from medvr_env.env import MedVRVQAEnv
from medvr_env.tools import Tool, register_tool
from medvr_env.wrappers import (
    DiscreteActions,
    EntropyRegrounding,
    MultiDiscreteActions,
    SB3Observation,
    Tokenizer,
    answer_vocabulary,
    grid_regions,
)
from medvr_env.wrappers.tokens import DEFAULT_VOCABULARY
from tests.helpers import make_env

TENSOR_IDS = ["MedVR-VQA-Tensor-v0", "MedVR-VQA-Tensor-Discrete-v0"]
SMALL = {"dataset_kwargs": {"num_samples": 24}}
ANSWERS = ("yes", "no", "upper left", "upper right", "lower left", "lower right", "left", "right",
           "0", "1", "2", "3", "4")


def _make(env_id="MedVR-VQA-Tensor-v0", **kw):
    return gym.make(env_id, **{**SMALL, **kw})


def _reset_to(env, question_type, seed=0):
    """Reset onto the first sample of a question type (the env is built with only that type)."""
    obs, info = env.reset(seed=seed)
    assert env.unwrapped.episode.sample.question_type == question_type
    return obs, info


# ------------------------------------------------------------------ tokens
def test_tokenizer_known_unknown_padding_and_cut():
    tok = Tokenizer(max_tokens=6)
    ids = tok.encode("How many micro-bleeds are there? Zebra!")
    assert ids.dtype == np.int64 and ids.shape == (6,)
    known = [DEFAULT_VOCABULARY.index(w) + 1 for w in ("how", "many", "micro", "bleeds", "are", "there")]
    assert ids.tolist() == known  # cut after 6 words
    unknown = Tokenizer().encode("zebra")[0]
    assert len(DEFAULT_VOCABULARY) < unknown < Tokenizer().num_ids
    assert Tokenizer().encode("zebra")[0] == unknown  # stable
    assert Tokenizer().encode("").tolist() == [0] * 16
    assert Tokenizer(oov_buckets=0).encode("zebra nodule").tolist()[:2] == [DEFAULT_VOCABULARY.index("nodule") + 1, 0]
    rebuilt = Tokenizer(**tok.config())
    assert rebuilt.encode("is there a nodule").tolist() == tok.encode("is there a nodule").tolist()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"vocabulary": ["Nodule"]}, "lower-case"), ({"vocabulary": ["a", "a"]}, "twice"),
     ({"oov_buckets": -1}, "oov_buckets"), ({"max_tokens": 0}, "max_tokens")],
)
def test_tokenizer_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Tokenizer(**kwargs)


# ------------------------------------------------------------------ spaces
def test_registered_spaces_match_the_documented_ones():
    md, d = _make("MedVR-VQA-Tensor-v0"), _make("MedVR-VQA-Tensor-Discrete-v0")
    assert md.action_space == gym.spaces.MultiDiscrete([5, 16, 13])  # 4x4 grid: a finding is 3.5-4.7 px after a zoom
    assert d.action_space == gym.spaces.Discrete(47)
    assert md.observation_space == d.observation_space
    space = md.observation_space
    assert sorted(space.spaces) == sorted(
        ["image", "question", "options", "entropy", "entropy_mask", "view_box", "step", "view_entropy",
         "reader_answer"])
    assert space["reader_answer"].shape == (len(ANSWERS),)
    assert space["image"].shape == (128, 128, 3) and space["image"].dtype == np.uint8
    assert space["question"] == gym.spaces.MultiDiscrete([130] * 16)
    assert space["view_entropy"].shape == (2,)
    meanings = d.get_wrapper_attr("action_meanings")()
    assert meanings[:3] == ["think", "zoom[0]", "zoom[1]"] and meanings[16:19] == ["zoom[15]", "crop[0]", "crop[1]"]
    assert answer_vocabulary(md.unwrapped.dataset) == ANSWERS


@pytest.mark.parametrize("env_id", TENSOR_IDS)
def test_observations_stay_in_space_and_spec_rebuilds_the_wrappers(env_id):
    env = _make(env_id)
    env.action_space.seed(3)
    obs, _ = env.reset(seed=3)
    for _ in range(30):
        assert obs in env.observation_space
        obs, _, term, trunc, info = env.step(env.action_space.sample())
        space = env.action_space
        n = int(space.nvec.sum()) if isinstance(space, gym.spaces.MultiDiscrete) else int(space.n)
        assert info["action_mask"].shape == (n,) and info["action_mask"].dtype == bool
        if term or trunc:
            obs, _ = env.reset()
    rebuilt = gym.make(env.spec)
    assert rebuilt.action_space == env.action_space
    assert [w.name for w in rebuilt.spec.additional_wrappers] == [w.name for w in env.spec.additional_wrappers]


def test_question_ids_and_feedback_dropped():
    env = _make()
    obs, _ = env.reset(seed=0)
    question = env.unwrapped.episode.sample.question
    assert obs["question"].tolist() == Tokenizer().encode(question).tolist()
    assert "feedback" not in obs
    none = SB3Observation(MedVRVQAEnv(dataset_kwargs={"num_samples": 4}, obs_size=36), question_encoding="none",
                          view_entropy=False)
    assert sorted(none.observation_space.spaces) == ["entropy", "entropy_mask", "image", "step", "view_box"]
    assert sorted(none.reset(seed=0)[0]) == sorted(none.observation_space.spaces)


def test_view_entropy_reads_the_estimator_on_the_current_view():
    assert _make().reset(seed=0)[0]["view_entropy"].tolist() == [0.0, 0.0]  # no estimator: unknown
    env = _make(uncertainty_estimator=ConstantEstimate(0.25))
    obs, _ = env.reset(seed=0)
    assert obs["view_entropy"].tolist() == [0.25, 1.0]
    assert obs["entropy_mask"].sum() == 0  # the window only fills as steps are taken
    obs, *_ = env.step(np.array([1, 0, 0]))
    assert obs["entropy_mask"][-1] == 1 and obs["entropy"][-1] == pytest.approx(0.25)


class FixedReader:
    """An estimator that also reports an answer distribution (as the patch-reader estimator does)."""

    def estimate(self, episode):
        return 0.5

    def distribution(self, episode):
        return {"Left": 0.7, "right": 0.3, "not an answer": 1.0}


def test_reader_answer_puts_the_estimators_distribution_on_the_answer_list():
    assert not _make().reset(seed=0)[0]["reader_answer"].any()  # no estimator: zeros
    env = _make(uncertainty_estimator=FixedReader())
    obs, _ = env.reset(seed=0)
    assert obs["reader_answer"] in env.observation_space["reader_answer"]
    probs = dict(zip(ANSWERS, obs["reader_answer"].tolist()))
    assert probs["left"] == pytest.approx(0.7) and probs["right"] == pytest.approx(0.3)  # matched normalised
    assert sum(v for k, v in probs.items() if k not in ("left", "right")) == 0.0
    plain = SB3Observation(MedVRVQAEnv(dataset_kwargs={"num_samples": 4}, obs_size=36))
    assert "reader_answer" not in plain.observation_space.spaces  # off unless asked for


# ------------------------------------------------------------------ actions
def test_multidiscrete_zoom_is_a_grid_cell_of_the_current_view():
    env = _make(dataset_kwargs={"num_samples": 8})
    env.reset(seed=0)
    zoom = env.unwrapped.tool_names.index("zoom")
    # cell 1 of the 4x4 grid (second of the top row, grown by 5% of its side) of the whole 1024 px image
    _, _, _, _, info = env.step(np.array([zoom, 1, 0]))
    assert info["applied_box"] == [243, 0, 525, 269]
    _, _, _, _, info = env.step(np.array([zoom, 4, 5]))  # cell 4 (second row, first column) of that view
    assert info["applied_box"] == [243, 63, 318, 138]
    relook = env.unwrapped.tool_names.index("relook")
    _, _, _, _, info = env.step(np.array([relook, 3, 3]))
    assert info["error"] == "" and env.unwrapped.episode.view.box.as_list() == [0, 0, 1024, 1024]


def test_answer_mask_follows_question_type_and_options():
    env = _make(dataset_kwargs={"num_samples": 8, "question_types": ["presence"]})
    _, info = _reset_to(env, "presence")
    mask = info["action_mask"][-13:]
    assert [ANSWERS[i] for i in np.flatnonzero(mask)] == ["yes", "no"]

    env = _make(dataset_kwargs={"num_samples": 8, "question_types": ["count_mc"]})
    _, info = _reset_to(env, "count_mc")
    sample = env.unwrapped.episode.sample
    mask = info["action_mask"][-13:]
    assert sorted(ANSWERS[i] for i in np.flatnonzero(mask)) == sorted(sample.options)
    answer = env.unwrapped.tool_names.index("answer")
    _, reward, terminated, _, info = env.step(np.array([answer, 0, ANSWERS.index(sample.answer)]))
    assert terminated and info["is_success"] and reward == 1.0


def test_option_slots_answer_by_letter():
    env = MultiDiscreteActions(MedVRVQAEnv(dataset_kwargs={"num_samples": 8, "question_types": ["location_mc"]},
                                           obs_size=36), option_slots=4)
    _, info = env.reset(seed=0)
    sample = env.unwrapped.episode.sample
    assert env.action_space.nvec.tolist() == [5, 4, 17]
    assert info["action_mask"][-4:].all()  # four options, four letters
    letter = sample.options.index(sample.answer)
    answer = env.unwrapped.tool_names.index("answer")
    _, reward, _, _, info = env.step(np.array([answer, 0, 13 + letter]))
    assert info["is_success"] and env.unwrapped.episode.answer == "ABCD"[letter]


def test_discrete_table_masks_and_last_step():
    env = _make("MedVR-VQA-Tensor-Discrete-v0", max_steps=2,
                dataset_kwargs={"num_samples": 8, "question_types": ["side"]})
    _, info = _reset_to(env, "side")
    names = env.get_wrapper_attr("action_meanings")()
    allowed = [n for n, ok in zip(names, info["action_mask"]) if ok]
    assert allowed == ["think", *(f"zoom[{i}]" for i in range(16)), *(f"crop[{i}]" for i in range(16)),
                       "relook", "answer[left]", "answer[right]"]
    _, _, _, _, info = env.step(names.index("zoom[3]"))
    assert [n for n, ok in zip(names, info["action_mask"]) if ok] == ["answer[left]", "answer[right]"]
    assert np.array_equal(env.get_wrapper_attr("action_masks")(), info["action_mask"])
    assert info["tool_mask"].tolist() == [0, 0, 0, 0, 1]


@pytest.mark.parametrize("budget_is_terminal", [True, False])
def test_running_out_of_steps_is_terminal_by_default(budget_is_terminal):
    env = MultiDiscreteActions(MedVRVQAEnv(dataset_kwargs={"num_samples": 4}, obs_size=36, max_steps=2),
                               budget_is_terminal=budget_is_terminal)
    env.reset(seed=0)
    assert env.step(np.array([0, 0, 0]))[2:4] == (False, False)
    _, reward, terminated, truncated, info = env.step(np.array([0, 0, 0]))  # think twice: the budget is spent
    assert info["stop_reason"] == "max_steps" and reward == 0.0
    assert (terminated, truncated) == ((True, False) if budget_is_terminal else (False, True))


def test_bad_arguments_and_actions_raise_clear_errors():
    base = MedVRVQAEnv(dataset_kwargs={"num_samples": 4}, obs_size=36)
    with pytest.raises(ValueError, match="grid"):
        MultiDiscreteActions(base, grid=0)
    with pytest.raises(ValueError, match="overlap"):
        grid_regions(2, overlap=0.5)
    with pytest.raises(ValueError, match="option_slots"):
        DiscreteActions(base, option_slots=-1)
    with pytest.raises(ValueError, match="question_encoding"):
        SB3Observation(base, question_encoding="bow")
    with pytest.raises(ValueError, match="answers="):
        MultiDiscreteActions(make_env(obs_size=36))  # a dataset that declares no answers
    env = MultiDiscreteActions(base)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        env.step(np.array([9, 0, 0]))
    with pytest.raises(ValueError, match=r"\[tool, region, answer\]"):
        env.step(np.array([1, 0]))
    with pytest.raises(TypeError, match="MedVRVQAEnv"):
        MultiDiscreteActions(gym.make("CartPole-v1"))


@register_tool
class _NeedsPreset(Tool):
    name = "needs_preset_sb3_test"
    description = "A test tool with a required argument the flat encodings cannot fill."
    parameters = {"type": "object", "properties": {"preset": {"type": "string"}}, "required": ["preset"]}


def test_tool_with_required_argument_is_rejected_by_name():
    base = MedVRVQAEnv(dataset_kwargs={"num_samples": 4}, obs_size=36,
                       tools=["zoom", "needs_preset_sb3_test", "answer"])
    with pytest.raises(ValueError, match="needs_preset_sb3_test"):
        DiscreteActions(base)


def test_grid_regions_cover_the_view():
    cells = grid_regions([1, 2, 3])
    assert cells.shape == (14, 4)
    assert cells[0].tolist() == [0, 0, 1, 1]
    assert np.allclose(cells[5], [0, 0, 1 / 3, 1 / 3])
    grown = grid_regions(2, overlap=0.1)
    assert np.allclose(grown[0], [0, 0, 0.55, 0.55]) and np.allclose(grown[3], [0.45, 0.45, 1, 1])


# ------------------------------------------------------------------ regrounding
ZOOM = {"name": "zoom", "arguments": {"bbox_2d": [0.0, 0.0, 0.5, 0.5]}}


def _reground(**kw):
    env = EntropyRegrounding(MedVRVQAEnv(dataset_kwargs={"num_samples": 8, "question_types": ["presence"]},
                                         obs_size=36, return_views=False), **kw)
    env.reset(seed=0)
    return env, env.unwrapped.episode.sample.answer


def test_regrounding_pays_p_once_for_a_correct_answer_after_entropy_rose():
    env, answer = _reground()
    _, r1, *_, i1 = env.step({**ZOOM, "entropy": 0.2})  # sets the baseline; dH = 0: no regrounding
    assert i1["regrounding"] == {"h_base": 0.2, "dh": 0.0, "p": 0.0, "best_p": 0.0} and r1 == 0.0
    _, r2, *_, i2 = env.step({**ZOOM, "entropy": 0.6})  # rose by 0.4 and looked again: P = 0.5 + 0.5 * 0.4
    assert i2["regrounding"]["p"] == pytest.approx(0.7) and r2 == 0.0  # paid at the end only
    _, r3, *_, i3 = env.step({"name": "think", "arguments": {}, "entropy": 0.9})  # rose, but not a look
    assert i3["regrounding"]["p"] == 0.0 and i3["regrounding"]["best_p"] == pytest.approx(0.7)
    _, r4, term, _, i4 = env.step({"text": f"<answer>{answer}</answer>", "entropy": 0.1})
    assert term and i4["is_success"]
    assert i4["reward_terms"]["regrounding"] == pytest.approx(0.35)
    assert r4 == pytest.approx(1.35) == pytest.approx(sum(i4["reward_terms"].values()))


@pytest.mark.parametrize("gate, paid", [(True, 0.0), (False, 0.5)])
def test_regrounding_is_gated_on_a_correct_answer(gate, paid):
    env, answer = _reground(gate_on_correct=gate, gamma=2.0)
    env.step({**ZOOM, "entropy": 0.1})
    _, _, *_, info = env.step({**ZOOM, "entropy": 0.9})
    assert info["regrounding"]["p"] == 1.0  # clipped
    wrong = "no" if answer == "yes" else "yes"
    _, reward, term, _, info = env.step({"text": f"<answer>{wrong}</answer>"})
    assert term and not info["is_success"] and reward == pytest.approx(paid)


def test_regrounding_without_entropy_changes_nothing_and_resets():
    env, answer = _reground()
    env.step(ZOOM)
    env.step(ZOOM)
    _, reward, *_, info = env.step({"text": f"<answer>{answer}</answer>"})
    assert reward == 1.0 and info["regrounding"]["h_base"] is None
    env.reset(seed=1)
    assert env.step({**ZOOM, "entropy": 0.4})[-1]["regrounding"]["h_base"] == 0.4


@pytest.mark.parametrize("kwargs", [{"p_base": 1.5}, {"gamma": float("nan")}, {"look_tools": []}, {"bonus": "x"}])
def test_regrounding_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        EntropyRegrounding(MedVRVQAEnv(dataset_kwargs={"num_samples": 4}, obs_size=36), **kwargs)


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
def test_regrounding_over_the_tensor_env_passes_gymnasium_check_env():
    from gymnasium.utils.env_checker import check_env

    env = EntropyRegrounding(_make(uncertainty_estimator=ConstantEstimate(0.5)))
    check_env(env, skip_render_check=True)
    assert env.get_wrapper_attr("action_masks")().shape == (34,)  # 5 tools, 16 grid cells, 13 answers
