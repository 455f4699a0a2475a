"""EVR's entropies from what a token server returns: top-k (the MedVR replica) or the sampled token's surprisal."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from agents.integrations.verl.entropy import surprisal_entropy, token_entropies, topk_entropy
from agents.integrations.verl.topk import TopLogprobsEngine, top_logprobs_rows


def test_topk_entropy_of_a_uniform_top_k():
    k, v = 10, 1000
    assert topk_entropy([math.log(1 / k)] * k, v) == pytest.approx(math.log(k) / math.log(v))
    assert topk_entropy([0.0], v) == 0.0  # all mass on one token


def test_surprisal_is_the_sampled_tokens_normalised_information():
    assert surprisal_entropy(-math.log(50), 2500) == pytest.approx(0.5)
    assert math.isnan(surprisal_entropy(None, 100))


def test_token_entropies_prefer_top_k_and_fall_back():
    lps = [-0.5, -2.0]
    top = [[-0.1, -3.0], [-0.7, -0.7]]
    h, src = token_entropies([1, 2], lps, {"medvr_top_logprobs": top}, 100)
    assert src == "topk" and h == pytest.approx([topk_entropy(r, 100) for r in top])
    h, src = token_entropies([1, 2], lps, {}, 100)
    assert src == "surprisal" and h == pytest.approx([0.5 / math.log(100), 2.0 / math.log(100)])
    with pytest.raises(ValueError, match="2 tokens"):
        token_entropies([1, 2], [-1.0], {}, 100)


def test_top_logprobs_rows_keep_the_k_largest():
    lp = lambda x: SimpleNamespace(logprob=x)
    rows = top_logprobs_rows([{5: lp(-0.2), 7: lp(-3.0), 9: lp(-1.0)}, {1: lp(-0.05)}], k=2)
    assert rows == [[-0.2, -1.0], [-0.05]]
    assert top_logprobs_rows(None, 3) is None


class FakeEngine:
    """vLLM's AsyncLLM as the server uses it: generate(prompt=, sampling_params=, request_id=) streams outputs."""

    def __init__(self):
        self.seen = []
        self.other = "passes through"

    async def generate(self, *, prompt, sampling_params, request_id, **kw):
        self.seen.append((request_id, sampling_params.logprobs))
        lp = SimpleNamespace
        for n in (1, 2):
            yield SimpleNamespace(outputs=[SimpleNamespace(
                token_ids=[3, 4][:n], logprobs=[{3: lp(logprob=-0.1), 8: lp(logprob=-2.0)},
                                                {4: lp(logprob=-0.3), 8: lp(logprob=-1.0)}][:n])])


def test_the_engine_wrapper_asks_for_top_k_only_for_requests_that_want_it():
    engine = TopLogprobsEngine(FakeEngine())
    engine.wanted["a"] = 5

    async def drain(request_id):
        params = SimpleNamespace(logprobs=0)
        return [o async for o in engine.generate(prompt=None, sampling_params=params, request_id=request_id)]

    async def both():
        return await drain("a"), await drain("b")

    a, b = asyncio.run(both())
    assert engine.inner.seen == [("a", 5), ("b", 0)]  # only "a" got logprobs raised to k
    assert engine.captured == {"a": [[-0.1, -2.0], [-0.3, -1.0]]} and "a" not in engine.wanted
    assert len(a) == len(b) == 2 and engine.other == "passes through"
