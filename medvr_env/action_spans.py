"""Where the parts of a parsed action sit in the model's text: character spans from the protocol's own grammar.

:func:`medvr_env.protocol.parse_action_text` (with ``with_spans=True``) attaches an :class:`ActionSpans` to a
successful parse. The spans follow the parser's rules exactly (``<think>`` blocks hide what they contain, the
**last** ``<tool_call>`` wins, JSON may sit in a code fence, ``arguments`` may be an object or a JSON string,
``parameters`` is accepted for it), so any code that needs "the tokens of the box" (the VLM's entropy channel,
EVR's fork point) reads them from here instead of keeping a second grammar.

Every span is ``(start, end)`` into the text given to the parser (unstripped), ``text[start:end]``.
Arguments are located by schema role (``"x-medvr-role"`` in the tool's parameters): ``ActionSpans.argument("box")``
is the box argument, and its ``items`` are the spans of the four numbers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

Span = tuple[int, int]

_WS = re.compile(r"\s*")


@dataclass(frozen=True)
class ArgumentSpan:
    """One argument of the chosen call: its name, its schema role (or ``None``), its value and, for arrays, items."""

    name: str
    role: str | None
    value: Span
    items: tuple[Span, ...] = ()


@dataclass(frozen=True)
class ActionSpans:
    """Character spans of one parsed turn.

    Attributes:
        think: Each ``<think>`` block's content.
        action: The chosen ``<tool_call>`` / ``<answer>`` block's content (``None`` for a think-only turn).
        name: The call's ``"name"`` value (``None`` for answers and think-only turns).
        arguments: The call's ``"arguments"`` (or ``"parameters"``) value.
        args: One :class:`ArgumentSpan` per argument found, in text order.
    """

    think: tuple[Span, ...] = ()
    action: Span | None = None
    name: Span | None = None
    arguments: Span | None = None
    args: tuple[ArgumentSpan, ...] = field(default_factory=tuple)

    def argument(self, role: str) -> ArgumentSpan | None:
        """The first argument with schema role ``role`` (``"box"``, ``"view"``, ``"text"``), or ``None``."""
        return next((a for a in self.args if a.role == role), None)

    @property
    def box_items(self) -> tuple[Span, ...]:
        """Spans of the box argument's numbers (the coordinates EVR measures and forks at); empty without a box."""
        box = self.argument("box")
        return box.items if box is not None else ()


def locate_spans(text: str, kind: str, roles: dict[str, str], patterns: dict[str, re.Pattern[str]]) -> ActionSpans:
    """Spans of the action the parser chose in ``text``.

    Args:
        text: The raw turn, as given to the parser.
        kind: ``"call"``, ``"answer"`` or ``"think"``: what the parser found.
        roles: Argument name -> schema role of the chosen tool.
        patterns: The parser's ``think``, ``tool_call``, ``answer`` and ``fence`` regexes (one grammar).
    """
    think = tuple(m.span(1) for m in patterns["think"].finditer(text))
    masked = patterns["think"].sub(lambda m: " " * len(m.group(0)), text)  # same offsets, think hidden
    if kind == "think":
        return ActionSpans(think=think)
    if kind == "answer":
        answers = list(patterns["answer"].finditer(masked))
        return ActionSpans(think=think, action=answers[-1].span(1) if answers else None)
    calls = list(patterns["tool_call"].finditer(masked))
    if not calls:
        return ActionSpans(think=think)
    start, end = calls[-1].span(1)
    body = text[start:end]
    lead = len(body) - len(body.lstrip())
    inner_start, inner_end = start + lead, start + len(body.rstrip())
    fenced = patterns["fence"].match(text[inner_start:inner_end])
    if fenced:
        inner_start, inner_end = inner_start + fenced.start(1), inner_start + fenced.end(1)
    members = _object_members(text, inner_start)
    if members is None:
        return ActionSpans(think=think, action=(start, end))
    name = members.get("name")
    key = "arguments" if "arguments" in members else "parameters" if "parameters" in members else None
    if key is None:
        return ActionSpans(think=think, action=(start, end), name=name)
    arguments = members[key]
    args = _argument_spans(text, arguments, roles)
    return ActionSpans(think=think, action=(start, end), name=name, arguments=arguments, args=args)


def _argument_spans(text: str, value: Span, roles: dict[str, str]) -> tuple[ArgumentSpan, ...]:
    """Per-argument spans of an arguments value: a JSON object, or a JSON string holding one."""
    a, b = value
    if text[a] == "{":
        members = _object_members(text, a) or {}
        return tuple(_argument(text, k, span, roles.get(k)) for k, span in members.items())
    if text[a] != '"':
        return ()
    decoded, raw_index = _string_with_offsets(text, a)
    if decoded is None:
        return ()
    pad = len(decoded) - len(decoded.lstrip())
    members = _object_members(decoded, pad) or {}
    out = []
    for k, (s, e) in members.items():
        arg = _argument(decoded, k, (s, e), roles.get(k))
        remap = lambda sp: (raw_index[sp[0]], raw_index[sp[1] - 1] + 1)  # noqa: E731
        out.append(ArgumentSpan(k, arg.role, remap(arg.value), tuple(remap(i) for i in arg.items)))
    return tuple(out)


def _argument(text: str, key: str, span: Span, role: str | None) -> ArgumentSpan:
    items: tuple[Span, ...] = ()
    if text[span[0]] == "[":
        items = tuple(_array_items(text, span[0]))
    return ArgumentSpan(key, role, span, items)


def _value_end(text: str, start: int) -> int | None:
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return None
    return end


def _object_members(text: str, start: int) -> dict[str, Span] | None:
    """``{key: span of its value}`` of the JSON object starting at ``start`` (``None`` if it is not one)."""
    if start >= len(text) or text[start] != "{" or _value_end(text, start) is None:
        return None
    decoder = json.JSONDecoder()
    members: dict[str, Span] = {}
    i = _WS.match(text, start + 1).end()
    while text[i] != "}":
        key, i = decoder.raw_decode(text, i)
        i = _WS.match(text, i).end() + 1  # ':'
        i = _WS.match(text, i).end()
        end = _value_end(text, i)
        members[str(key)] = (i, end)  # a repeated key keeps its last value, as json.loads does
        i = _WS.match(text, end).end()
        if text[i] == ",":
            i = _WS.match(text, i + 1).end()
    return members


def _array_items(text: str, start: int) -> list[Span]:
    items: list[Span] = []
    i = _WS.match(text, start + 1).end()
    while i < len(text) and text[i] != "]":
        end = _value_end(text, i)
        if end is None:
            break
        items.append((i, end))
        i = _WS.match(text, end).end()
        if i < len(text) and text[i] == ",":
            i = _WS.match(text, i + 1).end()
    return items


def _string_with_offsets(text: str, start: int) -> tuple[str | None, list[int]]:
    """Decode the JSON string literal at ``start``; also the raw offset of every decoded character."""
    end = _value_end(text, start)
    if end is None:
        return None, []
    chars: list[str] = []
    index: list[int] = []
    i = start + 1
    while i < end - 1:
        if text[i] == "\\":
            width = 6 if text[i + 1] == "u" else 2
            piece: Any = json.loads('"' + text[i : i + width] + '"')
            chars.append(piece)
            index.append(i)
            i += width
        else:
            chars.append(text[i])
            index.append(i)
            i += 1
    return "".join(chars), index


__all__ = ["ActionSpans", "ArgumentSpan", "Span", "locate_spans"]
