"""``python -m agents.integrations.verl.main``: verl's PPO/GRPO entry point with MedVR wired in.

The same Hydra entry as ``python -m verl.trainer.main_ppo`` (verl's ``ppo_trainer`` config, the same overrides),
with one difference: the trainer's process (verl's ``TaskRunnerV1`` Ray actor) first reads the ``medvr`` section
(errors name the bad key before any GPU work) and, with ``medvr.entropy.source: topk``, registers the top-k vLLM
replica (:mod:`.replica`) before verl builds its rollout servers. Run it with MedVR's config::

    python -m agents.integrations.verl.main --config-path $PWD/examples/verl --config-name medvr_qwen25vl_7b

(``examples/verl/run_qwen25vl_7b.sh`` does this.) ``TaskRunnerV1`` is a Ray actor class, so the subclass derives
from its ``__ray_metadata__.modified_class`` and is made an actor again.
"""

from __future__ import annotations

import os
from typing import Any

import hydra
import ray
import verl.trainer
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device

from .settings import settings_from_config

VERL_CONFIG_DIR = os.path.join(os.path.dirname(verl.trainer.__file__), "config")


def prepare_trainer_process(config: Any) -> None:
    """What the trainer's process does before verl's own ``run``: check ``medvr``, register the replica."""
    settings = settings_from_config(config)
    if settings.entropy.source == "topk":
        from .replica import register_topk_replica

        register_topk_replica()


class MedVRTaskRunnerImpl(TaskRunnerV1.__ray_metadata__.modified_class):
    """verl's V1 TaskRunner, preceded by :func:`prepare_trainer_process`."""

    def run(self, config: Any) -> None:
        prepare_trainer_process(config)
        return super().run(config)


MedVRTaskRunner = ray.remote(MedVRTaskRunnerImpl)


@hydra.main(config_path=VERL_CONFIG_DIR, config_name="ppo_trainer", version_base=None)
def main(config: Any) -> None:
    auto_set_device(config)
    settings_from_config(config)  # fail fast on a bad medvr section, before Ray starts
    validate_config(config=config, use_reference_policy=need_reference_policy(config),
                    use_critic=need_critic(config))
    if not config.trainer.use_v1:
        raise ValueError("MedVR's group hook is verl's V1 worker: keep trainer.use_v1=true")
    run_ppo(config, task_runner_class=MedVRTaskRunner)


if __name__ == "__main__":
    main()
