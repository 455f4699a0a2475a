"""``medvr report RUN_DIR [RUN_B]``: write the HTML report of a run, or of two runs side by side.

Also :func:`report_after_run`, which ``medvr run`` and ``medvr eval`` call at their end
(unless ``--no-report``): a report that cannot be written is a warning, never a failed run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli_types import int_at_least
from .build import DEFAULT_MAX_EPISODES, ReportOptions, build_report
from .records import ReportInputError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to ``medvr``'s subparsers."""
    cmd = sub.add_parser("report", help="write a self-contained HTML report of a run (or compare two runs)",
                         description="Write one HTML file (images embedded, no network) from the trajectory records "
                                     "of a run: summary, plots, every episode, groups of rollouts; with RUN_B, what "
                                     "changed between the two runs on the same questions.")
    cmd.add_argument("run", metavar="RUN_DIR", help="folder written by medvr run / medvr eval (or a .jsonl file)")
    cmd.add_argument("run_b", metavar="RUN_B", nargs="?", default=None, help="a second run to compare against")
    cmd.add_argument("--out", default=None,
                     help="where to write the report (default: RUN_DIR/report.html; RUN_DIR/compare_<B>.html)")
    cmd.add_argument("--max-episodes", type=int_at_least(0), default=DEFAULT_MAX_EPISODES,
                     help=f"episodes shown in the list; the summary counts all (default: {DEFAULT_MAX_EPISODES})")
    cmd.add_argument("--max-groups", type=int_at_least(0), default=50, help="groups of rollouts shown (default: 50)")
    cmd.add_argument("--page-size", type=int_at_least(1), default=20, help="episodes per page (default: 20)")
    cmd.add_argument("--data-root", default=None, help="the run's dataset folder, if it moved since the run")
    cmd.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cmd.set_defaults(func=cmd_report)
    return cmd


def cmd_report(args: argparse.Namespace) -> int:
    options = ReportOptions(max_episodes=args.max_episodes, max_groups=args.max_groups, page_size=args.page_size,
                            data_root=args.data_root, progress=not args.no_progress)
    try:
        result = build_report(args.run, args.run_b, out=args.out, options=options)
    except ReportInputError as exc:
        print(f"medvr report: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"medvr report: error: cannot write the report: {exc}", file=sys.stderr)
        return 2
    print(f"report:       {result.path} ({_size(result.size_bytes)}, {result.episodes_shown} of "
          f"{result.episodes_total} episodes shown)")
    return 0


def report_after_run(run_dir: str | Path, *, progress: bool = True) -> Path | None:
    """Write ``run_dir/report.html`` at the end of ``medvr run`` / ``medvr eval``; print where, or why not."""
    try:
        result = build_report(run_dir, options=ReportOptions(progress=progress))
    except Exception as exc:  # the run's own results are written already; a report must not fail it
        print(f"report:       not written ({type(exc).__name__}: {exc}); retry with `medvr report {run_dir}`",
              file=sys.stderr)
        return None
    print(f"report:       {result.path} ({_size(result.size_bytes)})")
    return result.path


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


__all__ = ["add_parser", "cmd_report", "report_after_run"]
