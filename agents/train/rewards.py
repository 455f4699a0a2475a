"""Reward functions for GRPO on MedVR rollouts: accuracy, format and the CCA tool reward.

``R = w_acc·R_acc + w_format·R_format + w_tool·1[R_acc > 0]·R_tool`` (``docs/reference/method.md`` §4.1). TRL calls
each function with the whole local batch, ``f(prompts=, completions=, completion_ids=, **columns)``, where the
columns include what :class:`~agents.train.trainer.MedVRGRPOTrainer` attached to each sample:

- ``episode``: the env's :class:`~medvr_env.episode.Episode` record of the trajectory (grade, steps, looks);
- ``group``: the group id (one per prompt; all of a group's members sit in the same process, in order);
- ``accuracy`` (the grade's score), ``well_formed`` (no invalid action and an answer), ``looked``, ``branched``.

Each function returns one float per sample. The tool reward needs whole groups (CCA votes over a group's correct
trajectories); :func:`groups_of` checks that every group it is given is complete and contiguous. This module
imports neither torch nor TRL.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .config import CCASettings


def groups_of(group: Sequence[int], size: int | None = None) -> list[range]:
    """Index ranges of each group in a batch whose ``group`` ids come in contiguous runs.

    Raises ``ValueError`` if a group id appears in two runs, or a run is not ``size`` long (a group split across
    processes, or a sampler that interleaves groups).
    """
    runs: list[range] = []
    seen: set[int] = set()
    start = 0
    for i in range(1, len(group) + 1):
        if i == len(group) or group[i] != group[start]:
            gid = group[start]
            if gid in seen:
                raise ValueError(f"group {gid} appears in two separate runs of the batch; groups must be contiguous")
            seen.add(gid)
            runs.append(range(start, i))
            start = i
    if size is not None:
        bad = [(group[r.start], len(r)) for r in runs if len(r) != size]
        if bad:
            raise ValueError(
                f"incomplete groups in this process's batch (group id, members): {bad}; expected {size} each. "
                f"A group was split across processes: make per_device_train_batch_size x steps_per_generation a "
                f"multiple of num_generations"
            )
    return runs


def accuracy_reward(completions: Sequence[Any], accuracy: Sequence[float], **_: Any) -> list[float]:
    """``R_acc``: the env's grade score (1 for a correct answer, 0 otherwise; open answers may give recall)."""
    return [float(a) for a in accuracy]


def make_format_reward(penalty: float) -> Callable[..., list[float]]:
    """``R_format``: ``penalty`` for an ill-formed trajectory (an invalid action, or no answer at all), else 0."""

    def format_reward(completions: Sequence[Any], well_formed: Sequence[bool], **_: Any) -> list[float]:
        return [0.0 if ok else float(penalty) for ok in well_formed]

    return format_reward


def group_credit(settings: CCASettings, episodes: Sequence[Any], accuracy: Sequence[float]) -> Any:
    """CCA over one whole group (:func:`agents.credit.consensus_credit` with the config's settings); a trajectory
    votes as correct when its accuracy reward is positive."""
    from agents.credit import consensus_credit

    return consensus_credit(list(episodes), eta=settings.eta, grid=settings.grid, min_correct=settings.min_correct,
                            voters=settings.voters, correct=[a > 0 for a in accuracy],
                            no_look_reward=settings.no_look_reward)


def make_tool_reward(settings: CCASettings, group_size: int) -> Callable[..., list[float]]:
    """``1[R_acc > 0]·R_tool``: CCA's consensus credit per group (:func:`agents.credit.consensus_credit`), or 0
    when CCA is off. A trajectory counts as correct for the vote when its accuracy reward is positive."""

    def tool_reward(completions: Sequence[Any], episode: Sequence[Any], group: Sequence[int],
                    accuracy: Sequence[float], log_metric: Callable[[str, float], None] | None = None,
                    **_: Any) -> list[float]:
        if not settings.enabled:
            return [0.0] * len(completions)
        out = [0.0] * len(completions)
        cases: list[str] = []
        for run in groups_of(group, group_size):
            credit = group_credit(settings, [episode[i] for i in run], [accuracy[i] for i in run])
            for i, value in zip(run, credit.tool_rewards):
                out[i] = float(value)
            cases += [str(getattr(c, "value", c)) for c in credit.cases]
        if log_metric is not None and cases:
            for case in ("agrees", "disagrees", "no_look", "too_few_correct", "empty_consensus"):
                log_metric(f"cca/{case}", cases.count(case) / len(cases))
        return out

    return tool_reward


def reward_functions(rewards: Any, cca: CCASettings, group_size: int) -> tuple[list[Callable], list[float]]:
    """The three reward functions (named ``accuracy``, ``format``, ``tool`` in TRL's logs) and their weights."""
    funcs = [accuracy_reward, make_format_reward(rewards.format_penalty), make_tool_reward(cca, group_size)]
    for func, name in zip(funcs, ("accuracy", "format", "tool")):
        func.__name__ = name
    return funcs, [rewards.accuracy, rewards.format, rewards.tool]


__all__ = ["accuracy_reward", "group_credit", "groups_of", "make_format_reward", "make_tool_reward", "reward_functions"]
