"""Top-k log-probs from verl's vLLM rollout, for EVR's entropies, registered through verl's replica registry.

verl 0.9.1's ``vLLMHttpServer.generate`` asks vLLM for ``logprobs=0`` and returns only the sampled token's
log-prob; ``agent.custom_async_server`` is read by nothing. Its extension point is
``RolloutReplicaRegistry.register(name, loader)``. :func:`register_topk_replica` registers, under the name
``"vllm"`` (so every ``rollout.name == "vllm"`` check in verl still holds), a replica whose servers are
:class:`agents.integrations.verl.replica_vllm.MedVRvLLMHttpServer`: verl's server, plus one behaviour: a request
whose sampling params carry ``medvr_top_logprobs: k`` gets vLLM's top-k log-probs of every generated token back in
``TokenOutput.extra_fields["medvr_top_logprobs"]``. Requests without it run exactly as before.

The registry is per process: the replica must be registered in the trainer's process before it builds its
rollout replicas, which :mod:`.main` does (its TaskRunner registers it first). Calling this from a driver script
that then runs verl's own ``main_ppo`` is not enough (the TaskRunner is another process).

Which distribution the top-k come from follows verl's ``rollout.logprobs_mode`` (vLLM's raw log-probs by default,
i.e. before temperature): EVR compares entropies within one trajectory, so a shared temperature only rescales them.
The pure pieces (the engine wrapper and the top-k rows) live in :mod:`.topk` and are tested on CPU with a fake
engine; the server and replica subclasses need vLLM (GPU only).
"""

from __future__ import annotations

from typing import Any

REPLICA_NAME = "vllm"


def _load_replica() -> type:
    from .replica_vllm import MedVRvLLMReplica

    return MedVRvLLMReplica


def register_topk_replica(name: str = REPLICA_NAME) -> None:
    """Register the top-k vLLM replica in this process's ``RolloutReplicaRegistry`` (under ``"vllm"``)."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(name, _load_replica)


def registered_loader(name: str = REPLICA_NAME) -> Any:
    """The loader registered under ``name`` (for checks)."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return RolloutReplicaRegistry._registry.get(name)


__all__ = ["REPLICA_NAME", "register_topk_replica", "registered_loader"]
