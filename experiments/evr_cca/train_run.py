"""One run of the grid: GRPO from the warm start to the token budget, then evaluation on the test split.

    python -m experiments.evr_cca.train_run --arm-file experiments/evr_cca/configs/arm5_evr_cca.yaml --seed 0 \
        --run-dir runs/evr_cca/grid/arm5_evr_cca/seed0 --model runs/evr_cca/warmstart/model --budget 40000

Stages, each skipped when its file exists (so an interrupted run picks up where it stopped):

1. ``train/``: GRPO through :class:`agents.train.trainer.MedVRGRPOTrainer` (checkpoints every ``save_steps``; a
   killed run resumes from the newest complete one), stopped by :class:`.budget.TokenBudget`; then ``train/final``
   and ``trained.json`` (steps, tokens, time). Checkpoints are deleted once ``final`` is written.
2. ``eval.json``: :func:`.evaluate.evaluate_checkpoint` of ``train/final`` on the first ``--eval-questions`` test
   questions.
3. ``result.json``: both, plus the training summary; written last and atomically: the run's completion marker.

The reward functions are agents.train's accuracy, format and tool (CCA) rewards, with arm 6's tool reward replaced
by :func:`.rewards.make_box_reward`, plus the zero-weight :func:`.rewards.grounding_probe` in every arm.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from agents.runner import write_json
from agents.train.config import TrainConfig

from .arms import deep_merge, read_arm_file
from .budget import cumulative_tokens, read_records

RESULT = "result.json"
TRAINED = "trained.json"
EVAL = "eval.json"


def run_config(arm_file: str | Path, seed: int, run_dir: str | Path, model: str) -> tuple[dict[str, Any], TrainConfig]:
    """The arm section and the run's TrainConfig (the arm's, with this run's model, output folder and seed)."""
    arm, train = read_arm_file(arm_file)
    train = deep_merge(train, {"model": str(model), "output_dir": str(Path(run_dir) / "train"), "seed": int(seed)})
    config = TrainConfig.from_dict(train, where=str(arm_file))
    g = config.grpo_kwargs()
    if int(g.get("logging_steps", 1)) != 1:
        raise ValueError(f"{arm_file}: grpo.logging_steps must be 1 (the token budget reads every step's log)")
    for key in ("steps_per_generation", "gradient_accumulation_steps"):
        if int(g.get(key) or 1) != 1:
            raise ValueError(f"{arm_file}: grpo.{key} must be 1 (one generation per optimizer step)")
    return arm, config


def build_trainer(config: TrainConfig, arm: dict[str, Any], budget: int):
    """agents.train's trainer with the arm's reward functions and the token budget (see the module docstring)."""
    from accelerate import PartialState

    from agents.train.callbacks import JsonlMetrics
    from agents.train.rewards import reward_functions
    from agents.train.run import build_dataset, build_grpo_args, build_peft, build_policy, make_env_factory
    from agents.train.trainer import MedVRGRPOTrainer

    from .budget import TokenBudget
    from .rewards import grounding_probe, make_box_reward

    env_factory = make_env_factory(config)
    probe_env = env_factory()
    dataset = build_dataset(probe_env, config.env.limit)
    probe_env.close()
    policy = build_policy(config, device=PartialState().device)
    funcs, weights = reward_functions(config.rewards, config.cca, config.num_generations)
    if arm["tool_reward"] == "box":
        funcs[2] = make_box_reward(eta=config.cca.eta, grid=config.cca.grid, no_look_reward=config.cca.no_look_reward)
    funcs.append(grounding_probe)
    weights.append(0.0)
    dtype = next(policy.model.parameters()).dtype
    args = build_grpo_args(config, policy.model.device, dtype, reward_weights=weights)
    metrics_path = Path(config.output_dir) / "metrics.jsonl"
    rollouts = int(config.grpo_kwargs()["per_device_train_batch_size"]) * int(PartialState().num_processes)
    stop = TokenBudget(budget, rollouts, metrics_path)
    trainer = MedVRGRPOTrainer(policy, env_factory, reward_funcs=funcs, args=args, train_dataset=dataset,
                               callbacks=[JsonlMetrics(metrics_path), stop], peft_config=build_peft(config),
                               evr=config.evr, rollout_seed=config.seed, config=config.to_dict())
    return trainer, stop


def train_to_budget(config: TrainConfig, arm: dict[str, Any], budget: int) -> dict[str, Any]:
    """Train (resuming from the newest complete checkpoint), write ``final/``; returns the training record."""
    import yaml

    from agents.runner import write_text
    from agents.train.run import resolve_resume, save_final

    out = Path(config.output_dir)
    started = time.perf_counter()
    trainer, stop = build_trainer(config, arm, budget)
    write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    trainer.train(resume_from_checkpoint=resolve_resume(config, "auto"))
    if not stop.spent:
        raise RuntimeError(f"training ended after {stop.steps} steps and {stop.used:.0f} of {budget} tokens: raise "
                           f"grpo.max_steps or lower the budget")
    save_final(trainer, out / "final")
    copy_processor_files(config.model, out / "final")
    for ckpt in out.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)
    return {"steps": int(trainer.state.global_step), "generated_tokens": stop.used, "budget": budget,
            "seconds_this_session": time.perf_counter() - started}


def copy_processor_files(source: str | Path, final: Path) -> list[str]:
    """Copy the warm start's processor files that ``final`` lacks (GRPO never changes the processor).

    ``agents.train.save_final`` saves the processor with ``save_pretrained`` only; for Qwen2.5-VL under
    transformers 5 that leaves out ``preprocessor_config.json`` and the folder no longer loads with
    ``AutoProcessor`` ("Can't load video processor"). Weights and configs of the model are never copied.
    """
    copied = []
    for path in Path(source).iterdir():
        if (path.is_file() and not (final / path.name).exists() and path.suffix in (".json", ".jinja", ".txt")
                and path.name not in ("config.json", "generation_config.json")
                and not path.name.startswith("model")):
            shutil.copy2(path, final / path.name)
            copied.append(path.name)
    return copied


def training_summary(metrics_path: Path, rollouts_per_step: int) -> dict[str, Any]:
    """Means over the run's logged steps (branch rate, tool rate, entropy, rewards) and the last tenth's accuracy."""
    records = [r for r in read_records(metrics_path) if "medvr/generated_tokens" in r]
    if not records:
        return {}

    def mean(key: str, rows: Sequence[dict[str, Any]] = records) -> float:
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        return sum(values) / len(values) if values else math.nan

    tail = records[-max(1, len(records) // 10):]
    tokens = cumulative_tokens(records, rollouts_per_step)
    return {
        "steps": len(records),
        "generated_tokens": tokens[-1][1] if tokens else 0.0,
        "branch_rate": mean("evr/branch_rate"),
        "branched": mean("medvr/branched"),
        "tool_rate": mean("medvr/tool_rate"),
        "rollout_entropy": mean("medvr/rollout_entropy"),
        "loss_entropy": mean("entropy"),
        "tool_reward": mean("rewards/tool/mean"),
        "train_accuracy_last_tenth": mean("medvr/accuracy", tail),
        "seconds": sum(float(r.get("step_time") or 0.0) for r in records),
    }


def run(arm_file: str | Path, seed: int, run_dir: str | Path, model: str, budget: int, eval_questions: int,
        eval_batch: int = 16, progress: bool = True) -> dict[str, Any]:
    """All three stages (see the module docstring); returns the result record."""
    run_dir = Path(run_dir)
    if (run_dir / RESULT).is_file():
        import json

        return json.loads((run_dir / RESULT).read_text(encoding="utf-8"))
    arm, config = run_config(arm_file, seed, run_dir, model)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / TRAINED).is_file():
        write_json(run_dir / TRAINED, train_to_budget(config, arm, budget))
    if not (run_dir / EVAL).is_file():
        from .evaluate import evaluate_checkpoint

        result = evaluate_checkpoint(str(Path(config.output_dir) / "final"), config.env.id, config.env.kwargs,
                                     questions=eval_questions, max_new_tokens=config.policy.max_new_tokens,
                                     max_turns=config.policy.max_turns, batch=eval_batch, progress=progress)
        write_json(run_dir / EVAL, result)
    import json

    rollouts = int(config.grpo_kwargs()["per_device_train_batch_size"])
    record = {
        "arm": arm, "seed": int(seed), "budget": int(budget), "model": str(model),
        "trained": json.loads((run_dir / TRAINED).read_text(encoding="utf-8")),
        "training": training_summary(Path(config.output_dir) / "metrics.jsonl", rollouts),
        "eval": json.loads((run_dir / EVAL).read_text(encoding="utf-8")),
    }
    write_json(run_dir / RESULT, record)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.evr_cca.train_run", description=__doc__.split("\n\n")[0])
    p.add_argument("--arm-file", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--model", required=True, help="the warm-start checkpoint every arm starts from")
    p.add_argument("--budget", type=int, required=True, help="generated tokens per run")
    p.add_argument("--eval-questions", type=int, default=200)
    p.add_argument("--eval-batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads for this run")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    try:
        run(args.arm_file, args.seed, args.run_dir, args.model, args.budget, args.eval_questions, args.eval_batch,
            progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
