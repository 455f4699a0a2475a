"""The ``medvr:`` section of a verl config: every MedVR knob, read into ``medvr train``'s own dataclasses.

verl's Hydra config has no place for an env, EVR or CCA, so MedVR adds one top-level section (the example config
``examples/verl/medvr_qwen25vl_7b.yaml`` shows all of it)::

    medvr:
      env:     {id: MedVR-OmniMedVQA-v0, kwargs: {split: train, max_steps: 5}, factory: null}
      policy:  {max_new_tokens: 1024, max_turns: 5, max_tokens_per_image: 1280}
      evr:     {enabled: true, independent: 8, p_base: 0.5, gamma: 0.5, baseline_tokens: 20, window: 8, min_delta: 0.0}
      cca:     {enabled: true, eta: 0.5, grid: 64, min_correct: 2, voters: correct, no_look_reward: 0.0}
      rewards: {accuracy: 1.0, format: 1.0, tool: 1.0, format_penalty: -0.2}
      entropy: {source: topk, top_k: 10}
      seed: 0

``env``, ``evr``, ``cca`` and ``rewards`` are :mod:`agents.train.config`'s sections with the same names and meanings
(plus ``env.factory``, an import path ``"pkg.mod:callable"`` called with ``env.kwargs`` instead of ``gym.make``).
The group size is verl's ``actor_rollout_ref.rollout.n``; temperature, top-p and top-k are verl's rollout keys.
This module imports neither verl nor torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agents.train.config import CCASettings, ConfigError, EVRSettings, RewardSettings, _check_keys

ENTROPY_SOURCES = ("topk", "surprisal")


@dataclass
class VerlEnvSettings:
    """Which env each trajectory plays (one env per trajectory, never shared).

    Attributes:
        id: A registered env id (``gym.make(id, **kwargs)``).
        kwargs: Passed to ``gym.make`` (or to ``factory``): ``split``, ``data_root``, ``max_steps``, tools...
        factory: Optional import path ``"pkg.mod:callable"`` building the env from ``kwargs`` (instead of ``id``).
    """

    id: str = "MedVR-VQA-Text-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)
    factory: str | None = None


@dataclass
class VerlPolicySettings:
    """How each trajectory is played through verl's token server.

    Attributes:
        max_new_tokens: Per turn (also bounded by what is left of verl's ``rollout.response_length``).
        max_turns: Per episode (the env's ``max_steps`` also bounds it).
        max_tokens_per_image: Cap on one image's placeholder tokens (each view and crop); no image is ever evicted
            during training, a trajectory stays one token sequence.
    """

    max_new_tokens: int = 1024
    max_turns: int | None = 5
    max_tokens_per_image: int | None = None


@dataclass
class EntropySettings:
    """Where EVR's per-token entropies come from.

    Attributes:
        source: ``"topk"``: the normalised entropy over the top-k log-probs that :mod:`.replica`'s vLLM server
            returns (ARPO's estimate; needs that replica, registered by :mod:`.main`). ``"surprisal"``: the sampled
            token's ``-log p / log |V|`` (works with verl's stock server, which returns only that log-prob; it
            equals the entropy in expectation over the sampled token, but is noisier per token).
        top_k: k for ``"topk"`` (ARPO used 10).
    """

    source: str = "topk"
    top_k: int = 10


@dataclass
class MedVRVerlSettings:
    """Everything MedVR adds to a verl run (the ``medvr:`` section)."""

    env: VerlEnvSettings = field(default_factory=VerlEnvSettings)
    policy: VerlPolicySettings = field(default_factory=VerlPolicySettings)
    evr: EVRSettings = field(default_factory=EVRSettings)
    cca: CCASettings = field(default_factory=CCASettings)
    rewards: RewardSettings = field(default_factory=RewardSettings)
    entropy: EntropySettings = field(default_factory=EntropySettings)
    seed: int = 0

    SECTIONS: ClassVar[dict[str, type]] = {"env": VerlEnvSettings, "policy": VerlPolicySettings, "evr": EVRSettings, "cca": CCASettings,
                "rewards": RewardSettings, "entropy": EntropySettings}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "medvr") -> MedVRVerlSettings:
        """Build from the ``medvr`` section (a dict or an OmegaConf node); unknown keys name the closest known one."""
        if data is None:
            return cls()
        data = _plain(data)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of sections, got {type(data).__name__}")
        _check_keys(data, [*cls.SECTIONS, "seed"], where)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "seed":
                kwargs[key] = int(value)
                continue
            section = cls.SECTIONS[key]
            if value is None:
                kwargs[key] = section()
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: must be a mapping, got {value!r}")
            _check_keys(value, [f.name for f in dataclasses.fields(section)], f"{where}.{key}")
            kwargs[key] = section(**value)
        settings = cls(**kwargs)
        settings.validate(where)
        return settings

    def validate(self, where: str = "medvr") -> None:
        if self.entropy.source not in ENTROPY_SOURCES:
            raise ConfigError(f"{where}.entropy.source must be one of {ENTROPY_SOURCES}, got {self.entropy.source!r}")
        if self.entropy.source == "topk" and not 1 <= int(self.entropy.top_k) <= 100:
            raise ConfigError(f"{where}.entropy.top_k must be in [1, 100], got {self.entropy.top_k}")
        if not 0.0 <= self.evr.p_base <= 1.0:
            raise ConfigError(f"{where}.evr.p_base must be in [0, 1], got {self.evr.p_base}")
        if not 0.0 <= self.cca.eta <= 1.0:
            raise ConfigError(f"{where}.cca.eta must be in [0, 1], got {self.cca.eta}")
        if self.policy.max_new_tokens < 1:
            raise ConfigError(f"{where}.policy.max_new_tokens must be >= 1, got {self.policy.max_new_tokens}")

    def evr_config(self, group_size: int, seed: int | None = None):
        """The :class:`agents.vlm.EVRConfig` for a group of ``group_size`` (verl's ``rollout.n``); EVR off: all
        independent."""
        from agents.vlm.branching import EVRConfig

        e = self.evr
        independent = (e.independent if e.independent is not None else None) if e.enabled else group_size
        if independent is not None and not 1 <= independent <= group_size:
            raise ConfigError(f"medvr.evr.independent must be in [1, rollout.n={group_size}], got {independent}")
        return EVRConfig(group_size=group_size, independent=independent, window=e.window,
                         baseline_tokens=e.baseline_tokens, p_base=e.p_base, gamma=e.gamma, min_delta=e.min_delta,
                         seed=self.seed if seed is None else seed)


def _plain(data: Any) -> Any:
    """An OmegaConf node as plain containers (resolved); anything else as it is."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:
        return data
    if isinstance(data, (DictConfig, ListConfig)):
        return OmegaConf.to_container(data, resolve=True)
    return data


def settings_from_config(config: Any) -> MedVRVerlSettings:
    """The ``medvr`` section of a whole verl config (defaults when it has none)."""
    section = config.get("medvr") if hasattr(config, "get") else None
    return MedVRVerlSettings.from_mapping(section)


__all__ = ["ENTROPY_SOURCES", "EntropySettings", "MedVRVerlSettings", "VerlEnvSettings", "VerlPolicySettings",
           "settings_from_config"]
