"""SB3 action encodings refuse anything that is not an action of their space (issue 9, defect 7).

Out-of-space values are a bug in the calling code (the policy's output space *is* the action space), so the
wrappers raise :class:`~medvr_env.wrappers.sb3_actions.InvalidActionError` (a ``ValueError``) naming the space
and the value, instead of an ``OverflowError``/``TypeError`` from numpy or a silently truncated action.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from medvr_env.env import MedVRVQAEnv
from medvr_env.wrappers import DiscreteActions, MultiDiscreteActions
from medvr_env.wrappers.sb3_actions import InvalidActionError


@pytest.fixture(scope="module")
def base() -> MedVRVQAEnv:
    return MedVRVQAEnv(dataset_kwargs={"num_samples": 4}, obs_size=36)


class Opaque:
    def __repr__(self) -> str:
        raise RuntimeError("repr called")


def _bad_multidiscrete():
    return [
        pytest.param([1.7, 0, 0], id="fraction"),
        pytest.param(np.array([1.0, 0.5, 0.0]), id="fraction-array"),
        pytest.param([math.inf, 0, 0], id="inf"),
        pytest.param([math.nan, 0, 0], id="nan"),
        pytest.param([10**5000, 0, 0], id="int-5000-digits"),
        pytest.param(np.array([10**30, 0, 0], dtype=object), id="object-array"),
        pytest.param(["1", "0", "0"], id="strings"),
        pytest.param([True, False, False], id="bools"),
        pytest.param([9, 0, 0], id="out-of-range"),
        pytest.param([-1, 0, 0], id="negative"),
        pytest.param([1, 0], id="too-short"),
        pytest.param([[1, 0, 0]], id="nested"),
        pytest.param(np.zeros((3, 1), np.int64), id="column"),
        pytest.param(None, id="none"),
        pytest.param(Opaque(), id="object"),
        pytest.param({"tool": 1}, id="dict"),
        pytest.param("<answer>yes</answer>", id="text"),
        pytest.param(1, id="scalar"),
    ]


@pytest.mark.parametrize("action", _bad_multidiscrete())
def test_multidiscrete_refuses_what_is_not_an_action_of_its_space(base, action) -> None:
    env = MultiDiscreteActions(base)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"MultiDiscrete\(\[ ?5 +4 +13\]\)") as caught:
        env.step(action)
    assert isinstance(caught.value, ValueError)
    assert len(str(caught.value)) < 600
    assert env.unwrapped.episode.num_steps == 0  # nothing was played


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(1.7, id="fraction"),
        pytest.param(np.float32(2.5), id="numpy-fraction"),
        pytest.param(math.inf, id="inf"),
        pytest.param(math.nan, id="nan"),
        pytest.param(10**5000, id="int-5000-digits"),
        pytest.param(23, id="out-of-range"),
        pytest.param(-1, id="negative"),
        pytest.param(True, id="bool"),
        pytest.param("3", id="string"),
        pytest.param([1, 2], id="two-numbers"),
        pytest.param(np.array([[3]]), id="nested-array"),
        pytest.param(None, id="none"),
        pytest.param(Opaque(), id="object"),
        pytest.param(np.array(3, dtype=object), id="object-array"),
    ],
)
def test_discrete_refuses_what_is_not_an_action_of_its_space(base, action) -> None:
    env = DiscreteActions(base)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"Discrete\(23\)") as caught:
        env.step(action)
    assert isinstance(caught.value, ValueError)
    assert len(str(caught.value)) < 600
    assert env.unwrapped.episode.num_steps == 0


@pytest.mark.parametrize(
    "action",
    [np.array([1, 2, 0]), [1, 2, 0], (1, 2, 0), np.array([1.0, 2.0, 0.0]), np.array([1, 2, 0], np.uint8)],
    ids=["int64", "list", "tuple", "integral-floats", "uint8"],
)
def test_multidiscrete_accepts_every_spelling_of_an_action(base, action) -> None:
    env = MultiDiscreteActions(base)
    env.reset(seed=0)
    *_, info = env.step(action)
    assert info["error"] == "" and info["applied_box"] is not None  # zoom into grid cell 2


@pytest.mark.parametrize("action", [2, np.int64(2), np.array(2), np.array([2]), 2.0], ids=str)
def test_discrete_accepts_every_spelling_of_an_action(base, action) -> None:
    env = DiscreteActions(base)
    env.reset(seed=0)
    assert env.action_meanings()[2] == "zoom[1]"
    *_, info = env.step(action)
    assert info["error"] == "" and info["applied_box"] is not None


def test_every_sample_of_the_space_is_accepted(base) -> None:
    for wrapper in (MultiDiscreteActions, DiscreteActions):
        env = wrapper(base)
        env.action_space.seed(3)
        for _ in range(20):
            env.reset(seed=0)
            env.step(env.action_space.sample())
