"""Small helpers the file adapters share for reading manifest records: text fields, option letters, boxes."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from .files import DatasetFormatError, require_field
from .sample import BoxTuple

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def text_field(record: dict[str, Any], key: str, where: str, *, required: bool = True, default: str = "") -> str:
    """``record[key]`` as stripped text. Numbers are accepted (answers such as ``2``); lists and dicts are not."""
    if required:
        value = require_field(record, key, where)
    else:
        value = record.get(key, default) if isinstance(record, dict) else default
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise DatasetFormatError(f"{where}: field {key!r} is empty")
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DatasetFormatError(f"{where}: field {key!r} must be text, got {type(value).__name__} {value!r}")
    return str(value).strip()


def letter_index(letter: str, count: int) -> int | None:
    """``"B"`` -> 1 when there are at least 2 options; ``None`` for anything that is not a valid option letter."""
    letter = letter.strip().rstrip(".):").strip().upper()
    if len(letter) == 1 and letter in LETTERS[:count]:
        return LETTERS.index(letter)
    return None


def strip_letter_prefix(text: str, letter: str) -> str:
    """``"A:Diffuse uptake"`` -> ``"Diffuse uptake"`` (only the option's own letter, followed by ``:`` or ``.``)."""
    return re.sub(rf"^\s*{re.escape(letter)}\s*[:.：]\s*", "", text, count=1, flags=re.IGNORECASE).strip()


def check_box(values: Any, where: str) -> BoxTuple:
    """A ``[x1, y1, x2, y2]`` pixel box with ``x2 > x1`` and ``y2 > y1``, or a :class:`DatasetFormatError`."""
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        raise DatasetFormatError(f"{where}: a box must be [x1, y1, x2, y2], got {values!r}")
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{where}: box coordinates must be numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1 or min(x1, y1) < 0:
        raise DatasetFormatError(f"{where}: box {values!r} is not a non-empty [x1, y1, x2, y2] in pixels")
    return (x1, y1, x2, y2)


def xywh_to_box(values: Any, where: str) -> BoxTuple:
    """A COCO-style ``[x, y, w, h]`` pixel box as ``(x1, y1, x2, y2)``."""
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        raise DatasetFormatError(f"{where}: expected a box [x, y, w, h], got {values!r}")
    try:
        x, y, w, h = (float(v) for v in values)
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{where}: box coordinates must be numbers, got {values!r}") from None
    return check_box([x, y, x + w, y + h], where)


def one_of(value: str, choices: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {list(choices)}, got {value!r}")
    return value
