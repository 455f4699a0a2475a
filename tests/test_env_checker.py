"""Gymnasium conformance for every registered id, on both action paths; determinism; pickling; vector envs."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence

import medvr_env
from medvr_env.wrappers import TextActions

from .dataset_fixtures import make_spec

SPECS = [s for s in gym.registry.values() if str(s.entry_point).startswith("medvr_env")]
# check_env always notes that a wrapped env is not the raw env; the text path is a wrapper by design.
WRAPPED_NOTE = "is different from the unwrapped version"


def _check_without_warnings(env, allowed=()):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=False)
    unexpected = [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)]
    assert not unexpected, unexpected


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_check_env_structured(spec):
    _check_without_warnings(make_spec(spec, disable_env_checker=True).unwrapped)


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_check_env_text_actions(spec):
    _check_without_warnings(TextActions(make_spec(spec, disable_env_checker=True).unwrapped), allowed=(WRAPPED_NOTE,))


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_fifty_step_determinism_two_envs(spec):
    env_a, env_b = make_spec(spec, disable_env_checker=True), make_spec(spec, disable_env_checker=True)
    env_a.action_space.seed(7)
    obs_a, info_a = env_a.reset(seed=11)
    obs_b, info_b = env_b.reset(seed=11)
    assert data_equivalence(obs_a, obs_b) and data_equivalence(info_a, info_b)
    for _ in range(50):
        action = env_a.action_space.sample()
        out_a, out_b = env_a.step(action), env_b.step(action)
        assert data_equivalence(out_a, out_b, exact=True)
        if out_a[2] or out_a[3]:
            obs_a, info_a = env_a.reset()
            obs_b, info_b = env_b.reset()
            assert data_equivalence(obs_a, obs_b) and data_equivalence(info_a, info_b)


def test_seeded_reset_replays_same_sample_and_index_option():
    env = gym.make("MedVR-VQA-v0")
    first, info1 = env.reset(seed=5)
    again, info2 = env.reset(seed=5)
    assert info1["sample_id"] == info2["sample_id"]
    assert data_equivalence(first, again)
    chosen, info3 = env.reset(options={"index": 3})
    assert info3["sample_index"] == 3
    with pytest.raises(ValueError, match="options\\['index'\\]"):
        env.reset(options={"index": 10**9})


def test_pickle_round_trip():
    env = gym.make("MedVR-VQA-v0")
    env.reset(seed=2)
    clone = pickle.loads(pickle.dumps(env))
    obs_a, _ = env.reset(seed=9)
    obs_b, _ = clone.reset(seed=9)
    assert data_equivalence(obs_a, obs_b)
    action = {"name": "zoom", "arguments": {"bbox_2d": [0.2, 0.2, 0.6, 0.6]}}
    assert data_equivalence(env.step(action), clone.step(action))


ZOOM_TEXT = '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0.1, 0.1, 0.5, 0.5]}}</tool_call>'


def _check_zoom_answer_cycle(envs, zoom, answer):
    """zoom, answer (terminates), autoreset step (reward 0), answer: NEXT_STEP autoreset semantics."""
    obs, infos = envs.reset(seed=4)
    assert obs["image"].shape == (2, 224, 224, 3)
    assert isinstance(obs["question"], tuple) and len(obs["question"]) == 2
    obs, rewards, terms, truncs, infos = envs.step(zoom)
    assert not terms.any() and list(infos["num_views"]) == [2, 2]
    obs, rewards, terms, truncs, infos = envs.step(answer)
    assert terms.all()
    obs, rewards, terms, truncs, infos = envs.step(answer)  # ignored: this step resets
    assert np.all(rewards == 0) and not terms.any() and list(obs["step"]) == [0, 0]
    obs, rewards, terms, truncs, infos = envs.step(answer)
    assert terms.all() and obs["image"].dtype == np.uint8


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_text_actions(mode):
    kwargs = {"vector_kwargs": {"context": "spawn"}} if mode == "async" else {}
    envs = gym.make_vec("medvr_env:MedVR-VQA-Text-v0", num_envs=2, vectorization_mode=mode, **kwargs)
    try:
        _check_zoom_answer_cycle(envs, (ZOOM_TEXT, ZOOM_TEXT), ("<answer>yes</answer>",) * 2)
    finally:
        envs.close()


def test_vector_envs_structured_actions():
    envs = gym.make_vec("medvr_env:MedVR-VQA-v0", num_envs=2, vectorization_mode="sync")
    names = envs.get_attr("tool_names")[0]

    def batch(tool):
        return {
            "tool": np.array([names.index(tool)] * 2),
            "bbox": np.array([[0.1, 0.1, 0.5, 0.5]] * 2, dtype=np.float32),
            "view": np.array([0, 0]),
            "text": ("yes", "yes"),
            "entropy": np.full((2, 1), 0.5, dtype=np.float32),
        }

    try:
        _check_zoom_answer_cycle(envs, batch("zoom"), batch("answer"))
    finally:
        envs.close()


def test_render_modes():
    env = gym.make("MedVR-VQA-v0", render_mode="rgb_array")
    env.reset(seed=0)
    env.step({"name": "zoom", "arguments": {"bbox_2d": [0.2, 0.2, 0.6, 0.6]}})
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    ansi = gym.make("MedVR-VQA-v0", render_mode="ansi")
    ansi.reset(seed=0)
    ansi.step({"name": "zoom", "arguments": {"bbox_2d": [0.2, 0.2, 0.6, 0.6]}})
    text = ansi.render()
    assert text.startswith("Q: ") and "zoom" in text and "-> view 1" in text
