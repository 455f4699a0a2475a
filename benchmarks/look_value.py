"""What looking closer is worth on the procedural task, and how much *where* matters: the look-value table.

Every policy answers the same test-split samples of ``MedVR-VQA-v0`` (default env: 224 px observations,
8 steps) with the same patch reader and answer rules; only where they look differs:

- ``first view``: no zoom (the ``no-zoom`` agent);
- ``oracle``: one 4x zoom on each finding, targets and distractors, plus 2 random decoys, shuffled
  (the ``oracle`` agent; it reads the evaluation-only boxes, a reference, never a policy);
- ``random zooms``: as many random 4x zooms as the oracle makes on that sample (same budget);
- ``quadrant sweep``: 2x zooms on the four quadrants (the ``scripted`` agent);
- ``first-view guided``: up to 5 4x zooms on the first view's most finding-like spots (``guided``; no oracle);
- ``blob detector``: the old kind-blind detector and its quadrant search (``blob-detector``), for reference.

Printed: accuracy with a 95 % interval, mean zooms, accuracy by question type and by the asked finding
kind, paired differences (same samples) with 95 % intervals, chance (``1 / K`` candidate answers), and
the first-view leak check (global statistics, ridge regression, train -> test, against the prior).
Written atomically to ``--out``: ``look_value.json``, ``look_value.md``, ``look_value.png``.

Run::

    python benchmarks/look_value.py                    # 500 test samples; builds the patch reader on first use
    python benchmarks/look_value.py --samples 60       # a quick look
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

import medvr_env  # noqa: F401
from agents.leak_check import first_view_features, leak_check, pooled
from agents.metrics import is_correct
from agents.oracle import OracleAgent
from agents.patch_reader.store import load_reader
from agents.runner import play_episode, write_json, write_text
from agents.scripted import BlobDetectorAgent, GuidedZoomAgent, NoZoomAgent, QuadrantSweepAgent, RandomZoomAgent
from medvr_env.data.procedural import ANSWER_SETS, KINDS, QUESTION_TYPES, ProceduralDataset

Z = 1.96


def interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % interval."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()) if len(values) else math.nan, math.nan
    return float(values.mean()), Z * float(values.std(ddof=1)) / math.sqrt(len(values))


def fmt(values: np.ndarray) -> str:
    mean, half = interval(values)
    return f"{mean:.3f} ± {half:.3f}" if len(values) else "-"


def policies(reader: Any) -> dict[str, Callable[[Any], Any]]:
    """Name -> a function of the sample giving the agent that plays it."""
    oracle_budget = lambda sample: len(sample.meta["findings"]) + 2
    made = {
        "first view": NoZoomAgent(reader=reader),
        "oracle": OracleAgent(reader=reader),
        "quadrant sweep (scripted)": QuadrantSweepAgent(reader=reader),
        "first-view guided (guided)": GuidedZoomAgent(reader=reader),
        "blob detector": BlobDetectorAgent(),
    }
    random_agents = {k: RandomZoomAgent(reader=reader, max_zooms=k) for k in range(8)}
    out: dict[str, Callable[[Any], Any]] = {name: (lambda sample, a=agent: a) for name, agent in made.items()}
    out["random zooms (oracle's budget)"] = lambda sample: random_agents[min(7, oracle_budget(sample))]
    order = ["first view", "oracle", "random zooms (oracle's budget)", "quadrant sweep (scripted)",
             "first-view guided (guided)", "blob detector"]
    return {k: out[k] for k in order}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500, help="test-split samples (default: 500)")
    parser.add_argument("--reader", default=None, help="patch-reader checkpoint (default: the cached one)")
    parser.add_argument("--leak-train", type=int, default=2000, help="train samples for the leak check (0: skip)")
    parser.add_argument("--leak-test", type=int, default=1000, help="test samples for the leak check")
    parser.add_argument("--out", default="runs/look_value", help="output folder (default: runs/look_value)")
    parser.add_argument("--plot", default="", help="also write the PNG here (e.g. docs/images/look_value.png)")
    args = parser.parse_args()
    t0 = time.time()
    reader = load_reader(args.reader)
    dataset = ProceduralDataset("test", num_samples=args.samples)
    env = gym.make("MedVR-VQA-v0", dataset=dataset, split="test")
    samples = [dataset[i] for i in range(args.samples)]
    chance = np.array([1.0 / (len(s.options) or len(ANSWER_SETS[s.question_type])) for s in samples])

    table = policies(reader)
    correct: dict[str, np.ndarray] = {}
    zooms: dict[str, np.ndarray] = {}
    for name, agent_for in table.items():
        hits, looks = [], []
        for i in tqdm(range(args.samples), desc=name, mininterval=2.0):
            episode = play_episode(env, agent_for(samples[i]), options={"index": i})
            hits.append(float(is_correct(episode)))
            looks.append(len(episode.views) - 1)
        correct[name], zooms[name] = np.array(hits), np.array(looks)

    leak: dict[str, Any] = {}
    if args.leak_train:
        x_tr, s_tr = first_view_features(ProceduralDataset("train", num_samples=args.leak_train), args.leak_train, True)
        x_te, s_te = first_view_features(ProceduralDataset("test", num_samples=args.leak_test), args.leak_test, True)
        results = leak_check(x_tr, s_tr, x_te, s_te, ANSWER_SETS)
        acc, prior, n = pooled(results)
        leak = {"pooled_accuracy": acc, "pooled_prior": prior, "n_test": n,
                "by_type": {r.question_type: {"accuracy": r.accuracy, "prior": r.prior, "n": r.n_test}
                            for r in results}}

    # ------------------------------------------------------------------ tables
    names = list(table)
    qtypes = [q for q in QUESTION_TYPES if any(s.question_type == q for s in samples)]
    lines = [f"Test split, {args.samples} samples (the same for every policy); chance {chance.mean():.3f}.", "",
             "| look | accuracy (95 % CI) | mean zooms |", "|---|---|---|"]
    lines += [f"| {n} | {fmt(correct[n])} | {zooms[n].mean():.2f} |" for n in names]
    lines += ["", "Paired differences on the same samples (95 % CI):", "", "| difference | points |", "|---|---|"]
    sweep, guided, rand = "quadrant sweep (scripted)", "first-view guided (guided)", "random zooms (oracle's budget)"
    pairs = [("oracle", "first view"), ("oracle", rand), ("oracle", sweep), ("oracle", guided),
             (sweep, "first view"), (guided, "first view"), (guided, rand)]
    diffs = {}
    for a, b in pairs:
        mean, half = interval(correct[a] - correct[b])
        diffs[f"{a} - {b}"] = (mean, half)
        lines.append(f"| {a} - {b} | {100 * mean:+.1f} ± {100 * half:.1f} |")
    first_mean = correct["first view"].mean()
    lines += ["", f"First view vs chance: {100 * (first_mean - chance.mean()):+.1f} points "
                  f"({first_mean:.3f} vs {chance.mean():.3f})."]
    for title, key, groups in (("question type", "question_type", qtypes), ("asked finding kind", "target", KINDS)):
        lines += ["", f"By {title} (accuracy, ± 95 % CI half-width):", "",
                  "| " + title + " | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for g in groups:
            idx = np.array([(s.question_type if key == "question_type" else s.meta["target_kind"]) == g
                            for s in samples])
            if idx.any():
                cells = []
                for n in names:
                    mean, half = interval(correct[n][idx])
                    cells.append(f"{mean:.2f} ± {half:.2f}")
                lines.append(f"| {g} | {int(idx.sum())} | " + " | ".join(cells) + " |")
    if leak:
        lines += ["", f"First-view leak check (ridge regression on global statistics of the first view, "
                      f"{args.leak_train} train -> {leak['n_test']} test samples): accuracy "
                      f"{leak['pooled_accuracy']:.3f} vs prior {leak['pooled_prior']:.3f} "
                      f"(excess {100 * (leak['pooled_accuracy'] - leak['pooled_prior']):+.1f} points); "
                      "worst type: " + max((f"{q} {100 * (v['accuracy'] - v['prior']):+.1f}"
                                            for q, v in leak["by_type"].items()),
                                           key=lambda t: float(t.split()[-1]))]
    text = "\n".join(lines)
    print("\n" + text)

    out = Path(args.out)
    write_text(out / "look_value.md", text + "\n")
    write_json(out / "look_value.json", {
        "samples": args.samples, "chance": float(chance.mean()),
        "accuracy": {n: interval(correct[n]) for n in names}, "mean_zooms": {n: float(zooms[n].mean()) for n in names},
        "differences": diffs, "leak_check": leak, "seconds": round(time.time() - t0, 1),
        "per_sample": {n: correct[n].tolist() for n in names},
    })
    _plot(names, correct, chance.mean(), [out / "look_value.png"] + ([Path(args.plot)] if args.plot else []))
    print(f"\n{out / 'look_value.md'}  ({time.time() - t0:.0f} s)")


def _plot(names: list[str], correct: dict[str, np.ndarray], chance: float, targets: list[Path]) -> None:
    import os
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    means = [interval(correct[n])[0] for n in names]
    halves = [interval(correct[n])[1] for n in names]
    colors = ["#888888", "#d62728", "#bbbbbb", "#1f77b4", "#2ca02c", "#cccccc"][: len(names)]
    ax.barh(range(len(names)), means, xerr=halves, color=colors, capsize=3)
    ax.axvline(chance, color="k", ls=":", lw=1, label=f"chance {chance:.2f}")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="test accuracy (95 % CI)", title="Where you look: same reader, same samples")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".png", dir=target.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=110)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    plt.close(fig)


if __name__ == "__main__":
    main()
