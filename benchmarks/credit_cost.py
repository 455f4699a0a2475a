"""What CCA costs, and what the default 64 x 64 grid gives up against the exact pixel grid.

Measured in one process on synthetic groups of G = 16 trajectory records (1-3 zoom boxes each
around a few hot spots, 60 % correct), for two image sizes:

- ``consensus_credit`` per group on the default grid (64 x 64), on the 1/8-resolution grid and on
  the exact pixel grid (the obvious alternative), with the share of ``R_tool`` values and the mean
  absolute IoU difference against the pixel grid;
- ``CCAReward.credit_episode`` per finished episode with an empty and with a full bank (16);
- bank memory per sample (16 two-box footprints) as stored (int32 box bytes) against Python tuples.

Run: ``python benchmarks/credit_cost.py [--groups 30] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from typing import Any

import gymnasium as gym
import numpy as np

from agents.credit import CCAReward, consensus_credit
from agents.credit.wrapper import _SampleBank

SIZES = ((1024, 768), (3000, 2000))


def make_group(rng: np.random.Generator, size: tuple[int, int], g: int = 16) -> list[dict[str, Any]]:
    """``g`` Episode.to_dict()-shaped records of one sample: zooms near 3 hot spots, 60 % correct."""
    w, h = size
    spots = rng.uniform(0.2, 0.8, (3, 2)) * (w, h)
    group = []
    for _ in range(g):
        steps = []
        for i in range(int(rng.integers(0, 4))):
            cx, cy = spots[rng.integers(3)] + rng.normal(0, 0.05, 2) * (w, h)
            bw, bh = rng.uniform(0.1, 0.3, 2) * (w, h)
            box = [int(np.clip(cx - bw / 2, 0, w - 1)), int(np.clip(cy - bh / 2, 0, h - 1)),
                   int(np.clip(cx + bw / 2, 1, w)), int(np.clip(cy + bh / 2, 1, h))]
            box[2], box[3] = max(box[2], box[0] + 1), max(box[3], box[1] + 1)
            steps.append({"step": i + 1, "new_view": i + 1, "applied_box": box, "tool": "zoom"})
        steps.append({"step": len(steps) + 1, "new_view": None, "applied_box": None, "tool": "answer"})
        group.append({"sample": {"sample_id": "s"}, "image_size": list(size), "steps": steps,
                      "grade": {"correct": bool(rng.random() < 0.6)}})
    return group


def time_per_call(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def grid_rows(groups: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        rng = np.random.default_rng(seed)
        batch = [make_group(rng, size) for _ in range(groups)]
        exact = [consensus_credit(g, grid="pixels") for g in batch]
        for name, grid in (("64 x 64 (default)", 64), ("1/8 resolution", (size[0] // 8, size[1] // 8)),
                           ("pixels (exact)", "pixels")):
            results = [consensus_credit(g, grid=grid) for g in batch]
            seconds = time_per_call(lambda: [consensus_credit(g, grid=grid) for g in batch], 3) / groups
            same = [a == b for r, e in zip(results, exact) for a, b in zip(r.tool_rewards, e.tool_rewards)]
            errors = [abs(a - b) for r, e in zip(results, exact) for a, b in zip(r.ious, e.ious)
                      if a is not None and b is not None]
            rows.append({"image": f"{size[0]}x{size[1]}", "grid": name, "ms_per_group": seconds * 1e3,
                         "same_reward": float(np.mean(same)), "mean_abs_iou_error": float(np.mean(errors or [0.0]))})
        exact_ms = rows[-1]["ms_per_group"]
        for row in rows[-3:]:
            row["speedup_vs_pixels"] = exact_ms / row["ms_per_group"]
    return rows


def wrapper_rows(seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    wrapper = CCAReward(gym.make("MedVR-VQA-v0"))
    group = [dict(r, grade={"correct": True}) for r in make_group(rng, SIZES[0], g=64)]
    empty_ms = time_per_call(lambda: (wrapper._bank.clear(), wrapper.credit_episode(group[0])), 50) * 1e3
    for record in group[:16]:
        wrapper.credit_episode(record)
    it = iter(group[16:] * 10)
    full_ms = time_per_call(lambda: wrapper.credit_episode(next(it)), 200) * 1e3
    return [{"bank": "empty", "ms_per_episode": empty_ms}, {"bank": "full (16)", "ms_per_episode": full_ms}]


def memory_rows(samples: int = 2000) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    footprints = [[rng.integers(300, 900, (2, 4)).tolist() for _ in range(16)] for _ in range(samples)]
    tracemalloc.start()
    stored = {f"train/{i}": _SampleBank((1000, 800), 16) for i in range(samples)}
    for entry, fps in zip(stored.values(), footprints):
        for f in fps:
            entry.add(f)
    bytes_stored = tracemalloc.get_traced_memory()[0] / samples
    tracemalloc.stop()
    del stored
    tracemalloc.start()
    as_tuples = {f"train/{i}": [tuple(tuple(int(v) for v in b) for b in f) for f in fps]
                 for i, fps in enumerate(footprints)}
    bytes_tuples = tracemalloc.get_traced_memory()[0] / samples
    tracemalloc.stop()
    del as_tuples
    return [{"storage": "int32 box bytes (used)", "bytes_per_sample": bytes_stored},
            {"storage": "Python tuples", "bytes_per_sample": bytes_tuples, "ratio": bytes_tuples / bytes_stored}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=30, help="groups of 16 per image size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of tables")
    args = parser.parse_args()
    grids, wrapper, memory = grid_rows(args.groups, args.seed), wrapper_rows(args.seed), memory_rows()
    if args.json:
        print(json.dumps({"grids": grids, "wrapper": wrapper, "memory": memory}, indent=2))
        return
    print(f"consensus_credit on {args.groups} groups of 16 per image size")
    print("| image | grid | ms / group | speed-up vs pixels | same R_tool as pixels | mean abs IoU error |")
    print("|---|---|---|---|---|---|")
    for r in grids:
        print(f"| {r['image']} | {r['grid']} | {r['ms_per_group']:.2f} | {r['speedup_vs_pixels']:.1f}x | "
              f"{r['same_reward']:.1%} | {r['mean_abs_iou_error']:.4f} |")
    print("\nCCAReward.credit_episode (1024x768, 64 x 64 grid)")
    print("| bank | ms / finished episode |\n|---|---|")
    for r in wrapper:
        print(f"| {r['bank']} | {r['ms_per_episode']:.2f} |")
    print("\nbank memory, 16 two-box footprints per sample")
    print("| storage | bytes / sample |\n|---|---|")
    for r in memory:
        ratio = f" ({r['ratio']:.1f}x)" if "ratio" in r else ""
        print(f"| {r['storage']} | {r['bytes_per_sample']:.0f}{ratio} |")


if __name__ == "__main__":
    main()
