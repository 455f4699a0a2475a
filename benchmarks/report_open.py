"""How fast a large report opens in headless Chromium, and how large it is.

Plays N episodes (default 1,000) of the random agent on the procedural task with the real
runner (trajectories.jsonl + summary.json, like ``medvr run``), then writes two reports
of the run: every episode shown (``--max-episodes N``) and the default cap (200 shown,
all counted). Each is opened several times in a fresh tab of Debian's headless Chromium
(agents.report.browser), timing the load event and the moment the page's script has
rendered the first page of the list. For scale, the same page then builds the detail of
every episode at once, which is what a report without lazy sections would do at load.

    python benchmarks/report_open.py                 # 1,000 episodes (a few CPU minutes to play them)
    python benchmarks/report_open.py --episodes 200 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym

import medvr_env  # noqa: F401
from agents.base import make_agent
from agents.report import ReportOptions, build_report
from agents.report.browser import Browser, unavailable_reason
from agents.runner import run_episodes, write_json


def play(folder: Path, episodes: int) -> Path:
    env = gym.make("MedVR-VQA-v0")
    run_episodes(env, make_agent("random"), episodes, seed=0, trajectories=folder / "trajectories.jsonl")
    env.close()
    write_json(folder / "summary.json", {"env": "MedVR-VQA-v0", "agent": "random", "seed": 0, "env_kwargs": {}})
    return folder


def open_times(browser: Browser, path: Path, repeats: int) -> tuple[list[float], list[float], list[str]]:
    """Seconds to the load event and to the page script's first render, per repeat; console errors."""
    loads, ready, errors = [], [], []
    for _ in range(repeats):
        page = browser.open(path)
        loads.append(page.load_seconds)
        ready.append(page.evaluate("window.medvrReport.readyMs") / 1000)
        errors += page.errors
        page.close()
    return loads, ready, errors


def eager_details_seconds(browser: Browser, path: Path) -> float:
    """Seconds to build every episode's detail in the page (what a report without lazy sections pays up front)."""
    page = browser.open(path)
    seconds = page.evaluate("(() => { const t = performance.now(); const box = document.createElement('div');"
                            " document.body.append(box); for (let i = 0; i < window.medvrReport.episodes; i++)"
                            " box.append(window.medvrReport.detail(i)); box.getBoundingClientRect();"
                            " return (performance.now() - t) / 1000; })()")
    page.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", default=None, help="keep the run and reports in this folder")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medvr-report-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run = play(folder / "run", args.episodes)
    print(f"played {args.episodes} episodes in {time.perf_counter() - start:.0f} s")
    rows = []
    with Browser() as browser:
        for shown in (args.episodes, 200):
            result = build_report(run, out=folder / f"report_{shown}.html",
                                  options=ReportOptions(max_episodes=shown, progress=True))
            loads, ready, errors = open_times(browser, result.path, args.repeats)
            rows.append((result, loads, ready, errors))
        eager = eager_details_seconds(browser, rows[0][0].path)
    print(f"\nReport of {args.episodes} episodes (random agent, procedural task), headless Chromium, "
          f"{args.repeats} opens each (median, max):\n")
    print("| episodes shown | file size | build (s) | load event (s) | list rendered (s) | console errors |")
    print("|---|---|---|---|---|---|")
    for result, loads, ready, errors in rows:
        print(f"| {result.episodes_shown:,} of {result.episodes_total:,} | {result.size_bytes / 1e6:.1f} MB | "
              f"{result.seconds:.1f} | {statistics.median(loads):.2f} ({max(loads):.2f}) | "
              f"{statistics.median(ready):.2f} ({max(ready):.2f}) | {len(errors)} |")
    full, capped = rows[0][0], rows[1][0]
    print(f"\nbytes per shown episode: {full.size_bytes / full.episodes_shown / 1e3:.1f} kB; "
          f"size ratio {full.episodes_shown}-shown / {capped.episodes_shown}-shown: "
          f"{full.size_bytes / capped.size_bytes:.1f}x")
    print(f"eager alternative: building all {full.episodes_shown} episode details at load would add {eager:.2f} s "
          f"({eager / statistics.median(rows[0][2]):.1f}x the lazy page's time to its first render)")
    if args.keep:
        print(f"kept in {folder}")


if __name__ == "__main__":
    main()
