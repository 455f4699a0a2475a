"""Fixtures for the verl integration tests (they run in the verl venv, ``.ci-venv-verl``; each test module skips
itself when verl is not installed, so the main suite passes without it).

- ``tiny_qwen``: a random-weight Qwen2.5-VL checkpoint built offline (its processor and config are what verl's
  worker loads; its weights are never run: generation is the fake token server's, :mod:`tests.verl.fakes`).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    from agents.testing import build_tiny_vlm

    return build_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("verl_tiny") / "qwen2_5_vl")
