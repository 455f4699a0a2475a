"""EVR group rollouts on a tiny random-weight Qwen2.5-VL: the group builder, the fork, baselines, determinism.

Random weights never write a tool call, so :class:`agents.testing.ZoomGrammar` forces the protocol's structure and
lets the model sample the box numbers (the coordinates EVR measures and branches on). A random model's entropy is
flat (~0.998 everywhere), so the lm head is scaled up here: entropies then differ from token to token and from
sample to sample, which is what lets the baseline tests tell one trajectory's baseline from another's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agents.testing import ZoomGrammar, tiny_vlm_cache  # noqa: E402
from agents.vlm import EVRConfig, SamplingConfig, VLMPolicy, load_vlm  # noqa: E402
from agents.vlm.branching import rolling_max_mean  # noqa: E402
from medvr_env.branching import branch_probability  # noqa: E402
from tests.helpers import make_env  # noqa: E402

THINK = "Look closer at the dense region."
SAMPLES = [{"index": 0}, {"index": 1}]


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    loaded = load_vlm(tiny_vlm_cache(tmp_path_factory.mktemp("evr_vlms"))("qwen2_5_vl"), device="cpu")
    with torch.no_grad():
        loaded.model.lm_head.weight.mul_(40.0)  # peaked, varied next-token distributions (see the docstring)
    yield loaded
    torch.set_num_threads(before)


def make_policy(vlm, zooms: int = 1, coordinate_range=(0, 80), seed: int = 0) -> VLMPolicy:
    policy = VLMPolicy(vlm, sampling=SamplingConfig(temperature=1.0, max_new_tokens=64, seed=seed))
    policy.sampling.logits_hooks = [ZoomGrammar(policy.tokenizer, zooms=zooms, think=THINK,
                                                coordinate_range=coordinate_range)]
    return policy


def play(vlm, evr: EVRConfig, zooms: int = 1, coordinate_range=(0, 80), samples=SAMPLES):
    policy = make_policy(vlm, zooms, coordinate_range)
    return policy, policy.rollout_groups(lambda: make_env(max_steps=6), options=samples, evr=evr)


ALWAYS = dict(p_base=1.0, gamma=0.0, min_delta=-1.0)  # every opportunity forks while slots last


@pytest.fixture(scope="module")
def branched(vlm):
    return play(vlm, EVRConfig(group_size=6, seed=0, **ALWAYS), zooms=2)


def calls(policy, rollout, turn):
    return policy.tokenizer.decode(rollout.turns[turn].token_ids, skip_special_tokens=True)


# ---------------------------------------------------------------------- the group builder
def test_every_group_has_g_trajectories_and_the_budget_split(branched):
    policy, groups = branched
    assert len(groups) == 2
    for group in groups:
        assert len(group.rollouts) == 6 and len(set(group.keys)) == 6
        assert all(r.stop_reason == "answered" for r in group.rollouts)
        independent = [r for r in group.rollouts if r.parent is None]
        children = [r for r in group.rollouts if r.parent is not None]
        kept = [b for b in group.branches if b.kept]
        assert len(children) == len(kept) <= 3 and len(independent) >= 3
        assert {r.key for r in children} == {b.child for b in kept}
    s = groups.stats
    assert s["branches"] - s["discarded_duplicates"] + s["fresh_fills"] == 2 * 3
    assert s["branches"] >= 1 and s["forked_rows"] == s["branches"]
    assert 0 < s["branch_rate"] <= 1 and s["trajectories"] == 12


def test_no_duplicate_trajectories(branched):
    """Branching never adds a copy: each call made from one fork point (same prefix) is made once. (Independent
    rollouts may agree by chance; they are i.i.d. samples and are kept.)"""
    policy, groups = branched
    for group in groups:
        by_key = {r.key: r for r in group.rollouts}
        made: dict = {}
        for r in group.rollouts:
            if r.parent is None:
                continue
            assert calls(policy, r, r.fork_turn) != calls(policy, by_key[r.parent], r.fork_turn)
            prefix = (tuple(tok for t in r.turns[:r.fork_turn] for tok in t.token_ids),
                      tuple(r.turns[r.fork_turn].token_ids[:r.fork_token]))
            made.setdefault(prefix, {calls(policy, by_key[r.parent], r.fork_turn)})
            assert calls(policy, r, r.fork_turn) not in made[prefix]
            made[prefix].add(calls(policy, r, r.fork_turn))


def test_a_child_that_repeats_its_parent_is_discarded_and_its_slot_refilled(vlm):
    """With a single possible box every child repeats its parent's call: all are discarded (never reach the env)
    and the slots go to fresh independent rollouts."""
    _, groups = play(vlm, EVRConfig(group_size=4, seed=0, **ALWAYS), coordinate_range=(0, 4), samples=SAMPLES[:1])
    (group,) = groups
    s = groups.stats
    assert s["branches"] >= 1 and s["discarded_duplicates"] == s["branches"] and s["fresh_fills"] == 2
    assert all(r.parent is None for r in group.rollouts) and len(group.rollouts) == 4
    assert all(not b.kept for b in group.branches)
    assert all(len(r.episode.steps) == len(r.turns) for r in group.rollouts)


def test_no_branching_without_slots_or_probability(vlm):
    _, plain = play(vlm, EVRConfig(group_size=3, independent=3, seed=0, **ALWAYS), samples=SAMPLES[:1])
    assert plain.stats["branches"] == 0 and plain.stats["opportunities"] == 0
    _, never = play(vlm, EVRConfig(group_size=4, seed=0, p_base=0.0, gamma=0.0, min_delta=-1.0),
                    samples=SAMPLES[:1])
    assert never.stats["branches"] == 0 and never.stats["opportunities"] > 0 and never.stats["fresh_fills"] == 2
    assert len(never[0].rollouts) == 4


def test_config_is_checked():
    assert EVRConfig().independent == 8 and EVRConfig().branch_slots == 8
    for bad in (dict(group_size=4, independent=5), dict(group_size=0), dict(window=0), dict(p_base=1.5),
                dict(gamma=math.nan)):
        with pytest.raises(ValueError):
            EVRConfig(**bad)


# ---------------------------------------------------------------------- the fork
def test_a_child_shares_its_parents_prefix_and_env_state(branched):
    policy, groups = branched
    children = 0
    for group in groups:
        by_key = {r.key: r for r in group.rollouts}
        for r in group.rollouts:
            if r.parent is None:
                continue
            children += 1
            parent, t, f = by_key[r.parent], r.fork_turn, r.fork_token
            assert [x.token_ids for x in r.turns[:t]] == [x.token_ids for x in parent.turns[:t]]
            assert r.turns[t].token_ids[:f] == parent.turns[t].token_ids[:f]
            assert r.turns[t].first_coordinate == f == parent.turns[t].first_coordinate
            assert policy.tokenizer.decode(r.turns[t].token_ids[f:f + 1]).strip()[:1].isdigit()
            assert r.shared_tokens == sum(len(x.token_ids) for x in parent.turns[:t]) + f
            # the env state at the fork: the same sample, views and steps as the parent before its fork turn
            assert r.episode.sample.sample_id == parent.episode.sample.sample_id
            assert [s.to_dict() for s in r.episode.steps[:t]] == [s.to_dict() for s in parent.episode.steps[:t]]
            assert [v.to_dict() for v in r.episode.views[:t + 1]] == [v.to_dict() for v in parent.episode.views[:t + 1]]
    assert children >= 1


def test_a_childs_recorded_distribution_equals_a_fresh_forward(branched):
    """The forked cache row is the parent's: the child's log-probs and entropies (from the forked cache) equal
    those of one forward over the child's whole sequence, computed from scratch."""
    policy, groups = branched
    child = next(r for g in groups for r in g.rollouts if r.parent is not None)
    (segment,) = child.segments
    scored = policy.score(segment)
    idx = [i for i, g in enumerate(segment.generated) if g]
    got_lp = torch.tensor([segment.logprobs[i] for i in idx])
    got_h = torch.tensor([segment.entropies[i] for i in idx])
    assert torch.allclose(got_lp, scored["logprobs"][idx].float(), atol=2e-3)
    assert torch.allclose(got_h, scored["entropies"][idx].float(), atol=1e-4)


def test_fork_rows_copies_the_cache_row_and_masks_the_parents_later_tokens(vlm):
    """Engine level: right after a fork, the child's visible cache columns are exactly the parent's context up
    to the last kept token, with identical keys and values."""
    policy = make_policy(vlm)
    seen = []
    engine = policy.engine
    original = engine.fork_rows

    def spy(state, forks):
        rows = original(state, forks)
        for (parent, keep, _), child in zip(forks, rows):
            p, c = state.rows[parent], state.rows[child]
            pm, cm = state.mask[parent].bool(), state.mask[child].bool()
            assert not (cm & ~pm).any() and int(cm.sum()) == p.turn_cached0 + keep - 1 == c.cached_len
            for layer in state.cache.layers:
                assert torch.equal(layer.keys[child][:, cm], layer.keys[parent][:, cm])
                assert torch.equal(layer.values[child][:, cm], layer.values[parent][:, cm])
            assert c.turn_ids == p.turn_ids[:keep] and c.next_pos == p.turn_pos0 + keep - 1
            seen.append(keep)
        return rows

    engine.fork_rows = spy
    groups = policy.rollout_groups(lambda: make_env(max_steps=6), options=SAMPLES[:1],
                                   evr=EVRConfig(group_size=4, seed=0, **ALWAYS))
    assert seen and groups.stats["branches"] == len(seen)


# ---------------------------------------------------------------------- baselines and the branch rule
def test_baselines_are_per_trajectory_and_the_rule_is_the_shared_formula(vlm):
    evr = EVRConfig(group_size=6, seed=1, baseline_tokens=20, window=8, min_delta=-1.0)
    _, groups = play(vlm, evr, zooms=2)
    baselines = {}
    for group in groups:
        by_key = {r.key: r for r in group.rollouts}
        for b in group.branches:
            parent = by_key.get(b.parent)
            if parent is None:  # a discarded child's parent is still in the group; a discarded parent is not
                continue
            own = [h for t in parent.turns[:b.turn] for h in t.entropies] + parent.turns[b.turn].entropies[:b.token]
            assert b.h_base == pytest.approx(float(np.mean(own[:20])), abs=1e-9)
            turn = parent.turns[b.turn]
            coords = [h for h, m in zip(turn.entropies, turn.coordinate_mask) if m]
            assert b.h_tool == pytest.approx(rolling_max_mean(coords, 8), abs=1e-6)
            assert b.probability == pytest.approx(branch_probability(b.h_tool, b.h_base, 0.5, 0.5))
            baselines.setdefault(group.sample, set()).add(round(b.h_base, 6))
    # the two samples' trajectories have different baselines, so a leak across the batch would show above
    assert len(baselines) == 2 and not baselines[0] & baselines[1]


def test_rolling_max_mean():
    assert rolling_max_mean([0.1, 0.2, 0.9, 0.9, 0.1], 2) == pytest.approx(0.9)
    assert rolling_max_mean([0.2, 0.4], 8) == pytest.approx(0.3)
    assert math.isnan(rolling_max_mean([], 8))


# ---------------------------------------------------------------------- determinism
def test_the_same_seed_gives_the_same_groups(vlm):
    runs = [play(vlm, EVRConfig(group_size=4, seed=seed, **ALWAYS), samples=SAMPLES[:1])[1] for seed in (3, 3, 4)]

    def signature(groups):
        return [[(r.key, r.parent, tuple(tok for t in r.turns for tok in t.token_ids)) for r in g.rollouts]
                for g in groups]

    assert signature(runs[0]) == signature(runs[1])
    assert [b.to_dict() for b in runs[0][0].branches] == [b.to_dict() for b in runs[1][0].branches]
    assert signature(runs[0]) != signature(runs[2])


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3", "llava"])
def test_forks_replay_exactly_in_other_families(tmp_path_factory, family):
    """The fork works with 2-D positions (Idefics3, LLaVA) as with Qwen's 3-D ones: a child's recorded
    log-probs equal a fresh forward over its whole sequence."""
    vlm = load_vlm(tiny_vlm_cache(tmp_path_factory.mktemp(f"evr_{family}"))(family), device="cpu")
    policy = make_policy(vlm)
    groups = policy.rollout_groups(lambda: make_env(max_steps=4), options=SAMPLES[:1],
                                   evr=EVRConfig(group_size=2, seed=0, **ALWAYS))
    children = [r for r in groups[0].rollouts if r.parent is not None]
    assert len(children) == 1 and groups.stats["branches"] >= 1
    (child,) = children
    for segment in child.segments:
        scored = policy.score(segment)
        idx = [i for i, g in enumerate(segment.generated) if g]
        got = torch.tensor([segment.logprobs[i] for i in idx])
        assert torch.allclose(got, scored["logprobs"][idx].float(), atol=2e-3)
