"""Resolve ``"package.module:Name"`` strings (kept JSON-friendly so ``gym.make`` kwargs and specs serialise)."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(spec: str, what: str) -> Any:
    """Import ``Name`` from ``package.module``; errors say what was being loaded and how to write it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {spec!r} is not of the form 'package.module:Name'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {what} {spec!r}: {exc}") from exc
