"""A few thousand generated malformed actions over every action path and registered id, on every CI run.

The full 100,000-action run is ``python benchmarks/fuzz_actions.py`` (its numbers are in the README).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz_actions.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_actions", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_actions"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# smaller images than registered: the action paths do not depend on them, and the run is 3x faster
FAST = {"obs_size": 64, "return_views": False}


def test_fuzzed_actions_never_raise_and_every_record_stays_writable(fuzz) -> None:
    report = fuzz.run_fuzz(2500, seed=0, env_kwargs=FAST, log=lambda line: None)
    failures = [f for cell in report.cells for f in cell.failures]
    assert report.total("exceptions") == 0, failures
    assert report.total("unwritable") == 0, failures
    assert report.total("bad_output") == 0, failures
    assert report.ok
    assert report.total("actions") == 2500
    ids = {cell.env_id for cell in report.cells}
    assert {"MedVR-VQA-v0", "MedVR-VQA-Text-v0", "MedVR-VQA-Tensor-v0", "MedVR-VQA-Tensor-Discrete-v0"} <= ids
    assert ids | set(report.skipped) == set(fuzz.fuzz_ids())  # every registered id ran or says why not
    assert all("not found" in reason for reason in report.skipped.values())
    paths = {(cell.env_id, cell.path) for cell in report.cells if cell.actions > 0}
    assert len(paths) == len(report.cells)
    assert {cell.path for cell in report.cells} == {*fuzz.BASE_PATHS, fuzz.SB3_PATH}
    codes = set(report.to_dict()["error_codes"])
    # the generator reaches deep: every input-checking code and most schema and box codes show up
    assert {"text_too_long", "nested_too_deep", "not_json", "bad_view_sizes", "malformed_action", "bad_json",
            "wrong_type", "missing_argument", "unknown_tool"} <= codes
    assert len(codes) >= 16
    assert report.total("refused") > 0  # out-of-space SB3 encodings are refused, not played


def test_the_generator_is_deterministic_for_a_seed(fuzz) -> None:
    def codes(seed: int) -> dict[str, int]:
        report = fuzz.run_fuzz(60, seed=seed, env_ids=["MedVR-VQA-Tensor-v0"], env_kwargs=FAST, log=lambda line: None)
        assert report.ok
        return {f"{c.path}:{k}": v for c in report.cells for k, v in c.codes.items()}

    assert codes(5) == codes(5)
    assert codes(5) != codes(6)
