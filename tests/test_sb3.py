"""stable-baselines3 on the SB3-ready ids: SB3's own check_env, PPO / MaskablePPO / DQN, SubprocVecEnv."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")
sb3 = pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")

import medvr_env  # noqa: E402,F401
from medvr_env.entropy import ConstantEstimate  # noqa: E402
from medvr_env.wrappers import EntropyRegrounding  # noqa: E402
from sb3_contrib import MaskablePPO  # noqa: E402
from sb3_contrib.common.maskable.utils import get_action_masks  # noqa: E402
from stable_baselines3 import DQN, PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import SubprocVecEnv  # noqa: E402

SB3_IDS = ["MedVR-VQA-Tensor-v0", "MedVR-VQA-Tensor-Discrete-v0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"dataset_kwargs": {"num_samples": 16, "image_size": 256}}
TINY_PPO = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "seed": 0, "device": "cpu",
            "policy_kwargs": {"net_arch": [32]}}


@pytest.mark.parametrize("env_id", SB3_IDS)
def test_sb3_check_env(env_id):
    env = gym.make(env_id, **SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, warn=True)
    assert not [str(w.message) for w in caught], [str(w.message) for w in caught]


def _params(model):
    return np.concatenate([p.detach().numpy().ravel() for p in model.policy.parameters()])


def test_ppo_learns_a_tiny_budget():
    env = make_vec_env("MedVR-VQA-Tensor-v0", n_envs=2, seed=0, env_kwargs=SMALL)
    model = PPO("MultiInputPolicy", env, **TINY_PPO)
    before = _params(model)
    model.learn(64)
    assert model.num_timesteps >= 64 and not np.allclose(before, _params(model))
    obs = env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2, 3) and all(a in env.action_space for a in action)


def test_maskable_ppo_only_takes_valid_actions():
    env = make_vec_env("MedVR-VQA-Tensor-v0", n_envs=2, seed=1,
                       env_kwargs={**SMALL, "max_steps": 3, "uncertainty_estimator": ConstantEstimate(0.5)},
                       wrapper_class=EntropyRegrounding)
    model = MaskablePPO("MultiInputPolicy", env, **TINY_PPO)
    before = _params(model)
    model.learn(64)
    assert not np.allclose(before, _params(model))
    obs, errors, episodes = env.reset(), 0, 0
    for _ in range(30):
        masks = get_action_masks(env)
        action, _ = model.predict(obs, action_masks=masks)
        for a, m in zip(action, masks):  # every chosen part is allowed by its mask
            assert m[a[0]] and m[5 + a[1]] and m[21 + a[2]]  # 5 tools, 16 grid cells, 13 answers
        obs, _, dones, infos = env.step(action)
        errors += sum(bool(i.get("error")) for i in infos)
        episodes += int(dones.sum())
    assert errors == 0 and episodes >= 10  # max_steps=3: masks force an answer by the third step


def test_dqn_learns_a_tiny_budget_on_discrete_actions():
    env = make_vec_env("MedVR-VQA-Tensor-Discrete-v0", n_envs=1, seed=2, env_kwargs=SMALL)
    model = DQN("MultiInputPolicy", env, learning_starts=16, buffer_size=256, batch_size=16, train_freq=4,
                target_update_interval=32, policy_kwargs={"net_arch": [32]}, seed=0, device="cpu")
    before = _params(model)
    model.learn(64)
    assert not np.allclose(before, _params(model))
    action, _ = model.predict(env.reset(), deterministic=True)
    assert 0 <= int(action[0]) < 47  # think, relook, 16 zoom and 16 crop cells, 13 answers


def test_subproc_vec_env_with_the_module_prefix():
    env = make_vec_env("medvr_env:MedVR-VQA-Tensor-v0", n_envs=2, seed=3, env_kwargs=SMALL,
                       vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "spawn"})
    try:
        obs = env.reset()
        assert obs["image"].shape == (2, 128, 128, 3) and obs["question"].shape == (2, 16)
        masks = get_action_masks(env)
        assert masks.shape == (2, 34) and masks.dtype == bool
        answer = np.array([[4, 0, int(np.flatnonzero(m[21:])[0])] for m in masks])
        obs, rewards, dones, infos = env.step(answer)
        assert dones.all() and all("terminal_observation" in i for i in infos)
        model = MaskablePPO("MultiInputPolicy", env, **TINY_PPO)
        model.learn(64)
        assert model.num_timesteps >= 64
    finally:
        env.close()
