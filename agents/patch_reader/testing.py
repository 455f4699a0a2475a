"""A tiny random-weight patch reader for tests (built offline from a config; it reads nothing meaningfully)."""

from __future__ import annotations

from pathlib import Path

import torch

from .model import PatchReader, PatchReaderConfig
from .store import default_path

FIXTURE_CONFIG = {"channels": (4, 8, 8), "hidden": 16}


def tiny_reader(seed: int = 0) -> PatchReader:
    """A reader with the real architecture at a tiny width and fixed random weights."""
    torch.manual_seed(seed)
    return PatchReader(PatchReaderConfig(**FIXTURE_CONFIG, meta={"fixture": True}))


def write_fixture_reader(path: str | Path | None = None, seed: int = 0) -> Path:
    """Save :func:`tiny_reader` at ``path`` (default: the cached default path) and return the path."""
    return tiny_reader(seed).save(path if path is not None else default_path())


__all__ = ["FIXTURE_CONFIG", "tiny_reader", "write_fixture_reader"]
