"""``medvr run`` / ``medvr eval``: every user mistake is one clear line and a non-zero exit; Ctrl-C keeps what finished.

Also: every id ``medvr envs`` lists runs with every bundled agent that needs no weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

import medvr_env  # noqa: F401  (registers the ids)
from agents.base import AGENTS, make_agent, policy_env
from agents.cli import UsageError, main, parse_value
from medvr_env.registration import load_registry

from .dataset_fixtures import make_kwargs

REPO = Path(__file__).resolve().parents[1]
VLM_AGENTS = {"vlm", "tiny"}  # need weights (a checkpoint, or the tiny model `medvr sft --bundled` builds)
WEIGHTLESS_AGENTS = sorted(set(AGENTS) - VLM_AGENTS)
ENV_IDS = [entry["id"] for entry in load_registry()]


def _one_line_error(capsys, argv, *needles):
    """Run ``medvr argv``; it must fail with exit 2 and one line on stderr containing every needle."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(needle in lines[0] for needle in needles), lines[0]
    return lines[0]


# ------------------------------------------------------------------ --env-kwarg / --agent-kwarg values
@pytest.mark.parametrize("text, value", [
    ("6", 6), ("-2.5e3", -2500.0), ("true", True), ("null", None), ('"6"', "6"), ('["zoom", "answer"]', ["zoom", "answer"]),
    ('{"a": 1}', {"a": 1}), ("test", "test"), ("2024-data", "2024-data"), ("0x10", "0x10"), ("True", "True"), ("", ""),
    ("/data/vqa rad", "/data/vqa rad"), (" 7 ", 7),
])
def test_kwarg_values_are_json_only_when_they_look_like_json(text, value):
    assert parse_value(text, "--env-kwarg", "k") == value


@pytest.mark.parametrize("text, where", [("[zoom, answer]", "line 1, column 2"), ('{"a": 1', "line 1, column 8"),
                                         ('"open', "line 1, column 1"), ("[1,\n 2,]", "line 2, column 4")])
def test_kwarg_values_that_look_like_json_but_are_not_say_where(text, where):
    with pytest.raises(UsageError, match=f"--env-kwarg k=.*invalid JSON at {where}"):
        parse_value(text, "--env-kwarg", "k")


# ------------------------------------------------------------------ one line per mistake
def test_run_mistakes_are_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = ["--out", str(tmp_path), "--no-progress"]
    _one_line_error(capsys, ["run", "--seed", "-5", *out], "--seed", "at least 0", "-5")
    _one_line_error(capsys, ["run", "--seed", "x", *out], "--seed", "integer")
    _one_line_error(capsys, ["run", "--episodes", "0", *out], "--episodes", "at least 1")
    _one_line_error(capsys, ["run", "--episodes", "1", "--out", str(afile / "sub")], "--out", "afile is a file")
    _one_line_error(capsys, ["run", "--env", "Nope-v0", *out], "unknown env id 'Nope-v0'", "medvr envs")
    _one_line_error(capsys, ["run", "--agent", "nobody", *out], "unknown agent 'nobody'", "scripted")
    _one_line_error(capsys, ["run", "--agent", "os.path:nothing_here", *out], "cannot import agent")
    _one_line_error(capsys, ["run", "--env-kwarg", "tools=[zoom, answer]", *out], "invalid JSON at line 1, column 2")
    _one_line_error(capsys, ["run", "--agent-kwarg", "max_zooms={2", *out], "--agent-kwarg", "invalid JSON")
    _one_line_error(capsys, ["run", "--env-kwarg", "novalue", *out], "KEY=VALUE")
    _one_line_error(capsys, ["run", "--env-kwarg", "max_steps=abc", *out], "max_steps")
    _one_line_error(capsys, ["run", "--env-kwarg", 'tools=["zoom"]', *out], "terminal tool")
    _one_line_error(capsys, ["run", "--agent", "random", "--agent-kwarg", "colour=3", *out], "colour")
    _one_line_error(capsys, ["run", "--env", "MedVR-VQA-RAD-v0", "--data-root", str(tmp_path / "absent"), *out],
                    "VQA-RAD not found")
    _one_line_error(capsys, ["run", "--split", "nosuch", *out], "split")
    _one_line_error(capsys, ["run", "--agent", "oracle", "--split", "train", *out], "oracle", "not for the train split")
    _one_line_error(capsys, ["run", "--bogus"], "unrecognized arguments: --bogus")
    assert not list(tmp_path.glob("MedVR-*")), "nothing is written for a run that could not start"


def test_eval_mistakes_are_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path), "--no-progress"]
    _one_line_error(capsys, ["eval", *out], "--env is required", "--resume")
    _one_line_error(capsys, ["eval", "--env", "MedVR-VQA-v0", "--limit", "0", *out], "--limit", "at least 1")
    _one_line_error(capsys, ["eval", "--env", "MedVR-VQA-v0", "--agent", "nobody", *out], "unknown agent")
    _one_line_error(capsys, ["eval", "--resume", str(tmp_path / "nothing")], "--resume", "no eval.json")
    done = tmp_path / "done"
    done.mkdir()
    (done / "eval.json").write_text("{not json")
    _one_line_error(capsys, ["eval", "--resume", str(done)], "cannot read")
    (done / "eval.json").write_text(json.dumps({"env": ["MedVR-VQA-v0"], "agent": ["random"], "split": "test",
                                                "seed": 0, "limit": 2, "env_kwargs": {}}))
    _one_line_error(capsys, ["eval", "--resume", str(done), "--env", "MedVR-VQA-v0", "--seed", "3"],
                    "drop --env, --seed")
    assert main(["eval", "--env", "MedVR-VQA-v0", "--agent", "random", "--limit", "2", "--env-kwarg", "num_samples=4",
                 "--out", str(tmp_path / "small"), "--no-progress", "--no-report"]) == 0
    small = next((tmp_path / "small").glob("eval_*"))
    settings = json.loads((small / "eval.json").read_text())
    (small / "eval.json").write_text(json.dumps({**settings, "limit": 1}))
    _one_line_error(capsys, ["eval", "--resume", str(small)], "holds 2 records but this evaluation has 1 questions")


# ------------------------------------------------------------------ every id with every bundled agent
@pytest.mark.parametrize("agent", WEIGHTLESS_AGENTS)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_listed_id_runs_with_every_bundled_agent(env_id, agent, tmp_path, capsys):
    spec = gym.spec(env_id)
    extra = [f"--data-root={root}" for root in make_kwargs(spec).values()]
    procedural = spec.kwargs.get("dataset") == "procedural"
    if procedural:
        extra += ["--env-kwarg", "num_samples=16"]  # the majority agent counts its prior over every training sample
    if agent == "oracle":
        extra += ["--split", "test"]  # it refuses the train split
    argv = ["run", "--env", env_id, "--agent", agent, "--episodes", "2", "--out", str(tmp_path), "--no-progress", *extra]
    if agent == "oracle" and not procedural:  # it reads the procedural dataset's finding boxes: elsewhere, one line
        _one_line_error(capsys, argv, "oracle", "finding boxes")
        return
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(next(tmp_path.glob("*/summary.json")).read_text())
    assert summary["episodes"] == 2 and summary["interrupted"] is False
    lines = next(tmp_path.glob("*/trajectories.jsonl")).read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["stop_reason"] for line in lines)


# ------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_in_run_keeps_what_finished(tmp_path, capsys):
    """The agent raises KeyboardInterrupt (as Ctrl-C does) at the start of its 4th episode."""
    code = main(["run", "--agent", "tests.test_streaming:ZoomThenAnswer", "--agent-kwarg", "interrupt_at=3",
                 "--episodes", "10", "--out", str(tmp_path), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 130 and "Traceback" not in captured.err
    assert "interrupted after 3 of 10 episodes" in captured.err and "interrupted, 3 of 10 episodes" in captured.out
    summary = json.loads(next(tmp_path.glob("*/summary.json")).read_text())
    assert (summary["episodes"], summary["episodes_requested"], summary["interrupted"]) == (3, 10, True)
    assert len(next(tmp_path.glob("*/trajectories.jsonl.partial")).read_text().splitlines()) == 3


def test_ctrl_c_in_eval_then_resume_gives_the_uninterrupted_results(tmp_path, capsys):
    common = ["--env", "MedVR-VQA-v0", "--agent", "tests.test_streaming:Mixed", "--limit", "7",
              "--env-kwarg", "num_samples=7", "--no-progress"]
    assert main(["eval", *common, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads(next((tmp_path / "whole").glob("eval_*/results.json")).read_text())

    code = main(["eval", *common, "--agent-kwarg", "interrupt_at=3", "--out", str(tmp_path / "cut")])
    captured = capsys.readouterr()
    folder = next((tmp_path / "cut").glob("eval_*"))
    assert code == 130 and "Traceback" not in captured.err
    assert "3 of 7 questions" in captured.err and f"medvr eval --resume {folder}" in captured.err
    assert not (folder / "results.json").exists()
    # the saved settings say interrupt_at=3: resume with an agent that does not interrupt
    settings = json.loads((folder / "eval.json").read_text())
    settings["agent_kwargs"] = {}
    (folder / "eval.json").write_text(json.dumps(settings))
    assert main(["eval", "--resume", str(folder), "--no-progress"]) == 0
    resumed = json.loads((folder / "results.json").read_text())
    for r in whole["results"] + resumed["results"]:
        r.pop("seconds")
    assert resumed == whole


def test_sigint_stops_a_run_cleanly(tmp_path):
    """A real SIGINT to `medvr run` (what Ctrl-C sends), once the first episode is on disk."""
    # Started the way the installed `medvr` console script starts it (sys.exit(main())).
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from agents.cli import main; sys.exit(main())",
                             "run", "--agent", "random", "--episodes", "100000",
                             "--out", str(tmp_path), "--no-progress"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size for p in tmp_path.glob("*/trajectories.jsonl.partial")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted after" in err and "episodes" in out
    summary = json.loads(next(tmp_path.glob("*/summary.json")).read_text())
    kept = next(tmp_path.glob("*/trajectories.jsonl.partial")).read_text().splitlines()
    assert summary["interrupted"] and summary["episodes"] >= 1 and len(kept) >= summary["episodes"]


def test_bundled_agents_step_the_medvr_env_under_sb3_wrappers():
    env = gym.make("MedVR-VQA-Tensor-Discrete-v0")
    acting = policy_env(env, make_agent("random"))
    assert acting is not env and acting.unwrapped is env.unwrapped
    assert acting.observation_space == env.unwrapped.observation_space and acting.action_space == env.unwrapped.action_space

    class SB3Policy:  # a policy trained on the wrapper's encoding gets the env as given
        acts_in_wrapper_spaces = True

    assert policy_env(env, SB3Policy()) is env
    plain = gym.make("MedVR-VQA-v0")
    assert policy_env(plain, make_agent("random")) is plain  # nothing to peel: time limits and checks stay


@pytest.mark.parametrize("argv, message", [
    (["sft", "--init", "{tmp}/none", "--out", "{tmp}/o", "--max-steps", "1"], "--init {tmp}/none: no checkpoint there"),
    (["sft", "--out", "{tmp}/file/x", "--max-steps", "1"], "--out {tmp}/file/x: cannot create the folder"),
    (["train-patch-reader", "--out", "{tmp}/file/x/reader.pt"], "cannot create the folder"),
    (["run", "--agent", "tiny", "--model", "{tmp}/none", "--episodes", "1", "--no-report"],
     "--model {tmp}/none: no checkpoint there"),
])
def test_long_commands_refuse_a_bad_path_before_any_work(tmp_path, capsys, argv, message):
    """A wrong --init/--model or an --out under a file is one line and exit 2 at once, not after minutes of training."""
    (tmp_path / "file").write_text("a file, not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # delegated commands exit through their own argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message.replace("{tmp}", str(tmp_path)) in err and "Traceback" not in err
