"""The per-prompt hook: verl's V1 agent-loop worker, with MedVR rows played as whole EVR groups with CCA rewards.

verl 0.9.1's ``AgentLoopWorkerTQ._run_prompt`` runs all ``rollout.n`` sessions of one prompt in one worker; this
subclass replaces it, for rows whose ``agent_name`` is ``"medvr"``, by
:meth:`agents.integrations.verl.agent_loop.MedVRAgentLoop.run_group`: the EVR group (independent sessions, then
branches forked at the coordinate tokens with the shared prefix, then fresh fills), and each member's
``reward_score`` from ``medvr train``'s reward functions with CCA over the group (set before verl's postprocess, so
verl's own reward path is skipped for them). Each member is one session (``{uid}_{session}_0`` in TransferQueue),
so verl's GRPO advantage normalises over exactly the group CCA voted in. Other rows go to verl's own hook.

Wiring (both are verl's documented extension points; the leading ``+`` is required)::

    +actor_rollout_ref.rollout.agent.agent_loop_manager_class=agents.integrations.verl.worker.MedVRAgentLoopManager

``AgentLoopWorkerTQ`` is a Ray actor class, which cannot be subclassed directly (``ActorClassInheritanceException``):
the subclass derives from its ``__ray_metadata__.modified_class`` and is made an actor again with ``ray.remote``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import hydra
import ray
import transfer_queue as tq
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ, apply_greedy_sampling_params

from . import agent_loop as _agent_loop  # noqa: F401 - registers the "medvr" agent loop in this process
from .data import AGENT_NAME

log = logging.getLogger(__name__)

_WorkerBase = AgentLoopWorkerTQ.__ray_metadata__.modified_class


class MedVRAgentLoopWorkerImpl(_WorkerBase):
    """The worker's class before ``ray.remote`` (what tests instantiate without a Ray cluster)."""

    def medvr_loop(self, agent_name: str = AGENT_NAME) -> Any:
        """The MedVR agent loop, built the way verl builds every agent loop (its registry, Hydra)."""
        return hydra.utils.instantiate(
            config=_agent_loop_registry[agent_name],
            trainer_config=DictConfigWrap(config=self.config),
            server_manager=self.llm_client,
            tokenizer=self.tokenizer,
            processor=self.processor,
            hf_model_type=self.hf_model_type,
            dataset_cls=self.dataset_cls,
            data_config=DictConfigWrap(self.config.data),
            tools=ToolListWrap(self.tools),
        )

    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False) -> None:
        if prompt.get("agent_name") != AGENT_NAME:
            return await super()._run_prompt(prompt, sampling_params, trajectory, trace=trace)
        validate = bool(trajectory["validate"])
        uid, partition_id = prompt["uid"], "val" if validate else "train"
        await tq.async_kv_put(key=uid, partition_id=partition_id, tag={"status": "running"})
        status = "failure"
        try:
            config = self.config.actor_rollout_ref.rollout
            n = int(prompt.pop("__rollout_n__", config.val_kwargs.n if validate else config.n))
            params = dict(sampling_params)
            if not prompt.pop("__do_sample__", True) and not validate:
                apply_greedy_sampling_params(params)
            kwargs = {k: v for k, v in prompt.items() if k != "agent_name"}
            outputs, _ = await self.medvr_loop(prompt["agent_name"]).run_group(params, n, validate=validate,
                                                                               **kwargs)
            await asyncio.gather(*(self._agent_loop_postprocess(out, validate, session_id=i, **kwargs)
                                   for i, out in enumerate(outputs)))
            status = "finished"
        except Exception:
            log.exception("MedVR group for uid=%s failed", uid)
        await tq.async_kv_put(key=uid, partition_id=partition_id, tag={"status": status})


MedVRAgentLoopWorker = ray.remote(MedVRAgentLoopWorkerImpl)


class MedVRAgentLoopManager(AgentLoopManagerTQ):
    """verl's V1 agent-loop manager with :data:`MedVRAgentLoopWorker` workers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = MedVRAgentLoopWorker  # AgentLoopManagerTQ.__init__ sets its own first


__all__ = ["MedVRAgentLoopManager", "MedVRAgentLoopWorker", "MedVRAgentLoopWorkerImpl"]
