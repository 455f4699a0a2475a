"""The training configuration: one YAML file for ``medvr train --config FILE``.

Everything a GRPO run needs, in sections:

    model: /models/Qwen2.5-VL-7B-Instruct     # checkpoint folder (or Hub id when online)
    output_dir: runs/grpo
    seed: 0
    env:      {id: MedVR-OmniMedVQA-v0, kwargs: {split: train, max_steps: 5}, limit: null}
    policy:   {temperature: 1.0, max_new_tokens: 512, max_turns: 5, max_tokens_per_image: 1280}
    evr:      {enabled: true, p_base: 0.5, gamma: 0.5}
    cca:      {enabled: true, eta: 0.5}
    rewards:  {accuracy: 1.0, format: 1.0, tool: 1.0, format_penalty: -0.2}
    lora:     {r: 16, alpha: 32}              # optional; omit for full fine-tuning
    grpo:     {num_generations: 16, per_device_train_batch_size: 16, beta: 0.001, learning_rate: 1.0e-6, ...}
    log_rollouts_every: null                  # rollouts.jsonl: null = every grpo.logging_steps; 0 = off
    log_rollouts_max: 2000

The ``grpo`` section is passed to TRL's ``GRPOConfig`` as it is (any of its fields); the keys this module sets
itself from the other sections (``output_dir``, ``seed``, ``temperature``, ...) are refused there with a pointer to
the right section. This module imports neither torch nor TRL, so a config can be read and checked anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A training config that cannot run: the message says which key and how to fix it."""


@dataclass
class EnvSettings:
    """Which env the rollouts play, and its kwargs (dataset selection, tools, ``max_steps``, ...).

    Attributes:
        id: A registered env id (``medvr envs`` lists them).
        kwargs: Passed to ``gym.make``: ``split``, ``data_root``, ``num_samples``, ``dataset_kwargs``, ``max_steps``...
        limit: Train on the first this-many samples of the split only (``None``: all).
    """

    id: str = "MedVR-VQA-Text-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None


@dataclass
class PolicySettings:
    """How the VLM policy samples during training (see :class:`agents.vlm.SamplingConfig`).

    Attributes:
        temperature: Rollout temperature; the loss scores tokens at the same temperature.
        top_p, top_k: Nucleus / top-k truncation of the rollout sampler.
        max_new_tokens: Per turn.
        max_turns: Per episode (the env's ``max_steps`` also bounds it).
        max_tokens_per_image: Cap on one image's placeholder tokens (dynamic-resolution families). No image is ever
            evicted during training: a rollout must stay one token sequence for the loss.
        device: ``"auto"`` (the trainer's device), ``"cpu"``, ``"cuda"``.
        dtype: ``"auto"`` (bfloat16 on GPU, float32 on CPU), ``"float32"``, ``"bfloat16"``.
        processor_kwargs: Passed to the processor (e.g. ``max_pixels``).
        attn_implementation: Passed to the model loader (e.g. ``"sdpa"``, ``"flash_attention_2"``).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    max_turns: int | None = 5
    max_tokens_per_image: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    attn_implementation: str | None = None


@dataclass
class EVRSettings:
    """Entropy-guided Visual Regrounding: how each group of rollouts is played (method.md §2).

    Attributes:
        enabled: Branch groups with EVR; off: every trajectory of a group is an independent rollout.
        independent: Independent rollouts per group (``None``: half the group); the rest are branch slots.
        p_base: Base branch probability ``P_base``.
        gamma: Entropy weight ``γ`` in ``P = clip(P_base + γ·ΔH, 0, 1)``.
        baseline_tokens: ``H_base`` is the mean entropy of a trajectory's first this-many generated tokens.
        window: Rolling window over the box-coordinate tokens for ``H_tool``.
        min_delta: A fork is considered only when ``H_tool - H_base`` exceeds this.
    """

    enabled: bool = False
    independent: int | None = None
    p_base: float = 0.5
    gamma: float = 0.5
    baseline_tokens: int = 20
    window: int = 8
    min_delta: float = 0.0


@dataclass
class CCASettings:
    """Consensus-based Credit Assignment: the group-level tool reward (method.md §3).

    Attributes:
        enabled: Reward correct zooming trajectories by their footprint's IoU with the group's consensus; off: the
            tool reward is 0.
        eta: IoU threshold: ``R_tool`` is 1.0 above it, 0.5 otherwise (only with a correct answer).
        grid: Footprints are rasterised on this many cells per image side (``"pixels"``: original pixels).
        min_correct: Fewer voters than this: no consensus, a correct zooming trajectory gets 0.5.
        voters: ``"correct"`` (every correct trajectory votes; the paper's formula) or ``"correct_looking"``.
        no_look_reward: ``R_tool`` of a correct trajectory that never zoomed.

    Edge cases (no correct trajectory, one, empty consensus) are decided in :mod:`agents.credit.cca`.
    """

    enabled: bool = False
    eta: float = 0.5
    grid: Any = 64
    min_correct: int = 2
    voters: str = "correct"
    no_look_reward: float = 0.0


@dataclass
class RewardSettings:
    """``R = w_acc·R_acc + w_format·R_format + w_tool·1[R_acc > 0]·R_tool`` (method.md §4.1).

    Attributes:
        accuracy, format, tool: The weights TRL applies (``reward_weights``).
        format_penalty: ``R_format`` of an ill-formed trajectory (an invalid action, or no answer); 0 otherwise.
    """

    accuracy: float = 1.0
    format: float = 1.0
    tool: float = 1.0
    format_penalty: float = -0.2


@dataclass
class LoraSettings:
    """LoRA adapters through TRL's ``peft_config`` (needs ``peft``); omit the section for full fine-tuning.

    Attributes:
        r, alpha, dropout: The usual LoRA hyperparameters.
        target_modules: Module names or ``"all-linear"``.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"


# GRPOConfig fields the other sections own: a ``grpo`` key among them is a mistake, with this fix.
OWNED_GRPO_KEYS = {
    "output_dir": "set output_dir at the top level",
    "seed": "set seed at the top level",
    "temperature": "set policy.temperature (rollouts and loss use the same)",
    "top_p": "set policy.top_p",
    "top_k": "set policy.top_k",
    "reward_weights": "set the rewards section (accuracy, format, tool)",
    "remove_unused_columns": "the trainer needs every dataset column; leave it unset",
    "use_vllm": "rollouts run on the MedVR VLM policy (multi-turn, env-inserted crops); vLLM is not used",
    "mask_truncated_completions": "TRL calls a completion truncated when its last token is not EOS, but MedVR turns "
                                  "also end at stop strings (</answer>, </tool_call>); an episode without an answer "
                                  "already gets the format penalty",
}

DEFAULT_GRPO: dict[str, Any] = {
    # method.md Defaults: GRPO with a KL penalty, group of 16, lr 1e-6, temperature 1
    "num_generations": 16,
    "per_device_train_batch_size": 16,
    "loss_type": "grpo",
    "beta": 1e-3,
    "learning_rate": 1e-6,
    "scale_rewards": "group",
    "logging_steps": 1,
    "save_steps": 50,
    "report_to": "none",
}


@dataclass
class TrainConfig:
    """One GRPO run (see the module docstring for the YAML layout).

    Attributes:
        log_rollouts_every: Write the rollouts of the generation at step 0 and then of one generation every this
            many optimizer steps to ``output_dir/rollouts.jsonl`` (episode records with their ``group`` field, read
            by ``medvr report``); ``None``: every ``grpo.logging_steps`` steps; ``0``: write none.
        log_rollouts_max: At most this many records in ``rollouts.jsonl`` (later generations are not written).
    """

    model: str
    output_dir: str = "runs/grpo"
    seed: int = 0
    env: EnvSettings = field(default_factory=EnvSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    evr: EVRSettings = field(default_factory=EVRSettings)
    cca: CCASettings = field(default_factory=CCASettings)
    rewards: RewardSettings = field(default_factory=RewardSettings)
    lora: LoraSettings | None = None
    grpo: dict[str, Any] = field(default_factory=dict)
    log_rollouts_every: int | None = None
    log_rollouts_max: int = 2000

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "config") -> TrainConfig:
        """Build from a mapping (parsed YAML); unknown keys are errors that name the closest known key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of sections, got {type(data).__name__}")
        data = dict(data)
        _check_keys(data, [f.name for f in dataclasses.fields(cls)], where)
        if "model" not in data or not data["model"]:
            raise ConfigError(f"{where}: 'model' is required (a checkpoint folder, e.g. /models/Qwen2.5-VL-7B-Instruct)")
        sections = {"env": EnvSettings, "policy": PolicySettings, "evr": EVRSettings, "cca": CCASettings,
                    "rewards": RewardSettings, "lora": LoraSettings}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                if value is None:
                    kwargs[key] = None if key == "lora" else sections[key]()
                    continue
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{where}: section {key!r} must be a mapping, got {value!r}")
                section = sections[key]
                _check_keys(value, [f.name for f in dataclasses.fields(section)], f"{where}: {key}")
                kwargs[key] = section(**value)
            elif key == "grpo":
                if value is not None and not isinstance(value, Mapping):
                    raise ConfigError(f"{where}: section 'grpo' must be a mapping of GRPOConfig fields")
                kwargs[key] = dict(value or {})
            else:
                kwargs[key] = value
        config = cls(**kwargs)
        config.validate(where)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data or {}, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ checks
    def grpo_kwargs(self) -> dict[str, Any]:
        """The ``grpo`` section over the defaults (what goes to ``GRPOConfig``, before the owned keys are added)."""
        return {**DEFAULT_GRPO, **self.grpo}

    @property
    def num_generations(self) -> int:
        return int(self.grpo_kwargs()["num_generations"])

    def rollout_log_every(self) -> int:
        """Steps between generations written to ``rollouts.jsonl`` (0: none); see ``log_rollouts_every``."""
        if self.log_rollouts_every is not None:
            return int(self.log_rollouts_every)
        g = self.grpo_kwargs()
        steps = float(g.get("logging_steps") or 1)
        if steps < 1:  # a fraction of the run, as transformers reads it
            steps = math.ceil(max(int(g.get("max_steps") or 0), 1) * steps)
        return max(1, int(steps))

    def local_generation_batch(self) -> int:
        """Rollouts one process plays per generation: ``per_device_train_batch_size * steps_per_generation``."""
        g = self.grpo_kwargs()
        steps = g.get("steps_per_generation") or g.get("gradient_accumulation_steps", 1)
        return int(g["per_device_train_batch_size"]) * int(steps)

    def validate(self, where: str = "config") -> None:
        """Checks that need no TRL: owned keys, group sizes, EVR/CCA ranges (GRPOConfig checks the rest)."""
        for key in ("log_rollouts_every", "log_rollouts_max"):
            value = getattr(self, key)
            if value is None and key == "log_rollouts_every":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}: {key} must be a whole number >= 0 (0 writes no rollouts), got {value!r}")
        for key in self.grpo:
            if key in OWNED_GRPO_KEYS:
                raise ConfigError(f"{where}: grpo.{key} is not allowed here: {OWNED_GRPO_KEYS[key]}")
        g = self.grpo_kwargs()
        n = int(g["num_generations"])
        if n < 2:
            raise ConfigError(f"{where}: grpo.num_generations must be >= 2 (a group needs a baseline), got {n}")
        local = self.local_generation_batch()
        if local % n:
            raise ConfigError(
                f"{where}: each process plays per_device_train_batch_size x steps_per_generation = {local} rollouts "
                f"per generation, not a multiple of num_generations = {n}. A group would straddle processes, and "
                f"EVR branching and CCA consensus need the whole group in one place: make it a multiple of {n}."
            )
        if self.evr.independent is not None and not 1 <= self.evr.independent <= n:
            raise ConfigError(f"{where}: evr.independent must be in [1, num_generations={n}], got {self.evr.independent}")
        if not 0.0 <= self.evr.p_base <= 1.0:
            raise ConfigError(f"{where}: evr.p_base must be in [0, 1], got {self.evr.p_base}")
        if not 0.0 <= self.cca.eta <= 1.0:
            raise ConfigError(f"{where}: cca.eta must be in [0, 1], got {self.cca.eta}")
        if self.policy.temperature <= 0:
            raise ConfigError(f"{where}: policy.temperature must be > 0 for GRPO (greedy groups have no spread)")
        save_steps, spg = g.get("save_steps"), g.get("steps_per_generation")
        if isinstance(save_steps, int) and spg and save_steps % int(spg):
            raise ConfigError(
                f"{where}: grpo.save_steps={save_steps} is not a multiple of steps_per_generation={spg}; a checkpoint "
                f"inside a generation cannot resume exactly (the buffered rollouts are not saved)"
            )


def _check_keys(data: Mapping[str, Any], known: list[str], where: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


__all__ = ["CCASettings", "ConfigError", "EVRSettings", "EnvSettings", "LoraSettings", "PolicySettings",
           "RewardSettings", "TrainConfig", "DEFAULT_GRPO", "OWNED_GRPO_KEYS"]
