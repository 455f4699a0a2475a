"""Build a GRPO run from a :class:`~agents.train.config.TrainConfig` and train it, resuming where it stopped.

    from agents.train import TrainConfig, train
    train(TrainConfig.from_yaml("examples/grpo_tiny.yaml"))

Layout of ``output_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per log event),
``rollouts.jsonl`` (episode records of a sample of generations, with their ``group`` field, for ``medvr report``),
``checkpoint-N/`` (TRL's model, optimizer, scheduler, RNG and trainer state, then ``medvr_state.json`` last as the
completion marker) and ``final/`` (the trained weights and processor).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import yaml

import medvr_env  # noqa: F401  (registers the env ids)
from agents.runner import write_text

from .callbacks import JsonlMetrics, RolloutRecords
from .config import ConfigError, TrainConfig
from .rewards import reward_functions

log = logging.getLogger(__name__)


def make_env_factory(config: TrainConfig):
    """A function making one env of the config (each process pools as many as it plays at once)."""
    if config.env.id not in gym.registry:
        raise ConfigError(f"env.id {config.env.id!r} is not a registered env id; run `medvr envs` to list them")
    env_id, kwargs = config.env.id, dict(config.env.kwargs)

    def make() -> Any:
        return gym.make(env_id, **kwargs)

    return make


def build_dataset(env: Any, limit: int | None = None):
    """One row per env sample: ``prompt`` (the question, for TRL's logs) and ``sample_index`` (what is played)."""
    from datasets import Dataset

    data = env.unwrapped.dataset
    n = len(data) if limit is None else min(int(limit), len(data))
    if n < 1:
        raise ConfigError("the training split has no samples")
    questions = [data[i].question for i in range(n)]
    return Dataset.from_dict({"prompt": questions, "sample_index": list(range(n))})


def build_policy(config: TrainConfig, device: Any = None):
    """The VLM policy with the config's sampling, and an image budget that never evicts."""
    from agents.vlm import ImageBudget, SamplingConfig, VLMPolicy, load_vlm

    p = config.policy
    vlm = load_vlm(config.model, device=device if p.device == "auto" else p.device, dtype=p.dtype,
                   attn_implementation=p.attn_implementation, processor_kwargs=p.processor_kwargs or None)
    sampling = SamplingConfig(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                              max_new_tokens=p.max_new_tokens, max_turns=p.max_turns, seed=config.seed)
    budget = ImageBudget(max_images=None, max_image_tokens=None, max_tokens_per_image=p.max_tokens_per_image)
    return VLMPolicy(vlm, sampling=sampling, budget=budget)


def build_grpo_args(config: TrainConfig, device: Any, dtype: Any, **overrides: Any):
    """TRL's ``GRPOConfig``: the ``grpo`` section plus the keys the other sections own."""
    import torch
    from trl import GRPOConfig

    kwargs = config.grpo_kwargs()
    kwargs.update(
        output_dir=config.output_dir, seed=config.seed, temperature=config.policy.temperature,
        top_p=config.policy.top_p, top_k=config.policy.top_k,
        reward_weights=[config.rewards.accuracy, config.rewards.format, config.rewards.tool],
        remove_unused_columns=False,
    )
    if getattr(device, "type", str(device)) == "cpu":
        kwargs.setdefault("use_cpu", True)
    elif dtype == torch.bfloat16:
        kwargs.setdefault("bf16", True)
    kwargs.update(overrides)
    try:
        return GRPOConfig(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"grpo section: {exc} (see trl.GRPOConfig for the fields)") from exc


def build_peft(config: TrainConfig):
    if config.lora is None:
        return None
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - peft is in the [train] extra
        raise ConfigError("the lora section needs peft: pip install -e '.[train]'") from exc
    lo = config.lora
    return LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=lo.target_modules,
                      task_type="CAUSAL_LM")


def build_trainer(config: TrainConfig, *, policy: Any = None, callbacks: Sequence[Any] = (), **grpo_overrides: Any):
    """The :class:`~agents.train.trainer.MedVRGRPOTrainer` of ``config`` (``policy``: reuse a loaded one)."""
    from accelerate import PartialState

    from .trainer import MedVRGRPOTrainer

    env_factory = make_env_factory(config)
    probe = env_factory()
    dataset = build_dataset(probe, config.env.limit)
    probe.close()
    import torch

    # cpu=True also makes `torchrun`/`accelerate launch` on CPU-only machines a gloo process group (MULTI_CPU)
    cpu = config.policy.device == "cpu" or not torch.cuda.is_available()
    device = PartialState(cpu=cpu).device
    policy = policy or build_policy(config, device=device)
    dtype = next(policy.model.parameters()).dtype
    args = build_grpo_args(config, policy.model.device, dtype, **grpo_overrides)
    funcs, _ = reward_functions(config.rewards, config.cca, config.num_generations)
    metrics = JsonlMetrics(Path(config.output_dir) / "metrics.jsonl")
    rollouts = RolloutRecords(Path(config.output_dir) / "rollouts.jsonl", config.rollout_log_every(),
                              config.log_rollouts_max)
    return MedVRGRPOTrainer(policy, env_factory, reward_funcs=funcs, args=args, train_dataset=dataset,
                            callbacks=[metrics, rollouts, *callbacks], peft_config=build_peft(config),
                            evr=config.evr, rollout_seed=config.seed, config=config.to_dict(), cca=config.cca,
                            rollout_records=rollouts)


def resolve_resume(config: TrainConfig, resume: str | os.PathLike | bool | None) -> str | None:
    """``"auto"``/``True``: the newest complete checkpoint in ``output_dir`` (or none); a path: that checkpoint."""
    from .trainer import incomplete_checkpoints, latest_checkpoint

    if resume in (None, False, "no", "never"):
        return None
    if resume in (True, "auto", "latest"):
        for bad in incomplete_checkpoints(config.output_dir):
            log.warning("ignoring %s: its save did not finish (no completion marker)", bad)
        found = latest_checkpoint(config.output_dir)
        return str(found) if found else None
    path = Path(resume)
    if not (path / "medvr_state.json").is_file():
        raise ConfigError(f"{path} is not a complete MedVR checkpoint (no medvr_state.json)")
    return str(path)


def train(config: TrainConfig, *, resume: str | os.PathLike | bool | None = "auto", policy: Any = None,
          callbacks: Sequence[Any] = (), **grpo_overrides: Any):
    """Train ``config`` (resuming from its newest complete checkpoint by default); returns the trainer."""
    trainer = build_trainer(config, policy=policy, callbacks=callbacks, **grpo_overrides)
    if trainer.accelerator.is_main_process:
        write_text(Path(config.output_dir) / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    checkpoint = resolve_resume(config, resume)
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    save_final(trainer, Path(config.output_dir) / "final")
    return trainer


def save_final(trainer: Any, final: Path) -> Path:
    """The trained weights and the processor, written next to ``final`` and renamed into place when complete."""
    staging = final.with_name(f".{final.name}.partial")
    trainer.save_model(str(staging))
    if trainer.accelerator.is_main_process:
        processor = trainer.policy.vlm.processor
        processor.save_pretrained(str(staging))
        # transformers 5 writes Qwen-VL's image settings only through the image processor itself
        # (preprocessor_config.json); without it the saved model does not load.
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is not None:
            image_processor.save_pretrained(str(staging))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    trainer.accelerator.wait_for_everyone()
    return final


__all__ = ["build_dataset", "build_grpo_args", "build_peft", "build_policy", "build_trainer", "make_env_factory",
           "resolve_resume", "save_final", "train"]
