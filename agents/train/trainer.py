"""MedVRGRPOTrainer: TRL's GRPOTrainer, with groups played by the MedVR VLM policy in MedVR envs.

TRL 1.16's public ``rollout_func`` cannot carry images the env inserts mid-episode (zoom crops): the loss forward
would see placeholders without pixels (``docs/reference/trainers.md`` §1.4). This subclass overrides the private
``_generate`` instead and returns, per sample, every image in placeholder order; with a (no-op) tool registered,
TRL then builds the loss forward's ``pixel_values``/``image_grid_thw`` from those images. What we add:

- **Rollouts.** Each group of ``num_generations`` rows (one dataset sample) is played by
  :class:`agents.vlm.VLMPolicy` in pooled envs reset to that sample; with EVR on, the group comes from
  ``policy.rollout_group`` (branches share the parent's prefix), otherwise from independent rollouts.
- **Samples.** Each trajectory is one token sequence (:mod:`agents.train.samples`): prompt ids, completion ids,
  the generated-token mask (env-inserted text and images get no loss), the sampler's log-probs and the images.
- **Rollout records.** With a :class:`~agents.train.callbacks.RolloutRecords`, the episode records of a sample
  of training generations go to ``rollouts.jsonl`` with their ``group`` field (``agents/report/groups.py``).
- **Checks.** Placeholder counts are checked per sample before any forward (:func:`check_image_tokens`), and the
  batch TRL built is checked to still carry the images (TRL drops them all silently on a mismatch).
- **Groups.** A group never straddles processes (the config check), so group-level rewards (CCA) see whole groups.
- **Determinism.** Rollout and env seeds derive from ``(seed, global step, process)``, so a resumed run replays
  the step it was killed in exactly.
- **Checkpoints.** TRL's checkpoint, then ``medvr_state.json`` written atomically last: a checkpoint without it is
  incomplete and never resumed from (:func:`latest_checkpoint`).

Supported families: Qwen-VL (``pixel_values`` + ``image_grid_thw``) and fixed-size-image models such as the
project's ``medvr_tiny`` (one ``pixel_values`` row per image); TRL splits other layouts (tiles, image sizes) wrongly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from trl import GRPOTrainer
from trl.models import unwrap_model_for_generation

from agents.runner import write_json

from .rewards import group_credit
from .samples import ImageTokenMismatch, TrainSample, check_image_tokens, rollout_to_sample

log = logging.getLogger(__name__)

STATE_FILE = "medvr_state.json"
SUPPORTED_VISION_INPUTS = {"pixel_values", "image_grid_thw"}


def env_inserted_images(image_index: int) -> str:
    """Stands for the env's tools inside TRL (never called): registering a tool makes TRL's loss forward take the
    path that carries images inserted in the completion.

    Args:
        image_index: Unused.
    """
    return ""


def derived_seed(*parts: int) -> int:
    """A 31-bit seed from integers (stable across runs and processes)."""
    value = 0x9E3779B1
    for p in parts:
        value = (value * 1_000_003 + int(p) + 0x7F4A7C15) % (2**61 - 1)
    return value % (2**31 - 1)


class MedVRGRPOTrainer(GRPOTrainer):
    """GRPO on MedVR rollouts (see the module docstring).

    Args:
        policy: The :class:`agents.vlm.VLMPolicy` whose model is trained (its image budget must never evict).
        env_factory: Makes one env (each process keeps a pool, reset to each row's sample).
        reward_funcs, args, train_dataset, callbacks, peft_config: As for ``GRPOTrainer``. Dataset rows need
            ``prompt`` (shown in TRL's logs) and ``sample_index`` (the env sample the group plays).
        evr: EVR settings (:class:`agents.train.config.EVRSettings`) or ``None`` for independent rollouts.
        rollout_seed: Base seed of rollouts and env resets.
        config: A JSON-friendly record saved with each checkpoint.
        cca: CCA settings (:class:`agents.train.config.CCASettings`): with ``enabled``, rollout records carry each
            member's IoU and tool reward.
        rollout_records: Where the rollouts of a sample of generations are written (``None``: nowhere).
    """

    def __init__(self, policy: Any, env_factory: Callable[[], Any], *, reward_funcs: Sequence[Callable],
                 args: Any, train_dataset: Any, callbacks: Sequence[Any] | None = None, peft_config: Any = None,
                 evr: Any = None, rollout_seed: int = 0, config: dict[str, Any] | None = None, cca: Any = None,
                 rollout_records: Any = None) -> None:
        adapter = policy.adapter
        vision_inputs = set(getattr(adapter.image_processor, "model_input_names", None) or ["pixel_values"])
        if not vision_inputs <= SUPPORTED_VISION_INPUTS:
            raise ValueError(
                f"{adapter.name}: its image processor makes {sorted(vision_inputs)}; TRL 1.16 splits the loss "
                f"forward's vision inputs per sample only for Qwen-VL grids (pixel_values + image_grid_thw) and for "
                f"fixed-size images (one pixel_values row per image). Supported: qwen2_vl, qwen2_5_vl, qwen3_vl, "
                f"medvr_tiny"
            )
        budget = policy.budget
        if budget.max_images is not None or budget.max_image_tokens is not None:
            raise ValueError(
                f"the policy's image budget can evict ({budget}); training needs one token sequence per trajectory: "
                f"use ImageBudget(max_images=None, max_image_tokens=None, max_tokens_per_image=...)"
            )
        if abs(float(args.temperature) - float(policy.sampling.temperature)) > 1e-9:
            raise ValueError(f"GRPOConfig.temperature={args.temperature} differs from the rollout temperature "
                             f"{policy.sampling.temperature}: the loss would score another distribution")
        super().__init__(model=policy.model, reward_funcs=list(reward_funcs), args=args, train_dataset=train_dataset,
                         processing_class=policy.vlm.processor, callbacks=list(callbacks or []),
                         peft_config=peft_config)
        if self._image_pad_token_id is None:  # TRL knows only "<|image_pad|>" and "<|image|>" by name
            self._image_pad_token_id = adapter.image_token_id
        if self._image_pad_token_id != adapter.image_token_id:
            raise ValueError(f"TRL's image pad token id {self._image_pad_token_id} is not the policy's "
                             f"{adapter.image_token_id}")
        self.tools = [env_inserted_images]
        self._standalone_tools = [env_inserted_images]
        self.policy = policy
        self.env_factory = env_factory
        self.evr = evr
        self.rollout_seed = int(rollout_seed)
        self.medvr_config = dict(config or {})
        self._envs: list[Any] = []
        self._env_cursor = 0
        self._evr_stats: dict[str, float] = {}
        self._group_ids: list[int] = []
        self._pending_inputs: list[dict[str, Any]] | None = None
        self._last_samples: list[TrainSample] = []
        self._last_links: list[tuple[Any, Any, int | None, int | None]] = []  # (key, parent, fork_turn, fork_token)
        self.cca = cca
        self.rollout_records = rollout_records

    # ------------------------------------------------------------------ generation
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._pending_inputs = inputs
        training = self.model.training
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._pending_inputs = None
        expected = [len(s.images) for s in self._last_samples]
        if any(expected) and ("pixel_values" not in output or output.get("num_images") != expected):
            raise ImageTokenMismatch(
                f"the batch TRL built lost its images (expected {expected} per sample, got "
                f"{output.get('num_images')}): TRL's image processor disagrees with the policy's placeholder counts. "
                f"Use the policy's processor as the trainer's processing_class with the same processor_kwargs"
            )
        if any(expected) and "image_grid_thw" not in output and output["pixel_values"].shape[0] != sum(expected):
            raise ImageTokenMismatch(
                f"pixel_values has {output['pixel_values'].shape[0]} rows for {sum(expected)} images: TRL can split "
                f"vision inputs per sample only with one row per image (or Qwen's image_grid_thw)"
            )
        step = int(self.state.global_step)
        records = self.rollout_records
        if training and records is not None and self.accelerator.is_main_process and records.due(step):
            try:
                records.write(step, self.group_records(self._last_samples, self.num_generations, step))
            except OSError as exc:  # the records are for reading; training goes on without them
                log.warning("rollout records of step %d not written to %s: %s", step, records.path, exc)
        return output

    def group_records(self, samples: Sequence[TrainSample], group_size: int, step: int) -> list[dict[str, Any]]:
        """The episode records of this process's last generation, each with its ``group`` field: the group id
        the reward functions saw, the member's index, its EVR parent (an index in the group), fork turn and token,
        and with CCA on, the IoU and tool reward it was paid (``agents/report/groups.py``)."""
        out = []
        for start in range(0, len(samples), group_size):
            members = list(range(start, start + group_size))
            position = {_key(self._last_links[i][0]): j for j, i in enumerate(members)}
            credit = None
            if self.cca is not None and getattr(self.cca, "enabled", False):
                credit = group_credit(self.cca, [samples[i].fields["episode"] for i in members],
                                      [samples[i].fields["accuracy"] for i in members])
            for j, i in enumerate(members):
                _, parent, fork_turn, fork_token = self._last_links[i]
                info: dict[str, Any] = {
                    "id": f"step {step}/{self._group_ids[i]}", "index": j, "step": step,
                    "parent": None if parent is None else position.get(_key(parent)),
                    "fork_turn": fork_turn, "fork_token": fork_token,
                }
                if credit is not None:
                    info["iou"] = _finite(credit.members[j].iou)
                    info["tool_reward"] = _finite(credit.members[j].tool_reward)
                record = samples[i].fields["episode"].to_dict()
                record["group"] = info
                out.append(record)
        return out

    def _generate(self, prompts: list):
        inputs = self._pending_inputs
        if inputs is None or len(inputs) != len(prompts):
            raise RuntimeError("MedVRGRPOTrainer._generate runs only inside _generate_and_score_completions")
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        samples = self.play_groups([int(row["sample_index"]) for row in inputs], group_size)
        check_image_tokens(samples, self.policy.adapter.image_token_id, self.policy.adapter.image_tokens)
        self._last_samples = samples
        self._log_rollout_metrics(samples, mode)

        images = [list(s.images) for s in samples]
        extra = {key: [s.fields[key] for s in samples] for key in samples[0].fields}
        extra["group"] = [self._group_ids[i] for i in range(len(samples))]
        return ([s.prompt_ids for s in samples], [s.completion_ids for s in samples], [s.tool_mask for s in samples],
                [s.text for s in samples], [s.logprobs for s in samples], extra, images, images)

    def play_groups(self, sample_indices: Sequence[int], group_size: int) -> list[TrainSample]:
        """Play one group per run of ``group_size`` equal sample indices; samples in the same order."""
        n = len(sample_indices)
        if n % group_size:
            raise ValueError(f"{n} rows is not a whole number of groups of {group_size}")
        groups = [list(sample_indices[i:i + group_size]) for i in range(0, n, group_size)]
        for g, rows in enumerate(groups):
            if len(set(rows)) != 1:
                raise ValueError(f"group {g} mixes samples {sorted(set(rows))}: the sampler must repeat each sample "
                                 f"num_generations times in a row")
        step = int(self.state.global_step)
        rank = int(self.accelerator.process_index)
        self.policy.sampling.seed = derived_seed(self.rollout_seed, step, rank)
        self._group_ids = [derived_seed(step, rank, i // group_size) for i in range(n)]
        self._env_cursor = 0
        with self._generation_model():
            if self.evr is not None and getattr(self.evr, "enabled", False):
                rollouts = self._play_evr(groups, group_size, step, rank)
            else:
                seeds = [derived_seed(self.rollout_seed, step, rank, i, 1) for i in range(n)]
                options = [{"index": int(i)} for i in sample_indices]
                envs = [self._pooled_env() for _ in range(n)]
                rollouts = self.policy.rollout(envs, seeds=seeds, options=options, keys=list(range(n)))
        self._last_links = [(r.key, getattr(r, "parent", None), getattr(r, "fork_turn", None),
                             getattr(r, "fork_token", None)) for r in rollouts]
        return [rollout_to_sample(r) for r in rollouts]

    def _pooled_env(self) -> Any:
        """The next env of this process's pool (made on first use); the pool is handed out afresh every batch."""
        if self._env_cursor == len(self._envs):
            self._envs.append(self.env_factory())
        env = self._envs[self._env_cursor]
        self._env_cursor += 1
        return env

    def _play_evr(self, groups: list[list[int]], group_size: int, step: int, rank: int) -> list[Any]:
        """EVR groups (``VLMPolicy.rollout_groups``): G/2 independent trajectories, the rest branched at the first
        box coordinate when the coordinate entropy rises; children share the parent's prefix and env state."""
        from agents.vlm import EVRConfig

        e = self.evr
        config = EVRConfig(group_size=group_size, independent=e.independent, window=e.window,
                           baseline_tokens=e.baseline_tokens, p_base=e.p_base, gamma=e.gamma,
                           min_delta=e.min_delta, seed=self.policy.sampling.seed)
        result = self.policy.rollout_groups(
            self._pooled_env,
            seeds=[derived_seed(self.rollout_seed, step, rank, g, 2) for g in range(len(groups))],
            options=[{"index": int(rows[0])} for rows in groups], evr=config,
        )
        self._evr_stats = dict(result.stats)
        rollouts = []
        for group in result.groups:
            if len(group.rollouts) != group_size:
                raise RuntimeError(f"EVR returned {len(group.rollouts)} trajectories for a group of {group_size}")
            rollouts += group.rollouts
        return rollouts

    @contextlib.contextmanager
    def _generation_model(self):
        """The trained weights, unwrapped from DDP/DeepSpeed, in eval mode, without gradient checkpointing."""
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs) as m:
            base = m.get_base_model() if hasattr(m, "get_base_model") else m
            if base is not self.policy.model:
                raise RuntimeError(
                    "the model being trained is not the object the policy generates with (parameter sharding such "
                    "as DeepSpeed ZeRO-3 or FSDP copies or re-wraps it); use DDP or ZeRO-1/2"
                )
            was_training = m.training
            m.eval()
            try:
                yield m
            finally:
                m.train(was_training)

    def _log_rollout_metrics(self, samples: Sequence[TrainSample], mode: str) -> None:
        """Rollout statistics, averaged over every process's samples (TRL logs them with its own)."""
        device = self.accelerator.device
        names = ["accuracy", "correct", "answered", "well_formed", "tool_rate", "looks", "turns", "rollout_entropy",
                 "branched", "images", "generated_tokens", "completion_tokens"]
        rows = []
        for s in samples:
            f = s.fields
            rows.append([f["accuracy"], float(f["correct"]), float(f["answered"]), float(f["well_formed"]),
                         float(f["looked"]),
                         float(f["looks"]), float(f["turns"]), f["entropy"], float(f["branched"]),
                         float(len(s.images)), float(s.generated_tokens), float(len(s.completion_ids))])
        local = torch.tensor(rows, dtype=torch.float64, device=device)
        valid = ~torch.isnan(local)
        stats = torch.stack([torch.nan_to_num(local).sum(0), valid.sum(0).double()])
        total = self.accelerator.gather(stats[None]).sum(0)
        for j, name in enumerate(names):
            if total[1, j] > 0:
                self._metrics[mode][f"medvr/{name}"].append((total[0, j] / total[1, j]).item())
        if self._evr_stats:  # EVR counters of this batch, summed over processes (rates recomputed from the sums)
            keys = sorted(k for k in self._evr_stats if k != "branch_rate")
            summed = self.accelerator.gather(torch.tensor([[float(self._evr_stats[k]) for k in keys]],
                                                          dtype=torch.float64, device=device)).sum(0)
            totals = dict(zip(keys, summed.tolist()))
            for k, v in totals.items():
                self._metrics[mode][f"evr/{k}"].append(v)
            if totals.get("opportunities"):
                self._metrics[mode]["evr/branch_rate"].append(totals.get("branches", 0.0) / totals["opportunities"])
            self._evr_stats = {}
        n_tokens = self.accelerator.gather(torch.tensor(
            [sum(len(s.token_ids) for s in samples)], device=device)).sum().item()
        if mode == "train":
            self.state.num_input_tokens_seen += n_tokens
        self._metrics[mode]["num_tokens"] = [self.state.num_input_tokens_seen]

    # ------------------------------------------------------------------ checkpoints
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Load a checkpoint's weights through ``from_pretrained``, which maps saved key names back.

        transformers 5 saves VLMs under their original key names (``model.layers.*`` for Qwen2.5-VL's
        ``model.language_model.layers.*``) but ``Trainer`` loads a resumed checkpoint's state dict as it is, with
        ``strict=False``: every weight is reported missing and the resumed run silently continues from the weights
        it started with. Adapter (LoRA), FSDP and DeepSpeed checkpoints keep the stock path.
        """
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        if (hasattr(target, "get_base_model") or self.is_fsdp_enabled or self.is_deepspeed_enabled
                or not _has_full_weights(resume_from_checkpoint)):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(target.parameters()).dtype
        saved = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype, local_files_only=True)
        target.load_state_dict(saved.state_dict(), strict=True)
        del saved

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            write_json(folder / STATE_FILE, {
                "global_step": int(self.state.global_step),
                "rollout_seed": self.rollout_seed,
                "complete": True,
                "config": self.medvr_config,
            })


def _key(key: Any) -> Any:
    """A rollout key as a dict key (EVR keys may come back as lists)."""
    return tuple(key) if isinstance(key, list) else key


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _has_full_weights(folder: str | os.PathLike) -> bool:
    return any((Path(folder) / name).is_file() for name in
               ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"))


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint (one with ``medvr_state.json``) under ``output_dir``, or ``None``."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if m and path.is_dir() and (path / STATE_FILE).is_file():
            try:
                state = json.loads((path / STATE_FILE).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if state.get("complete"):
                found.append((int(m.group(1)), path))
    return max(found)[1] if found else None


def incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint folders without a completion marker (a save that was interrupted)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir() and not (p / STATE_FILE).is_file())


__all__ = ["MedVRGRPOTrainer", "STATE_FILE", "derived_seed", "env_inserted_images", "incomplete_checkpoints",
           "latest_checkpoint"]
