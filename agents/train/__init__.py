"""GRPO training of the VLM policy on MedVR envs with TRL (``pip install -e ".[train]"``).

Modules, one job each:

- :mod:`~agents.train.config`: the YAML config (env, policy sampling, EVR, CCA, reward weights, LoRA, TRL's
  ``GRPOConfig`` fields); imports neither torch nor TRL;
- :mod:`~agents.train.rewards`: accuracy, format and CCA tool rewards over whole groups (no torch);
- :mod:`~agents.train.samples`: a rollout as one GRPO sample (prompt/completion ids, loss mask, log-probs, images)
  and the image-placeholder check;
- :mod:`~agents.train.trainer`: ``MedVRGRPOTrainer``, TRL's ``GRPOTrainer`` with MedVR rollouts in ``_generate``;
- :mod:`~agents.train.callbacks`: JSON-lines metrics;
- :mod:`~agents.train.run`: build everything from a config and train, resuming from the last complete checkpoint;
- :mod:`~agents.train.cli`: ``medvr train --config FILE``.

Only ``config`` and ``rewards`` are imported here; the rest needs torch and TRL.
"""

from .config import CCASettings, ConfigError, EnvSettings, EVRSettings, LoraSettings, PolicySettings, RewardSettings
from .config import TrainConfig

__all__ = ["CCASettings", "ConfigError", "EVRSettings", "EnvSettings", "LoraSettings", "PolicySettings",
           "RewardSettings", "TrainConfig", "train"]


def train(config: TrainConfig, **kwargs):
    """See :func:`agents.train.run.train` (imported on first use: it needs torch and TRL)."""
    from .run import train as _train

    return _train(config, **kwargs)
