"""Dataset folders for tests: the real VQA-RAD in ../shared, and small fixtures in each official layout.

Each builder in :data:`FIXTURE_BUILDERS` writes a miniature copy of one public
dataset (same file names, field names, nesting, path conventions and language
fields as the published release) with images we generate. :func:`data_root`
builds it once per test process in a temporary folder.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable

import gymnasium as gym
import pytest

REPO = Path(__file__).resolve().parents[1]
VQA_RAD_ROOT = REPO.parent / "shared" / "data" / "vqa_rad"
SKIP_VQA_RAD = f"the real VQA-RAD dataset is not at {VQA_RAD_ROOT} (it lives in the shared folder beside the repo)"

FIXTURE_BUILDERS: dict[str, Callable[[Path], None]] = {}
"""Dataset registry name -> function writing that dataset's official layout into an empty folder."""


def fixture_builder(name: str):
    def register(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        FIXTURE_BUILDERS[name] = fn
        return fn

    return register


@lru_cache(maxsize=1)
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="medvr-fixtures-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@lru_cache(maxsize=None)
def data_root(name: str) -> Path:
    """The folder to pass as ``data_root`` for dataset ``name`` (skips the test if VQA-RAD is absent)."""
    if name == "vqa_rad":
        if not (VQA_RAD_ROOT / "testset.json").is_file():
            pytest.skip(SKIP_VQA_RAD)
        return VQA_RAD_ROOT
    if name not in FIXTURE_BUILDERS:
        raise KeyError(f"no test fixture for dataset {name!r}; known: {sorted(FIXTURE_BUILDERS)}")
    root = _workdir() / name
    root.mkdir()
    FIXTURE_BUILDERS[name](root)
    return root


def make_kwargs(spec: gym.envs.registration.EnvSpec) -> dict:
    """Extra ``gym.make`` kwargs a registered id needs in tests (the data root of file datasets)."""
    dataset = spec.kwargs.get("dataset", "procedural")
    if dataset == "procedural":
        return {}
    return {"data_root": str(data_root(dataset))}


def make_spec(spec: gym.envs.registration.EnvSpec, **kwargs) -> gym.Env:
    return gym.make(spec.id, **{**make_kwargs(spec), **kwargs})


# Importing the builders registers them.
from . import dataset_layouts  # noqa: E402,F401
