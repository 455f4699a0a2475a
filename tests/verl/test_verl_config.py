"""The example config composes with Hydra into verl's schema, every MedVR knob is read, and the wiring resolves."""

from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="runs in the verl venv (.ci-venv-verl, built by .ci/run)")
pytest.importorskip("transfer_queue")

from agents.integrations.verl.settings import MedVRVerlSettings, settings_from_config
from agents.train.config import ConfigError
from tests.verl.fakes import compose_config


@pytest.fixture(scope="module")
def config():
    return compose_config([])


def test_the_example_composes_over_verls_ppo_trainer(config):
    rollout = config.actor_rollout_ref.rollout
    assert config.algorithm.adv_estimator == "grpo" and config.trainer.use_v1 is True
    assert rollout.n == 16 and rollout.name == "vllm" and rollout.agent.default_agent_loop == "medvr"
    assert rollout.agent.agent_loop_manager_class == "agents.integrations.verl.worker.MedVRAgentLoopManager"
    assert config.actor_rollout_ref.actor.kl_loss_coef == 0.001 and config.actor_rollout_ref.actor.use_kl_loss
    assert config.data.train_batch_size == 16
    # verl's own defaults are still there (the example only overrides)
    assert "val_kwargs" in rollout and "reward" in config


def test_verl_reads_the_rollout_section_into_its_dataclass(config):
    from verl.utils.config import omega_conf_to_dataclass

    rollout = omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
    assert rollout.agent.agent_loop_manager_class.endswith("MedVRAgentLoopManager") and rollout.n == 16


def test_every_medvr_knob_is_read(config):
    s = settings_from_config(config)
    assert s.env.id == "MedVR-VQA-RAD-v0" and s.env.kwargs == {"split": "train", "max_steps": 5}
    assert (s.policy.max_new_tokens, s.policy.max_turns, s.policy.max_tokens_per_image) == (1024, 5, 1280)
    assert s.evr.enabled and (s.evr.independent, s.evr.p_base, s.evr.gamma, s.evr.baseline_tokens, s.evr.window) == (
        8, 0.5, 0.5, 20, 8)
    assert s.cca.enabled and (s.cca.eta, s.cca.grid, s.cca.min_correct, s.cca.voters) == (0.5, 64, 2, "correct")
    assert (s.rewards.accuracy, s.rewards.format, s.rewards.tool, s.rewards.format_penalty) == (1.0, 1.0, 1.0, -0.2)
    assert (s.entropy.source, s.entropy.top_k) == ("topk", 10)
    evr = s.evr_config(16)
    assert evr.independent == 8 and evr.branch_slots == 8


def test_overrides_reach_the_settings():
    s = settings_from_config(compose_config(["medvr.evr.gamma=0.2", "medvr.cca.eta=0.3",
                                             "medvr.entropy.source=surprisal", "medvr.evr.enabled=false"]))
    assert s.evr.gamma == 0.2 and s.cca.eta == 0.3 and s.entropy.source == "surprisal"
    assert s.evr_config(16).independent == 16  # EVR off: every member independent


def test_bad_medvr_keys_are_specific_errors():
    with pytest.raises(ConfigError, match="did you mean 'gamma'"):
        MedVRVerlSettings.from_mapping({"evr": {"gama": 0.3}})
    with pytest.raises(ConfigError, match="entropy.source"):
        MedVRVerlSettings.from_mapping({"entropy": {"source": "full"}})
    with pytest.raises(ConfigError, match="independent"):
        MedVRVerlSettings.from_mapping({"evr": {"enabled": True, "independent": 20}}).evr_config(16)


def test_the_manager_and_worker_resolve_as_verl_loads_them(config):
    import ray
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ
    from verl.utils.import_utils import load_class_from_fqn

    from agents.integrations.verl.worker import MedVRAgentLoopWorker, MedVRAgentLoopWorkerImpl

    manager = load_class_from_fqn(config.actor_rollout_ref.rollout.agent.agent_loop_manager_class, "AgentLoopManager")
    assert manager.__name__ == "MedVRAgentLoopManager"
    assert isinstance(MedVRAgentLoopWorker, ray.actor.ActorClass)
    assert issubclass(MedVRAgentLoopWorkerImpl, AgentLoopWorkerTQ.__ray_metadata__.modified_class)
    # AgentLoopManagerTQ.__init__ sets its own worker class; ours must win (verl then starts these actors)
    assert manager(config, llm_client=None).agent_loop_workers_class is MedVRAgentLoopWorker


def test_the_launcher_registers_the_topk_replica_in_the_trainer_process(config):
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from agents.integrations.verl import main as launcher
    from agents.integrations.verl.replica import _load_replica

    before = RolloutReplicaRegistry._registry.get("vllm")
    try:
        launcher.prepare_trainer_process(config)
        assert RolloutReplicaRegistry._registry["vllm"] is _load_replica
    finally:
        RolloutReplicaRegistry._registry["vllm"] = before
    assert issubclass(launcher.MedVRTaskRunnerImpl, launcher.TaskRunnerV1.__ray_metadata__.modified_class)


def _launcher(*args: str, run_dir=None):
    import subprocess
    import tempfile
    import sys

    from tests.verl.fakes import CONFIG_DIR

    cmd = [sys.executable, "-m", "agents.integrations.verl.main", "--config-path", str(CONFIG_DIR),
           "--config-name", "medvr_qwen25vl_7b", *args]
    # Hydra writes a run folder (outputs/<date>/...) into the working directory: keep it out of the checkout.
    cmd.append(f"hydra.run.dir={run_dir or tempfile.mkdtemp(prefix='medvr-hydra-')}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def test_the_launcher_composes_the_example_from_the_command_line():
    out = _launcher("--cfg", "job", "medvr.evr.gamma=0.3", "actor_rollout_ref.rollout.n=8")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gamma: 0.3" in out.stdout and "agent_loop_manager_class: agents.integrations.verl.worker" in out.stdout


def test_the_launcher_refuses_a_bad_medvr_key_before_starting_ray():
    out = _launcher("+medvr.evr.gama=0.3")
    assert out.returncode != 0
    assert "unknown key 'gama'; did you mean 'gamma'?" in out.stderr and "ray init" not in out.stdout
