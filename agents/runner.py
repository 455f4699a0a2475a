"""Run an agent for N episodes: progress bar, summary statistics, trajectories as JSON lines."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import gymnasium as gym
from tqdm.auto import tqdm

from medvr_env import Episode

from .base import Agent
from .metrics import is_correct, tool_stats

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
    """Summary statistics over finished episodes."""
    episodes = list(episodes)
    if not episodes:
        raise ValueError("no episodes to summarise")
    n = len(episodes)
    tools = tool_stats(episodes)
    return RunSummary(
        episodes=n,
        accuracy=sum(1 for e in episodes if is_correct(e)) / n,
        zoom_rate=tools.zoom_rate,
        mean_steps=tools.mean_steps,
        mean_zooms=tools.mean_zooms,
        invalid_action_rate=tools.invalid_action_rate,
        answered_rate=tools.answered_rate,
        mean_reward=sum(e.total_reward for e in episodes) / n,
    )


def play_episode(env: gym.Env, agent: Agent, *, seed: int | None = None,
                 options: dict[str, Any] | None = None) -> Episode:
    """Reset ``env``, let ``agent`` act until the episode ends, and return a snapshot of its record."""
    obs, info = env.reset(seed=seed, options=options)
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
) -> tuple[RunSummary, list[Episode]]:
    """Play ``episodes`` episodes; the first reset is seeded, later ones continue the env's RNG stream."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    finished: list[Episode] = []
    base = env.unwrapped
    bar = tqdm(total=episodes, desc=f"{agent.name} on {env.spec.id if env.spec else type(base).__name__}",
               disable=not progress, unit="ep")
    writer = TrajectoryWriter(trajectories) if trajectories is not None else None
    correct = 0
    try:
        for i in range(episodes):
            episode = play_episode(env, agent, seed=seed if i == 0 else None)
            finished.append(episode)
            if writer is not None:
                writer.write(episode.to_dict())
            correct += is_correct(episode)
            bar.update(1)
            bar.set_postfix(acc=f"{correct / (i + 1):.3f}")
    finally:
        bar.close()
        if writer is not None:
            writer.close(complete=len(finished) == episodes)
    return summarize(finished), finished


class TrajectoryWriter:
    """Append episode records as JSON lines to ``<path>.partial`` as they finish; rename to ``path`` when complete.

    An interrupted run keeps every finished episode in the ``.partial`` file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._fh = open(self.partial, "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, default=json_default) + "\n")
        self._fh.flush()

    def close(self, complete: bool) -> None:
        self._fh.close()
        if complete:
            os.replace(self.partial, self.path)


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (a temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


__all__ = ["RunSummary", "play_episode", "run_episodes", "summarize", "TrajectoryWriter", "write_json", "write_jsonl",
           "write_text"]
