"""The episode record: snapshot/restore, the JSON log, the entropy channel, termination and rewards."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

from medvr_env.entropy import ConstantEstimate
from medvr_env.errors import ErrorCode, ToolError
from medvr_env.tools import Tool, ToolResult, register_tool

try:
    from tests.helpers import CHOICE, OPEN, PORTRAIT, YES_NO, make_env
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from helpers import CHOICE, OPEN, PORTRAIT, YES_NO, make_env

THINK = "<think>The right base is blunted.</think>"
INVALID = "I am not following the protocol"


def zoom(box, source=None, **extra) -> dict[str, Any]:
    args: dict[str, Any] = {"bbox_2d": list(box)}
    if source is not None:
        args["source"] = source
    return {"name": "zoom", "arguments": args, **extra}


def comparable(data: Any) -> Any:
    """A deep copy ``data_equivalence`` can compare: float NaN (info["entropy"] when unknown) becomes a marker."""
    if isinstance(data, float) and math.isnan(data):
        return "<nan>"
    if isinstance(data, dict):
        return {k: comparable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(comparable(v) for v in data)
    return copy.deepcopy(data)


def run(env, actions) -> list[tuple]:
    """Step through ``actions``, keeping comparable copies of everything returned."""
    return [comparable(env.step(a)) for a in actions]


# ----------------------------------------------------------------------------- snapshot / restore
ENV_ARGS = dict(step_cost=0.01, uncertainty_estimator=ConstantEstimate(0.25), max_steps=8, entropy_window=4)
BEFORE = [{"text": THINK, "entropy": 0.6}, zoom([0.1, 0.2, 0.6, 0.7])]
AFTER = [
    {"text": '<tool_call>{"name": "crop", "arguments": {"bbox_2d": [0.2, 0.2, 0.9, 0.8], "source": 0}}</tool_call>',
     "entropy": 0.4, "token_entropies": [0.1, 0.7], "tool_entropy": 0.3},
    INVALID,
    {"name": "relook", "arguments": {"view": 1}},
    "<think>settled</think><answer>B</answer>",
]


def test_snapshot_restore_replays_identically() -> None:
    env = make_env(**ENV_ARGS)
    env.reset(seed=123)
    run(env, BEFORE)
    snap = env.snapshot()
    snap_steps, snap_views = len(snap.episode.steps), list(snap.episode.views)

    def continue_and_reset(e) -> list:
        out = run(e, AFTER)
        out.append(comparable(e.reset()))  # draws the next sample from the restored RNG
        out.append([e.reset()[1]["sample_index"] for _ in range(6)])
        return out

    original = continue_and_reset(env)
    assert original[3][2] is True  # the fourth action answered
    assert original[1][4]["error"] == ErrorCode.NO_ACTION_TAG.value

    env.restore(snap)
    same_env = continue_and_reset(env)

    other = make_env(**ENV_ARGS)
    other.restore(snap)  # never reset: restore alone must be enough
    other_env = continue_and_reset(other)

    assert data_equivalence(original, same_env, exact=True)
    assert data_equivalence(original, other_env, exact=True)
    # stepping the restored copies left the snapshot untouched
    assert len(snap.episode.steps) == snap_steps == 2
    assert snap.episode.views == snap_views and len(snap_views) == 2
    assert snap.episode.stop_reason == "" and snap.episode.grade is None
    assert snap.episode.current_view == 1


def test_restore_mid_episode_matches_step_by_step() -> None:
    env = make_env(**ENV_ARGS)
    env.reset(options={"index": PORTRAIT})
    run(env, BEFORE)
    snap = env.snapshot()
    a = run(env, AFTER[:2])
    env.restore(snap)
    b = run(env, AFTER[:2])
    assert data_equivalence(a, b, exact=True)
    assert env.episode.num_steps == 4
    assert [s.raw for s in env.episode.steps[2:]] == [AFTER[0]["text"], INVALID]


# ----------------------------------------------------------------------------- to_dict
def test_episode_to_dict_is_json_and_complete() -> None:
    env = make_env(step_cost=0.05)
    env.reset(options={"index": CHOICE})
    actions = [
        {"text": THINK, "entropy": 0.5, "token_entropies": [0.2, 0.8], "tool_entropy": 0.9},
        '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0.25, 0.25, 0.75, 0.75]}}</tool_call>',
        INVALID,
        "<answer>B</answer>",
    ]
    results = run(env, actions)
    d = env.episode.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back == json.loads(json.dumps(d))

    assert back["stop_reason"] == "answered"
    assert back["grade"]["correct"] is True
    assert back["image_size"] == [2048, 1536]
    assert back["sample"]["sample_id"] == "arr-2"
    assert back["total_reward"] == pytest.approx(sum(r[1] for r in results))
    steps = back["steps"]
    assert len(steps) == 4
    raws = [a["text"] if isinstance(a, dict) else a for a in actions]
    assert [s["raw"] for s in steps] == raws
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert [s["error"]["code"] if s["error"] else None for s in steps] == [None, None, "no_action_tag", None]
    assert [s["entropy"] for s in steps] == [0.5, None, None, None]
    assert steps[0]["token_entropies"] == [0.2, 0.8] and steps[0]["tool_entropy"] == 0.9
    assert steps[0]["entropy_source"] == "policy"
    assert steps[1]["applied_box"] == [512, 384, 1536, 1152] and steps[1]["new_view"] == 1
    assert steps[3]["answer"] == "B"
    for s, (_, reward, *_rest) in zip(steps, results):
        assert set(s["reward_terms"]) == {"accuracy", "format", "tool", "cost"}
        assert sum(s["reward_terms"].values()) == pytest.approx(reward)
    views = back["views"]
    assert len(views) == 2
    assert views[0] == {"index": 0, "box": [0, 0, 2048, 1536], "size": [1024, 768], "parent": None,
                        "tool": "reset", "step": 0, "filters": []}
    assert views[1]["box"] == [512, 384, 1536, 1152] and views[1]["parent"] == 0
    assert views[1]["size"] == [448, 336] and views[1]["step"] == 2


# ----------------------------------------------------------------------------- entropy channel
def test_reported_entropy_reaches_obs_and_record() -> None:
    env = make_env(entropy_window=4)
    obs, _ = env.reset(options={"index": YES_NO})
    assert not obs["entropy"].any() and not obs["entropy_mask"].any()
    obs, _, _, _, info = env.step(
        {"text": THINK, "entropy": 0.7, "token_entropies": [0.1, 0.5, 0.9], "tool_entropy": 0.9}
    )
    assert obs["entropy"][-1] == pytest.approx(0.7)
    assert obs["entropy_mask"].tolist() == [0, 0, 0, 1]
    assert obs["entropy"][:-1].tolist() == [0, 0, 0]
    assert info["entropy"] == pytest.approx(0.7)
    rec = env.episode.steps[-1]
    assert rec.entropy == pytest.approx(0.7) and rec.entropy_source == "policy"
    assert rec.tool_entropy == pytest.approx(0.9)
    assert rec.token_entropies == (0.1, 0.5, 0.9)
    assert env.observation_space.contains(obs)


def test_entropy_on_call_dict_path() -> None:
    env = make_env()
    env.reset(options={"index": YES_NO})
    obs, _, _, _, info = env.step(zoom([0, 0, 0.5, 0.5], entropy=0.35, tool_entropy=0.2))
    assert info["error"] == ""
    assert obs["entropy"][-1] == pytest.approx(0.35) and obs["entropy_mask"][-1] == 1
    assert env.episode.steps[-1].tool_entropy == pytest.approx(0.2)


@pytest.mark.parametrize(("reported", "expected"), [(1.7, 1.0), (-0.3, 0.0), (np.float32(0.5), 0.5), ([0.45], 0.45)])
def test_entropy_is_clipped(reported, expected) -> None:
    env = make_env()
    env.reset(options={"index": YES_NO})
    obs, _, _, _, info = env.step({"text": THINK, "entropy": reported, "tool_entropy": 2.5})
    assert obs["entropy"][-1] == pytest.approx(expected) and obs["entropy_mask"][-1] == 1
    assert env.episode.steps[-1].entropy == pytest.approx(expected)
    assert env.episode.steps[-1].tool_entropy == 1.0
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("reported", [math.nan, math.inf, None, "high", [], {}, pytest.param(10**400, id="int-10e400")])
def test_missing_entropy_is_masked(reported) -> None:
    env = make_env()
    env.reset(options={"index": YES_NO})
    obs, _, _, _, info = env.step(
        {"text": THINK, "entropy": reported, "tool_entropy": reported, "token_entropies": [0.5, reported]}
    )
    assert obs["entropy_mask"][-1] == 0 and obs["entropy"][-1] == 0.0
    assert info["entropy"] is None
    rec = env.episode.steps[-1]
    assert rec.entropy is None and rec.entropy_source is None and rec.tool_entropy is None
    assert info["error"] == ""


def test_estimator_fills_unreported_steps() -> None:
    env = make_env(uncertainty_estimator=ConstantEstimate(0.25), entropy_window=4)
    env.reset(options={"index": YES_NO})
    env.step(THINK)  # nothing reported
    env.step({"text": THINK, "entropy": 0.7})  # reported wins
    env.step({"text": THINK, "entropy": math.nan})  # NaN counts as not reported
    obs, _, _, _, info = env.step(INVALID)  # errors get an entropy too
    assert obs["entropy"].tolist() == pytest.approx([0.25, 0.7, 0.25, 0.25])
    assert obs["entropy_mask"].tolist() == [1, 1, 1, 1]
    assert [s.entropy_source for s in env.episode.steps] == ["estimator", "policy", "estimator", "estimator"]
    assert info["entropy"] == pytest.approx(0.25)


def test_estimator_by_import_path() -> None:
    env = make_env(uncertainty_estimator="medvr_env.entropy:ConstantEstimate")
    env.reset(options={"index": YES_NO})
    obs, *_ = env.step(THINK)
    assert obs["entropy"][-1] == pytest.approx(0.5) and obs["entropy_mask"][-1] == 1


def test_entropy_window_keeps_last_values_in_order() -> None:
    env = make_env(entropy_window=3, max_steps=8)
    env.reset(options={"index": YES_NO})
    obs, *_ = env.step({"text": THINK, "entropy": 0.1})
    obs, *_ = env.step({"text": THINK, "entropy": 0.2})
    assert obs["entropy"].tolist() == pytest.approx([0.0, 0.1, 0.2])  # left-padded
    assert obs["entropy_mask"].tolist() == [0, 1, 1]
    obs, *_ = env.step({"text": THINK})  # a gap
    assert obs["entropy_mask"].tolist() == [1, 1, 0]
    for value in (0.4, 0.5):
        obs, *_ = env.step({"text": THINK, "entropy": value})
    assert obs["entropy"].tolist() == pytest.approx([0.0, 0.4, 0.5])
    assert obs["entropy_mask"].tolist() == [0, 1, 1]
    obs, *_ = env.step({"text": THINK, "entropy": 0.6})
    assert obs["entropy"].tolist() == pytest.approx([0.4, 0.5, 0.6])
    assert obs["entropy_mask"].tolist() == [1, 1, 1]
    assert env.episode.entropy_trace == pytest.approx([0.1, 0.2, None, 0.4, 0.5, 0.6])
    assert obs["entropy"].dtype == np.float32 and obs["entropy"].shape == (3,)


# ----------------------------------------------------------------------------- termination
@pytest.mark.parametrize(
    ("index", "answer", "correct"),
    [
        (YES_NO, "yes", True),
        (YES_NO, "Yes.", True),
        (YES_NO, "no", False),
        (CHOICE, "B", True),
        (CHOICE, "Pleural effusion", True),
        (CHOICE, "A", False),
        (OPEN, "liver", True),
        (OPEN, "spleen", False),
    ],
)
def test_answer_terminates_and_is_graded(index, answer, correct) -> None:
    env = make_env(step_cost=0.1)
    env.reset(options={"index": index})
    env.step(THINK)
    obs, reward, terminated, truncated, info = env.step(f"<answer>{answer}</answer>")
    assert terminated is True and truncated is False
    assert info["stop_reason"] == "answered"
    assert info["is_success"] is correct
    assert info["answer"] == answer
    assert info["reward_terms"]["accuracy"] == (1.0 if correct else 0.0)
    assert info["reward_terms"]["cost"] == pytest.approx(-0.1)
    assert info["reward_terms"]["format"] == 0.0
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    assert reward == pytest.approx((1.0 if correct else 0.0) - 0.1)
    assert env.episode.grade["correct"] is correct
    assert env.observation_space.contains(obs)


def test_max_steps_truncates() -> None:
    env = make_env(max_steps=3)
    env.reset(options={"index": YES_NO})
    for _ in range(2):
        obs, _, terminated, truncated, info = env.step(THINK)
        assert not terminated and not truncated and info["stop_reason"] == ""
    # on the last step only terminal tools are offered
    assert env.action_masks().tolist() == [int(t == "answer") for t in env.tool_names]
    obs, _, terminated, truncated, info = env.step(THINK)
    assert terminated is False and truncated is True
    assert info["stop_reason"] == "max_steps"
    assert info["is_success"] is False
    assert obs["step"] == 3 and env.observation_space.contains(obs)


def test_consecutive_errors_truncate() -> None:
    env = make_env(max_steps=8, max_consecutive_errors=3)
    env.reset(options={"index": YES_NO})
    for i in range(3):
        _, _, terminated, truncated, info = env.step(INVALID)
        assert info["error"] == ErrorCode.NO_ACTION_TAG.value
        assert terminated is False and truncated is (i == 2)
    assert info["stop_reason"] == "too_many_errors"
    assert env.episode.consecutive_errors == 3


def test_valid_action_resets_consecutive_errors() -> None:
    env = make_env(max_steps=8, max_consecutive_errors=3)
    env.reset(options={"index": YES_NO})
    outcomes = [env.step(a)[3] for a in (INVALID, INVALID, THINK, INVALID, INVALID)]
    assert outcomes == [False] * 5
    assert env.episode.consecutive_errors == 2
    _, _, _, truncated, info = env.step("")
    assert truncated is True and info["stop_reason"] == "too_many_errors"
    assert info["error"] == ErrorCode.EMPTY_ACTION.value


def test_too_many_errors_takes_precedence_on_the_last_step() -> None:
    env = make_env(max_steps=3, max_consecutive_errors=3)
    env.reset(options={"index": YES_NO})
    for _ in range(3):
        *_, info = env.step(INVALID)
    assert info["stop_reason"] == "too_many_errors"


@pytest.mark.parametrize("ending", ["answer", "truncate"])
def test_step_after_end_raises(ending: str) -> None:
    env = make_env(max_steps=1)
    env.reset(options={"index": YES_NO})
    env.step("<answer>yes</answer>" if ending == "answer" else THINK)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(THINK)
    env.reset(options={"index": YES_NO})  # and reset makes it usable again
    _, _, terminated, truncated, _ = env.step("<answer>yes</answer>")
    assert terminated and not truncated


def test_step_before_reset_raises() -> None:
    env = make_env()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(THINK)


# ----------------------------------------------------------------------------- reward terms
def test_reward_terms() -> None:
    env = make_env(format_penalty=-0.5, step_cost=0.02)
    env.reset(options={"index": CHOICE})
    rewards = []

    _, reward, _, _, info = env.step(INVALID)
    rewards.append(reward)
    assert info["reward_terms"] == pytest.approx({"accuracy": 0.0, "format": -0.5, "tool": 0.0, "cost": -0.02})
    assert reward == pytest.approx(-0.52)

    _, reward, _, _, info = env.step(zoom([0.1, 0.1, 0.4, 0.4]))
    rewards.append(reward)
    assert info["reward_terms"] == pytest.approx({"accuracy": 0.0, "format": 0.0, "tool": 0.0, "cost": -0.02})

    _, reward, _, _, info = env.step(zoom([0.1, 0.1, 0.4, 0.4], source=7))  # bad view: also a format error
    rewards.append(reward)
    assert info["reward_terms"]["format"] == -0.5

    _, reward, terminated, _, info = env.step("<answer>B</answer>")
    rewards.append(reward)
    assert terminated
    assert info["reward_terms"] == pytest.approx({"accuracy": 1.0, "format": 0.0, "tool": 0.0, "cost": -0.02})
    assert reward == pytest.approx(0.98)
    assert env.episode.total_reward == pytest.approx(sum(rewards))


def test_malformed_non_text_action() -> None:
    env = make_env()
    env.reset(options={"index": YES_NO})
    for action in (42, None, ["<answer>yes</answer>"], {"text": 5}):
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["error"] == ErrorCode.MALFORMED_ACTION.value
        assert reward == pytest.approx(env.format_penalty)
        assert env.observation_space.contains(obs)
        env.reset(options={"index": YES_NO})


@pytest.mark.parametrize(
    "action",
    [
        {"tool": math.inf},
        {"tool": math.nan},
        {"tool": 99},
        {"tool": 3, "view": math.nan},  # relook
        {"tool": 3, "view": math.inf},
        {"tool": 1, "bbox": "wide"},  # zoom
        {"tool": 1, "bbox": [0, 0, 10**400, 1]},
    ],
)
def test_structured_actions_outside_the_space_are_malformed(action) -> None:
    env = make_env()
    env.reset(options={"index": YES_NO})
    assert env.tool_names[1] == "zoom" and env.tool_names[3] == "relook"
    obs, reward, _, _, info = env.step({**action, "entropy": "n/a"})
    assert info["error"] == ErrorCode.MALFORMED_ACTION.value
    assert reward == pytest.approx(env.format_penalty)
    assert env.observation_space.contains(obs)


def test_structured_action_from_the_space() -> None:
    env = make_env()
    env.reset(options={"index": YES_NO})
    action = {"tool": 1, "bbox": np.array([0.25, 0.25, 0.75, 0.75], np.float32), "view": 0, "text": "",
              "entropy": np.array([0.3], np.float32)}
    assert env.action_space.contains(action)
    obs, _, _, _, info = env.step(action)
    assert info["error"] == "" and info["applied_box"] == [200, 150, 600, 450]
    assert obs["entropy"][-1] == pytest.approx(0.3) and obs["entropy_mask"][-1] == 1


# ----------------------------------------------------------------------------- failing user tools
@register_tool
class ExplodingTool(Tool):
    name = "test_episode_exploding"
    description = "A user tool with a bug."

    def apply(self, episode, args, ctx) -> ToolResult:
        raise Exception("boom")


@register_tool
class RejectingTool(Tool):
    name = "test_episode_rejecting"
    description = "A user tool that rejects every call with a specific code."

    def apply(self, episode, args, ctx) -> ToolResult:
        raise ToolError(ErrorCode.OUT_OF_RANGE, "nothing to see")


def test_tool_that_raises_gives_tool_failed() -> None:
    env = make_env(tools=("think", ExplodingTool, RejectingTool, "answer"))
    env.reset(options={"index": YES_NO})
    obs, reward, terminated, truncated, info = env.step('<tool_call>{"name": "test_episode_exploding"}</tool_call>')
    assert info["error"] == ErrorCode.TOOL_FAILED.value
    assert "boom" in info["error_message"]
    assert obs["feedback"].startswith("Error (tool_failed)")
    assert reward == pytest.approx(env.format_penalty)
    assert not terminated and not truncated
    assert env.observation_space.contains(obs)

    _, _, _, _, info = env.step({"name": "test_episode_rejecting", "arguments": {}})
    assert info["error"] == ErrorCode.OUT_OF_RANGE.value

    _, _, terminated, _, info = env.step("<answer>yes</answer>")
    assert terminated and info["is_success"]
