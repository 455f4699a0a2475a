"""The text protocol: tolerant parsing, exact error codes, fuzzing, and render/parse round trips."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medvr_env.errors import ErrorCode
from medvr_env.protocol import DEFAULT_MAX_CHARS, ParseResult, parse_action_text, render_system_prompt, render_tool_call
from medvr_env.tools import DEFAULT_TOOLS

try:
    from tests.helpers import make_env
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from helpers import make_env

ALL = DEFAULT_TOOLS
E = ErrorCode
ERROR_VALUES = {code.value for code in ErrorCode}

ZOOM = '{"name": "zoom", "arguments": {"bbox_2d": [0.1, 0.2, 0.5, 0.6]}}'


def tc(body: str) -> str:
    """Wrap a JSON body in tool-call tags."""
    return f"<tool_call>{body}</tool_call>"


# ----------------------------------------------------------------------------- valid parses
@pytest.mark.parametrize(
    ("text", "name", "arguments", "think"),
    [
        pytest.param(
            "<think>Look at the apex.</think>", "think", {"text": "Look at the apex."}, "Look at the apex.", id="think"
        ),
        pytest.param(
            f"<think>zoom in</think>\n<tool_call>{ZOOM}</tool_call>",
            "zoom",
            {"bbox_2d": [0.1, 0.2, 0.5, 0.6]},
            "zoom in",
            id="zoom-bbox",
        ),
        pytest.param(
            tc('{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 3, 4], "label": "node"}}'),
            "zoom",
            {"bbox_2d": [1, 2, 3, 4], "label": "node"},
            "",
            id="alias-image_zoom_in_tool",
        ),
        pytest.param(
            tc('{"name": "crop", "arguments": "{\\"bbox_2d\\": [0, 0, 0.5, 0.5], \\"source\\": 0}"}'),
            "crop",
            {"bbox_2d": [0, 0, 0.5, 0.5], "source": 0},
            "",
            id="arguments-as-json-string",
        ),
        pytest.param(
            '<tool_call>{"name": "relook", "arguments": ""}</tool_call>', "relook", {}, "", id="arguments-empty-string"
        ),
        pytest.param(
            '<tool_call>{"name": "relook", "arguments": null}</tool_call>', "relook", {}, "", id="arguments-null"
        ),
        pytest.param('<tool_call>{"name": "relook"}</tool_call>', "relook", {}, "", id="arguments-missing"),
        pytest.param(
            '<tool_call>{"name": "relook", "parameters": {"view": 1}}</tool_call>',
            "relook",
            {"view": 1},
            "",
            id="parameters-instead-of-arguments",
        ),
        pytest.param(
            f"<tool_call>\n```json\n{ZOOM}\n```\n</tool_call>",
            "zoom",
            {"bbox_2d": [0.1, 0.2, 0.5, 0.6]},
            "",
            id="code-fenced-json",
        ),
        pytest.param(
            f"<tool_call>```{ZOOM}```</tool_call>", "zoom", {"bbox_2d": [0.1, 0.2, 0.5, 0.6]}, "", id="bare-fence"
        ),
        pytest.param(
            '<tool_call>{"name": "crop", "arguments": {"bbox_2d": [0, 0, 1, 1]}}</tool_call>'
            f"<tool_call>{ZOOM}</tool_call>",
            "zoom",
            {"bbox_2d": [0.1, 0.2, 0.5, 0.6]},
            "",
            id="last-tool-call-wins",
        ),
        pytest.param(
            f"<THINK>upper</THINK><TOOL_CALL>{ZOOM}</Tool_Call>",
            "zoom",
            {"bbox_2d": [0.1, 0.2, 0.5, 0.6]},
            "upper",
            id="uppercase-tags",
        ),
        pytest.param("<ANSWER>B</ANSWER>", "answer", {"text": "B"}, "", id="uppercase-answer"),
        pytest.param(
            "<think>t</think><answer>\n   Pleural effusion \t\n</answer>",
            "answer",
            {"text": "Pleural effusion"},
            "t",
            id="answer-whitespace",
        ),
        pytest.param("   <answer>yes</answer>   \n", "answer", {"text": "yes"}, "", id="outer-whitespace"),
        pytest.param(
            "<think>I could write <answer>no</answer> or <tool_call>{bad</tool_call> here</think><answer>yes</answer>",
            "answer",
            {"text": "yes"},
            "I could write <answer>no</answer> or <tool_call>{bad</tool_call> here",
            id="tags-inside-think-ignored",
        ),
        pytest.param(
            "<think>maybe <answer>no</answer></think>", "think", None, "maybe <answer>no</answer>", id="think-quote"
        ),
        pytest.param(
            "<think>unclosed <think> inside</think><think>second</think>",
            "think",
            {"text": "unclosed <think> inside\nsecond"},
            "unclosed <think> inside\nsecond",
            id="two-thinks-joined",
        ),
        pytest.param("<answer></answer>", "answer", {"text": ""}, "", id="empty-answer-parses"),
        pytest.param(
            '<tool_call>{"name": "final_answer", "arguments": {"text": "C"}}</tool_call>',
            "answer",
            {"text": "C"},
            "",
            id="answer-via-tool-call-alias",
        ),
    ],
)
def test_valid_parses(text, name, arguments, think) -> None:
    result = parse_action_text(text, ALL)
    assert result.ok, result.error
    assert result.error is None
    assert result.call.name == name
    if arguments is not None:
        assert result.call.arguments == arguments
    assert result.call.think == think


# ----------------------------------------------------------------------------- errors
LONG = "<answer>" + "x" * DEFAULT_MAX_CHARS + "</answer>"


@pytest.mark.parametrize(
    ("text", "enabled", "code"),
    [
        pytest.param("", ALL, E.EMPTY_ACTION, id="empty"),
        pytest.param(" \n\t \r\n ", ALL, E.EMPTY_ACTION, id="whitespace"),
        pytest.param(LONG, ALL, E.TEXT_TOO_LONG, id="too-long"),
        pytest.param("The answer is yes.", ALL, E.NO_ACTION_TAG, id="no-tags"),
        pytest.param("</think> stray closing tag", ALL, E.NO_ACTION_TAG, id="only-closing-tag"),
        pytest.param("<think>hmm</think><answer>yes", ALL, E.UNCLOSED_TAG, id="unclosed-answer"),
        pytest.param(f"<tool_call>{ZOOM}", ALL, E.UNCLOSED_TAG, id="unclosed-tool-call"),
        pytest.param("<think>never closed", ALL, E.UNCLOSED_TAG, id="unclosed-think"),
        pytest.param(tc(ZOOM) + "<answer>yes</answer>", ALL, E.TOOL_CALL_AND_ANSWER, id="call-and-answer"),
        pytest.param(tc("{name: zoom}"), ALL, E.BAD_JSON, id="bad-json"),
        pytest.param(tc(""), ALL, E.BAD_JSON, id="empty-call"),
        pytest.param(tc('{"name": "zoom", }'), ALL, E.BAD_JSON, id="trailing-comma"),
        pytest.param(tc("[" * 3000 + "]" * 3000), ALL, E.BAD_JSON, id="deep-nesting"),
        pytest.param(tc('[{"name": "zoom"}]'), ALL, E.NOT_AN_OBJECT, id="json-array"),
        pytest.param(tc('"zoom"'), ALL, E.NOT_AN_OBJECT, id="json-string"),
        pytest.param(tc('{"arguments": {}}'), ALL, E.MISSING_TOOL_NAME, id="missing-name"),
        pytest.param(tc('{"name": ""}'), ALL, E.MISSING_TOOL_NAME, id="empty-name"),
        pytest.param(tc('{"name": 3}'), ALL, E.MISSING_TOOL_NAME, id="name-not-str"),
        pytest.param(tc('{"name": "teleport"}'), ALL, E.UNKNOWN_TOOL, id="unknown-tool"),
        pytest.param(tc('{"name": "Zoom"}'), ALL, E.UNKNOWN_TOOL, id="name-case-matters"),
        pytest.param(
            tc('{"name": "crop", "arguments": {"bbox_2d": [0, 0, 1, 1]}}'),
            ("think", "zoom", "answer"),
            E.UNKNOWN_TOOL,
            id="tool-not-enabled",
        ),
        pytest.param("<answer>yes</answer>", ("think", "zoom"), E.UNKNOWN_TOOL, id="answer-not-enabled"),
        pytest.param("<think>hm</think>", ("zoom", "answer"), E.UNKNOWN_TOOL, id="think-not-enabled"),
        pytest.param(tc('{"name": "zoom", "arguments": [0, 0, 1, 1]}'), ALL, E.BAD_ARGUMENTS, id="arguments-list"),
        pytest.param(tc('{"name": "zoom", "arguments": 5}'), ALL, E.BAD_ARGUMENTS, id="arguments-number"),
        pytest.param(tc('{"name": "zoom", "arguments": "{oops"}'), ALL, E.BAD_ARGUMENTS, id="arguments-bad-string"),
        pytest.param(tc('{"name": "zoom", "arguments": "[1, 2]"}'), ALL, E.BAD_ARGUMENTS, id="arguments-str-array"),
        pytest.param(tc('{"name": "zoom", "arguments": {"bbox_2d": [NaN, 0, 1, 1]}}'), ALL, E.NON_FINITE, id="nan"),
        pytest.param(tc('{"name": "zoom", "arguments": {"bbox_2d": [0, 0, Infinity, 1]}}'), ALL, E.NON_FINITE, id="+i"),
        pytest.param(tc('{"name": "crop", "parameters": {"bbox_2d": [-Infinity, 0, 1, 1]}}'), ALL, E.NON_FINITE),
        pytest.param(
            tc('{"name": "zoom", "arguments": "{\\"bbox_2d\\": [0, NaN, 1, 1]}"}'), ALL, E.NON_FINITE, id="nan-str-args"
        ),
    ],
)
def test_parse_errors(text, enabled, code) -> None:
    result = parse_action_text(text, enabled)
    assert not result.ok
    assert result.call is None
    assert result.error.code is code
    assert isinstance(result.error.message, str) and result.error.message


def test_max_chars_is_respected_and_measured_after_strip() -> None:
    text = "<answer>abc</answer>"  # 20 characters
    assert parse_action_text(text, ALL, max_chars=20).ok
    assert parse_action_text(f"   {text}   ", ALL, max_chars=20).ok
    assert parse_action_text(text, ALL, max_chars=19).error.code is ErrorCode.TEXT_TOO_LONG


@pytest.mark.parametrize("value", [None, b"<answer>yes</answer>", 5, 1.5, ["<answer>yes</answer>"], {"name": "zoom"}])
def test_non_string_input_is_malformed(value) -> None:
    result = parse_action_text(value, ALL)
    assert result.call is None
    assert result.error.code is ErrorCode.MALFORMED_ACTION


def test_huge_float_literal_parses_to_inf_and_env_rejects_it_as_non_finite() -> None:
    # json turns 1e999 into inf without calling parse_constant: the parser accepts it,
    # and the env's schema check must then reject it (not crash, not zoom).
    text = '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 1e999, 1]}}</tool_call>'
    result = parse_action_text(text, ALL)
    assert result.ok and math.isinf(result.call.arguments["bbox_2d"][2])
    env = make_env()
    env.reset(options={"index": 0})
    _, _, _, _, info = env.step(text)
    assert info["error"] == ErrorCode.NON_FINITE.value
    assert info["num_views"] == 1


def test_huge_integer_literal_is_rejected_not_raised() -> None:
    big = "1" + "0" * 400  # a valid JSON integer that no float can hold
    env = make_env()
    for text in (
        f'<tool_call>{{"name": "zoom", "arguments": {{"bbox_2d": [0, 0, {big}, 1]}}}}</tool_call>',
        f'<tool_call>{{"name": "relook", "arguments": {{"view": {big}}}}}</tool_call>',
    ):
        env.reset(options={"index": 0})
        _, _, _, _, info = env.step(text)
        assert info["error"] == ErrorCode.OUT_OF_RANGE.value


# ----------------------------------------------------------------------------- fuzzing
TOOL_NAMES = [
    "zoom", "crop", "relook", "answer", "think", "image_zoom_in_tool", "zoom_in", "crop_image",
    "final_answer", "look_again", "re_look", "teleport", "ZOOM", "", "zoom ",
]
TAGS = [
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>", "<THINK>", "</Tool_Call>",
    "<Answer>", "<answer >", "<tool_call/>", "```", "```json", "\n",
]
NUMBER_LITERALS = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "-0", "0", "1", "0.5", "1000", "-5", "1e-320",
    "1" + "0" * 30, "1" + "0" * 400, "3.14159", "2.5e2", "1.", ".5", "0x10",
]
JSON_PIECES = [
    "{", "}", "[", "]", ",", ":", '"', '"name"', '"arguments"', '"parameters"', '"bbox_2d"', '"source"',
    '"view"', '"text"', "null", "true", "false", '"name": "zoom"', '"arguments": {}', '"arguments": "',
]
ARG_KEYS = ["bbox_2d", "source", "view", "text", "label", "extra", "bbox"]

number_text = st.one_of(
    st.sampled_from(NUMBER_LITERALS),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
unicode_text = st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF), max_size=8)
json_scalar = st.one_of(
    number_text,
    st.sampled_from(["null", "true", "false", '""', '"B"', '"yes"', '"\\u00e9"', '"\\ud800"']),
    st.text(max_size=6).map(json.dumps),
)
json_value = st.one_of(
    json_scalar,
    st.lists(json_scalar, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.lists(st.tuples(st.sampled_from(ARG_KEYS), json_scalar), max_size=3).map(
        lambda kv: "{" + ", ".join(f'"{k}": {v}' for k, v in kv) + "}"
    ),
)
bbox_value = st.lists(number_text, min_size=0, max_size=6).map(lambda xs: "[" + ", ".join(xs) + "]")
arguments_text = st.lists(
    st.tuples(st.sampled_from(ARG_KEYS), st.one_of(bbox_value, json_value)), max_size=3
).map(lambda kv: "{" + ", ".join(f'"{k}": {v}' for k, v in kv) + "}")


@st.composite
def tool_call_json(draw) -> str:
    name = draw(st.sampled_from(TOOL_NAMES))
    key = draw(st.sampled_from(["arguments", "parameters", "args"]))
    args = draw(arguments_text)
    if draw(st.booleans()):
        args = json.dumps(args)  # OpenAI style: arguments as a JSON string
    body = f'{{"name": {json.dumps(name)}, "{key}": {args}}}'
    if draw(st.integers(0, 5)) == 0:
        body = f"```json\n{body}\n```"
    return body


fragment = st.one_of(
    st.text(max_size=20),
    unicode_text,
    st.sampled_from(TAGS),
    st.sampled_from(JSON_PIECES),
    number_text,
    st.sampled_from(TOOL_NAMES),
    tool_call_json(),
    tool_call_json().map(lambda b: f"<tool_call>{b}</tool_call>"),
    st.text(max_size=20).map(lambda t: f"<think>{t}</think>"),
    st.text(max_size=10).map(lambda t: f"<answer>{t}</answer>"),
)
composed = st.lists(fragment, max_size=8).map("".join)
well_formed = st.builds(
    lambda think, call, tail: f"<think>{think}</think>\n<tool_call>{call}</tool_call>{tail}",
    st.text(max_size=30),
    tool_call_json(),
    st.sampled_from(["", " ", "\n", "<answer>", "</tool_call>", "<answer>B</answer>", "trailing words"]),
)
action_texts = st.one_of(composed, composed, well_formed)
enabled_sets = st.sampled_from([ALL, ("think", "zoom", "answer"), ("relook", "answer"), ()])


def _check_parse_result(result: ParseResult, enabled) -> None:
    assert isinstance(result, ParseResult)
    assert (result.call is None) != (result.error is None), "exactly one of call / error"
    assert result.ok == (result.error is None)
    if result.ok:
        assert result.call.name in set(enabled)
        assert isinstance(result.call.arguments, dict)
        assert isinstance(result.call.think, str)
    else:
        assert isinstance(result.error.code, ErrorCode)
        assert isinstance(result.error.message, str) and result.error.message


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=action_texts, enabled=enabled_sets, max_chars=st.sampled_from([DEFAULT_MAX_CHARS, 64]))
def test_parser_never_raises(text: str, enabled, max_chars: int) -> None:
    _check_parse_result(parse_action_text(text, enabled, max_chars), enabled)


_FUZZ_ENV = {}


def _fuzz_env(bbox_format: str):
    if bbox_format not in _FUZZ_ENV:
        _FUZZ_ENV[bbox_format] = make_env(
            bbox_format=bbox_format, max_steps=4, obs_size=64, view_size=64, max_view_side=256
        )
    return _FUZZ_ENV[bbox_format]


reported_entropy = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**400), 10**400),
    st.sampled_from(["abc", [], [0.3], {}, "0.4"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=action_texts,
    bbox_format=st.sampled_from(["pixel", "norm", "norm1000"]),
    index=st.integers(0, 3),
    pre_zoom=st.booleans(),
    wrap=st.sampled_from(["plain", "entropy"]),
    entropy=reported_entropy,
    token_entropies=st.one_of(st.none(), st.lists(st.floats(allow_nan=True), max_size=3), st.just("xy")),
)
def test_env_step_never_raises_on_text(text, bbox_format, index, pre_zoom, wrap, entropy, token_entropies) -> None:
    env = _fuzz_env(bbox_format)
    env.reset(options={"index": index})
    if pre_zoom:  # so that source=1 / view=1 can be valid
        scale = {"pixel": 16, "norm": 0.5, "norm1000": 500}[bbox_format]
        _, _, _, _, info = env.step({"name": "zoom", "arguments": {"bbox_2d": [0, 0, scale, scale]}})
        assert info["error"] == ""
    action = text if wrap == "plain" else {"text": text, "entropy": entropy, "token_entropies": token_entropies}
    obs, reward, terminated, truncated, info = env.step(action)
    assert env.observation_space.contains(obs), {k: v for k, v in obs.items() if k != "image"}
    assert info["error"] == "" or info["error"] in ERROR_VALUES
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert math.isfinite(reward)
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    assert env.action_masks().shape == (len(env.tool_names),)
    # whatever the parser decided, the env agrees with it
    parsed = parse_action_text(text, env.tool_names, env.max_action_chars)
    if not parsed.ok:
        assert info["error"] == parsed.error.code.value
    assert env.episode.steps[-1].raw == text[: env.max_action_chars]


# ----------------------------------------------------------------------------- rendering
@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("zoom", {"bbox_2d": [0.1, 0.2, 0.5, 0.6]}),
        ("zoom", {"bbox_2d": [10, 20, 300, 400], "source": 2, "label": "nodule \"quoted\" <b>"}),
        ("crop", {"bbox_2d": [0, 0, 1000, 1000], "source": 0}),
        ("relook", {}),
        ("relook", {"view": 1}),
        ("answer", {"text": "Pleural effusion"}),
        ("answer", {"text": "B"}),
        ("think", {"text": "The left apex looks denser than the right."}),
    ],
)
@pytest.mark.parametrize("think", ["", "first I look"])
def test_render_tool_call_round_trip(name, arguments, think) -> None:
    text = render_tool_call(name, arguments, think=think)
    result = parse_action_text(text, ALL)
    assert result.ok, (text, result.error)
    assert result.call.name == name
    assert result.call.arguments == arguments
    if name != "think":
        assert result.call.think == think


@pytest.mark.parametrize(
    ("bbox_format", "phrase"),
    [("pixel", "absolute pixel coordinates"), ("norm", "between 0 and 1 "), ("norm1000", "between 0 and 1000")],
)
def test_system_prompt_lists_enabled_tools_and_format(bbox_format: str, phrase: str) -> None:
    env = make_env(bbox_format=bbox_format)
    prompt = render_system_prompt(env.tools, env.bbox_format)
    for name in ("zoom", "crop", "relook"):
        assert f'"name": "{name}"' in prompt
    assert "<answer>" in prompt and "<think>" in prompt
    assert phrase in prompt
    assert "[x1, y1, x2, y2]" in prompt
    # the other formats are not described
    others = {"pixel": "absolute pixel", "norm": "fractions between 0 and 1", "norm1000": "integers between 0 and 1000"}
    for fmt, other in others.items():
        assert (other in prompt) == (fmt == bbox_format)
    # every callable tool's schema is valid JSON without the internal role keyword
    schemas = [json.loads(line) for line in prompt.splitlines() if line.startswith('{"type": "function"')]
    assert [s["function"]["name"] for s in schemas] == ["zoom", "crop", "relook"]
    assert "x-medvr-role" not in prompt


def test_compact_system_prompt_gives_signatures_not_schemas() -> None:
    env = make_env(bbox_format="norm1000")
    full = render_system_prompt(env.tools, env.bbox_format)
    compact = render_system_prompt(env.tools, env.bbox_format, compact=True)
    assert "Tools: zoom(bbox_2d, source?, label?), crop(bbox_2d, source?), relook(view?)." in compact
    assert "between 0 and 1000" in compact and "[x1, y1, x2, y2]" in compact
    assert "<tool_call>" in compact and "<answer>" in compact
    assert '"type": "function"' not in compact and "x-medvr-role" not in compact
    assert len(compact) < len(full) / 4
    answer_only = render_system_prompt(make_env(tools=("think", "answer")).tools, "norm", compact=True)
    assert "Tools:" not in answer_only and "<tool_call>" not in answer_only and "<answer>" in answer_only
    no_boxes = render_system_prompt(make_env(tools=("relook", "answer")).tools, "norm", compact=True)
    assert "relook(view?)" in no_boxes and "[x1, y1, x2, y2]" not in no_boxes


def test_system_prompt_omits_disabled_tools() -> None:
    env = make_env(tools=("think", "zoom", "answer"))
    prompt = render_system_prompt(env.tools, env.bbox_format)
    assert '"name": "zoom"' in prompt
    assert '"name": "crop"' not in prompt
    assert '"name": "relook"' not in prompt

    no_boxes = render_system_prompt(make_env(tools=("relook", "answer")).tools, "norm")
    assert '"name": "relook"' in no_boxes
    assert '"name": "zoom"' not in no_boxes
    assert "[x1, y1, x2, y2]" not in no_boxes
