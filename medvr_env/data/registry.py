"""Dataset names the env accepts for ``dataset=``, resolved lazily to their adapter classes."""

from __future__ import annotations

import inspect
from typing import Any

from ..importing import import_object
from .sample import VQADataset

DATASETS: dict[str, str] = {
    "procedural": "medvr_env.data.procedural:ProceduralDataset",
    "vqa_rad": "medvr_env.data.vqa_rad:VQARADDataset",
    "slake": "medvr_env.data.slake:SLAKEDataset",
    "pathvqa": "medvr_env.data.pathvqa:PathVQADataset",
    "pmc_vqa": "medvr_env.data.pmc_vqa:PMCVQADataset",
    "omnimedvqa": "medvr_env.data.omnimedvqa:OmniMedVQADataset",
    "medxpertqa": "medvr_env.data.medxpertqa:MedXpertQADataset",
    "custom": "medvr_env.data.custom:CustomVQADataset",
}


def make_dataset(spec: str | VQADataset, split: str, **kwargs: Any) -> VQADataset:
    """Build a dataset from a registered name or ``"package.module:Class"``; pass instances through."""
    if not isinstance(spec, str):
        if not isinstance(spec, VQADataset):
            raise TypeError(f"dataset must be a name or a VQADataset, got {type(spec).__name__}")
        return spec
    if spec not in DATASETS and ":" not in spec:
        raise ValueError(f"unknown dataset {spec!r}; registered: {sorted(DATASETS)} (or give 'package.module:Class')")
    cls = import_object(DATASETS.get(spec, spec), "dataset")
    accepted = _accepted_kwargs(cls)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise TypeError(f"dataset {spec!r} does not take {unknown}; it takes {sorted(accepted - {'split'})}")
    return cls(split=split, **kwargs)


def _accepted_kwargs(cls: type) -> set[str] | None:
    """Keyword names ``cls(...)`` accepts, following ``**kwargs`` up the base classes; ``None`` if unbounded."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None
