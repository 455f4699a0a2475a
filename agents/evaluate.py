"""Evaluate an agent on a dataset split and report the numbers the medical VQA literature reports.

``evaluate`` plays exactly one episode per sample of the split, in dataset order, and
returns an :class:`EvalResult`: accuracy overall, closed / open (with open-answer token
recall), per question type, organ and modality, tool use, and grounding IoU where the
dataset has evaluation boxes. :func:`table1_markdown` lays several results out like
Table 1 of the MedVR paper (rows: agents; columns: benchmarks and their averages).

The same runs from the command line: ``medvr eval --env ID --split test --agent NAME``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import gymnasium as gym
from tqdm.auto import tqdm

from medvr_env import Episode

from .base import Agent, make_agent
from .runner import TrajectoryWriter, play_episode
from .metrics import GroupAccuracy, Grounding, ToolStats, accuracy_by, as_dict, grounding, is_correct, tool_stats

# Table 1 of the paper: general-domain multiple-choice benchmarks, then modality-specific free-text ones.
GENERAL_COLUMNS = {"omnimedvqa": "OMVQA", "pmc_vqa": "PMC-VQA", "medxpertqa": "MedXQA"}
MODALITY_COLUMNS = {"vqa_rad": "VQA-RAD", "slake": "SLAKE", "pathvqa": "PathVQA"}


@dataclass(frozen=True)
class EvalResult:
    """Every number of one (env, split, agent) evaluation."""

    env_id: str
    dataset: str
    split: str
    agent: str
    episodes: int
    accuracy: float
    closed: GroupAccuracy | None
    open: GroupAccuracy | None
    open_token_recall: float | None
    by_question_type: dict[str, GroupAccuracy]
    by_organ: dict[str, GroupAccuracy]
    by_modality: dict[str, GroupAccuracy]
    tools: ToolStats
    grounding: Grounding
    seconds: float
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return as_dict(asdict(self))

    def report(self) -> str:
        """A markdown report: headline numbers, then the per-group tables."""
        lines = [f"### {self.agent} on {self.env_id} ({self.dataset}, split {self.split}, {self.episodes} questions)", ""]
        lines += ["| metric | value |", "|---|---|", f"| accuracy | {_pct(self.accuracy)} |"]
        for name, group in (("closed", self.closed), ("open", self.open)):
            if group is not None:
                lines.append(f"| {name} accuracy (n={group.n}) | {_pct(group.accuracy)} |")
        if self.open_token_recall is not None:
            lines.append(f"| open token recall | {_pct(self.open_token_recall)} |")
        t = self.tools
        lines += [
            f"| zoom rate (episodes with a zoom/crop) | {_pct(t.zoom_rate)} |",
            f"| mean zooms/crops per episode | {t.mean_zooms:.2f} |",
            f"| mean steps | {t.mean_steps:.2f} |",
            f"| invalid actions (share of steps) | {_pct(t.invalid_action_rate)} |",
            f"| answered (share of episodes) | {_pct(t.answered_rate)} |",
        ]
        g = self.grounding
        if g.episodes:
            lines.append(f"| grounding mIoU (n={g.episodes}, no zoom = 0) | {_pct(g.miou)} |")
            lines.append(f"| grounding mIoU when zoomed (n={g.zoomed}) | {_pct(g.miou_when_zoomed)} |")
        for title, groups in (("question type", self.by_question_type), ("organ", self.by_organ),
                              ("modality", self.by_modality)):
            if len(groups) > 1:
                lines += ["", f"| {title} | n | accuracy |", "|---|---|---|"]
                lines += [f"| {k} | {v.n} | {_pct(v.accuracy)} |" for k, v in groups.items()]
        return "\n".join(lines)


def summarize_eval(episodes: Sequence[Episode], *, env_id: str, dataset: str, split: str, agent: str,
                   seconds: float = 0.0, env_kwargs: dict[str, Any] | None = None) -> EvalResult:
    """Compute an :class:`EvalResult` from finished episodes (one per question)."""
    if not episodes:
        raise ValueError("no episodes to evaluate")
    by_answer_type = accuracy_by(episodes, lambda e: e.sample.answer_type)
    open_eps = [e for e in episodes if e.sample.answer_type == "open"]
    recall = [float((e.grade or {}).get("recall", 0.0)) for e in open_eps]
    return EvalResult(
        env_id=env_id, dataset=dataset, split=split, agent=agent, episodes=len(episodes),
        accuracy=sum(map(is_correct, episodes)) / len(episodes),
        closed=by_answer_type.get("closed"), open=by_answer_type.get("open"),
        open_token_recall=sum(recall) / len(recall) if recall else None,
        by_question_type=accuracy_by(episodes, lambda e: e.sample.question_type),
        by_organ=accuracy_by(episodes, lambda e: e.sample.organ),
        by_modality=accuracy_by(episodes, lambda e: e.sample.modality),
        tools=tool_stats(episodes), grounding=grounding(episodes), seconds=seconds,
        env_kwargs=dict(env_kwargs or {}),
    )


def evaluate(
    env: str | gym.Env,
    agent: str | Agent,
    *,
    split: str | None = "test",
    limit: int | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    agent_kwargs: dict[str, Any] | None = None,
    trajectories: str | Path | None = None,
    progress: bool = True,
) -> EvalResult:
    """Play one episode per question of ``split`` (the first ``limit`` questions) and score them.

    Args:
        env: A registered id (built with ``env_kwargs`` and ``split``) or an env instance.
        agent: A bundled agent name, ``"package.module:Class"`` or an agent object.
        split: The split to evaluate (ignored when ``env`` is an instance).
        limit: Evaluate only the first ``limit`` questions.
        seed: Seed of the first reset (agents that sample draw from the env's RNG stream).
        trajectories: Write every episode as a JSON line here (streamed; renamed into place at the end).
        progress: Show a progress bar with the running accuracy.
    """
    env_kwargs = dict(env_kwargs or {})
    if isinstance(env, str):
        if split is not None:
            env_kwargs["split"] = split
        env_id, env = env, gym.make(env, **env_kwargs)
    else:
        env_id = env.spec.id if env.spec else type(env.unwrapped).__name__
    agent_name = agent if isinstance(agent, str) else getattr(agent, "name", type(agent).__name__)
    if isinstance(agent, str):
        agent = make_agent(agent, **(agent_kwargs or {}))
    dataset = env.unwrapped.dataset
    total = len(dataset) if limit is None else min(int(limit), len(dataset))
    if total < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    finished: list[Episode] = []
    writer = TrajectoryWriter(trajectories) if trajectories is not None else None
    bar = tqdm(total=total, desc=f"{agent_name} on {env_id} [{dataset.split}]", unit="q", disable=not progress)
    start = time.perf_counter()
    try:
        for index in range(total):
            episode = play_episode(env, agent, seed=seed if index == 0 else None, options={"index": index})
            finished.append(episode)
            if writer is not None:
                writer.write(episode.to_dict())
            bar.update(1)
            bar.set_postfix(acc=f"{sum(map(is_correct, finished)) / len(finished):.3f}")
    finally:
        bar.close()
        if writer is not None:
            writer.close(complete=len(finished) == total)
    return summarize_eval(finished, env_id=env_id, dataset=getattr(dataset, "name", type(dataset).__name__),
                          split=dataset.split, agent=agent_name, seconds=time.perf_counter() - start,
                          env_kwargs=env_kwargs)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table1_markdown(results: Iterable[EvalResult]) -> str:
    """Accuracy (%) laid out like Table 1 of the MedVR paper: one row per agent, one column per benchmark.

    The paper's columns come first, in its order (OMVQA, PMC-VQA, MedXQA, Gen. avg, VQA-RAD,
    SLAKE, PathVQA, Mod. avg), then any other dataset evaluated. An average is shown only
    when all three of its benchmarks were evaluated; columns nobody evaluated are dropped.
    """
    results = list(results)
    cells: dict[str, dict[str, float]] = {}
    for r in results:
        column = GENERAL_COLUMNS.get(r.dataset) or MODALITY_COLUMNS.get(r.dataset) or f"{r.dataset} ({r.split})"
        cells.setdefault(r.agent, {})[column] = r.accuracy
    for row in cells.values():
        for avg, group in (("Gen. avg", GENERAL_COLUMNS), ("Mod. avg", MODALITY_COLUMNS)):
            if all(c in row for c in group.values()):
                row[avg] = sum(row[c] for c in group.values()) / len(group)
    paper = [*GENERAL_COLUMNS.values(), "Gen. avg", *MODALITY_COLUMNS.values(), "Mod. avg"]
    extra = sorted({c for row in cells.values() for c in row} - set(paper))
    columns = [c for c in paper + extra if any(c in row for row in cells.values())]
    lines = ["| Model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for agent, row in cells.items():
        lines.append(f"| {agent} | " + " | ".join(_pct(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


__all__ = ["EvalResult", "evaluate", "summarize_eval", "table1_markdown"]
