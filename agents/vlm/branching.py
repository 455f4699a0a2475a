"""EVR rollouts: groups of trajectories per sample that branch where the model is unsure where to look.

MedVR's entropy-guided visual regrounding (``docs/reference/method.md`` §2) plays a group of ``G`` trajectories per
sample (default 16): ``G/2`` independent rollouts, and ``G/2`` slots for branches. When a trajectory ends a turn
with a box (a zoom or crop call), its entropy over the box's coordinate tokens is compared with its own baseline:

- ``H_base``: the mean normalised entropy of the trajectory's first ``K0`` generated tokens (default 20; those
  before the coordinates when the trajectory is younger). Every trajectory has its own, also in a batch of many
  groups, and a branch computes its own from its own tokens (the shared prefix included).
- ``H_tool``: the highest rolling mean, over windows of ``w`` consecutive coordinate tokens (default 8; all of them
  when there are fewer), of the coordinate tokens' entropies. "Coordinate tokens" are those from the box's first
  number to its last, as the protocol parser locates them (:mod:`medvr_env.action_spans`).
- If ``H_tool - H_base > min_delta`` (default 0: "rises above its baseline") and the sample's branch slots are not
  used up, the trajectory forks with probability ``P = branch_probability(H_tool, H_base, P_base, γ)``
  (:mod:`medvr_env.branching`, shared with the regrounding wrapper).

A fork happens at the first coordinate token: the child keeps the parent's tokens up to there (the key/value cache
row is copied, nothing is re-encoded; only the last kept token is fed once more, to get the child its own next-token
distribution), and a copy of the parent's env state (``snapshot()``/``restore()`` before the turn's action is
executed). It then samples its own coordinates and lives on as an ordinary trajectory (it may branch later, too).
A trajectory forks at most once per turn.

Duplicates: a child whose call, once its turn ends, equals a call already made from the same fork point (its
parent's, or an earlier sibling's from the same prefix; same tool, same arguments) is discarded before its action
reaches the env, and its slot goes back to the sample's budget (so a later fork or a fresh rollout takes it).
Discarding rather than forbidding the parent's tokens keeps every sampled token drawn from the model's own
distribution; the compute spent on a discarded child is counted in the stats. Independent rollouts that happen to
agree are kept: they are i.i.d. samples, and dropping them would bias the group's reward statistics.

Unused slots: when none of a sample's trajectories is running any more and slots are left, fresh independent
rollouts from the bare prompt fill them (ARPO's rule), so every group ends with exactly ``G`` trajectories.
Groups of several samples run in one batch. Branch probability draws use their own seeded generator and the
sampler its own, so the same seed gives the same groups.

    groups = policy.rollout_groups(lambda: gym.make("MedVR-VQA-Text-v0"), seeds=[0, 1], evr=EVRConfig(seed=0))
    groups[0].rollouts        # 16 Rollouts; .parent / .fork_turn / .fork_token tell the branch tree
    groups.stats              # engine counters + branches, branch rate, tokens and prefill saved by shared prefixes
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from medvr_env.branching import DEFAULT_GAMMA, DEFAULT_P_BASE, branch_probability, check_branch_params

from .conversation import Conversation
from .engine import BatchState, Engine
from .entropy import turn_entropy
from .trajectory import Rollout

if TYPE_CHECKING:
    from .policy import VLMPolicy

DUPLICATE = "duplicate"  # the finish reason of a discarded child


@dataclass
class EVRConfig:
    """The EVR knobs (defaults: ``method.md``, "Defaults to implement").

    Attributes:
        group_size: Trajectories per sample, G.
        independent: Independent rollouts per sample (default ``group_size // 2``); the rest are branch slots.
            ``independent == group_size`` turns branching off (plain GRPO groups).
        window: w, the rolling window over coordinate tokens.
        baseline_tokens: K0, the generated tokens whose mean entropy is a trajectory's baseline.
        p_base: P_base, the branch probability when ``H_tool == H_base``.
        gamma: γ, the weight of ``H_tool - H_base``.
        min_delta: A fork is considered only when ``H_tool - H_base`` exceeds this.
        seed: Seeds the sampler and the branch draws (``None``: the policy's sampling seed).
    """

    group_size: int = 16
    independent: int | None = None
    window: int = 8
    baseline_tokens: int = 20
    p_base: float = DEFAULT_P_BASE
    gamma: float = DEFAULT_GAMMA
    min_delta: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.independent is None:
            self.independent = max(1, self.group_size // 2)
        if self.group_size < 1 or not 1 <= self.independent <= self.group_size:
            raise ValueError(f"need group_size >= 1 and 1 <= independent <= group_size, got group_size="
                             f"{self.group_size}, independent={self.independent}")
        if self.window < 1 or self.baseline_tokens < 1:
            raise ValueError(f"window and baseline_tokens must be >= 1, got {self.window}, {self.baseline_tokens}")
        check_branch_params(self.p_base, self.gamma)

    @property
    def branch_slots(self) -> int:
        return self.group_size - int(self.independent or 0)


@dataclass(frozen=True)
class Branch:
    """One fork: who branched from whom, where, and why.

    ``turn`` and ``token`` locate the fork (the child's first own token is token ``token`` of turn ``turn``);
    ``shared_generated`` are the generated tokens the child inherited, ``shared_context`` the context tokens
    (prompt, tool results, earlier turns and the kept part of this one) it did not encode.
    """

    sample: int
    parent: Any
    child: Any
    turn: int
    token: int
    h_tool: float
    h_base: float
    probability: float
    shared_generated: int
    shared_context: int
    kept: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RolloutGroup:
    """One sample's group: ``rollouts`` (exactly ``group_size``, by creation order) and the ``branches`` made."""

    sample: int
    rollouts: list[Rollout]
    branches: list[Branch]

    @property
    def keys(self) -> list[Any]:
        return [r.key for r in self.rollouts]


@dataclass
class GroupRollouts:
    """The groups of one :meth:`VLMPolicy.rollout_groups` call, in sample order, and the batch's counters."""

    groups: list[RolloutGroup]
    stats: dict[str, float] = field(default_factory=dict)

    def __iter__(self) -> Iterator[RolloutGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> RolloutGroup:
        return self.groups[i]


@dataclass
class _Sample:
    index: int
    seed: int | None
    options: dict[str, Any] | None
    slots_left: int
    next_id: int = 0
    running: int = 0
    rollouts: dict[int, Rollout] = field(default_factory=dict)
    branches: list[Branch] = field(default_factory=list)


def rolling_max_mean(values: Sequence[float], window: int) -> float:
    """Highest mean over ``window`` consecutive values (the mean of all when there are fewer)."""
    if not values:
        return math.nan
    if len(values) <= window:
        return float(sum(values) / len(values))
    c = np.cumsum([0.0, *values])
    return float(((c[window:] - c[:-window]) / window).max())


class GroupRunner:
    """Plays EVR groups for a policy (used through :meth:`VLMPolicy.rollout_groups`)."""

    def __init__(self, policy: VLMPolicy, make_env: Callable[[], Any], config: EVRConfig) -> None:
        self.policy, self.make_env, self.config = policy, make_env, config
        self.engine: Engine = policy.engine
        self.pool: list[Any] = []  # envs of finished trajectories, reused (reset to each sample)
        self.lineage: dict[Any, Branch] = {}  # child key -> the fork that made it
        self.fork_points: dict[Any, Any] = {}  # child key -> its fork point, until its fork turn ends
        self.calls_at: dict[Any, set[str]] = {}  # fork point -> the calls made from it
        self.counters = {"opportunities": 0, "branches": 0, "discarded_duplicates": 0, "fresh_fills": 0,
                         "shared_generated_tokens": 0, "shared_context_tokens": 0, "refed_tokens": 0}
        seed = config.seed if config.seed is not None else policy.sampling.seed
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ envs and conversations
    def _env(self) -> Any:
        return self.pool.pop() if self.pool else self.make_env()

    def _start(self, sample: _Sample) -> Conversation:
        env = self._env()
        obs, info = env.reset(seed=sample.seed, options=sample.options)
        sample.next_id += 1
        sample.running += 1
        return self.policy.start(env, obs, info, key=(sample.index, sample.next_id - 1))

    def _fork_conversation(self, sample: _Sample, conv: Conversation) -> Conversation:
        env = self._env()
        env.reset(seed=sample.seed, options=sample.options)  # wrappers that need a reset before step get one
        env.unwrapped.restore(conv.base.snapshot())
        self.policy.configure_env(env)
        sample.next_id += 1
        sample.running += 1
        return conv.fork(env, key=(sample.index, sample.next_id - 1))

    # ------------------------------------------------------------------ the loop
    def run(self, seeds: Sequence[int | None], options: Sequence[dict[str, Any] | None]) -> GroupRollouts:
        cfg = self.config
        samples = [_Sample(i, s, o, cfg.branch_slots) for i, (s, o) in enumerate(zip(seeds, options))]
        self.samples = samples
        self.engine.seed(self.seed)
        state = BatchState.start([self._start(s) for s in samples for _ in range(int(cfg.independent or 0))])
        while state.rows:
            outputs = self.policy.generate_turn(state, self._observe)
            for row, out in zip(state.rows, outputs):
                if row.finish == DUPLICATE:
                    row.conv.finished, row.conv.stop_reason = True, DUPLICATE
                else:
                    self.policy.step(row.conv, out)
            keep = []
            for r, row in enumerate(state.rows):
                if row.conv.finished:
                    self._finish(row.conv)
                else:
                    keep.append(r)
            self.engine.drop(state, keep)
            fresh = []
            for s in samples:
                if s.running == 0 and s.slots_left > 0:
                    self.counters["fresh_fills"] += s.slots_left
                    fresh += [self._start(s) for _ in range(s.slots_left)]
                    s.slots_left = 0
            if fresh:
                self.engine.add_rows(state, fresh)
        groups = [RolloutGroup(s.index, [s.rollouts[k] for k in sorted(s.rollouts)], s.branches) for s in samples]
        stats = {**state.stats, **self.counters}
        stats["branch_rate"] = stats["branches"] / stats["opportunities"] if stats["opportunities"] else 0.0
        stats["trajectories"] = sum(len(g.rollouts) for g in groups)
        return GroupRollouts(groups, stats)

    def _finish(self, conv: Conversation) -> None:
        sample = self.samples[conv.key[0]]
        sample.running -= 1
        if conv.stop_reason != DUPLICATE:
            rollout = conv.to_rollout()
            branch = self.lineage.get(conv.key)
            if branch is not None:
                rollout.parent, rollout.fork_turn = branch.parent, branch.turn
                rollout.fork_token, rollout.shared_tokens = branch.token, branch.shared_generated
            sample.rollouts[conv.key[1]] = rollout
        self.pool.append(conv.env)

    # ------------------------------------------------------------------ forks (called inside decode_turn)
    def _observe(self, engine: Engine, state: BatchState, ended: list[int]) -> None:
        forks = []
        for r in ended:
            row = state.rows[r]
            conv = row.conv
            sample = self.samples[conv.key[0]]
            parsed = conv.parse(self.policy.tokenizer.decode(row.turn_ids, skip_special_tokens=True))
            if conv.key in self.fork_points:  # a child ending its fork turn
                made = self.calls_at[self.fork_points.pop(conv.key)]
                call = _call_key(parsed.call)
                if call in made:
                    self._discard(sample, row)
                    continue
                made.add(call)
            if sample.slots_left <= 0 or parsed.spans is None or not parsed.spans.box_items:
                continue
            te = turn_entropy(self.policy.tokenizer, row.turn_ids, row.turn_entropies, parsed.spans)
            f = te.first_coordinate
            if f is None or not 1 <= f <= len(row.turn_cols) or f >= len(row.turn_ids):
                continue
            self.counters["opportunities"] += 1
            coords = [h for h, m in zip(row.turn_entropies, te.coordinate_mask) if m]
            earlier = [h for t in conv.turns for h in t.entropies]
            h_base = _mean((earlier + row.turn_entropies[:f])[: self.config.baseline_tokens])
            h_tool = rolling_max_mean(coords, self.config.window)
            if not h_tool - h_base > self.config.min_delta:
                continue
            p = branch_probability(h_tool, h_base, self.config.p_base, self.config.gamma)
            if self.rng.random() >= p:
                continue
            child_conv = self._fork_conversation(sample, conv)
            shared_generated = len(earlier) + f
            branch = Branch(sample.index, conv.key, child_conv.key, conv.turn, f, h_tool, h_base, p,
                            shared_generated, row.turn_cached0 + f - 1)
            sample.branches.append(branch)
            sample.slots_left -= 1
            self.lineage[child_conv.key] = branch
            point = (sample.index, tuple(t for turn in conv.turns for t in turn.token_ids), tuple(row.turn_ids[:f]))
            self.calls_at.setdefault(point, set()).add(_call_key(parsed.call))
            self.fork_points[child_conv.key] = point
            self.counters["branches"] += 1
            self.counters["shared_generated_tokens"] += shared_generated
            self.counters["shared_context_tokens"] += branch.shared_context
            self.counters["refed_tokens"] += 1
            forks.append((r, f, child_conv))
        engine.fork_rows(state, forks)

    def _discard(self, sample: _Sample, row: Any) -> None:
        """A child that wrote its parent's call: not sent to the env; its slot goes back to the sample."""
        row.finish = DUPLICATE
        sample.slots_left += 1
        branch = self.lineage.pop(row.conv.key)
        sample.branches[sample.branches.index(branch)] = Branch(**{**branch.__dict__, "kept": False})
        self.counters["discarded_duplicates"] += 1
        self.counters["shared_generated_tokens"] -= branch.shared_generated
        self.counters["shared_context_tokens"] -= branch.shared_context


def _call_key(call: Any) -> str:
    return json.dumps(call.to_dict() if call is not None else None, sort_keys=True, default=str)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


__all__ = ["Branch", "EVRConfig", "GroupRollouts", "GroupRunner", "RolloutGroup", "rolling_max_mean"]
