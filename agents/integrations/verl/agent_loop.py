"""``MedVRAgentLoop``: MedVR episodes through verl's token server (verl's ``AgentLoopBase``, registered as "medvr").

Each trajectory is a :class:`.session.MedVRSession` with its own env: our chat rendering and tool protocol, the
env's tools (zoom, crop, relook, custom ones) producing images in placeholder order, the exact token sequence, and
the generated-token mask (1 = sampled by the policy, 0 = inserted by the env). verl trains on those ids as they
are, with ``multi_modal_data["images"]`` (every image of the sequence, in placeholder order) re-processed by its
processor and M-RoPE positions from ``processor.get_rope_index``.

Used two ways:

- by verl's stock worker, one trajectory per call (``agent_name: medvr`` rows, and
  ``actor_rollout_ref.rollout.agent.agent_loop_config_path=examples/verl/agent_loops.yaml``): :meth:`run`. The
  reward is ``w_acc·R_acc + w_format·R_format`` only (CCA needs the whole group);
- by :class:`.worker.MedVRAgentLoopWorker`, the whole group of a prompt at once: :meth:`run_group` (EVR branches,
  CCA rewards).

Sampling: verl's rollout params (temperature, top-p, top-k), ``logprobs`` always on (EVR and
``rollout_log_probs`` need them), ``max_tokens`` per turn, a ``logit_bias`` of -100 on the image placeholder and
vision marker tokens (a sampled placeholder would break the image/feature match), and, with
``medvr.entropy.source: topk``, the top-k request for :mod:`.replica`'s server.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from .data import AGENT_NAME, reset_from_row
from .entropy import TOP_K_PARAM, token_entropies
from .group import GroupResult, group_rewards, play_group
from .session import Generate, Generation, MedVRSession, SessionFactory
from .settings import MedVRVerlSettings, settings_from_config

log = logging.getLogger(__name__)

_FACTORIES: dict[tuple[int, str], SessionFactory] = {}  # per worker process: (processor, model path) -> factory


def session_factory(config: Any, processor: Any, settings: MedVRVerlSettings) -> SessionFactory:
    """The worker's shared :class:`SessionFactory` (built once per processor and model path; read-only after)."""
    path = str(config.actor_rollout_ref.model.path)
    key = (id(processor), path)
    if key not in _FACTORIES:
        from transformers import AutoConfig, GenerationConfig

        trust = bool(config.actor_rollout_ref.model.get("trust_remote_code", False))
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=trust)
        try:
            generation_config = GenerationConfig.from_pretrained(path)
        except (OSError, ValueError):
            generation_config = None
        if processor is None:
            raise ValueError(f"MedVR on verl needs a vision-language model with a processor; {path} has none")
        _FACTORIES[key] = SessionFactory(settings, processor, hf_config, generation_config)
    return _FACTORIES[key]


@register(AGENT_NAME)
class MedVRAgentLoop(AgentLoopBase):
    """verl agent loop playing MedVR episodes (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings_from_config(self.config)
        self.factory = session_factory(self.config, self.processor, self.settings)

    # ------------------------------------------------------------------ generation
    def generator(self, sampling_params: dict[str, Any]) -> Generate:
        """``generate(request_id, prompt_ids, images, max_tokens)`` through verl's server manager."""
        base = {k: v for k, v in sampling_params.items() if k != "logprobs"}
        base["logprobs"] = True
        if self.factory.suppressed_ids:
            base["logit_bias"] = {int(t): -100.0 for t in self.factory.suppressed_ids}
        if self.settings.entropy.source == "topk":
            base[TOP_K_PARAM] = int(self.settings.entropy.top_k)
        vocab = self.factory.vocab_size

        async def generate(request_id: str, prompt_ids: list[int], images: list[Any], max_tokens: int) -> Generation:
            params = {**base, "max_tokens": int(max_tokens)}
            out = await self.server_manager.generate(request_id, prompt_ids=list(prompt_ids), sampling_params=params,
                                                     image_data=list(images) or None)
            ids = list(out.token_ids)
            entropies, source = token_entropies(ids, out.log_probs, out.extra_fields, vocab)
            logprobs = list(out.log_probs) if out.log_probs is not None else [math.nan] * len(ids)
            return Generation(ids, logprobs, entropies, out.stop_reason or "stop", source)

        return generate

    def response_budget(self) -> int:
        return int(self.rollout_config.response_length)

    # ------------------------------------------------------------------ one trajectory
    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """One trajectory of the row's sample (verl's stock worker calls this once per session)."""
        start = time.perf_counter()
        key = int(kwargs.get("session_id", 0) or 0)
        session = self.factory.start(reset_from_row(kwargs), key, f"{kwargs.get('uid', 'medvr')}-{key}")
        await session.run(self.generator(sampling_params), self.response_budget())
        sample = session.to_sample()
        terms = group_rewards([sample], _without_tool(self.settings))[0]
        return to_output(session, sample, terms, time.perf_counter() - start)

    # ------------------------------------------------------------------ a whole group
    async def run_group(self, sampling_params: dict[str, Any], n: int, validate: bool = False,
                        **kwargs: Any) -> tuple[list[AgentLoopOutput], GroupResult]:
        """The ``n`` trajectories of one prompt (EVR group; no branching when validating) with CCA rewards."""
        start = time.perf_counter()
        reset = reset_from_row(kwargs)
        uid = str(kwargs.get("uid", "medvr"))
        seed = zlib.crc32(f"{self.settings.seed}/{uid}/{kwargs.get('global_steps', 0)}".encode())
        factory = self.factory
        if validate and self.settings.evr.enabled:
            factory = _no_branching(factory)
        result = await play_group(factory, self.generator(sampling_params), group_size=n, reset=reset,
                                  request_id=uid, max_response_tokens=self.response_budget(), seed=seed)
        samples = [s.to_sample() for s in result.members]
        rewards = group_rewards(samples, self.settings)
        elapsed = time.perf_counter() - start
        outputs = [to_output(s, sample, terms, elapsed, result.stats)
                   for s, sample, terms in zip(result.members, samples, rewards)]
        return outputs, result


def to_output(session: MedVRSession, sample: Any, terms: dict[str, float], seconds: float,
              group_stats: dict[str, float] | None = None) -> AgentLoopOutput:
    """verl's output for one trajectory: ids, generated mask, log-probs (0 on env tokens), images, reward."""
    f = sample.fields
    info = {
        "acc": float(f["accuracy"]), "correct": float(f["correct"]), "well_formed": float(f["well_formed"]),
        "looks": float(f["looks"]), "turns": float(f["turns"]), "branched": float(f["branched"]),
        "format_reward": terms.get("format", 0.0), "tool_reward": terms.get("tool", 0.0),
        "entropy_topk": float("topk" in session.entropy_sources),
    }
    for k, v in (group_stats or {}).items():
        info[f"evr_{k}"] = float(v)
    logprobs = [lp if m and math.isfinite(lp) else 0.0 for lp, m in zip(sample.logprobs, sample.tool_mask)]
    return AgentLoopOutput(
        prompt_ids=list(sample.prompt_ids),
        response_ids=list(sample.completion_ids),
        response_mask=list(sample.tool_mask),
        response_logprobs=logprobs,
        multi_modal_data={"images": list(sample.images)} if sample.images else None,
        reward_score=float(terms["score"]),
        num_turns=1 + 2 * int(f["turns"]),
        metrics=AgentLoopMetrics(generate_sequences=seconds, tool_calls=float(f["looks"])),
        extra_fields={"reward_extra_info": info, "medvr_stop_reason": session.conv.stop_reason,
                      "medvr_parent": str(session.parent) if session.parent is not None else ""},
    )


def _without_tool(settings: MedVRVerlSettings) -> MedVRVerlSettings:
    """Settings whose CCA term is off (one trajectory alone has no group to vote)."""
    import dataclasses

    return dataclasses.replace(settings, cca=dataclasses.replace(settings.cca, enabled=False))


def _no_branching(factory: SessionFactory) -> SessionFactory:
    """A view of ``factory`` whose groups are all independent (validation)."""
    import copy
    import dataclasses

    view = copy.copy(factory)
    view.settings = dataclasses.replace(factory.settings, evr=dataclasses.replace(factory.settings.evr, enabled=False))
    return view


__all__ = ["MedVRAgentLoop", "session_factory", "to_output"]
