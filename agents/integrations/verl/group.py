"""The EVR group of one prompt, and each member's reward with CCA over the group (verl-free).

verl's V1 worker runs all ``rollout.n`` sessions of a prompt in one place (``AgentLoopWorkerTQ._run_prompt``), so
the whole group is built here, as in MedVR's HF path (:mod:`agents.vlm.branching`, method.md §2):

1. ``independent`` sessions (default ``n // 2``) play from the bare prompt, concurrently.
2. Every finished member's fork points (turns that wrote a box) are examined in order (members in creation order,
   turns in order): if ``H_tool - H_base > min_delta`` and branch slots are left, the member forks with
   probability ``P = branch_probability(H_tool, H_base, P_base, γ)`` (:mod:`medvr_env.branching`, the formula
   shared with the HF path and the regrounding wrapper). A child starts at the first coordinate token with the
   parent's tokens before it (the shared prefix, marked generated in both, as in the HF path) and the parent's env
   state before that turn's action; it samples its own coordinates and plays on. Children of one round run
   concurrently; a later round examines them too (a branch may branch).
3. A child whose first call equals its parent's is discarded before its action reaches the env, and its slot goes
   back to the budget (the same rule as the HF path; its compute is counted).
4. Slots still left become fresh independent sessions (ARPO's rule), so every group has exactly ``n`` members.

Difference from the HF path, by design: there, a fork is decided the moment the parent's turn ends (the batch
decodes in lock-step); here, once the parent's episode is over (each session is its own async task). The child's
start state and its distribution are the same; only which parents get scarce slots first can differ.

Rewards: ``R = w_acc·R_acc + w_format·R_format + w_tool·1[R_acc > 0]·R_tool``, with exactly the reward functions of
``medvr train`` (:func:`agents.train.rewards.reward_functions`; ``R_tool`` from
:func:`agents.credit.consensus_credit` over the group).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.train.rewards import reward_functions
from agents.train.samples import TrainSample
from medvr_env.branching import branch_probability

from .session import Generate, MedVRSession, SessionFactory
from .settings import MedVRVerlSettings


@dataclass(frozen=True)
class BranchRecord:
    """One fork: parent and child keys, where (turn, token), why (entropies, probability), and if it was kept."""

    parent: Any
    child: Any
    turn: int
    token: int
    h_tool: float
    h_base: float
    probability: float
    kept: bool = True


@dataclass
class GroupResult:
    """The ``n`` members of one prompt's group (creation order), the forks made and the counters."""

    members: list[MedVRSession]
    branches: list[BranchRecord] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)


async def play_group(factory: SessionFactory, generate: Generate, *, group_size: int, reset: dict[str, Any],
                     request_id: str, max_response_tokens: int, seed: int | None = None) -> GroupResult:
    """Play one prompt's EVR group (module docstring). ``reset`` selects the sample; ``seed`` the branch draws."""
    cfg = factory.settings.evr_config(group_size, seed=seed)
    rng = np.random.default_rng(cfg.seed)
    next_id = 0

    def new_key() -> int:
        nonlocal next_id
        next_id += 1
        return next_id - 1

    async def play(sessions: Sequence[MedVRSession]) -> None:
        await asyncio.gather(*(s.run(generate, max_response_tokens) for s in sessions))

    members = [factory.start(reset, new_key(), f"{request_id}-{i}") for i in range(int(cfg.independent))]
    await play(members)
    slots = cfg.branch_slots
    stats = {"opportunities": 0, "branches": 0, "discarded_duplicates": 0, "fresh_fills": 0}
    branches: list[BranchRecord] = []
    examined = 0
    while slots > 0 and examined < len(members):
        children: list[tuple[MedVRSession, BranchRecord]] = []
        for parent in members[examined:]:
            for point in parent.fork_points:
                if slots <= 0:
                    break
                stats["opportunities"] += 1
                if not point.h_tool - point.h_base > cfg.min_delta:
                    continue
                p = branch_probability(point.h_tool, point.h_base, cfg.p_base, cfg.gamma)
                if rng.random() >= p:
                    continue
                child = factory.fork(parent, point, new_key())
                children.append((child, BranchRecord(parent.key, child.key, point.turn, point.token, point.h_tool,
                                                     point.h_base, p)))
                slots -= 1
        examined = len(members)
        await play([c for c, _ in children])
        for child, record in children:
            stats["branches"] += 1
            if child.discarded:
                stats["discarded_duplicates"] += 1
                slots += 1
                branches.append(BranchRecord(**{**record.__dict__, "kept": False}))
            else:
                members.append(child)
                branches.append(record)
    if slots > 0:
        fresh = [factory.start(reset, new_key(), f"{request_id}-{len(members) + i}") for i in range(slots)]
        stats["fresh_fills"] = slots
        await play(fresh)
        members += fresh
    stats["branch_rate"] = stats["branches"] / stats["opportunities"] if stats["opportunities"] else 0.0
    return GroupResult(members, branches, stats)


def group_rewards(samples: Sequence[TrainSample], settings: MedVRVerlSettings) -> list[dict[str, float]]:
    """Each member's reward terms and total, from ``medvr train``'s reward functions over the whole group.

    Returns one dict per sample: ``accuracy``, ``format``, ``tool`` (the weighted terms' raw values) and ``score``
    (the weighted sum, verl's ``reward_score``).
    """
    if not samples:
        return []
    funcs, weights = reward_functions(settings.rewards, settings.cca, len(samples))
    columns = {
        "completions": [s.text for s in samples],
        "accuracy": [s.fields["accuracy"] for s in samples],
        "well_formed": [s.fields["well_formed"] for s in samples],
        "episode": [s.fields["episode"] for s in samples],
        "group": [0] * len(samples),
    }
    terms = {f.__name__: f(**columns) for f in funcs}
    out = []
    for i in range(len(samples)):
        row = {name: float(values[i]) for name, values in terms.items()}
        row["score"] = float(sum(w * row[f.__name__] for f, w in zip(funcs, weights)))
        out.append(row)
    return out


__all__ = ["BranchRecord", "GroupResult", "group_rewards", "play_group"]
