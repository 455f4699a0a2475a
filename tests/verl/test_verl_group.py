"""The per-prompt hook: EVR group (independent sessions, branches forked at the coordinate tokens with the shared
prefix) and CCA rewards equal to agents.credit's, through verl's own worker postprocess into (a fake) TransferQueue."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("verl", reason="runs in the verl venv (.ci-venv-verl, built by .ci/run)")
tq = pytest.importorskip("transfer_queue")

from agents.credit import consensus_credit
from agents.integrations.verl import worker as medvr_worker
from agents.integrations.verl.agent_loop import MedVRAgentLoop
from tests.verl.fakes import FakeTokenServer, compose_config, cpu_overrides, pil_processor

EVR = {"evr.independent": 3, "evr.p_base": 1.0, "evr.gamma": 0.0, "evr.min_delta": -1.0, "entropy.source": "topk"}
ROW = {"uid": "u0", "index": 0, "extra_info": {"index": 0}, "agent_name": "medvr", "global_steps": 1,
       "data_source": "medvr/test"}


class FakeTransferQueue:
    """Records what verl's worker puts (statuses per uid, one field dict per output key)."""

    def __init__(self) -> None:
        self.status: list[tuple[str, str]] = []
        self.fields: dict[str, dict] = {}

    async def kv_put(self, key, partition_id, tag):
        self.status.append((key, tag["status"]))

    async def kv_batch_put(self, keys, fields, tags, partition_id):
        for i, key in enumerate(keys):
            self.fields[key] = {"fields": fields[i], "tag": tags[i]}


@pytest.fixture(scope="module")
def hook(tiny_qwen):
    """verl's real worker class (our subclass, outside Ray) running _run_prompt for one MedVR row, n=6."""
    mp = pytest.MonkeyPatch()
    fake_tq = FakeTransferQueue()
    mp.setattr(tq, "init", lambda *a, **k: None)
    mp.setattr(tq, "async_kv_put", fake_tq.kv_put)
    mp.setattr(tq, "async_kv_batch_put", fake_tq.kv_batch_put)
    kept = {}
    original = MedVRAgentLoop.run_group

    async def spy(self, *args, **kwargs):
        kept["loop"] = self
        kept["outputs"], kept["result"] = await original(self, *args, **kwargs)
        return kept["outputs"], kept["result"]

    mp.setattr(MedVRAgentLoop, "run_group", spy)
    import transformers

    # verl's worker loads the processor with AutoProcessor; on CPU it gets the PIL one (see fakes.pil_processor)
    mp.setattr(transformers.AutoProcessor, "from_pretrained", staticmethod(lambda path, **kw: pil_processor(path)))
    config = compose_config(cpu_overrides(tiny_qwen, **EVR) + ["actor_rollout_ref.rollout.n=6"])

    async def go():
        processor = pil_processor(tiny_qwen)
        server = FakeTokenServer(processor.tokenizer, _adapter(config, processor), top_k=10)
        worker = medvr_worker.MedVRAgentLoopWorkerImpl(config, server)
        trajectory = {"validate": False, "step": 1, "sample_index": 0, "rollout_n": 0}
        await worker._run_prompt(dict(ROW), {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True},
                                 trajectory)
        return worker, server

    try:
        worker, server = asyncio.run(go())
    finally:
        mp.undo()
    return worker, server, fake_tq, kept


def _adapter(config, processor):
    from transformers import AutoConfig

    from agents.integrations.verl.session import SessionFactory
    from agents.integrations.verl.settings import settings_from_config

    return SessionFactory(settings_from_config(config), processor,
                          AutoConfig.from_pretrained(config.actor_rollout_ref.model.path)).adapter


def test_the_hook_puts_one_session_per_member_and_finishes(hook):
    worker, _, fake_tq, kept = hook
    assert fake_tq.status == [("u0", "running"), ("u0", "finished")]
    assert sorted(fake_tq.fields) == [f"u0_{i}_0" for i in range(6)]
    for put in fake_tq.fields.values():
        f = put["fields"]
        n = int(f["responses"].shape[0])
        assert put["tag"]["response_len"] == n and f["response_mask"].shape[0] == n
        # verl re-processed our images: its vision features match our placeholders
        grid = f["multi_modal_inputs"]["image_grid_thw"]
        merge = worker.processor.image_processor.merge_size
        pads = int((f["input_ids"] == kept["loop"].factory.adapter.image_token_id).sum())
        assert int((grid.prod(-1) // merge**2).sum()) == pads and grid.shape[0] == 2


def test_the_group_is_independent_sessions_then_branches_with_the_shared_prefix(hook):
    _, _, _, kept = hook
    result = kept["result"]
    members = result.members
    assert len(members) == 6
    independent = [m for m in members if m.parent is None]
    children = [m for m in members if m.parent is not None]
    assert len(independent) == 3 and len(children) == 3 and all(b.kept for b in result.branches)
    assert result.stats["branches"] == 3 and result.stats["fresh_fills"] == 0
    by_key = {m.key: m for m in members}
    for child in children:
        parent = by_key[child.parent]
        f = child.fork_token
        assert child.fork_turn == 0 and f >= 1
        p_turn, c_turn = parent.conv.turns[0], child.conv.turns[0]
        assert p_turn.first_coordinate == f  # forked at the parent's first coordinate token
        assert c_turn.token_ids[:f] == p_turn.token_ids[:f]  # the shared prefix
        assert c_turn.logprobs[:f] == p_turn.logprobs[:f]
        assert c_turn.text != p_turn.text  # its own coordinates
        assert child.env is not parent.env
        # the sequence before the turn (prompt) is the parent's, token for token
        assert child.to_sample().prompt_ids == parent.to_sample().prompt_ids
    # a branch shares the parent's request id: the same server, its prefix cache
    assert {c.request_id for c in children} <= {m.request_id for m in independent}


def test_rewards_are_cca_over_the_group_as_agents_credit_computes_them(hook):
    _, _, fake_tq, kept = hook
    members, loop = kept["result"].members, kept["loop"]
    episodes = [m.conv.base.episode for m in members]
    correct = [bool(e.grade and e.grade["correct"]) for e in episodes]
    assert 2 <= sum(correct) < len(correct), "the fake should make a mixed group"
    s = loop.settings
    credit = consensus_credit(episodes, eta=s.cca.eta, grid=s.cca.grid, min_correct=s.cca.min_correct,
                              voters=s.cca.voters, correct=[e.grade["score"] > 0 for e in episodes],
                              no_look_reward=s.cca.no_look_reward)
    for i, (episode, tool) in enumerate(zip(episodes, credit.tool_rewards)):
        well_formed = episode.grade is not None and all(st.error is None for st in episode.steps)
        expected = (s.rewards.accuracy * episode.grade["score"] + s.rewards.format * (0 if well_formed else
                    s.rewards.format_penalty) + s.rewards.tool * tool)
        out = kept["outputs"][i]
        assert out.reward_score == pytest.approx(expected)
        assert out.extra_fields["reward_extra_info"]["tool_reward"] == pytest.approx(tool)
        stored = fake_tq.fields[f"u0_{i}_0"]["fields"]
        assert float(stored["rm_scores"][-1]) == pytest.approx(expected)  # what verl's GRPO reads
    assert any(t > 0 for t in credit.tool_rewards)


def test_validation_groups_do_not_branch(tiny_qwen):
    from tests.verl.test_verl_agent_loop import make_loop

    async def go():
        loop = await make_loop(tiny_qwen, lambda lp: FakeTokenServer(lp.tokenizer, lp.factory.adapter), **EVR)
        return await loop.run_group({"temperature": 1.0}, 4, validate=True, uid="v", extra_info={"index": 0})

    outputs, result = asyncio.run(go())
    assert len(outputs) == 4 and not result.branches and all(m.parent is None for m in result.members)


def test_a_branch_that_repeats_its_parent_is_discarded_and_its_slot_refilled(tiny_qwen):
    from tests.verl.test_verl_agent_loop import make_loop

    async def go():
        loop = await make_loop(tiny_qwen, lambda lp: FakeTokenServer(lp.tokenizer, lp.factory.adapter,
                                                                     fixed_box=[5, 5, 30, 30]), **EVR)
        return await loop.run_group({"temperature": 1.0}, 6, uid="d", extra_info={"index": 0})

    outputs, result = asyncio.run(go())
    assert len(outputs) == 6 and all(m.parent is None for m in result.members)
    assert result.stats["branches"] == 3 and result.stats["discarded_duplicates"] == 3
    assert result.stats["fresh_fills"] == 3 and not any(b.kept for b in result.branches)
    assert all(not m.discarded and m.conv.stop_reason != "duplicate" for m in result.members)


def test_a_trajectory_stops_when_the_response_budget_is_spent(tiny_qwen):
    from tests.verl.test_verl_agent_loop import make_loop

    async def go():
        loop = await make_loop(tiny_qwen, lambda lp: FakeTokenServer(lp.tokenizer, lp.factory.adapter))
        session = loop.factory.start({"options": {"index": 0}}, 0, "b")
        first = await loop.server_manager.generate("probe", prompt_ids=session.conv.ids, sampling_params={},
                                                   image_data=session.images())
        budget = len(first.token_ids) + 1  # room for the zoom turn, none after its tool result
        await session.run(loop.generator({"temperature": 1.0}), budget)
        return session

    session = asyncio.run(go())
    assert session.conv.stop_reason == "response_length" and len(session.conv.turns) == 1
    assert session.to_sample().fields["answered"] is False
