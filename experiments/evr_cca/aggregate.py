"""Aggregate the grid over seeds: mean and 95 % t-interval per arm, differences between arms, learning curves.

- :func:`t_interval`: ``mean ± t(0.975, n-1)·s/√n`` (Student's t; ``s`` the sample standard deviation). With one
  seed the half-width is undefined (``nan``, printed as "n=1").
- :func:`welch_difference`: the difference of two arms' means with its 95 % Welch interval (unequal variances,
  Welch-Satterthwaite degrees of freedom); a difference whose interval contains 0 is inside the seed noise.
- :func:`summary_table`: the Markdown table of the report (:func:`question_type_table`: accuracy per question type); :func:`comparison_table`: the arm differences;
  :func:`targets`: the issue's three targets, each met or not with the numbers that decide it.
- :func:`plot_curves`: accuracy, grounding, tool reward, entropy and tool rate of the training rollouts against
  generated tokens, one line per arm (mean over seeds) with a band (the 95 % t-interval over seeds).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .budget import cumulative_tokens, read_records

# (label, getter, scale, digits) of the summary table's columns
Getter = Callable[[Mapping[str, Any]], float | None]


def _get(*path: str) -> Getter:
    def get(record: Mapping[str, Any]) -> float | None:
        value: Any = record
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return None if value is None else float(value)

    return get


METRICS: dict[str, tuple[str, Getter, float, int]] = {
    "accuracy": ("accuracy (%)", _get("eval", "accuracy"), 100.0, 1),
    "miou": ("mIoU vs boxes", _get("eval", "miou"), 1.0, 4),
    "window_iou": ("IoU vs reading windows", _get("eval", "window_iou"), 1.0, 3),
    "coverage": ("finding in zoom (%)", _get("eval", "coverage"), 100.0, 1),
    "tool_rate": ("tool rate (%)", _get("eval", "tool_rate"), 100.0, 1),
    "zooms": ("zooms / episode", _get("eval", "zooms_per_episode"), 1.0, 2),
    "branch_rate": ("branch rate (train, %)", _get("training", "branch_rate"), 100.0, 1),
    "branched": ("branches in groups (train, %)", _get("training", "branched"), 100.0, 1),
    "train_tokens": ("generated tokens (train)", _get("training", "generated_tokens"), 1.0, 0),
    "eval_tokens": ("tokens / test episode", _get("eval", "generated_tokens_per_episode"), 1.0, 1),
}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half-width)`` of the ``confidence`` Student-t interval of the mean (half-width ``nan`` for n < 2)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, half


def welch_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean(a) - mean(b), low, high)``: the Welch ``confidence`` interval of the difference (``nan`` bounds when
    either side has fewer than 2 values)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return diff, math.nan, math.nan
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * se)
    return diff, diff - half, diff + half


def by_arm(results: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Results grouped by arm key, arms in id order, seeds in order."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in sorted(results, key=lambda r: (int(r["arm"]["id"]), int(r["seed"]))):
        groups[r["arm"]["key"]].append(r)
    return dict(groups)


def values(runs: Sequence[Mapping[str, Any]], metric: str) -> list[float]:
    _, get, scale, _ = METRICS[metric]
    out = []
    for r in runs:
        v = get(r)
        if v is not None and not math.isnan(v):
            out.append(v * scale)
    return out


def _fmt(mean: float, half: float, digits: int, n: int) -> str:
    if math.isnan(mean):
        return "–"
    if n < 2 or math.isnan(half):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def question_types(results: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in results:
        for qt in (r.get("eval", {}).get("by_question_type") or {}):
            seen.setdefault(qt, None)
    return sorted(seen)


def summary_table(results: Sequence[Mapping[str, Any]], metrics: Sequence[str] = tuple(METRICS)) -> str:
    """Markdown: one row per arm, ``mean ± 95 % half-width`` over seeds per metric."""
    groups = by_arm(results)
    header = ["arm", "seeds"] + [METRICS[m][0] for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, runs in groups.items():
        row = [key, str(len(runs))]
        for m in metrics:
            vals = values(runs, m)
            mean, half = t_interval(vals)
            row.append(_fmt(mean, half, METRICS[m][3], len(vals)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def question_type_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: test accuracy (%) per question type, one row per arm, ``mean ± 95 % half-width`` over seeds."""
    groups = by_arm(results)
    qts = question_types(results)
    sizes = {}
    for r in results:
        for qt, v in (r.get("eval", {}).get("by_question_type") or {}).items():
            sizes.setdefault(qt, v.get("n"))
    header = ["arm", "seeds"] + [f"{qt} (n={sizes.get(qt)})" for qt in qts]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, runs in groups.items():
        row = [key, str(len(runs))]
        for qt in qts:
            vals = [100.0 * r["eval"]["by_question_type"][qt]["accuracy"] for r in runs
                    if qt in (r["eval"].get("by_question_type") or {})]
            mean, half = t_interval(vals)
            row.append(_fmt(mean, half, 1, len(vals)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


COMPARISONS = (("arm5_evr_cca", "arm2_tools"), ("arm3_evr", "arm2_tools"), ("arm4_cca", "arm2_tools"),
               ("arm5_evr_cca", "arm4_cca"), ("arm5_evr_cca", "arm3_evr"), ("arm2_tools", "arm1_outcome"),
               ("arm6_box", "arm5_evr_cca"))


def comparison_table(results: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("accuracy", "window_iou", "miou"),
                     pairs: Sequence[tuple[str, str]] = COMPARISONS) -> str:
    """Markdown: for each pair of arms and metric, the difference of means, its 95 % Welch interval, and whether it
    is inside the seed noise (the interval contains 0)."""
    groups = by_arm(results)
    lines = ["| comparison | metric | difference | 95 % interval | inside the seed noise? |", "|---|---|---|---|---|"]
    for a, b in pairs:
        if a not in groups or b not in groups:
            continue
        for m in metrics:
            va, vb = values(groups[a], m), values(groups[b], m)
            if not va or not vb:
                continue
            diff, lo, hi = welch_difference(va, vb)
            digits = METRICS[m][3]
            if math.isnan(lo):
                interval, verdict = "n < 2", "unknown"
            else:
                interval = f"[{lo:.{digits}f}, {hi:.{digits}f}]"
                verdict = "yes" if lo <= 0 <= hi else "no"
            lines.append(f"| {a} − {b} | {METRICS[m][0]} | {diff:+.{digits}f} | {interval} | {verdict} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- curves
CURVES: tuple[tuple[str, str], ...] = (
    ("medvr/accuracy", "training accuracy"),
    ("probe/iou", "mIoU vs evaluation boxes"),
    ("probe/window_iou", "IoU vs reading windows"),
    ("rewards/tool/mean", "tool reward"),
    ("entropy", "token entropy (nats)"),
    ("medvr/tool_rate", "tool rate"),
)


def run_curve(metrics_path: str | os.PathLike, key: str, rollouts_per_step: int) -> tuple[np.ndarray, np.ndarray]:
    """``(cumulative generated tokens, value)`` at each logged step of a run that logged ``key``."""
    records = [r for r in read_records(metrics_path) if "medvr/generated_tokens" in r]
    tokens = cumulative_tokens(records, rollouts_per_step)
    xs, ys = [], []
    for (step, total), r in zip(tokens, records):
        v = r.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            xs.append(total)
            ys.append(float(v))
    return np.asarray(xs), np.asarray(ys)


def smooth(y: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average over ``k`` points (shorter at the start)."""
    if y.size == 0 or k <= 1:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, y.size + 1)
    lo = np.maximum(0, idx - k)
    return (c[idx] - c[lo]) / (idx - lo)


def seed_curve(x: np.ndarray, y: np.ndarray, grid: np.ndarray, k: int = 5) -> np.ndarray:
    """One seed's curve smoothed over ``k`` points and interpolated on ``grid`` (``nan`` outside its logged range)."""
    ys = np.interp(grid, x, smooth(y, k), left=np.nan, right=np.nan)
    ys[grid > x[-1]] = np.nan
    return ys


def arm_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray, k: int = 5
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and the 95 % t-band of smoothed curves interpolated on ``grid`` (tokens); ``nan`` where a
    seed has no data yet (before its first or after its last logged point)."""
    rows = [seed_curve(x, y, grid, k) for x, y in curves if x.size]
    if not rows:
        nan = np.full(grid.shape, np.nan)
        return nan, nan, nan
    m = np.vstack(rows)
    mean, lo, hi = (np.full(grid.shape, np.nan) for _ in range(3))
    for j in range(grid.size):
        col = m[:, j][~np.isnan(m[:, j])]
        if col.size:
            mu, half = t_interval(col.tolist())
            mean[j] = mu
            lo[j], hi[j] = (mu - half, mu + half) if not math.isnan(half) else (mu, mu)
    return mean, lo, hi


def tokens_to_reach(grid: np.ndarray, curve: np.ndarray, level: float) -> float | None:
    """The first grid point where ``curve`` reaches ``level`` (``None``: never)."""
    hit = np.where(~np.isnan(curve) & (curve >= level))[0]
    return float(grid[hit[0]]) if hit.size else None


def plot_curves(runs: Mapping[str, Sequence[tuple[str, int]]], path: str | os.PathLike, budget: int,
                title: str = "") -> dict[str, dict[str, list[float]]]:
    """Write the learning-curve PNG (atomically); returns the plotted mean curves per arm and metric.

    Args:
        runs: Arm key -> ``(metrics.jsonl path, rollouts per step)`` of each seed.
        budget: Token budget per run (the x axis).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, budget, 101)[1:]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    plotted: dict[str, dict[str, list[float]]] = {}
    for i, (key, runs_of_arm) in enumerate(runs.items()):
        plotted[key] = {}
        for ax, (metric, label) in zip(axes.flat, CURVES):
            curves = [run_curve(p, metric, n) for p, n in runs_of_arm]
            mean, lo, hi = arm_curve(curves, grid)
            plotted[key][metric] = [None if math.isnan(v) else round(float(v), 5) for v in mean]
            if np.all(np.isnan(mean)):
                continue
            ax.plot(grid, mean, color=f"C{i}", lw=1.6, label=f"{key} (n={len(runs_of_arm)})")
            ax.fill_between(grid, lo, hi, color=f"C{i}", alpha=0.18, lw=0)
    for ax, (metric, label) in zip(axes.flat, CURVES):
        means = [v for arm in plotted.values() for v in arm.get(metric, []) if v is not None]
        if means:  # frame the means: with 3 seeds a t-band can be wider than the metric's range
            lo, hi = min(means), max(means)
            pad = max(0.5 * (hi - lo), 0.05 * max(abs(hi), 1e-6))
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(label)
        ax.set_xlabel("generated tokens")
        ax.grid(alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))), frameon=False)
    fig.suptitle(title or "GRPO learning curves (training rollouts; mean over seeds, band: 95 % t-interval)")
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return plotted


# ---------------------------------------------------------------------------------------------- targets
def targets(results: Sequence[Mapping[str, Any]], curves: Mapping[str, Mapping[str, list[float]]] | None,
            budget: int, seed_curves: Mapping[str, Sequence[np.ndarray]] | None = None) -> list[dict[str, Any]]:
    """The issue's three targets, each ``{"target", "met" (True/False/None: not measurable), "evidence"}``.

    Target 3 compares, seed by seed, the generated tokens at which each seed's smoothed training-accuracy curve
    (``seed_curves``: arm key -> curves on the 100-point token grid of :func:`plot_curves`) first reaches arm 2's
    final mean accuracy; it is met when arm 3 needs fewer tokens with a 95 % Welch interval below 0."""
    groups = by_arm(results)
    out: list[dict[str, Any]] = []

    def ci(key: str, metric: str) -> tuple[float, float, int]:
        vals = values(groups.get(key, []), metric)
        mean, half = t_interval(vals)
        return mean, half, len(vals)

    # 1. arm 5 beats arm 2 on accuracy with non-overlapping 95 % intervals
    if "arm5_evr_cca" in groups and "arm2_tools" in groups:
        (m5, h5, n5), (m2, h2, n2) = ci("arm5_evr_cca", "accuracy"), ci("arm2_tools", "accuracy")
        measurable = n5 >= 2 and n2 >= 2
        met = bool(measurable and m5 - h5 > m2 + h2) if measurable else None
        out.append({"target": "arm 5 beats arm 2 on accuracy, 95 % intervals not overlapping", "met": met,
                    "evidence": f"arm 5 {_fmt(m5, h5, 1, n5)} % vs arm 2 {_fmt(m2, h2, 1, n2)} %"})
    else:
        out.append({"target": "arm 5 beats arm 2 on accuracy, 95 % intervals not overlapping", "met": None,
                    "evidence": "arm 2 or arm 5 not run"})
    # 2. arm 5's grounding mIoU >= 0.5 and within 5 points of arm 6
    if "arm5_evr_cca" in groups and "arm6_box" in groups:
        m5, h5, n5 = ci("arm5_evr_cca", "miou")
        m6, h6, n6 = ci("arm6_box", "miou")
        w5, _, _ = ci("arm5_evr_cca", "window_iou")
        w6, _, _ = ci("arm6_box", "window_iou")
        met = bool(m5 >= 0.5 and abs(m5 - m6) <= 0.05)
        out.append({"target": "arm 5 grounding mIoU >= 0.5 and within 5 points of arm 6", "met": met,
                    "evidence": f"mIoU vs evaluation boxes: arm 5 {m5:.4f}, arm 6 {m6:.4f}; vs reading windows: "
                                f"arm 5 {w5:.3f}, arm 6 {w6:.3f}"})
    else:
        out.append({"target": "arm 5 grounding mIoU >= 0.5 and within 5 points of arm 6", "met": None,
                    "evidence": "arm 5 or arm 6 not run"})
    # 3. EVR (arm 3) reaches arm 2's final training accuracy with fewer generated tokens
    title = "arm 3 reaches arm 2's final accuracy with fewer generated tokens"
    c2 = (curves or {}).get("arm2_tools", {}).get("medvr/accuracy")
    s2 = (seed_curves or {}).get("arm2_tools") or []
    s3 = (seed_curves or {}).get("arm3_evr") or []
    if c2 and s2 and s3:
        grid = np.linspace(0, budget, 101)[1:]
        a2 = np.asarray([np.nan if v is None else v for v in c2], dtype=float)
        finite = a2[~np.isnan(a2)]
        level = float(finite[-1]) if finite.size else math.nan

        def reach(curve: np.ndarray) -> float:  # a seed that never reaches the level counts as the whole budget
            t = tokens_to_reach(grid, curve, level)
            return float(budget) if t is None else t

        r2, r3 = [reach(c) for c in s2], [reach(c) for c in s3]
        diff, lo, hi = welch_difference(r3, r2)
        if math.isnan(level):
            met = None
        elif math.isnan(hi):
            met = None if diff < 0 else False
        else:
            met = bool(hi < 0)
        out.append({"target": title, "met": met,
                    "evidence": f"level = arm 2's final smoothed training accuracy (mean over seeds) {level:.3f}; "
                                f"tokens to first reach it per seed (budget if never): arm 2 {[int(v) for v in r2]}, "
                                f"arm 3 {[int(v) for v in r3]}; arm 3 − arm 2 = {diff:+.0f} tokens, 95 % Welch "
                                f"interval [{lo:.0f}, {hi:.0f}]"})
    else:
        out.append({"target": title, "met": None, "evidence": "arm 2 or arm 3 has no learning curve"})
    return out


def targets_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| target | met? | evidence |", "|---|---|---|"]
    for r in rows:
        verdict = {True: "yes", False: "no", None: "not measured"}[r["met"]]
        lines.append(f"| {r['target']} | {verdict} | {r['evidence']} |")
    return "\n".join(lines) + "\n"


__all__ = ["COMPARISONS", "CURVES", "METRICS", "arm_curve", "by_arm", "comparison_table", "plot_curves", "run_curve",
           "seed_curve", "question_type_table", "smooth", "summary_table", "t_interval", "targets", "targets_markdown", "tokens_to_reach", "values",
           "welch_difference"]
