"""The SB3 training example runs end to end as a subprocess with its tiny budget (CleanRL-style smoke test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parent.parent


def test_train_sb3_ppo_tiny(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_sb3_ppo.py"), "--tiny", "--out", str(out),
         "--plot", str(tmp_path / "curve.png")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    names = ["ppo", "ppo+regrounding", "maskable_ppo", "maskable_ppo+regrounding"]
    assert list(results["runs"]) == names
    for name in names:
        test = results["runs"][name]["test"]
        assert test["episodes"] == 3 and 0.0 <= test["accuracy"] <= 1.0 and 0.0 <= test["zoom_rate"] <= 1.0
        assert (out / f"{name}.zip").is_file()
    assert 0.0 < results["baselines"]["chance"] <= 1.0 and results["baselines"]["no_zoom"]["episodes"] == 3
    for png in (out / "learning_curve.png", tmp_path / "curve.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["obs_size"] == 128 and "random-weight stand-in" in results["reader"]["checkpoint"]  # --tiny
    for name in names:  # the policy minus the no-zoom agent on the same samples, with a 95 % half-width
        diff, half = results["runs"][name]["test"]["minus_no_zoom"]
        assert -1.0 <= diff <= 1.0 and half >= 0.0
    assert "| maskable_ppo |" in proc.stdout and "| chance |" in proc.stdout
    assert not list(out.glob(".*"))  # atomic writes leave no temp files


def test_bad_arguments_exit_with_a_message():
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "train_sb3_ppo.py"), "--algos", "a2c"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "--algos" in proc.stderr
