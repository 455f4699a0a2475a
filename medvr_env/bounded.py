"""Bounded, plain copies of untrusted values: how every action is measured, checked and stored.

An action comes from a policy, and a policy may send anything: a megabyte string, a list
nested 3,000 levels deep, an integer of 9,000 digits, a tuple as a dict key, a numpy
array, an arbitrary object. :func:`bound` walks such a value once, with work bounded by
the size limit (never by the size of the value), and returns

- ``value``: a plain copy made only of ``dict``, ``list``, ``str``, ``int``, ``float``,
  ``bool`` and ``None`` (numpy scalars and arrays become Python numbers and lists, tuples
  lists, subclasses their base type), cut to the limits. The env reads only this copy, so
  nothing a policy defines (``__eq__``, ``__iter__``, ``__len__``, ...) runs after the walk;
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
  or numpy), strings, lists, tuples, dicts or numpy arrays of those -> otherwise
  ``NOT_JSON`` (sets, bytes, complex numbers, objects, generators, ...). Nothing of such a
  value is called: it is copied as the string ``"<type name>"``.

:func:`json_safe` makes the form a record stores: the same copy, with non-finite floats as
the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` and integers of more than
:data:`MAX_INT_DIGITS` digits as a short description, so that ``json.dumps(value,
allow_nan=False)`` always succeeds. (In the plain copy they stay numbers: the schema check
rejects them with ``NON_FINITE`` and ``OUT_OF_RANGE``, as on the text path.)
"""

from __future__ import annotations

import json
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
"""Records store longer integers as a description (Python refuses ``str()`` of ints over 4,300 digits)."""

_LOG10_2 = math.log10(2)
_CUT = "..."


@dataclass(frozen=True)
class Bounded:
    """The result of :func:`bound`: a plain copy, the JSON length seen, and the first problem found."""

    value: Any
    chars: int
    error: ActionError | None


def bound(
    obj: Any,
    max_chars: int = MAX_ACTION_CHARS,
    max_depth: int = MAX_NESTING,
    what: str = "the action",
    skip: frozenset[str] = frozenset(),
    int_keys: bool = False,
) -> Bounded:
    """Measure, check and copy ``obj`` within ``max_chars`` characters of JSON and ``max_depth`` levels.

    Never raises and never calls a method ``obj`` defines (not even ``repr``). Work is
    bounded by ``max_chars`` whatever ``obj`` is. ``what`` names the value in error
    messages. When ``obj`` is a dict, its keys in ``skip`` are left out (neither measured
    nor copied): fields checked by rules of their own. ``int_keys`` also accepts integer
    dict keys (``view_sizes``: ``{view index: [w, h]}``).
    """
    walker = _Walker(max_chars, max_depth, what, storable=False, int_keys=int_keys)
    if skip and isinstance(obj, dict):
        value = walker.dict_items(((k, v) for k, v in dict.items(obj) if not (type(k) is str and k in skip)), 0)
    else:
        value = walker.walk(obj, 0)
    return Bounded(value, walker.used, walker.error)


def json_safe(obj: Any, max_chars: int = MAX_ACTION_CHARS, max_depth: int = MAX_NESTING) -> Any:
    """What a record keeps of ``obj``: its bounded copy, in a form ``json.dumps(..., allow_nan=False)`` takes."""
    return _Walker(max_chars, max_depth, "the value", storable=True, int_keys=True).walk(obj, 0)


def preview(obj: Any, max_chars: int = 40) -> str:
    """A short JSON excerpt of ``obj`` for an error message (never raises, never calls ``repr``)."""
    text = json.dumps(json_safe(obj, max_chars, 4), ensure_ascii=False)
    return text if len(text) <= max_chars else text[: max_chars - len(_CUT)] + _CUT


class _Walker:
    def __init__(self, max_chars: int, max_depth: int, what: str, storable: bool, int_keys: bool) -> None:
        self.budget = max_chars
        self.max_depth = max_depth
        self.what = what
        self.storable = storable
        self.int_keys = int_keys
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

    def _foreign(self, name: str) -> str:
        self._fail(ErrorCode.NOT_JSON, f"{self.what} holds {_a(name)}, which JSON cannot carry")
        self._spend(len(name) + 4)
        return f"<{name}>"

    # ------------------------------------------------------------------ the walk
    def walk(self, obj: Any, depth: int) -> Any:
        if isinstance(obj, np.bool_):
            obj = bool(obj)
        if obj is None or obj is True or obj is False:
            self._spend(4 if obj is not False else 5)
            return obj
        if isinstance(obj, (int, np.integer)):
            return self._int(int.__index__(obj) if isinstance(obj, int) else int(obj))
        if isinstance(obj, (float, np.floating)):
            return self._float(float.__float__(obj) if isinstance(obj, float) else float(obj))
        if isinstance(obj, str):
            return self._str(str.__str__(obj))
        if isinstance(obj, (list, tuple, np.ndarray, dict)):
            if depth >= self.max_depth:
                self._fail(ErrorCode.NESTED_TOO_DEEP, f"{self.what} nests more than {self.max_depth} levels deep")
                self._spend(len(_CUT) + 2)
                return _CUT
            if isinstance(obj, dict):
                return self.dict_items(dict.items(obj), depth)
            if isinstance(obj, np.ndarray):
                return self._array(obj, depth)
            return self._list(list.__iter__(obj) if isinstance(obj, list) else tuple.__iter__(obj), depth)
        return self._foreign(_type_name(obj))

    def _int(self, value: int) -> Any:
        digits = int(abs(value).bit_length() * _LOG10_2) + 1 + (value < 0)
        if digits > MAX_INT_DIGITS:
            self._spend(digits)
            return f"<int of about {digits} digits>" if self.storable else value
        return value if self._spend(len(str(value))) or not self.storable else _CUT

    def _float(self, value: float) -> Any:
        if math.isfinite(value):
            self._spend(len(repr(value)))
            return value
        text = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        self._spend(len(text))
        return text if self.storable else value

    def _str(self, value: str) -> str:
        room = max(self.budget - self.used - 2, 0)
        self._spend(len(value) + 2)
        return value if len(value) <= room else value[:room] + _CUT

    def _array(self, arr: np.ndarray, depth: int) -> Any:
        if arr.dtype.kind not in "biufU" and arr.dtype != object:
            return self._foreign(f"ndarray of {arr.dtype}")
        if arr.ndim == 0:
            return self.walk(arr.item(), depth)
        # every element costs at least one character and a separator: never convert more than fits
        room = max(self.budget - self.used, 0) // 2 + 1
        if arr.size <= room:
            return self._list(iter(arr.tolist()), depth)
        return self._list(iter(arr.reshape(-1)[:room].tolist()), depth)  # over the limit whatever the rest is

    def _list(self, items: Iterable[Any], depth: int) -> list[Any]:
        out: list[Any] = []
        self._spend(2)
        for i, item in enumerate(items):
            if self._full or (i and not self._spend(2)):
                out.append(_CUT)
                break
            out.append(self.walk(item, depth + 1))
        return out

    def dict_items(self, items: Iterable[tuple[Any, Any]], depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        self._spend(2)
        for i, (key, item) in enumerate(items):
            if self._full or (i and not self._spend(2)):
                out[_CUT] = _CUT
                break
            out[self._key(key, i)] = self.walk(item, depth + 1)
            self._spend(2)
        return out

    def _key(self, key: Any, i: int) -> Any:
        if isinstance(key, str):
            return self._str(str.__str__(key))
        if self.int_keys and isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            value = self._int(int.__index__(key) if isinstance(key, int) else int(key))
            self._spend(2)  # JSON writes it as a string
            return str(value) if self.storable and isinstance(value, int) else value
        name = _type_name(key)
        self._fail(ErrorCode.NOT_JSON, f"{self.what} has a dict key that is {_a(name)}; JSON keys are strings")
        stored = f"<{name} key {i}>"
        self._spend(len(stored) + 2)
        return stored


def _a(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _type_name(obj: Any) -> str:
    """The type's name, without calling anything the object defines."""
    name = getattr(type(obj), "__name__", "object")
    return name if isinstance(name, str) else "object"


__all__ = ["MAX_ACTION_CHARS", "MAX_INT_DIGITS", "MAX_NESTING", "Bounded", "bound", "json_safe", "preview"]
