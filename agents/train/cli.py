"""``medvr train --config FILE``: GRPO training of the VLM policy on a MedVR env (``[train]`` extra).

    medvr train --config examples/grpo_tiny.yaml                 # resumes from the newest complete checkpoint
    medvr train --config my.yaml --resume never --max-steps 10
    accelerate launch --config_file examples/accelerate_multi_gpu.yaml -m agents.train.cli --config my.yaml

Prints a progress bar, writes ``metrics.jsonl``, ``rollouts.jsonl``, checkpoints and ``final/`` under the config's
``output_dir``, and at the end ``report.html`` (``medvr report``; ``--no-report`` to skip it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .config import ConfigError, TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medvr train", description="GRPO training of a VLM policy on MedVR rollouts (TRL; EVR and CCA optional)."
    )
    parser.add_argument("--config", required=True, help="YAML config (see examples/grpo_tiny.yaml)")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (default): the newest complete checkpoint in output_dir if any; 'never'; "
                             "or a checkpoint folder")
    parser.add_argument("--output-dir", default=None, help="override the config's output_dir")
    parser.add_argument("--max-steps", type=int, default=None, help="override grpo.max_steps")
    parser.add_argument("--check", action="store_true", help="only read and check the config, then exit")
    parser.add_argument("--no-report", action="store_true",
                        help="do not write report.html (medvr report: rollouts and learning curves) at the end")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = TrainConfig.from_yaml(args.config)
        if args.output_dir:
            config.output_dir = args.output_dir
        if args.max_steps is not None:
            if args.max_steps < 1:
                raise ConfigError("--max-steps must be at least 1")
            config.grpo["max_steps"] = args.max_steps
        config.validate(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: ok ({config.env.id}, group of {config.num_generations}, output {config.output_dir})")
        return 0
    try:
        from .run import train
    except ImportError as exc:
        print(f"error: medvr train needs the [train] extra (torch, trl, accelerate): {exc}", file=sys.stderr)
        return 2
    try:
        trainer = train(config, resume=args.resume)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if trainer.accelerator.is_main_process:
        print(f"trained {trainer.state.global_step} steps; weights in {config.output_dir}/final, "
              f"metrics in {config.output_dir}/metrics.jsonl")
        if not args.no_report:
            from agents.report.cli import report_after_run

            report_after_run(config.output_dir, progress=not trainer.args.disable_tqdm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
