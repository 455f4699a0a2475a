"""medvr_env.bounded: the one measure of an action (JSON length, nesting, JSON-only values) and its stored form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvr_env.bounded import MAX_NESTING, bound, json_safe, preview
from medvr_env.errors import ErrorCode

# strings JSON writes without escapes (ensure_ascii=False escapes only quotes, backslashes and control characters)
plain_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\', min_codepoint=0x20))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
    | plain_text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(plain_text, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, limit=st.integers(0, 400))
def test_length_is_the_json_length_and_the_copy_is_exact_within_the_limit(value, limit) -> None:
    length = len(json.dumps(value, ensure_ascii=False))
    result = bound(value, limit)
    if length <= limit:
        assert result.error is None and result.chars == length and result.value == value
    else:
        assert result.error.code is ErrorCode.TEXT_TOO_LONG and result.chars > limit
        assert len(json.dumps(json_safe(value, limit), ensure_ascii=False)) <= limit + 16 * MAX_NESTING


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_limit_is_exact() -> None:
    assert bound(nested(MAX_NESTING)).error is None
    assert bound(nested(MAX_NESTING + 1)).error.code is ErrorCode.NESTED_TOO_DEEP
    loop: list = []
    loop.append(loop)
    assert bound(loop).error.code is ErrorCode.NESTED_TOO_DEEP  # a cycle is just very deep


def test_numpy_and_tuples_become_plain_python() -> None:
    value = {"a": np.float32(0.5), "b": (1, np.int64(2)), "c": np.array([[1, 2], [3, 4]], np.uint8),
             "d": np.bool_(True)}
    result = bound(value)
    assert result.error is None
    assert result.value == {"a": 0.5, "b": [1, 2], "c": [[1, 2], [3, 4]], "d": True}
    assert type(result.value["b"][1]) is int and type(result.value["d"]) is bool


@pytest.mark.parametrize(
    "value", [{1, 2}, b"xy", 1j, object(), (x for x in ()), np.array([1j]), np.datetime64("2020-01-01"), {(1,): 2}]
)
def test_values_json_cannot_carry_are_named_not_called(value) -> None:
    result = bound({"x": value})
    assert result.error.code is ErrorCode.NOT_JSON
    json.dumps(json_safe({"x": value}), allow_nan=False)


def test_stored_form_is_strict_json_and_the_plain_copy_keeps_the_numbers() -> None:
    value = [math.inf, -math.inf, math.nan, 10**5000, -(10**5000)]
    plain = bound(value).value
    assert math.isinf(plain[0]) and math.isnan(plain[2]) and plain[3] == 10**5000
    assert json_safe(value) == ["Infinity", "-Infinity", "NaN", "<int of about 5001 digits>",
                                "<int of about 5002 digits>"]


def test_work_is_bounded_by_the_limit_not_the_value() -> None:
    huge = {"a": ["x" * 10] * 1_000_000, "b": np.zeros(10**6), "c": "y" * 10**7}
    result = bound(huge, 100)
    assert result.error.code is ErrorCode.TEXT_TOO_LONG
    assert len(json.dumps(json_safe(huge, 100))) < 300


def test_int_keys_only_where_asked() -> None:
    assert bound({0: [1, 2]}).error.code is ErrorCode.NOT_JSON
    assert bound({0: [1, 2]}, int_keys=True).value == {0: [1, 2]}
    assert json_safe({0: [1, 2]}) == {"0": [1, 2]}


def test_preview_is_short_and_never_calls_repr() -> None:
    class Loud:
        def __repr__(self) -> str:
            raise AssertionError("repr called")

    assert preview(Loud()) == '"<Loud>"'
    assert len(preview(["z" * 1000] * 1000)) <= 40
