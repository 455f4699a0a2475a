"""MedVR's verl agent loop against a fake token server: a multi-turn episode with a zoom, masks, images, log-probs."""

from __future__ import annotations

import asyncio
import math

import pytest

pytest.importorskip("verl", reason="runs in the verl venv (.ci-venv-verl, built by .ci/run)")
pytest.importorskip("transfer_queue")

from verl.experimental.agent_loop.agent_loop import DictConfigWrap

from agents.integrations.verl.agent_loop import MedVRAgentLoop
from tests.verl.fakes import FakeTokenServer, NoMultiModalDataset, compose_config, cpu_overrides, pil_processor


async def make_loop(tiny_qwen, server_factory, **medvr) -> MedVRAgentLoop:
    """Build the loop inside a running event loop (verl's AgentLoopBase captures it), as verl's worker does."""
    config = compose_config(cpu_overrides(tiny_qwen, **medvr))
    processor = pil_processor(tiny_qwen)
    loop = MedVRAgentLoop(trainer_config=DictConfigWrap(config), server_manager=None, tokenizer=processor.tokenizer,
                          processor=processor, dataset_cls=NoMultiModalDataset, data_config=DictConfigWrap(config.data),
                          hf_model_type="qwen2_5_vl")
    loop.server_manager = server_factory(loop)
    return loop


@pytest.fixture(scope="module")
def episode(tiny_qwen):
    """One trajectory of sample 0 through MedVRAgentLoop.run: zoom, tool result with the crop, answer."""

    async def go():
        loop = await make_loop(tiny_qwen, lambda lp: FakeTokenServer(lp.tokenizer, lp.factory.adapter, top_k=10),
                               **{"entropy.source": "topk"})
        out = await loop.run({"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": False},
                             uid="u0", session_id=0, extra_info={"index": 0})
        return loop, out

    return asyncio.run(go())


def test_an_episode_with_a_zoom_returns_the_right_masks(episode):
    loop, out = episode
    server = loop.server_manager
    assert len(server.calls) == 2  # zoom, then answer
    generated = [t for call in server.calls for t in call["ids"]]
    # the mask marks exactly the server's tokens, in order; everything else is the env's (tool result, crop)
    assert [t for t, m in zip(out.response_ids, out.response_mask) if m] == generated
    assert out.prompt_ids == server.calls[0]["prompt_ids"]
    second_prompt = server.calls[1]["prompt_ids"]
    assert out.prompt_ids + out.response_ids[: len(second_prompt) - len(out.prompt_ids)] == second_prompt
    env_part = out.response_mask[len(server.calls[0]["ids"]):len(second_prompt) - len(out.prompt_ids)]
    assert env_part and not any(env_part)  # the tool result and the crop's placeholders, inserted by the env
    assert out.response_mask[0] == 1 and out.response_mask[-1] == 1
    assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs)
    # log-probs: the server's on generated tokens, 0 on env tokens
    lps = [lp for lp, m in zip(out.response_logprobs, out.response_mask) if m]
    assert len(lps) == len(generated)
    assert all(math.isclose(a, b) for a, b in zip(lps, [-1.5 if loop.tokenizer.decode([t]).strip().isdigit()
                                                         else -0.1 for t in generated]))
    assert all(lp == 0.0 for lp, m in zip(out.response_logprobs, out.response_mask) if not m)
    assert out.num_turns == 5


def test_images_come_in_placeholder_order(episode):
    loop, out = episode
    server = loop.server_manager
    images = out.multi_modal_data["images"]
    assert len(images) == 2  # view 0 and the zoom's crop
    assert len(server.calls[0]["images"]) == 1 and len(server.calls[1]["images"]) == 2
    assert server.calls[1]["images"][0] is server.calls[0]["images"][0]
    assert images[0] is server.calls[0]["images"][0] and images[1] is server.calls[1]["images"][1]
    pad = loop.factory.adapter.image_token_id
    ids = out.prompt_ids + out.response_ids
    runs, run_len = [], 0
    for t in ids + [-1]:
        if t == pad:
            run_len += 1
        elif run_len:
            runs.append(run_len)
            run_len = 0
    assert runs == [loop.factory.adapter.image_tokens(im) for im in images]
    assert not any(m for t, m in zip(out.response_ids, out.response_mask) if t == pad)  # never trained


def test_sampling_params_carry_logprobs_top_k_and_the_placeholder_ban(episode):
    loop, _ = episode
    params = loop.server_manager.calls[0]["params"]
    assert params["logprobs"] is True and params["medvr_top_logprobs"] == 10
    assert params["max_tokens"] == loop.settings.policy.max_new_tokens
    assert loop.factory.adapter.image_token_id in params["logit_bias"]
    assert set(params["logit_bias"].values()) == {-100.0}


def test_reward_and_extra_info(episode):
    loop, out = episode
    info = out.extra_fields["reward_extra_info"]
    box_x1 = int(loop.server_manager.calls[0]["reply"].split("[")[1].split(",")[0])
    correct = box_x1 < loop.server_manager.correct_below
    assert info["correct"] == float(correct) and info["looks"] == 1.0 and info["turns"] == 2.0
    assert info["well_formed"] == 1.0 and info["entropy_topk"] == 1.0
    assert out.reward_score == pytest.approx(1.0 * correct)  # acc + format(0 when well formed); no CCA alone


def test_trajectories_never_share_tool_state(tiny_qwen):
    """Two concurrent sessions of one sample: each has its own env, and each env zoomed where its model said."""

    async def go():
        loop = await make_loop(tiny_qwen, lambda lp: FakeTokenServer(lp.tokenizer, lp.factory.adapter))
        factory = loop.factory
        sessions = [factory.start({"options": {"index": 0}}, k, f"req-{k}") for k in range(2)]
        await asyncio.gather(*(s.run(loop.generator({"temperature": 1.0}), 2048) for s in sessions))
        return loop, sessions

    loop, sessions = asyncio.run(go())
    assert sessions[0].env is not sessions[1].env
    assert sessions[0].env.unwrapped.episode is not sessions[1].env.unwrapped.episode
    boxes = {}
    for call in loop.server_manager.calls:
        if "bbox_2d" in call["reply"]:
            boxes[call["request_id"]] = [int(v) for v in call["reply"].split("[")[1].split("]")[0].split(",")]
    assert boxes["req-0"] != boxes["req-1"]
    for k, s in enumerate(sessions):
        step = s.env.unwrapped.episode.steps[0]
        assert step.tool == "zoom" and step.error is None
        assert s.conv.turns[0].text.count(str(boxes[f"req-{k}"][0])) >= 1
    # the crops differ because the boxes differ: each env cut its own
    assert sessions[0].images()[1].tobytes() != sessions[1].images()[1].tobytes()


def test_surprisal_fallback_without_top_k(tiny_qwen):
    async def go():
        loop = await make_loop(tiny_qwen, lambda lp: FakeTokenServer(lp.tokenizer, lp.factory.adapter),
                               **{"entropy.source": "surprisal"})
        session = loop.factory.start({"options": {"index": 0}}, 0, "req")
        await session.run(loop.generator({"temperature": 1.0}), 2048)
        return loop, session

    loop, session = asyncio.run(go())
    assert "medvr_top_logprobs" not in loop.server_manager.calls[0]["params"]
    turn = session.conv.turns[0]
    v = len(loop.tokenizer)
    assert turn.entropies == pytest.approx([-lp / math.log(v) for lp in turn.logprobs])
    assert session.entropy_sources == {"surprisal"}
