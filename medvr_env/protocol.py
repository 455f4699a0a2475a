"""Text <-> action: the tolerant parser and the renderer of the tool-call protocol.

The protocol is the Qwen/Hermes style used by DeepEyes and MedVR::

    <think>reasoning</think>
    <tool_call>{"name": "zoom", "arguments": {"bbox_2d": [x1, y1, x2, y2]}}</tool_call>

or ``<answer>...</answer>``. A turn holding only ``<think>`` is the think action.
Tags are case-insensitive; ``<think>`` blocks are removed before looking for the
action, so tags quoted inside reasoning are ignored; the **last** ``<tool_call>``
wins (as in released DeepEyes); JSON may sit in a code fence; ``arguments`` may be
an object or a JSON string (OpenAI style) and ``parameters`` is accepted for it;
registered aliases such as ``image_zoom_in_tool`` resolve to their tool.

:func:`parse_action_text` never raises: every failure is a
:class:`~medvr_env.errors.ActionError` with a specific code. A text longer than
``max_chars`` (:data:`~medvr_env.bounded.MAX_ACTION_CHARS`, 8,192, the limit every
action path shares) is ``TEXT_TOO_LONG`` before anything else reads it; the decoded
call is then checked like a call dict (:func:`~medvr_env.bounded.bound`: nesting,
JSON-only values). Arguments are checked later against the tool's schema, by the
env, for both action paths alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from .action_spans import ActionSpans, locate_spans
from .bounded import MAX_ACTION_CHARS, bound
from .errors import ActionError, ErrorCode
from .tools.base import ROLE_KEY, Tool, canonical_tool_name, registered_tools

DEFAULT_MAX_CHARS = MAX_ACTION_CHARS  # the one action length limit (medvr_env.bounded), under its older name

_THINK = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_OPEN_TAG = re.compile(r"<(think|tool_call|answer)>", re.IGNORECASE)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """A parsed action: the canonical tool name and its (not yet validated) arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    think: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class ParseResult:
    """Either a call or an error, never both."""

    call: ToolCall | None = None
    error: ActionError | None = None
    spans: ActionSpans | None = None  # with ``with_spans=True``: where think, the call and its arguments sit

    @property
    def ok(self) -> bool:
        return self.error is None


def _fail(code: ErrorCode, message: str) -> ParseResult:
    return ParseResult(error=ActionError(code, message))


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _NonFinite(name)


def parse_action_text(text: Any, enabled: Iterable[str], max_chars: int = DEFAULT_MAX_CHARS, *,
                      with_spans: bool = False) -> ParseResult:
    """Parse one model turn into a :class:`ToolCall`.

    Args:
        text: The raw model output for this turn.
        enabled: Names of the tools the env has enabled.
        max_chars: Longer texts are rejected with ``TEXT_TOO_LONG``.
        with_spans: Also locate, in ``text``, the think blocks, the chosen call, its name and each argument by
            schema role (:class:`~medvr_env.action_spans.ActionSpans`; successful parses only).
    """
    result = _parse_action_text(text, enabled, max_chars)
    if with_spans and result.call is not None:
        result = replace(result, spans=_spans(text, result.call))
    return result


def _spans(text: str, call: ToolCall) -> ActionSpans:
    kind = call.name if call.name in ("answer", "think") else "call"
    tool = registered_tools().get(call.name)
    props = tool.parameters.get("properties", {}) if tool is not None else {}
    roles = {k: v[ROLE_KEY] for k, v in props.items() if isinstance(v, dict) and ROLE_KEY in v}
    patterns = {"think": _THINK, "tool_call": _TOOL_CALL, "answer": _ANSWER, "fence": _FENCE}
    return locate_spans(text, kind, roles, patterns)


def _parse_action_text(text: Any, enabled: Iterable[str], max_chars: int) -> ParseResult:
    if not isinstance(text, str):
        return _fail(ErrorCode.MALFORMED_ACTION, f"a text action must be a string, got {type(text).__name__}")
    enabled = set(enabled)
    text = text.strip()
    if not text:
        return _fail(ErrorCode.EMPTY_ACTION, "the response is empty")
    if len(text) > max_chars:
        return _fail(ErrorCode.TEXT_TOO_LONG, f"the response has {len(text)} characters; the limit is {max_chars}")

    thoughts = [m.strip() for m in _THINK.findall(text)]
    rest = _THINK.sub(" ", text)
    calls = _TOOL_CALL.findall(rest)
    answers = _ANSWER.findall(rest)
    leftover = _ANSWER.sub(" ", _TOOL_CALL.sub(" ", rest))
    unclosed = _OPEN_TAG.search(leftover)
    if unclosed:
        tag = unclosed.group(1).lower()
        return _fail(ErrorCode.UNCLOSED_TAG, f"<{tag}> is never closed with </{tag}>")
    think = "\n".join(thoughts)

    if calls and answers:
        return _fail(ErrorCode.TOOL_CALL_AND_ANSWER, "give either a <tool_call> or an <answer> in one turn, not both")
    if answers:
        return _resolve("answer", {"text": answers[-1].strip()}, think, enabled)
    if calls:
        return _parse_call(calls[-1], think, enabled, max_chars)
    if thoughts:
        return _resolve("think", {"text": think}, think, enabled)
    return _fail(ErrorCode.NO_ACTION_TAG, "wrap reasoning in <think></think>, then use <tool_call> or <answer>")


def _parse_call(body: str, think: str, enabled: set[str], max_chars: int) -> ParseResult:
    body = body.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        obj = json.loads(body, parse_constant=_reject_constant)
    except _NonFinite as exc:
        return _fail(ErrorCode.NON_FINITE, f"the tool call contains {exc}; numbers must be finite")
    except (ValueError, RecursionError) as exc:
        return _fail(ErrorCode.BAD_JSON, f"the tool call is not valid JSON ({str(exc)[:80]})")
    return call_from_object(obj, think, enabled, max_chars)


def call_from_object(obj: Any, think: str, enabled: Iterable[str], max_chars: int = MAX_ACTION_CHARS) -> ParseResult:
    """A call from a decoded tool-call object ``{"name": ..., "arguments": {...}}`` (JSON text or a Python dict).

    The object is first checked as untrusted input (:func:`~medvr_env.bounded.bound`): at most ``max_chars``
    characters of JSON (``TEXT_TOO_LONG``), nesting within ``MAX_NESTING`` (``NESTED_TOO_DEEP``), JSON values
    and string keys only (``NOT_JSON``); the call holds a plain copy (numpy values as Python numbers and lists).
    """
    enabled = set(enabled)
    checked = bound(obj, max_chars, what="the tool call")
    if checked.error is not None:
        return ParseResult(error=checked.error)
    obj = checked.value  # a plain copy: nothing the caller's objects define runs from here on
    if not isinstance(obj, dict):
        return _fail(ErrorCode.NOT_AN_OBJECT, 'the tool call must be a JSON object {"name": ..., "arguments": {...}}')
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return _fail(ErrorCode.MISSING_TOOL_NAME, 'the tool call needs a "name" string')
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args, parse_constant=_reject_constant) if args.strip() else {}
        except _NonFinite as exc:
            return _fail(ErrorCode.NON_FINITE, f"the arguments contain {exc}; numbers must be finite")
        except (ValueError, RecursionError):
            return _fail(ErrorCode.BAD_ARGUMENTS, '"arguments" is a string that is not valid JSON')
        checked = bound(args, max_chars, what='"arguments"')
        if checked.error is not None:
            return ParseResult(error=checked.error)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return _fail(ErrorCode.BAD_ARGUMENTS, '"arguments" must be a JSON object')
    return _resolve(name, args, think, enabled)


def _resolve(name: str, args: dict[str, Any], think: str, enabled: set[str]) -> ParseResult:
    canonical = canonical_tool_name(name)
    if canonical is None or canonical not in enabled:
        return _fail(ErrorCode.UNKNOWN_TOOL, f"unknown tool {name[:40]!r}; available: {', '.join(sorted(enabled))}")
    return ParseResult(call=ToolCall(canonical, args, think))


# --------------------------------------------------------------------- rendering
_FORMAT_HELP = {
    "pixel": "absolute pixel coordinates of the source image as you were shown it",
    "norm": "fractions between 0 and 1 of the source image's width and height",
    "norm1000": "integers between 0 and 1000, relative to the source image's width and height",
}


def _signature(tool: type[Tool]) -> str:
    """``name(required, optional?)`` from the tool's parameter schema."""
    params = tool.parameters
    required = set(params.get("required", ()))
    names = [k if k in required else f"{k}?" for k in params.get("properties", {})]
    return f"{tool.name}({', '.join(names)})"


def _compact_system_prompt(tools: list[type[Tool]], callable_tools: list[type[Tool]], bbox_format: str) -> str:
    lines = ["Answer the question about the medical image."]
    if callable_tools:
        lines.append("Tools: " + ", ".join(_signature(t) for t in callable_tools) + ".")
        if any(t.argument_with_role("box") for t in callable_tools):
            lines.append(f"Boxes: [x1, y1, x2, y2] in {_FORMAT_HELP[bbox_format]}; source: image number, 0 = original.")
        lines.append('Call: <tool_call>{"name": ..., "arguments": {...}}</tool_call>')
    answer = "Answer: <answer>...</answer>"
    if any(t.name == "answer" for t in tools):
        answer += " (option letter for multiple choice)"
    lines.append(answer)
    return "\n".join(lines)


def render_tool_call(name: str, arguments: Mapping[str, Any], think: str = "") -> str:
    """Text for one tool-call turn (``answer`` and ``think`` use their own tags)."""
    head = f"<think>{think}</think>\n" if think else ""
    if name == "answer":
        return f"{head}<answer>{arguments.get('text', '')}</answer>"
    if name == "think":
        return f"<think>{arguments.get('text', think)}</think>"
    payload = json.dumps({"name": name, "arguments": dict(arguments)}, separators=(", ", ": "))
    return f"{head}<tool_call>{payload}</tool_call>"


def render_system_prompt(tools: Iterable[type[Tool]], bbox_format: str, *, compact: bool = False) -> str:
    """The system prompt listing the enabled tools (from their schemas) and the turn format.

    ``compact=True`` lists each tool as a one-line signature instead of its JSON schema (about 70 tokens instead of
    700): for small models trained from scratch, where a long constant prefix costs compute on every sequence.
    """
    tools = list(tools)
    callable_tools = [t for t in tools if t.name not in ("think", "answer")]
    if compact:
        return _compact_system_prompt(tools, callable_tools, bbox_format)
    lines = [
        "You are an expert in medical image analysis. Answer the question about the image.",
        "You can look closer before answering: call a tool, and its result comes back as a new image.",
        "",
        "# Tools",
        "",
        "You may call one of these functions per turn. Function signatures are within <tools></tools>:",
        "<tools>",
        *(json.dumps({"type": "function", "function": t.function_schema()}) for t in callable_tools),
        "</tools>",
        "",
    ]
    if any(t.argument_with_role("box") for t in callable_tools):
        lines += [
            f"Boxes are [x1, y1, x2, y2] (top-left, bottom-right) in {_FORMAT_HELP[bbox_format]}.",
            "Images are numbered in the order you receive them, starting at 0 for the original image; "
            "'source' chooses which image a box refers to (default: the latest image).",
            "",
        ]
    lines += [
        "Each turn: think inside <think></think>, then either call one function as",
        '<tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>',
        "or give the final answer as <answer>...</answer>"
        + (" (the option letter for multiple-choice questions)." if any(t.name == "answer" for t in tools) else "."),
    ]
    return "\n".join(lines)
