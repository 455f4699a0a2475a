"""Untrusted action input (issue 9, defects 2, 3, 5 and 6): every bad field is an error code, never an exception,
one length limit holds on every action path, and the episode record stays writable (strict JSON) after every step."""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

import numpy as np
import pytest

from medvr_env.protocol import parse_action_text
from medvr_env.tools import DEFAULT_TOOLS, Tool, ToolResult, register_tool

try:
    from tests.helpers import YES_NO, make_env
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from helpers import YES_NO, make_env

LIMIT = 8192  # the documented default of max_action_chars


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def step(env, action, index: int = YES_NO) -> dict[str, Any]:
    """Reset, take ``action`` and return ``info``, checking that the record is still strict JSON."""
    env.reset(options={"index": index})
    *_, info = env.step(action)
    assert_record_writable(env)
    return info


def assert_record_writable(env) -> str:
    text = json.dumps(env.episode.to_dict(), allow_nan=False)
    json.loads(text)
    return text


class Opaque:
    """An arbitrary Python object whose repr and str raise: nothing may call them."""

    def __repr__(self) -> str:
        raise RuntimeError("repr called")

    __str__ = __repr__


# ----------------------------------------------------------------------------- defect 2: deep JSON in text
def test_deeply_nested_text_call_is_rejected_and_the_record_stays_writable() -> None:
    body = '{"name": "zoom", "arguments": {"bbox_2d": ' + "[" * 500 + "]" * 500 + "}}"
    text = f"<tool_call>{body}</tool_call>"
    assert len(text) < 1100
    assert parse_action_text(text, DEFAULT_TOOLS).error.code.value == "nested_too_deep"
    env = make_env()
    info = step(env, text)
    assert info["error"] == "nested_too_deep"
    record = env.episode.steps[-1]
    assert record.raw == text  # the raw text is kept
    assert env.episode.to_dict()["steps"][-1]["error"]["code"] == "nested_too_deep"


def test_nesting_within_the_limit_is_stored_in_full() -> None:
    env = make_env()
    info = step(env, {"name": "zoom", "arguments": {"bbox_2d": nested(20)}})
    assert info["error"] == "wrong_type"  # the schema's verdict, reached because the nesting is acceptable
    assert env.episode.to_dict()["steps"][-1]["call"]["arguments"]["bbox_2d"] == nested(20)


# ----------------------------------------------------------------------------- defect 3: view_sizes
ZOOM_PIXEL = {"name": "zoom", "arguments": {"bbox_2d": [0, 0, 100, 100]}}


@pytest.mark.parametrize(
    "view_sizes",
    [
        pytest.param({0: [math.inf, 300]}, id="inf"),
        pytest.param({0: [math.nan, 300]}, id="nan"),
        pytest.param(5, id="bare-number"),
        pytest.param(np.array([[400, 300]]), id="numpy-array"),
        pytest.param({0: "400x300"}, id="string-size"),
        pytest.param({0: [400]}, id="one-number"),
        pytest.param({0: [0, 300]}, id="zero-width"),
        pytest.param({0: [-400, 300]}, id="negative"),
        pytest.param({0: [400.5, 300]}, id="fraction"),
        pytest.param({0: [10**5000, 300]}, id="huge-int"),
        pytest.param({0: [True, 300]}, id="bool"),
        pytest.param({"first": [400, 300]}, id="bad-index"),
        pytest.param({7: [400, 300]}, id="no-such-view"),
        pytest.param({(0,): [400, 300]}, id="tuple-key"),
        pytest.param({0: Opaque()}, id="object"),
        pytest.param("400x300", id="string"),
    ],
)
@pytest.mark.parametrize("path", ["call", "text"])
def test_bad_view_sizes_are_an_error_code(view_sizes, path) -> None:
    env = make_env(bbox_format="pixel")
    text = '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 100, 100]}}</tool_call>'
    action = {**ZOOM_PIXEL, "view_sizes": view_sizes} if path == "call" else {"text": text, "view_sizes": view_sizes}
    info = step(env, action)
    assert info["error"] == "bad_view_sizes"
    assert "view_sizes" in info["error_message"]
    assert info["num_views"] == 1


@pytest.mark.parametrize("view_sizes", [{0: [400, 300]}, {"0": (400, 300)}, [[400, 300]], {0: [400.0, 300.0]}])
def test_valid_view_sizes_set_the_frame_of_pixel_boxes(view_sizes) -> None:
    env = make_env(bbox_format="pixel")  # sample 0 is 800 x 600, delivered at that size
    info = step(env, {**ZOOM_PIXEL, "view_sizes": view_sizes})
    assert info["error"] == ""
    assert info["applied_box"] == [0, 0, 200, 200]  # 100 px of a 400 px wide rendering = 200 original px
    info = step(env, ZOOM_PIXEL)
    assert info["applied_box"] == [0, 0, 100, 100]


# ----------------------------------------------------------------------------- defect 5: one length limit
@pytest.fixture
def nfkc_spy(monkeypatch):
    """Record the length of every string that goes through Unicode normalisation."""
    seen: list[int] = []
    real = unicodedata.normalize

    def spy(form: str, text: str) -> str:
        seen.append(len(text))
        return real(form, text)

    monkeypatch.setattr(unicodedata, "normalize", spy)
    return seen


HUGE = "\ufdfa" * 1_000_000  # 18 characters each under NFKC


@pytest.mark.parametrize(
    "action",
    [
        pytest.param({"name": "answer", "arguments": {"text": HUGE}}, id="call-answer"),
        pytest.param({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 1, 1], "label": HUGE}}, id="call-label"),
        pytest.param({"name": HUGE}, id="call-name"),
        pytest.param({"tool": 4, "text": HUGE}, id="structured-text"),
        pytest.param({"tool": 1, "bbox": [0.0] * 1_000_000}, id="structured-bbox"),
        pytest.param(f"<answer>{HUGE}</answer>", id="text"),
        pytest.param({"text": f"<answer>{HUGE}</answer>", "entropy": 0.5}, id="text-dict"),
    ],
)
def test_every_action_path_has_the_same_length_limit_applied_before_normalisation(action, nfkc_spy) -> None:
    env = make_env()
    info = step(env, action)
    assert info["error"] == "text_too_long"
    assert str(LIMIT) in info["error_message"]
    assert info["answer"] is None and not env.episode.stop_reason
    assert max(nfkc_spy, default=0) < 4 * LIMIT, "a string over the limit reached Unicode normalisation"
    record = env.episode.to_dict()["steps"][-1]
    assert len(record["raw"]) <= LIMIT + 64
    assert len(json.dumps(record, ensure_ascii=False)) < 4 * LIMIT


def test_the_limit_is_the_json_length_of_a_call_dict_and_follows_max_action_chars() -> None:
    env = make_env(max_action_chars=200)
    base = {"name": "answer", "arguments": {"text": ""}}
    room = 200 - len(json.dumps(base))
    assert step(env, {"name": "answer", "arguments": {"text": "y" * room}})["error"] == ""
    assert step(env, {"name": "answer", "arguments": {"text": "y" * (room + 1)}})["error"] == "text_too_long"
    assert step(env, "<answer>" + "y" * 300 + "</answer>")["error"] == "text_too_long"


# ----------------------------------------------------------------------------- defect 6: Python-only values
ZOOM_ARGS = {"bbox_2d": [0, 0, 0.5, 0.5]}


@pytest.mark.parametrize(
    ("action", "code"),
    [
        pytest.param({"name": "relook", "arguments": {"view": 10**5000}}, "out_of_range", id="call-int-5000-digits"),
        pytest.param({"name": "zoom", "arguments": {"bbox_2d": [0, 0, 10**5000, 1]}}, "out_of_range",
                     id="call-bbox-int-5000-digits"),
        pytest.param({"name": "relook", "arguments": {"view": 10**9000}}, "text_too_long", id="call-int-9000-digits"),
        pytest.param({"name": "zoom", "arguments": {"bbox_2d": nested(1500)}}, "nested_too_deep", id="call-deep"),
        pytest.param({"name": "zoom", "arguments": {**ZOOM_ARGS, "label": nested(1500, "x")}}, "nested_too_deep",
                     id="call-deep-label"),
        pytest.param({"name": "zoom", "arguments": {**ZOOM_ARGS, (1, 2): 3}}, "not_json", id="call-tuple-key"),
        pytest.param({"name": "zoom", "arguments": {**ZOOM_ARGS, 7: 3}}, "not_json", id="call-int-key"),
        pytest.param({"name": "zoom", "arguments": {"bbox_2d": Opaque()}}, "not_json", id="call-object"),
        pytest.param({"name": "zoom", "arguments": {"bbox_2d": {1, 2, 3, 4}}}, "not_json", id="call-set"),
        pytest.param({"name": "zoom", "arguments": {"bbox_2d": b"0000"}}, "not_json", id="call-bytes"),
        pytest.param({"name": Opaque()}, "not_json", id="call-object-name"),
        pytest.param({"name": "zoom", "arguments": ZOOM_ARGS, (1, 2): 3}, "not_json", id="call-top-level-tuple-key"),
        pytest.param({"tool": 10**5000}, "malformed_action", id="structured-int-5000-digits"),
        pytest.param({"tool": 1.7}, "malformed_action", id="structured-fractional-tool"),
        pytest.param({"tool": 3, "view": 0.5}, "malformed_action", id="structured-fractional-view"),
        pytest.param({"tool": 3, "view": 10**5000}, "malformed_action", id="structured-view-int-5000-digits"),
        pytest.param({"tool": 1, "bbox": nested(1500)}, "nested_too_deep", id="structured-deep"),
        pytest.param({"tool": 1, "bbox": Opaque()}, "not_json", id="structured-object"),
        pytest.param({"tool": 1, "bbox": [0, 0, 0.5, 0.5], (1, 2): 3}, "not_json", id="structured-tuple-key"),
        pytest.param({"tool": Opaque()}, "not_json", id="structured-object-tool"),
        pytest.param(Opaque(), "malformed_action", id="bare-object"),
        pytest.param(nested(1500), "malformed_action", id="bare-deep-list"),
        pytest.param({"text": Opaque()}, "malformed_action", id="text-object"),
    ],
)
def test_python_only_values_are_error_codes_and_records_stay_writable(action, code) -> None:
    env = make_env()
    info = step(env, action)
    assert info["error"] == code, info["error_message"]
    assert info["num_views"] == 1


@pytest.mark.parametrize(
    "reported",
    [10**5000, nested(1500, 0.5), Opaque(), [0.5] * 100_000, {(1,): 2}, np.full(100_000, 0.5)],
    ids=["int-5000-digits", "deep", "object", "long-list", "tuple-key", "long-array"],
)
def test_bad_uncertainty_reports_are_unknown_and_bounded(reported) -> None:
    env = make_env()
    info = step(env, {"text": "<think>hm</think>", "entropy": reported, "tool_entropy": reported,
                      "token_entropies": reported})
    assert info["error"] == "" and info["entropy"] is None
    record = env.episode.steps[-1]
    assert record.tool_entropy is None
    assert record.token_entropies is None or all(v is None for v in record.token_entropies)


def test_records_keep_non_finite_numbers_as_strings_so_they_stay_strict_json() -> None:
    env = make_env()
    info = step(env, {"name": "zoom", "arguments": {"bbox_2d": [0, 0, math.inf, math.nan]}})
    assert info["error"] == "non_finite"
    assert env.episode.to_dict()["steps"][-1]["call"]["arguments"]["bbox_2d"] == [0, 0, "Infinity", "NaN"]


def test_an_episode_of_hostile_actions_stays_writable_at_every_step() -> None:
    env = make_env(max_consecutive_errors=100, max_steps=40)
    env.reset(options={"index": YES_NO})
    hostile = [
        {"name": "zoom", "arguments": {"bbox_2d": nested(900)}},
        {"name": "zoom", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5]}, "view_sizes": {0: [math.inf, 1]}},
        {"name": "answer", "arguments": {"text": "x" * 2_000_000}},
        {"tool": 1, "bbox": [Opaque()] * 4},
        {"name": "zoom", "arguments": {"bbox_2d": [0, 0, 0.5, 0.5], "label": "\ud800" * 100}},
        "<tool_call>" + '{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 1e999, 1]}}' + "</tool_call>",
        {"name": "relook", "arguments": {"view": np.int64(0)}},
        {"text": "<think>ok</think>", "token_entropies": (x for x in range(3))},
    ]
    for action in hostile:
        env.step(action)
        assert_record_writable(env)
    assert env.episode.num_steps == len(hostile)


# ----------------------------------------------------------------------------- buggy user tools
class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str called")


@register_tool
class _ReturnsNothing(Tool):
    name = "test_inputs_returns_nothing"
    description = "A user tool that forgets to return its result."

    def apply(self, episode, args, ctx):
        return None


@register_tool
class _ReturnsObjectFeedback(Tool):
    name = "test_inputs_object_feedback"
    description = "A user tool whose feedback is not a string."

    def apply(self, episode, args, ctx):
        return ToolResult(feedback=Opaque())


@register_tool
class _RaisesUnprintable(Tool):
    name = "test_inputs_raises_unprintable"
    description = "A user tool that raises an exception whose str() fails."

    def apply(self, episode, args, ctx):
        raise _Unprintable()


@pytest.mark.parametrize(
    ("tool", "phrase"),
    [("test_inputs_returns_nothing", "NoneType"), ("test_inputs_object_feedback", "feedback"),
     ("test_inputs_raises_unprintable", "_Unprintable")],
)
def test_buggy_user_tools_are_tool_failed_and_records_stay_writable(tool, phrase) -> None:
    env = make_env(tools=("think", tool, "answer"))
    info = step(env, {"name": tool, "arguments": {}})
    assert info["error"] == "tool_failed" and phrase in info["error_message"]
