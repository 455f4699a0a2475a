"""verl's vLLM server and replica with top-k log-probs on request (imports vLLM: GPU machines only; see
:mod:`.replica`)."""

from __future__ import annotations

from typing import Any

import ray
from verl.workers.rollout.replica import TokenOutput
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica

from .entropy import TOP_K_PARAM, TOP_LOGPROBS_KEY
from .topk import TopLogprobsEngine


class MedVRvLLMHttpServer(vLLMHttpServer):
    """verl's vLLM server; a request with ``medvr_top_logprobs: k`` also gets its top-k log-probs back."""

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       *args: Any, **kwargs: Any) -> TokenOutput:
        k = sampling_params.pop(TOP_K_PARAM, None)
        if not k:
            return await super().generate(prompt_ids, sampling_params, request_id, *args, **kwargs)
        if not isinstance(self.engine, TopLogprobsEngine):  # (re)wrap: the engine may be rebuilt after a sleep
            self.engine = TopLogprobsEngine(self.engine)
        sampling_params["logprobs"] = True
        self.engine.wanted[request_id] = int(k)
        try:
            out = await super().generate(prompt_ids, sampling_params, request_id, *args, **kwargs)
        finally:
            self.engine.wanted.pop(request_id, None)
            rows = self.engine.captured.pop(request_id, None)
        if rows is not None and len(rows) == len(out.token_ids):
            out.extra_fields[TOP_LOGPROBS_KEY] = rows
        return out


class MedVRvLLMReplica(vLLMReplica):
    """verl's vLLM replica serving through :class:`MedVRvLLMHttpServer`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(MedVRvLLMHttpServer)


__all__ = ["MedVRvLLMHttpServer", "MedVRvLLMReplica"]
