"""Per-token entropies for EVR from what a token server returns.

verl's vLLM server returns only the sampled token's log-probability (it asks vLLM for ``logprobs=0``), while EVR
compares normalised token entropies ``H_t = -sum_v p log p / log |V|`` (``agents/vlm/entropy.py``). Two estimates:

- **top-k** (preferred): :mod:`.replica`'s server asks vLLM for the top-k log-probs of every generated token and
  returns them as ``TokenOutput.extra_fields["medvr_top_logprobs"]`` (one list of k log-probs per token). The
  entropy over the top-k, ``-sum_{top k} p log p``, divided by ``log |V|``, is ARPO's estimate. It is a lower bound
  of the full entropy (the tail's mass is left out); with k=10 the tail of a peaked distribution is small.
- **surprisal** (fallback, any server): ``-log p(sampled) / log |V|``. Its expectation over the sampled token is
  exactly the entropy, so means over EVR's windows (8 coordinate tokens, 20 baseline tokens) estimate the same
  quantity, with more noise per token.

Both are clipped to ``[0, 1]`` like the HF path's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

TOP_LOGPROBS_KEY = "medvr_top_logprobs"
"""``TokenOutput.extra_fields`` key of the per-token top-k log-probs (a list of lists of floats)."""
TOP_K_PARAM = "medvr_top_logprobs"
"""Sampling-params key asking :mod:`.replica`'s server for k top log-probs per token (the stock server rejects it)."""


def topk_entropy(top_logprobs: Sequence[float], vocab_size: int) -> float:
    """Normalised entropy ``-sum p log p / log |V|`` over one token's top-k log-probs."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    h = -sum(math.exp(lp) * lp for lp in top_logprobs if math.isfinite(lp))
    return min(max(h / math.log(vocab_size), 0.0), 1.0)


def surprisal_entropy(logprob: float | None, vocab_size: int) -> float:
    """``-log p / log |V|`` of the sampled token (NaN when the server sent no log-prob)."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    if logprob is None or not math.isfinite(logprob):
        return math.nan
    return min(max(-float(logprob) / math.log(vocab_size), 0.0), 1.0)


def token_entropies(token_ids: Sequence[int], log_probs: Sequence[float] | None, extra_fields: dict[str, Any] | None,
                    vocab_size: int) -> tuple[list[float], str]:
    """Per-token entropies of one generation and which estimate gave them (``"topk"`` or ``"surprisal"``).

    Top-k log-probs are used when the server sent one list per generated token; otherwise the sampled token's
    surprisal (NaN everywhere when the server sent no log-probs either).
    """
    top = (extra_fields or {}).get(TOP_LOGPROBS_KEY)
    if top is not None and len(top) == len(token_ids):
        return [topk_entropy(row, vocab_size) for row in top], "topk"
    lps = list(log_probs) if log_probs is not None else [None] * len(token_ids)
    if len(lps) != len(token_ids):
        raise ValueError(f"the server sent {len(lps)} log-probs for {len(token_ids)} tokens")
    return [surprisal_entropy(lp, vocab_size) for lp in lps], "surprisal"


__all__ = ["TOP_K_PARAM", "TOP_LOGPROBS_KEY", "surprisal_entropy", "token_entropies", "topk_entropy"]
