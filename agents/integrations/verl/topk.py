"""The vLLM engine wrapper behind :mod:`.replica`'s server: top-k log-probs per token for requests that ask.

:class:`TopLogprobsEngine` wraps vLLM's ``AsyncLLM`` (every attribute passes through). For a request id registered
in :attr:`TopLogprobsEngine.wanted`, ``generate`` raises the request's ``SamplingParams.logprobs`` to k and, as the
request's outputs stream by, keeps the last one's per-token log-prob dicts as the k largest log-probs per token
(:func:`top_logprobs_rows`). vLLM's per-token dict holds the top k plus the sampled token when it is not among
them, hence the cut to k. Neither vLLM nor verl is imported here.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any


def top_logprobs_rows(logprobs: Sequence[Mapping[int, Any]] | None, k: int) -> list[list[float]] | None:
    """The k largest log-probs of each generated token, largest first (``None`` when vLLM sent none).

    Each entry of ``logprobs`` maps token id -> an object with ``.logprob`` (vLLM's ``Logprob``) or a float.
    """
    if logprobs is None:
        return None
    rows = []
    for position in logprobs:
        values = [float(getattr(v, "logprob", v)) for v in (position or {}).values()]
        rows.append(sorted((v for v in values if not math.isnan(v)), reverse=True)[:k])
    return rows


class TopLogprobsEngine:
    """vLLM's engine, plus top-k log-probs for the requests in :attr:`wanted` (kept in :attr:`captured`)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.wanted: dict[str, int] = {}
        self.captured: dict[str, list[list[float]] | None] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    @property
    def inner(self) -> Any:
        return self._engine

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        request_id = kwargs.get("request_id")
        k = self.wanted.pop(request_id, None)
        if not k:
            return self._engine.generate(*args, **kwargs)
        params = kwargs.get("sampling_params")
        params.logprobs = max(int(k), int(params.logprobs or 0))
        return self._capture(self._engine.generate(*args, **kwargs), request_id, int(k))

    async def _capture(self, stream: AsyncIterator[Any], request_id: str, k: int) -> AsyncIterator[Any]:
        last = None
        async for output in stream:
            last = output
            yield output
        outputs = getattr(last, "outputs", None)
        self.captured[request_id] = top_logprobs_rows(outputs[0].logprobs, k) if outputs else None


__all__ = ["TopLogprobsEngine", "top_logprobs_rows"]
