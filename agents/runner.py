"""Run an agent for N episodes: progress bar, summary statistics, trajectories as JSON lines.

Runs stream: each finished episode is written to the trajectory file, added to the
running totals (:class:`~agents.metrics.MetricTally`) and dropped, so memory stays
flat however many episodes are played.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import gymnasium as gym
from tqdm.auto import tqdm

from medvr_env import Episode

from .base import Agent, policy_env
from .metrics import MetricTally


@dataclass(frozen=True)
class RunSummary:
    """What ``medvr run`` prints."""

    episodes: int
    accuracy: float
    zoom_rate: float
    mean_steps: float
    mean_zooms: float
    invalid_action_rate: float
    answered_rate: float
    mean_reward: float

    @classmethod
    def from_tally(cls, tally: MetricTally) -> RunSummary:
        tools = tally.tool_stats()
        return cls(
            episodes=tally.episodes,
            accuracy=tally.accuracy,
            zoom_rate=tools.zoom_rate,
            mean_steps=tools.mean_steps,
            mean_zooms=tools.mean_zooms,
            invalid_action_rate=tools.invalid_action_rate,
            answered_rate=tools.answered_rate,
            mean_reward=tally.reward.value / tally.episodes,
        )

    def table(self) -> str:
        rows = [
            ("episodes", f"{self.episodes}"),
            ("accuracy", f"{self.accuracy:.3f}"),
            ("zoom rate (episodes with >= 1 zoom/crop)", f"{self.zoom_rate:.3f}"),
            ("mean zooms/crops per episode", f"{self.mean_zooms:.2f}"),
            ("mean steps", f"{self.mean_steps:.2f}"),
            ("invalid actions (share of steps)", f"{self.invalid_action_rate:.3f}"),
            ("answered (share of episodes)", f"{self.answered_rate:.3f}"),
            ("mean return", f"{self.mean_reward:.3f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v:>8}" for k, v in rows)


def summarize(episodes: Iterable[Episode]) -> RunSummary:
    """Summary statistics over finished episodes (streamed: the iterable may be a generator)."""
    return RunSummary.from_tally(MetricTally.of(episodes))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_episodes` or :func:`~agents.evaluate.evaluate`, with what had finished.

    Attributes:
        partial: The summary (or evaluation result) of the finished episodes; ``None`` if none finished.
        done: Episodes finished (and written to the ``.partial`` trajectory file).
        total: Episodes requested.
    """

    def __init__(self, partial: Any, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} episodes")
        self.partial, self.done, self.total = partial, done, total


def play_episode(env: gym.Env, agent: Agent, *, seed: int | None = None,
                 options: dict[str, Any] | None = None) -> Episode:
    """Reset ``env``, let ``agent`` act until the episode ends, and return a snapshot of its record.

    The agent steps :func:`~agents.base.policy_env` of ``env`` (under SB3 encoding wrappers, for bundled agents).
    """
    env = policy_env(env, agent)
    obs, info = env.reset(seed=seed, options=options)
    return finish_episode(env, agent, obs, info)


def finish_episode(env: gym.Env, agent: Agent, obs: dict[str, Any], info: dict[str, Any]) -> Episode:
    """Let ``agent`` play the episode ``env`` was just reset to (``obs``, ``info``); return a snapshot of its record."""
    agent.reset(env.unwrapped, obs, info)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
        done = terminated or truncated
    return env.unwrapped.episode.snapshot()


def run_episodes(
    env: gym.Env,
    agent: Agent,
    episodes: int,
    *,
    seed: int = 0,
    progress: bool = True,
    trajectories: str | Path | None = None,
    on_episode: Callable[[Episode], None] | None = None,
) -> RunSummary:
    """Play ``episodes`` episodes; the first reset is seeded, later ones continue the env's RNG stream.

    Each finished episode is written to ``trajectories`` (if given), passed to
    ``on_episode`` (if given), counted, and dropped: memory does not grow with
    ``episodes``.

    Raises:
        Interrupted: On Ctrl-C (a ``KeyboardInterrupt``), carrying the summary of the
            episodes that finished; they stay in ``<trajectories>.partial``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    tally = MetricTally()
    base = env.unwrapped
    bar = tqdm(total=episodes, desc=f"{agent.name} on {env.spec.id if env.spec else type(base).__name__}",
               disable=not progress, unit="ep")
    writer = TrajectoryWriter(trajectories) if trajectories is not None else None
    try:
        for i in range(episodes):
            episode = play_episode(env, agent, seed=seed if i == 0 else None)
            if writer is not None:
                writer.write(episode.to_dict())
            tally.add(episode)
            if on_episode is not None:
                on_episode(episode)
            del episode  # the next episode's pixels must not meet this one's
            bar.update(1)
            bar.set_postfix(acc=f"{tally.accuracy:.3f}")
    except KeyboardInterrupt as exc:
        raise Interrupted(RunSummary.from_tally(tally) if tally.episodes else None, tally.episodes, episodes) from exc
    finally:
        bar.close()
        if writer is not None:
            writer.close(complete=tally.episodes == episodes)
    return RunSummary.from_tally(tally)


class TrajectoryWriter:
    """Append episode records as JSON lines to ``<path>.partial`` as they finish; rename to ``path`` when complete.

    An interrupted run keeps every finished episode in the ``.partial`` file.
    """

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        """Start ``<path>.partial`` afresh, or with ``append=True`` continue it (``medvr eval --resume``)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = partial_path(self.path)
        self._fh = open(self.partial, "a" if append else "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, default=json_default) + "\n")
        self._fh.flush()

    def close(self, complete: bool) -> None:
        self._fh.close()
        if complete:
            os.replace(self.partial, self.path)


def partial_path(path: str | Path) -> Path:
    """Where :class:`TrajectoryWriter` keeps the lines of ``path`` until the run completes."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def write_atomic(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Create ``path`` atomically: ``write(fh)`` fills a temp file in the same folder, which is then renamed.

    A crash or an exception leaves any earlier file as it was (``torch.save(obj, fh)`` and checkpoints use it too).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def unwritable_folder(folder: str | Path) -> str | None:
    """Why files cannot be written into ``folder`` (creating it if needed), or ``None`` when they can.

    Long commands call it before their work, so a bad ``--out`` fails in a second, not after the run.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return "a file is in the way of that folder"
    except OSError as exc:
        return f"cannot create the folder ({exc.strerror or exc})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "the folder is not writable"
    return None


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (a temp file in the same folder, then rename)."""
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as JSON lines atomically; a failure leaves any earlier file as it was."""
    return write_text(path, "".join(json.dumps(r, default=json_default) + "\n" for r in records))


def write_json(path: str | Path, record: dict[str, Any]) -> Path:
    """Write one JSON document atomically."""
    return write_text(path, json.dumps(record, indent=2, default=json_default))


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file the mode a plain ``open`` would (mkstemp makes it 0600), then rename it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return repr(obj)


__all__ = [
    "Interrupted",
    "RunSummary",
    "TrajectoryWriter",
    "finish_episode",
    "partial_path",
    "play_episode",
    "run_episodes",
    "summarize",
    "write_json",
    "write_jsonl",
    "write_text",
]
