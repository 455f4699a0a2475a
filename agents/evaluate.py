"""Evaluate an agent on a dataset split and report the numbers the medical VQA literature reports.

``evaluate`` plays exactly one episode per sample of the split, in dataset order, and
returns an :class:`EvalResult`: accuracy overall, closed / open (with open-answer token
recall), per question type, organ and modality, tool use, and grounding IoU where the
dataset has evaluation boxes (the footprint: the applied boxes of the episode's looks, read
from its step records by :meth:`medvr_env.Episode.looks`, never from tool names).
:func:`table1_markdown` lays several results out like Table 1 of the MedVR paper (rows:
agents; columns: benchmarks and their averages).

The same runs from the command line: ``medvr eval --env ID --split test --agent NAME``.

Evaluations stream (each episode is written, counted and dropped), continue an
interrupted run from its ``.partial`` trajectory file (``resume=True``, ``medvr eval
--resume DIR``), and can record unreadable images as failed samples instead of
stopping (``skip_bad_samples=True``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import gymnasium as gym
from tqdm.auto import tqdm

from medvr_env import Episode
from medvr_env.data.files import DatasetNotFoundError
from medvr_env.data.images import ImageDecodeError, UnsafePathError

from .base import Agent, make_agent, policy_env
from .metrics import EpisodeStats, Grounding, GroupAccuracy, MetricTally, ToolStats, as_dict
from .runner import Interrupted, TrajectoryWriter, finish_episode, partial_path, write_text


class EvaluationError(ValueError):
    """An evaluation cannot be resumed from its trajectories, or has nothing to score; the message says why."""


BAD_SAMPLE_ERRORS = (ImageDecodeError, UnsafePathError, DatasetNotFoundError)
"""What ``skip_bad_samples=True`` records as a failed sample: one sample's image cannot be read."""

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
    failed: list[dict[str, str]] = field(default_factory=list)  # unreadable samples: sample_id, error, reason

    @classmethod
    def from_tally(cls, tally: MetricTally, *, env_id: str, dataset: str, split: str, agent: str,
                   seconds: float = 0.0, env_kwargs: dict[str, Any] | None = None,
                   failed: Sequence[dict[str, str]] = ()) -> EvalResult:
        """The result from running totals (see :class:`~agents.metrics.MetricTally`)."""
        if not tally.episodes:
            raise EvaluationError("no episodes to evaluate" + (f" ({len(failed)} samples failed)" if failed else ""))
        by_answer_type = tally.accuracy_by("answer_type")
        return cls(
            env_id=env_id, dataset=dataset, split=split, agent=agent, episodes=tally.episodes,
            accuracy=tally.accuracy, closed=by_answer_type.get("closed"), open=by_answer_type.get("open"),
            open_token_recall=tally.recall.mean(),
            by_question_type=tally.accuracy_by("question_type"), by_organ=tally.accuracy_by("organ"),
            by_modality=tally.accuracy_by("modality"), tools=tally.tool_stats(), grounding=tally.grounding(),
            seconds=seconds, env_kwargs=dict(env_kwargs or {}), failed=list(failed),
        )

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
            f"| zoom rate (episodes that zoomed into a region) | {_pct(t.zoom_rate)} |",
            f"| mean zooms per episode (looks with an applied box) | {t.mean_zooms:.2f} |",
            f"| mean steps | {t.mean_steps:.2f} |",
            f"| invalid actions (share of steps) | {_pct(t.invalid_action_rate)} |",
            f"| answered (share of episodes) | {_pct(t.answered_rate)} |",
        ]
        if self.failed:
            lines.append(f"| failed samples (unreadable, not scored) | {len(self.failed)} |")
        g = self.grounding
        if g.episodes:
            lines.append(f"| grounding mIoU (n={g.episodes}, no zoom = 0) | {_pct(g.miou)} |")
            lines.append(f"| grounding mIoU when zoomed (n={g.zoomed}) | {_pct(g.miou_when_zoomed)} |")
        for title, groups in (("question type", self.by_question_type), ("organ", self.by_organ),
                              ("modality", self.by_modality)):
            if len(groups) > 1:
                lines += ["", f"| {title} | n | accuracy |", "|---|---|---|"]
                lines += [f"| {k} | {v.n} | {_pct(v.accuracy)} |" for k, v in groups.items()]
        if self.failed:
            lines += ["", "| failed sample | error | reason |", "|---|---|---|"]
            lines += [f"| {f['sample_id']} | {f['error']} | {_cell(f['reason'])} |" for f in self.failed]
        return "\n".join(lines)


def summarize_eval(episodes: Iterable[Episode], *, env_id: str, dataset: str, split: str, agent: str,
                   seconds: float = 0.0, env_kwargs: dict[str, Any] | None = None) -> EvalResult:
    """Compute an :class:`EvalResult` from finished episodes (one per question)."""
    return EvalResult.from_tally(MetricTally.of(episodes), env_id=env_id, dataset=dataset, split=split, agent=agent,
                                 seconds=seconds, env_kwargs=env_kwargs)


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
    resume: bool = False,
    skip_bad_samples: bool = False,
    on_episode: Callable[[Episode], None] | None = None,
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
        resume: Continue from ``trajectories`` (its ``.partial`` file, or the finished file): the
            questions recorded there are re-read, not replayed, and the first replayed question's
            reset is seeded with ``seed``. Agents whose episodes do not depend on earlier
            episodes (all bundled ones but ``random``) then give the numbers of an uninterrupted run.
        skip_bad_samples: Record a sample whose image cannot be read (:data:`BAD_SAMPLE_ERRORS`)
            as failed, with its reason, and go on; by default it stops the evaluation.
        on_episode: Called with each episode played, before it is dropped.

    Raises:
        Interrupted: On Ctrl-C, carrying the result of the questions that finished (they stay in
            the ``.partial`` trajectory file, ready for ``resume=True``).
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
    if resume and trajectories is None:
        raise ValueError("resume=True needs the trajectories file of the interrupted evaluation")
    dataset = env.unwrapped.dataset
    total = len(dataset) if limit is None else min(int(limit), len(dataset))
    if total < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    tally, failed = MetricTally(), []
    records = _resumable_records(Path(trajectories), dataset, total) if resume else []
    for line, record in enumerate(records, 1):
        _count_record(record, tally, failed, f"{trajectories}:{line}")
    first = len(records)

    def result() -> EvalResult:
        return EvalResult.from_tally(tally, env_id=env_id, dataset=getattr(dataset, "name", type(dataset).__name__),
                                     split=dataset.split, agent=agent_name, seconds=time.perf_counter() - start,
                                     env_kwargs=env_kwargs, failed=failed)

    start = time.perf_counter()
    if first == total and (trajectories is None or Path(trajectories).is_file()):
        return result()  # finished before: nothing to replay
    writer = TrajectoryWriter(trajectories, append=first > 0) if trajectories is not None else None
    bar = tqdm(total=total, initial=first, desc=f"{agent_name} on {env_id} [{dataset.split}]", unit="q",
               disable=not progress)
    acting = policy_env(env, agent)
    done = first
    try:
        seed_next: int | None = seed  # the first question played is reset with the seed
        for index in range(first, total):
            record = _unreadable(dataset, index) if skip_bad_samples else None
            if record is not None:
                _count_record(record, tally, failed, "")
            else:
                obs, info = acting.reset(seed=seed_next, options={"index": index})
                seed_next = None
                episode = finish_episode(acting, agent, obs, info)
                record = episode.to_dict()
                tally.add(episode)
                if on_episode is not None:
                    on_episode(episode)
                del episode, obs, info
            if writer is not None:
                writer.write(record)
            done += 1
            bar.update(1)
            if tally.episodes:
                bar.set_postfix(acc=f"{tally.accuracy:.3f}")
    except KeyboardInterrupt as exc:
        raise Interrupted(result() if tally.episodes else None, done, total) from exc
    finally:
        bar.close()
        if writer is not None:
            writer.close(complete=done == total)
    return result()


def _unreadable(dataset: Any, index: int) -> dict[str, Any] | None:
    """The failed-sample record of question ``index`` if its image cannot be read; else ``None``.

    Read before ``reset`` (which then finds the image in the dataset's cache) rather than caught from it:
    Gymnasium's env checker cannot step an env whose first ``reset`` raised.
    """
    sample = dataset[index]
    try:
        dataset.load_image(sample)
    except BAD_SAMPLE_ERRORS as exc:
        return _failed_record(sample, exc)
    return None


def _failed_record(sample: Any, exc: Exception) -> dict[str, Any]:
    """The trajectory line of a sample that could not be played."""
    return {"sample": sample.to_dict(), "failed": {"error": type(exc).__name__, "reason": str(exc)}}


def _count_record(record: dict[str, Any], tally: MetricTally, failed: list[dict[str, str]], where: str) -> None:
    """Add one trajectory line (an episode or a failed sample) to the running totals."""
    try:
        if "failed" in record:
            failed.append({"sample_id": record["sample"]["sample_id"], **record["failed"]})
        else:
            tally.add(EpisodeStats.from_record(record))
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise EvaluationError(f"{where}: not a MedVR episode record ({type(exc).__name__}: {exc})") from exc


def _resumable_records(path: Path, dataset: Any, total: int) -> list[dict[str, Any]]:
    """The records an interrupted (or finished) evaluation left at ``path``, checked against this evaluation.

    The finished file wins over a ``.partial`` one. A last line cut short by a kill is
    dropped (and the ``.partial`` file rewritten without it); any other bad line, a
    record of another question, or more records than questions is an error.
    """
    partial = partial_path(path)
    source = path if path.is_file() else partial
    if not source.is_file():
        return []
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines) and source == partial:
                write_text(partial, "".join(lines[:-1]))  # cut short mid-write: replay that question
                break
            raise EvaluationError(f"{source}:{number}: not a JSON line ({exc}); cannot resume from it") from exc
    if len(records) > total or (source == path and len(records) != total):
        raise EvaluationError(f"{source} holds {len(records)} records but this evaluation has {total} questions; "
                         "resume with the same --split, --limit and env options")
    for index, record in enumerate(records):
        found = record.get("sample", {}).get("sample_id") if isinstance(record, dict) else None
        expected = dataset[index].sample_id
        if found != expected:
            raise EvaluationError(f"{source}:{index + 1}: record of sample {found!r}, but question {index} of this "
                             f"evaluation is {expected!r}; resume with the same dataset, split and env options")
    return records


def _cell(text: str) -> str:
    """Text safe inside one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


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


__all__ = ["BAD_SAMPLE_ERRORS", "EvalResult", "EvaluationError", "evaluate", "summarize_eval", "table1_markdown"]
