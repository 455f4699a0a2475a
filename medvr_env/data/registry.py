"""Dataset names the env accepts for ``dataset=``, resolved lazily to their adapter classes."""

from __future__ import annotations

import importlib
from typing import Any

from .sample import VQADataset

DATASETS: dict[str, str] = {
    "procedural": "medvr_env.data.procedural:ProceduralDataset",
}


def make_dataset(spec: str | VQADataset, split: str, **kwargs: Any) -> VQADataset:
    """Build a dataset from a registered name or ``"package.module:Class"``; pass instances through."""
    if not isinstance(spec, str):
        if not isinstance(spec, VQADataset):
            raise TypeError(f"dataset must be a name or a VQADataset, got {type(spec).__name__}")
        return spec
    target = DATASETS.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"unknown dataset {spec!r}; registered: {sorted(DATASETS)} (or give 'package.module:Class')")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import dataset {spec!r}: {exc}") from exc
    return cls(split=split, **kwargs)
