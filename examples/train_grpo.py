"""GRPO on MedVR with TRL, in one file: a VLM learns to zoom before it answers.

    python examples/train_grpo.py --tiny                       # CPU smoke run, tiny random Qwen2.5-VL (~1 min)
    python examples/train_grpo.py --model /models/Qwen2.5-VL-7B-Instruct --env-id MedVR-OmniMedVQA-v0 \
        --data-root /data/OmniMedVQA --evr --cca --total-steps 500
    accelerate launch --config_file examples/accelerate_multi_gpu.yaml examples/train_grpo.py --model ...

What happens at each step (the rest is TRL's GRPOTrainer: loss, KL, optimizer, logging, checkpoints):
1. TRL's sampler hands each process whole groups: ``group_size`` copies of a dataset row per prompt.
2. ``MedVRGRPOTrainer._generate`` plays each group in MedVR envs reset to that sample, with the VLM policy
   (multi-turn; every zoom puts a crop back into the context as an image).
3. Each trajectory becomes one sequence: prompt ids | completion ids, where the completion holds the model's turns
   and the env's replies and crops; only the model's own tokens get loss (``tool_mask``).
4. Rewards: R = R_acc + R_format + 1[R_acc > 0]·R_tool (CCA's consensus credit over the group when --cca).
5. GRPO advantages per group, then the clipped policy-gradient loss on a forward that sees every crop.

The same run from a YAML file: ``medvr train --config examples/grpo_tiny.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


@dataclass
class Args:
    model: str = ""
    """checkpoint folder of an image-text-to-text model (Qwen-VL family)"""
    tiny: bool = False
    """build a tiny random-weight Qwen2.5-VL offline and train it on CPU for a few steps"""
    env_id: str = "MedVR-VQA-Text-v0"
    """registered env id (`medvr envs`)"""
    data_root: str = ""
    """dataset folder for real-data env ids"""
    num_samples: int = 0
    """train on the first N samples of the split (0: all)"""
    max_env_steps: int = 5
    """tool calls + answer per episode"""
    group_size: int = 16
    """trajectories per prompt (GRPO group)"""
    groups_per_step: int = 1
    """groups each process plays per optimizer step"""
    total_steps: int = 500
    """optimizer steps"""
    learning_rate: float = 1e-6
    beta: float = 1e-3
    """KL coefficient to the reference model (0: no reference model)"""
    loss_type: str = "grpo"
    """TRL loss: grpo | dr_grpo | dapo | bnpo | ..."""
    temperature: float = 1.0
    max_new_tokens: int = 512
    """per turn"""
    evr: bool = False
    """EVR branching groups (needs VLMPolicy.rollout_group)"""
    cca: bool = False
    """CCA consensus tool reward"""
    output_dir: str = "runs/train_grpo"
    save_steps: int = 50
    seed: int = 0


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true")
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            parser.add_argument(flag, type=kind, default=f.default)
    return Args(**vars(parser.parse_args()))


def main() -> None:
    args = parse_args()
    import gymnasium as gym
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from trl import GRPOConfig

    import medvr_env  # noqa: F401  (registers the env ids)
    from agents.train.config import CCASettings, EVRSettings, RewardSettings
    from agents.train.rewards import reward_functions
    from agents.train.trainer import MedVRGRPOTrainer
    from agents.vlm import ImageBudget, SamplingConfig, VLMPolicy, load_vlm

    if args.tiny:  # a CPU smoke run: small everything
        from agents.testing import build_tiny_vlm

        torch.set_num_threads(1)
        args.model = str(build_tiny_vlm("qwen2_5_vl", Path(args.output_dir) / "tiny-qwen25"))
        args.group_size, args.total_steps, args.num_samples, args.max_new_tokens = 4, 3, 8, 32
        args.max_env_steps, args.learning_rate, args.beta, args.save_steps = 3, 1e-4, 0.0, 3
    if not args.model:
        raise SystemExit("error: pass --model PATH (a Qwen-VL checkpoint folder) or --tiny")

    # The policy: the model being trained, sampling like it will be trained on. The image budget never evicts, so a
    # trajectory stays one token sequence (the loss needs exactly what the model saw).
    device = PartialState().device
    policy = VLMPolicy(
        load_vlm(args.model, device=device),
        sampling=SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                max_turns=args.max_env_steps, seed=args.seed),
        budget=ImageBudget(max_images=None, max_image_tokens=None),
    )

    # The envs: one per trajectory a process plays at once, reset to each group's sample.
    env_kwargs = {"max_steps": args.max_env_steps}
    if args.data_root:
        env_kwargs["data_root"] = args.data_root
    if args.tiny:
        env_kwargs["dataset_kwargs"] = {"num_samples": args.num_samples}

    def make_env():
        return gym.make(args.env_id, **env_kwargs)

    # The dataset TRL samples from: one row per env sample (the question is only for TRL's logs).
    samples = make_env().unwrapped.dataset
    n = len(samples) if not args.num_samples else min(args.num_samples, len(samples))
    dataset = Dataset.from_dict({"prompt": [samples[i].question for i in range(n)], "sample_index": list(range(n))})

    # The rewards, each over the whole local batch (whole groups): accuracy, format, CCA tool credit.
    reward_funcs, weights = reward_functions(RewardSettings(), CCASettings(enabled=args.cca), args.group_size)

    # TRL's GRPO settings; whole groups per process so group rewards never straddle processes.
    grpo = GRPOConfig(
        output_dir=args.output_dir, seed=args.seed, max_steps=args.total_steps, learning_rate=args.learning_rate,
        num_generations=args.group_size, per_device_train_batch_size=args.group_size * args.groups_per_step,
        loss_type=args.loss_type, beta=args.beta, temperature=args.temperature, reward_weights=weights,
        remove_unused_columns=False, logging_steps=1, save_steps=args.save_steps, report_to="none",
        use_cpu=device.type == "cpu", bf16=device.type == "cuda",
    )
    trainer = MedVRGRPOTrainer(policy, make_env, reward_funcs=reward_funcs, args=grpo, train_dataset=dataset,
                               evr=EVRSettings(enabled=args.evr), rollout_seed=args.seed)
    trainer.train(resume_from_checkpoint=_latest(args.output_dir))
    trainer.save_model(os.path.join(args.output_dir, "final"))
    last = [r for r in trainer.state.log_history if "reward" in r][-1]
    print(f"done: {trainer.state.global_step} steps; last reward {last['reward']:.3f}, "
          f"accuracy {last['medvr/accuracy']:.3f}, tool rate {last['medvr/tool_rate']:.3f}")


def _latest(output_dir: str) -> str | None:
    from agents.train.trainer import latest_checkpoint

    found = latest_checkpoint(output_dir)
    return str(found) if found else None


if __name__ == "__main__":
    main()
