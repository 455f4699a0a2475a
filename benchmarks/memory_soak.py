#!/usr/bin/env python
"""Does ``medvr run`` hold its memory flat over 10,000 episodes?

One process, one :func:`agents.runner.run_episodes` call, as ``medvr run`` makes it: the
``blob-detector`` agent (the weightless contrast search that was ``scripted`` before the
patch reader; ``--agent scripted`` works too once its reader is built) on ``MedVR-VQA-v0`` (procedural, 1,000 samples, 1024 px images), every
episode written to a trajectory file. Memory is read from ``/proc/self/status`` after
episode 100 (warm: caches filled, imports done) and at each checkpoint: the resident set
(RSS) and its anonymous part (heap and arrays: what a leak grows; RSS also counts pages
of shared libraries, which the kernel drops and reloads under memory pressure from other
processes). The target: under 5 % growth of anonymous RSS from 1,000 to 10,000 episodes.

For contrast, the same run then keeps every finished episode, as ``run_episodes`` did
before it streamed (``--retain`` episodes, 300 by default; 0 to skip), in the same
process: its RSS growth per episode is what a 10,000-episode run would have needed.

Usage::

    python benchmarks/memory_soak.py                          # 10,000 episodes; ~35 min on a busy 2-core box
    python benchmarks/memory_soak.py --episodes 3000 --checkpoints 1000,3000 --retain 100
    nohup python benchmarks/memory_soak.py > soak.log 2>&1 &  # in the background
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym

import medvr_env  # noqa: F401  (registers the ids)
from agents.base import make_agent
from agents.runner import run_episodes

MB = 1024 * 1024


def memory_mb() -> dict[str, float]:
    """RSS and anonymous RSS of this process in MB (Linux ``/proc``; elsewhere both are the peak RSS)."""
    try:
        with open("/proc/self/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "anon_mb": int(fields["RssAnon"].split()[0]) / 1024}
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (MB if sys.platform == "darwin" else 1024)
        return {"rss_mb": peak, "anon_mb": peak}


def soak(env_id: str, agent_name: str, episodes: int, checkpoints: list[int], out: Path) -> list[dict]:
    """Run ``episodes`` episodes streaming; RSS after episode 100 and at each checkpoint."""
    env = gym.make(env_id)
    agent = make_agent(agent_name)
    marks = sorted({min(100, episodes), *checkpoints})
    rows: list[dict] = []
    start = time.perf_counter()
    count = 0

    def at_end_of_episode(_episode) -> None:
        nonlocal count
        count += 1
        if count in marks:
            gc.collect()
            rows.append({"episodes": count, **memory_mb(), "seconds": time.perf_counter() - start})
            r = rows[-1]
            print(f"  {count:>6} episodes  RSS {r['rss_mb']:7.1f} MB  anonymous {r['anon_mb']:7.1f} MB  "
                  f"({r['seconds']:.0f} s)", flush=True)

    summary = run_episodes(env, agent, episodes, seed=0, progress=False, trajectories=out / "trajectories.jsonl",
                           on_episode=at_end_of_episode)
    env.close()
    print(f"  accuracy {summary.accuracy:.3f}, trajectories {(out / 'trajectories.jsonl').stat().st_size / MB:.1f} MB",
          flush=True)
    return rows


def retaining(env_id: str, agent_name: str, episodes: int, out: Path) -> tuple[float, float]:
    """Anonymous RSS (MB) before and after a run that keeps every finished episode (the pre-streaming behaviour)."""
    env = gym.make(env_id)
    agent = make_agent(agent_name)
    kept: list = []
    gc.collect()
    before = memory_mb()["anon_mb"]
    run_episodes(env, agent, episodes, seed=1, progress=False, trajectories=out / "retained.jsonl",
                 on_episode=kept.append)
    gc.collect()
    after = memory_mb()["anon_mb"]
    env.close()
    del kept
    return before, after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="MedVR-VQA-v0")
    parser.add_argument("--agent", default="blob-detector")
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--checkpoints", default="1000,3000,10000", help="comma-separated episode counts")
    parser.add_argument("--retain", type=int, default=300, help="episodes of the retaining contrast run (0: skip)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    checkpoints = sorted(c for c in (int(x) for x in args.checkpoints.split(",")) if c <= args.episodes)
    if not checkpoints:
        parser.error("no checkpoint within --episodes")

    print(f"# medvr run memory soak: {args.agent} on {args.env}, {args.episodes} episodes "
          f"(Python {platform.python_version()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="medvr-soak-") as tmp:
        rows = soak(args.env, args.agent, args.episodes, checkpoints, Path(tmp))
        retained = retaining(args.env, args.agent, args.retain, Path(tmp)) if args.retain > 0 else None

    base = next(r for r in rows if r["episodes"] == checkpoints[0])
    print("\n## streaming (run_episodes today): RSS by episodes played\n")
    print(f"| episodes | RSS (MB) | anonymous RSS (MB) | anonymous growth vs {checkpoints[0]:,} | seconds |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        growth = 100 * (r["anon_mb"] - base["anon_mb"]) / base["anon_mb"]
        r["growth_pct"] = growth if r["episodes"] >= base["episodes"] else None
        shown = f"{growth:+.1f} %" if r["growth_pct"] is not None else "-"
        print(f"| {r['episodes']:,} | {r['rss_mb']:.1f} | {r['anon_mb']:.1f} | {shown} | {r['seconds']:.0f} |")
    last = rows[-1]
    verdict = "PASS" if last["growth_pct"] < 5 else "FAIL"
    print(f"\nanonymous RSS growth {checkpoints[0]:,} -> {last['episodes']:,} episodes: {last['growth_pct']:+.2f} % "
          f"(target < 5 %): {verdict}")
    report = {"env": args.env, "agent": args.agent, "rows": rows, "growth_pct": last["growth_pct"]}
    if retained is not None:
        before, after = retained
        per_episode = (after - before) / args.retain
        print("\n## contrast: keeping every finished episode (run_episodes before it streamed)\n")
        print("| episodes kept | anonymous RSS before (MB) | after (MB) | MB per episode | projected for 10,000 episodes |")
        print("|---:|---:|---:|---:|---:|")
        print(f"| {args.retain:,} | {before:.1f} | {after:.1f} | {per_episode:.2f} | {per_episode * 10_000 / 1024:.1f} GB |")
        report["retaining"] = {"episodes": args.retain, "anon_before_mb": before, "anon_after_mb": after,
                               "mb_per_episode": per_episode}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
