"""Bounded, JSON-safe copies of untrusted values: how every action is measured, checked and stored.

An action comes from a policy, and a policy may send anything: a megabyte string, a list
nested 3,000 levels deep, an integer of 9,000 digits, a tuple as a dict key, a numpy
array, an arbitrary object. :func:`bound` walks such a value once, with work bounded by
the size limit (never by the size of the value), and returns

- ``value``: a copy made only of ``dict`` (string keys), ``list``, ``str``, ``int``,
  finite ``float``, ``bool`` and ``None``, cut to the limits, so that ``json.dumps(value,
  allow_nan=False)`` always succeeds (what the episode record stores);
- ``chars``: the length of the value's JSON text (``json.dumps`` with its default
  separators, counting each string character once), counted up to the limit;
- ``error``: the first reason the value is not an acceptable action payload, or ``None``.

The rules (one set for the text, call-dict and structured paths):

- **Length**: at most ``max_chars`` characters of JSON text (:data:`MAX_ACTION_CHARS` by
  default, the env's ``max_action_chars``) -> ``TEXT_TOO_LONG``. This is measured before
  anything else looks at the value, so an over-long string never reaches Unicode
  normalisation, the schema check, the grader or the record.
- **Nesting**: lists and dicts nest at most :data:`MAX_NESTING` levels -> ``NESTED_TOO_DEEP``.
- **JSON only**: dict keys are strings; values are ``None``, ``bool``, numbers (Python
  or numpy), strings, lists, tuples, dicts or numpy arrays -> otherwise ``NOT_JSON``
  (sets, bytes, objects, generators, ...). Nothing of such a value is called: it is
  stored as ``"<type name>"``.

Non-finite floats are acceptable input (the schema check rejects them with
``NON_FINITE``, where it applies) and are stored as the strings ``"NaN"``, ``"Infinity"``
and ``"-Infinity"``, so records stay strict JSON. Integers too long for ``str()`` (over
:data:`MAX_INT_DIGITS` digits) count with their digit count and are stored as a short
description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .errors import ActionError, ErrorCode

MAX_ACTION_CHARS = 8192
"""The one length limit of an action, in characters, on every path (the env's ``max_action_chars`` default):
a text action's stripped text, or the JSON text of a call dict's or structured action's payload."""

MAX_NESTING = 32
"""Deepest nesting of lists and dicts accepted in an action and stored in a record."""

MAX_INT_DIGITS = 4000
"""Longer integers are stored as a description (Python refuses ``str()`` of ints over 4,300 digits)."""

_LOG10_2 = math.log10(2)
_CUT = "..."


@dataclass(frozen=True)
class Bounded:
    """The result of :func:`bound`: a JSON-safe copy, the JSON length seen, and the first problem found."""

    value: Any
    chars: int
    error: ActionError | None


def bound(
    obj: Any,
    max_chars: int = MAX_ACTION_CHARS,
    max_depth: int = MAX_NESTING,
    what: str = "the action",
    skip: frozenset[str] = frozenset(),
) -> Bounded:
    """Measure, check and copy ``obj`` within ``max_chars`` characters of JSON and ``max_depth`` levels.

    Never raises and never calls ``repr``/``str`` of unknown objects. Work is bounded by
    ``max_chars`` (plus the cost of ``len()`` and numpy's ``size``), whatever ``obj`` is.
    ``what`` names the value in error messages. When ``obj`` is a dict, its keys in ``skip``
    are left out (neither measured nor copied): fields checked by rules of their own.
    """
    walker = _Walker(max_chars, max_depth, what)
    if skip and isinstance(obj, dict):
        value = walker.dict_items(((k, v) for k, v in obj.items() if not (isinstance(k, str) and k in skip)), 0)
    else:
        value = walker.walk(obj, 0)
    return Bounded(value, walker.used, walker.error)


def preview(obj: Any, max_chars: int = 40) -> str:
    """A short JSON excerpt of ``obj`` for an error message (never raises, never calls ``repr``)."""
    import json

    text = json.dumps(bound(obj, max_chars, 4).value, ensure_ascii=False)
    return text if len(text) <= max_chars else text[: max_chars - len(_CUT)] + _CUT


def json_safe(obj: Any, max_chars: int = MAX_ACTION_CHARS, max_depth: int = MAX_NESTING) -> Any:
    """Just the stored form of :func:`bound`: what a record keeps of ``obj``."""
    return bound(obj, max_chars, max_depth).value


class _Walker:
    def __init__(self, max_chars: int, max_depth: int, what: str) -> None:
        self.budget = max_chars
        self.max_depth = max_depth
        self.what = what
        self.used = 0
        self.error: ActionError | None = None

    # ------------------------------------------------------------------ bookkeeping
    def _fail(self, code: ErrorCode, message: str) -> None:
        if self.error is None:
            self.error = ActionError(code, message)

    def _spend(self, n: int) -> bool:
        """Count ``n`` characters; False once the budget is exceeded (then stop copying)."""
        self.used += n
        if self.used > self.budget:
            self._fail(
                ErrorCode.TEXT_TOO_LONG,
                f"{self.what} has more than {self.budget} characters as JSON; the limit is {self.budget}",
            )
            return False
        return True

    @property
    def _full(self) -> bool:
        return self.used > self.budget

    # ------------------------------------------------------------------ the walk
    def walk(self, obj: Any, depth: int) -> Any:
        if obj is None or isinstance(obj, bool):
            self._spend(4 if obj is None or obj is True else 5)
            return obj
        if isinstance(obj, int):
            return self._int(obj)
        if isinstance(obj, float):
            return self._float(obj)
        if isinstance(obj, str):
            return self._str(obj)
        if isinstance(obj, np.generic):
            return self._numpy_scalar(obj, depth)
        if isinstance(obj, (list, tuple, np.ndarray, dict)):
            if depth >= self.max_depth:
                self._fail(ErrorCode.NESTED_TOO_DEEP, f"{self.what} nests more than {self.max_depth} levels deep")
                self._spend(len(_CUT) + 2)
                return _CUT
            if isinstance(obj, dict):
                return self.dict_items(obj.items(), depth)
            if isinstance(obj, np.ndarray):
                return self._array(obj, depth)
            return self._list(obj, depth)
        name = _type_name(obj)
        self._fail(ErrorCode.NOT_JSON, f"{self.what} holds a {name}, which JSON cannot carry")
        self._spend(len(name) + 4)
        return f"<{name}>"

    def _int(self, value: int) -> Any:
        value = int.__index__(value)  # an int subclass counts as its plain value
        digits = int(abs(value).bit_length() * _LOG10_2) + 1 + (value < 0)
        if digits > MAX_INT_DIGITS:
            self._spend(digits)
            return f"<int of about {digits} digits>"
        text = str(value)
        return value if self._spend(len(text)) else _CUT

    def _float(self, value: float) -> Any:
        value = float.__float__(value)
        if math.isfinite(value):
            self._spend(len(repr(value)))
            return value
        text = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        self._spend(len(text))
        return text

    def _str(self, value: str) -> str:
        value = str.__str__(value)
        room = max(self.budget - self.used - 2, 0)
        self._spend(len(value) + 2)
        return value if len(value) <= room else value[:room] + _CUT

    def _numpy_scalar(self, value: np.generic, depth: int) -> Any:
        if isinstance(value, (np.integer, np.floating, np.bool_, np.str_)):
            return self.walk(value.item(), depth)
        name = _type_name(value)
        self._fail(ErrorCode.NOT_JSON, f"{self.what} holds a numpy {name}, which JSON cannot carry")
        self._spend(len(name) + 4)
        return f"<{name}>"

    def _array(self, arr: np.ndarray, depth: int) -> Any:
        if arr.dtype.kind not in "biuf" and arr.dtype != object and arr.dtype.kind != "U":
            name = f"ndarray of {arr.dtype}"
            self._fail(ErrorCode.NOT_JSON, f"{self.what} holds an {name}, which JSON cannot carry")
            self._spend(len(name) + 4)
            return f"<{name}>"
        if arr.ndim == 0:
            return self.walk(arr.item(), depth)
        # every element costs at least one character and a separator: never convert more than fits
        room = max(self.budget - self.used, 0) // 2 + 1
        flat_ok = arr.size <= room
        head = arr if flat_ok else arr.reshape(-1)[:room]
        return self._list(head.tolist(), depth, truncated=not flat_ok)

    def _list(self, items: Any, depth: int, truncated: bool = False) -> list[Any]:
        out: list[Any] = []
        self._spend(2)
        for i, item in enumerate(items):
            if self._full or (i and not self._spend(2)):
                out.append(_CUT)
                return out
            out.append(self.walk(item, depth + 1))
        if truncated:
            self._spend(self.budget + 1)  # the rest did not fit
            out.append(_CUT)
        return out

    def dict_items(self, items: Iterable[tuple[Any, Any]], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._spend(2)
        for i, (key, item) in enumerate(items):
            if self._full or (i and not self._spend(2)):
                out[_CUT] = _CUT
                return out
            if isinstance(key, str):
                stored_key = self._str(key)
            else:
                name = _type_name(key)
                self._fail(ErrorCode.NOT_JSON, f"{self.what} has a dict key that is a {name}; JSON keys are strings")
                stored_key = f"<{name} key {i}>"
                self._spend(len(stored_key) + 2)
            self._spend(2)
            out[stored_key] = self.walk(item, depth + 1)
        return out


def _type_name(obj: Any) -> str:
    """The type's name, without calling anything the object defines."""
    name = getattr(type(obj), "__name__", "object")
    return name if isinstance(name, str) else "object"


__all__ = ["MAX_ACTION_CHARS", "MAX_INT_DIGITS", "MAX_NESTING", "Bounded", "bound", "json_safe", "preview"]
