"""Run the whole issue-13 grid: six arms x seeds, equal token budget, one warm start, resumable, in parallel.

    python -m experiments.evr_cca.run_grid --budget 30000 --seeds 3 --jobs 2            # everything
    python -m experiments.evr_cca.run_grid --arms 2,5 --seeds 1 --budget 5000           # a subset
    python -m experiments.evr_cca.run_grid --aggregate-only                             # table and PNG again
    python -m experiments.evr_cca.run_grid --write-configs                              # only the arm YAMLs

What it does:

1. Writes one config per arm (``experiments/evr_cca/configs/<arm>.yaml``) from ``base.yaml`` and the overrides in
   :mod:`.arms`.
2. Checks the warm start (``--warmstart``, default ``runs/evr_cca/warmstart3/model``): the tiny VLM after SFT with
   random zoom boxes. With ``--build-warmstart`` it builds a missing one (:data:`WARMSTART_STAGES`, ``medvr sft``).
3. Runs every (arm, seed) not finished yet, ``--jobs`` at a time, each in its own process
   (``python -m experiments.evr_cca.train_run``, torch threads = cores / jobs, log in ``RUN/log.txt``), seed-major
   (every arm's seed 0 first), so a grid cut short still has balanced arms. A run is finished when its
   ``result.json`` exists (written last, atomically); an unfinished one resumes from its last stage and checkpoint.
4. After each finished run, copies its result and a trimmed learning curve into ``--results`` and rewrites the
   summary (``summary.md``: table, arm differences, targets; ``summary.json``; ``curves.png``).

Checkpoints and logs stay under ``--runs-dir`` (``runs/`` is git-ignored); ``--results`` holds small files only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Sequence

from agents.runner import write_json, write_jsonl, write_text

from .arms import (ARMS, BASE_CONFIG, CONFIG_DIR, Arm, arm_by_key, arm_document, read_arm_file, read_base,
                   write_arm_configs)
from .budget import EVR_GENERATED, GENERATED, read_records
from .train_run import RESULT

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WARMSTART = "runs/evr_cca/warmstart3/model"
DEFAULT_RUNS = "runs/evr_cca/grid"
DEFAULT_RESULTS = str(Path(__file__).resolve().parent / "results")
CURVE_KEYS = ("step", GENERATED, EVR_GENERATED, "evr/shared_generated_tokens", "evr/branch_rate", "medvr/branched",
              "medvr/accuracy", "medvr/answered", "medvr/well_formed", "medvr/tool_rate", "grad_norm", "probe/iou",
              "probe/window_iou", "probe/coverage", "rewards/tool/mean", "rewards/accuracy/mean", "entropy",
              "medvr/rollout_entropy", "reward")
# The warm start used for the reported grid: three SFT stages of the bundled-size tiny VLM on 800 procedural train
# samples with RANDOM zoom boxes (no VQA-RAD, no grounding taught). Large batches first (cheap epochs on the
# prefix tree), then small batches: the from-scratch decoder needs many optimizer steps to write valid JSON calls.
WARMSTART_STAGES: tuple[str, ...] = (
    "medvr sft --out runs/evr_cca/warmstart --boxes random --no-vqa-rad --procedural 800 --epochs 4 --threads 1",
    "medvr sft --init runs/evr_cca/warmstart/model --out runs/evr_cca/warmstart2 --boxes random --no-vqa-rad "
    "--procedural 800 --epochs 2 --batch-size 16 --lr 1e-3 --threads 1",
    "medvr sft --init runs/evr_cca/warmstart2/model --out runs/evr_cca/warmstart3 --boxes random --no-vqa-rad "
    "--procedural 800 --epochs 4 --batch-size 16 --lr 1e-3 --threads 1",
)


# ---------------------------------------------------------------------------------------------- one run
def run_dir(runs_dir: str | Path, arm: Arm, seed: int) -> Path:
    return Path(runs_dir) / arm.key / f"seed{seed}"


def run_command(arm_file: Path, seed: int, folder: Path, model: str, budget: int, eval_questions: int,
                threads: int) -> list[str]:
    return [sys.executable, "-m", "experiments.evr_cca.train_run", "--arm-file", str(arm_file), "--seed", str(seed),
            "--run-dir", str(folder), "--model", str(model), "--budget", str(budget), "--eval-questions",
            str(eval_questions), "--threads", str(threads), "--no-progress"]


def launch_subprocess(arm_file: Path, seed: int, folder: Path, model: str, budget: int, eval_questions: int,
                      threads: int) -> None:
    """Run one (arm, seed) in its own process, its output appended to ``folder/log.txt``; raises on failure."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = run_command(arm_file, seed, folder, model, budget, eval_questions, threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(
               [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(folder / "log.txt", "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if rc != 0:
        raise RuntimeError(f"run {folder} failed (exit {rc}); see {folder / 'log.txt'}")


def launch_inline(arm_file: Path, seed: int, folder: Path, model: str, budget: int, eval_questions: int,
                  threads: int) -> None:
    """Run one (arm, seed) in this process (tests; one job at a time)."""
    from .train_run import run

    run(arm_file, seed, folder, model, budget, eval_questions, progress=False)


Launcher = Callable[[Path, int, Path, str, int, int, int], None]


# ---------------------------------------------------------------------------------------------- results
def publish_run(folder: Path, arm: Arm, seed: int, results: Path, rollouts_per_step: int) -> None:
    """Copy a finished run's result (plus the rollouts per step its curve's token axis needs) and its trimmed
    learning curve into ``results/runs/<arm>/``."""
    record = json.loads((folder / RESULT).read_text(encoding="utf-8"))
    record["rollouts_per_step"] = int(rollouts_per_step)
    out = results / "runs" / arm.key
    write_json(out / f"seed{seed}.json", record)
    curve = [{k: r[k] for k in CURVE_KEYS if k in r} for r in read_records(folder / "train" / "metrics.jsonl")
             if GENERATED in r]
    write_jsonl(out / f"seed{seed}.curve.jsonl", curve)


def collect(results: Path, arms: Sequence[Arm] = ARMS) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, int]]]]:
    """Published results and, per arm, ``(curve file, rollouts per step)`` of each seed."""
    records, curves = [], {}
    for arm in arms:
        folder = results / "runs" / arm.key
        for path in sorted(folder.glob("seed*.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            records.append(record)
            curve = path.with_name(f"{path.stem}.curve.jsonl")
            if curve.is_file():
                curves.setdefault(arm.key, []).append((str(curve), int(record.get("rollouts_per_step", 0))))
    return records, curves


def aggregate(results: Path, grid: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``summary.md``, ``summary.json`` and ``curves.png`` from the published runs."""
    import numpy as np

    from .aggregate import (comparison_table, plot_curves, question_type_table, run_curve, seed_curve, summary_table,
                            targets, targets_markdown)

    records, curves = collect(results)
    if not records:
        return {}
    budget = int(grid["budget"])
    plotted = plot_curves(curves, results / "curves.png", budget,
                          title=f"GRPO learning curves, tiny VLM, {budget} generated tokens per run "
                                f"(training rollouts; mean over seeds, band: 95 % t-interval)") if curves else {}
    grid_tokens = np.linspace(0, budget, 101)[1:]
    seed_curves = {}
    for key in ("arm2_tools", "arm3_evr"):
        seed_curves[key] = [seed_curve(x, y, grid_tokens) for x, y in
                            (run_curve(p, "medvr/accuracy", n) for p, n in curves.get(key, [])) if x.size]
    rows = targets(records, plotted, budget, seed_curves)
    finished = sorted({(r["arm"]["key"], r["seed"]) for r in records})
    text = "\n".join([
        "# EVR + CCA grid: results (generated by experiments/evr_cca/run_grid.py; do not edit)", "",
        f"Runs finished: {len(finished)} of {grid.get('planned_runs', '?')}; budget {budget} generated tokens per run; "
        f"{grid.get('eval_questions')} test questions per run. Command: `{grid.get('command')}`", "",
        "Mean ± 95 % t-interval half-width over seeds (n = seeds).", "", summary_table(records),
        *(["The warm start every arm starts from, on the same questions (one evaluation):", "",
           warmstart_table(json.loads((results / "warmstart.json").read_text(encoding="utf-8")))]
          if (results / "warmstart.json").is_file() else []),
        "Test accuracy (%) by question type (n: questions of that type among the test questions):", "",
        question_type_table(records),
        "## Differences between arms (Welch 95 % interval)", "", comparison_table(records),
        "## The issue's targets", "", targets_markdown(rows),
    ])
    write_text(results / "summary.md", text)
    summary = {"grid": grid, "finished": [list(f) for f in finished], "targets": rows, "curves": plotted}
    write_json(results / "summary.json", summary)
    return summary


def evaluate_warmstart(warmstart: str, results: Path, eval_questions: int, base: str | Path = BASE_CONFIG,
                       progress: bool = False) -> dict[str, Any]:
    """The warm start itself (no RL) on the same test questions, with tools (arm 2's env) and without (arm 1's);
    written to ``results/warmstart.json`` (skipped when it exists for the same questions)."""
    from .evaluate import evaluate_checkpoint

    path = results / "warmstart.json"
    if path.is_file():
        done = json.loads(path.read_text(encoding="utf-8"))
        if done.get("eval_questions") == eval_questions and done.get("warmstart") == str(warmstart):
            return done
    out: dict[str, Any] = {"warmstart": str(warmstart), "eval_questions": eval_questions}
    for name, key in (("tools", "arm2_tools"), ("no_tools", "arm1_outcome")):
        train = arm_document(arm_by_key(key), read_base(base))["train"]
        policy = train["policy"]
        out[name] = evaluate_checkpoint(str(warmstart), train["env"]["id"], train["env"]["kwargs"],
                                        questions=eval_questions, max_new_tokens=policy["max_new_tokens"],
                                        max_turns=policy["max_turns"], progress=progress)
    write_json(path, out)
    return out


def warmstart_table(done: dict[str, Any]) -> str:
    """Markdown: the warm start's numbers (one evaluation each, no seeds)."""
    lines = ["| warm start (no RL) | accuracy (%) | tool rate (%) | zooms / episode | mIoU vs boxes | "
             "IoU vs reading windows | finding in zoom (%) | tokens / test episode |", "|---|---|---|---|---|---|---|---|"]
    for name in ("no_tools", "tools"):
        r = done.get(name)
        if r:
            lines.append(f"| {name.replace('_', ' ')} | {100 * r['accuracy']:.1f} | {100 * r['tool_rate']:.1f} | "
                         f"{r['zooms_per_episode']:.2f} | {r['miou']:.4f} | {r['window_iou']:.3f} | "
                         f"{100 * r['coverage']:.1f} | {r['generated_tokens_per_episode']:.1f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- the grid
def ensure_warmstart(path: str, build: bool) -> None:
    """Check the warm start; with ``build``, run the :data:`WARMSTART_STAGES` that have no model yet."""
    model = Path(path)
    if (model / "config.json").is_file():
        return
    if not build or str(model) != DEFAULT_WARMSTART:
        steps = " && ".join(WARMSTART_STAGES)
        raise FileNotFoundError(f"no warm-start checkpoint at {model}; the reported grid's is built by `{steps}` "
                                f"(or pass --build-warmstart with the default --warmstart)")
    for cmd in WARMSTART_STAGES:
        out = Path(shlex.split(cmd)[shlex.split(cmd).index("--out") + 1])
        if (out / "model" / "config.json").is_file():
            continue
        print(f"building the warm start: {cmd}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "log.txt", "a", encoding="utf-8") as log:
            rc = subprocess.call(shlex.split(cmd) + ["--no-progress"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        if rc != 0:
            raise RuntimeError(f"building the warm start failed (exit {rc}); see {out / 'log.txt'}")


def run_grid(*, arms: Sequence[Arm], seeds: Sequence[int], budget: int, warmstart: str, runs_dir: str | Path,
             results: str | Path, configs_dir: str | Path = CONFIG_DIR, base: str | Path = BASE_CONFIG,
             jobs: int = 1, eval_questions: int = 200, launcher: Launcher | None = None,
             command: str = "", notes: str = "", progress: bool = True) -> dict[str, Any]:
    """Run every unfinished (arm, seed), then aggregate; returns the summary. See the module docstring."""
    from tqdm.auto import tqdm

    results, runs_dir = Path(results), Path(runs_dir)
    paths = {p.stem: p for p in write_arm_configs(base, configs_dir, tuple(arms))}
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    launcher = launcher or launch_subprocess
    plan = [(arm, seed) for seed in seeds for arm in arms]
    grid = {"command": command, "budget": int(budget), "seeds": list(seeds), "arms": [a.key for a in arms],
            "jobs": jobs, "threads_per_job": threads, "eval_questions": eval_questions, "warmstart": str(warmstart),
            "base": str(base), "planned_runs": len(plan), "notes": notes}
    for arm in arms:
        _, train = read_arm_file(paths[arm.key])
        grid.setdefault("rollouts_per_step", {})[arm.key] = int(train["grpo"]["per_device_train_batch_size"])
    write_json(results / "grid.json", grid)
    todo = []
    for arm, seed in plan:
        folder = run_dir(runs_dir, arm, seed)
        if (folder / RESULT).is_file():
            publish_run(folder, arm, seed, results, grid["rollouts_per_step"][arm.key])
        else:
            todo.append((arm, seed, folder))
    lock = threading.Lock()
    failures: list[str] = []
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="grid", unit="run", disable=not progress)

    def one(arm: Arm, seed: int, folder: Path) -> None:
        launcher(paths[arm.key], seed, folder, warmstart, budget, eval_questions, threads)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(one, arm, seed, folder): (arm, seed, folder) for arm, seed, folder in todo}
            for future in as_completed(futures):
                arm, seed, folder = futures[future]
                with lock:
                    try:
                        future.result()
                        publish_run(folder, arm, seed, results, grid["rollouts_per_step"][arm.key])
                        aggregate(results, grid)
                    except Exception as exc:  # one failed run must not stop the grid
                        failures.append(f"{arm.key} seed {seed}: {exc}")
                        print(f"FAILED {arm.key} seed {seed}: {exc}", file=sys.stderr, flush=True)
                    bar.update(1)
    finally:
        bar.close()
    grid["failures"] = failures
    write_json(results / "grid.json", grid)
    return aggregate(results, grid)


def parse_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.evr_cca.run_grid",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default="1,2,3,4,5,6", help="comma-separated arm ids, names or keys")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (see --seed-list)")
    p.add_argument("--seed-list", default=None, help="explicit comma-separated seeds")
    p.add_argument("--budget", type=int, default=30000, help="generated tokens per run")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets cores/jobs torch threads)")
    p.add_argument("--eval-questions", type=int, default=200, help="procedural test questions per run")
    p.add_argument("--warmstart", default=DEFAULT_WARMSTART, help="warm-start checkpoint (SFT with random boxes)")
    p.add_argument("--build-warmstart", action="store_true",
                   help="build a missing default warm start with medvr sft (WARMSTART_STAGES, ~25 CPU-minutes)")
    p.add_argument("--base", default=str(BASE_CONFIG))
    p.add_argument("--configs-dir", default=str(CONFIG_DIR))
    p.add_argument("--runs-dir", default=DEFAULT_RUNS)
    p.add_argument("--results", default=DEFAULT_RESULTS)
    p.add_argument("--notes", default="", help="a sentence recorded in grid.json and the summary (e.g. budget cuts)")
    p.add_argument("--write-configs", action="store_true", help="only write the arm configs, then exit")
    p.add_argument("--eval-warmstart", action="store_true",
                   help="only evaluate the warm start (with and without tools) on the test questions, then exit")
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild summary and PNG from --results")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        arms = [arm_by_key(a) for a in parse_list(args.arms)]
        seeds = [int(s) for s in parse_list(args.seed_list)] if args.seed_list else list(range(args.seeds))
    except (KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not arms or not seeds or args.budget < 1 or args.jobs < 1 or args.eval_questions < 1:
        print("error: need at least one arm and seed, --budget >= 1, --jobs >= 1, --eval-questions >= 1",
              file=sys.stderr)
        return 2
    if args.write_configs:
        for path in write_arm_configs(args.base, args.configs_dir, tuple(arms)):
            print(path)
        return 0
    results = Path(args.results)
    if args.eval_warmstart:
        evaluate_warmstart(args.warmstart, results, args.eval_questions, args.base, not args.no_progress)
        print(results / "warmstart.json")
        return 0
    if args.aggregate_only:
        grid_file = results / "grid.json"
        if not grid_file.is_file():
            print(f"error: {grid_file} not found: run the grid first", file=sys.stderr)
            return 2
        summary = aggregate(results, json.loads(grid_file.read_text(encoding="utf-8")))
        print(results / "summary.md" if summary else "no finished runs yet")
        return 0
    try:
        ensure_warmstart(args.warmstart, args.build_warmstart)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python -m experiments.evr_cca.run_grid " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
    summary = run_grid(arms=arms, seeds=seeds, budget=args.budget, warmstart=args.warmstart, runs_dir=args.runs_dir,
                       results=results, configs_dir=args.configs_dir, base=args.base, jobs=args.jobs,
                       eval_questions=args.eval_questions, command=command, notes=args.notes,
                       progress=not args.no_progress)
    failures = summary.get("grid", {}).get("failures") if summary else None
    print(results / "summary.md" if summary else "no finished runs")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
