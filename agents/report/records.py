"""Reading what runs wrote: trajectory files, the run's metadata, and a training metrics log.

A *run directory* is what ``medvr run`` or ``medvr eval`` wrote (see the README):

- ``medvr run``: ``trajectories.jsonl`` and ``summary.json`` (``env``, ``agent``, ``env_kwargs``);
- ``medvr eval``: ``trajectories/<env>__<agent>.jsonl`` and ``results.json`` (one entry per env and agent,
  each with ``env_id``, ``agent`` and ``env_kwargs``);
- any folder (or single file) of ``*.jsonl`` episode records, e.g. a trainer's rollouts (``medvr train`` writes
  ``rollouts.jsonl``; its ``config.yaml`` names the env, for the images);
- optionally a metrics log (``metrics.jsonl``): one JSON object of numbers per line, plotted as learning curves.

An interrupted run leaves ``<name>.jsonl.partial``; it is read when the finished file is missing.
Every line of a trajectory file is one ``Episode.to_dict()`` record.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvr_env.boxes import Box
from medvr_env.data.sample import Sample
from medvr_env.episode import Episode, StepRecord, View

METRICS_NAMES = ("metrics.jsonl", "train_metrics.jsonl", "training_metrics.jsonl")
STEP_KEYS = ("step", "global_step", "iteration", "update", "round", "epoch")
CLOCK_KEYS = ("time", "timestamp", "wall_time")  # logged beside metrics, not learning curves
RECORD_KEYS = ("sample", "image_size", "views", "steps")


class ReportInputError(ValueError):
    """A run directory or record the report cannot read; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class TrajectorySource:
    """One trajectory file and where its images come from.

    Attributes:
        path: The ``.jsonl`` (or ``.jsonl.partial``) file.
        env_id: The env id that produced it (``None`` when the run did not say).
        agent: The agent's name (from the run's metadata or the file name).
        env_kwargs: The env kwargs of the run (dataset, split, data_root, ...).
        partial: Whether the run was interrupted (only the ``.partial`` file exists).
    """

    path: Path
    env_id: str | None
    agent: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    partial: bool = False

    @property
    def label(self) -> str:
        return f"{self.agent} · {self.env_id}" if self.env_id else self.agent


@dataclass(frozen=True)
class RunInfo:
    """A run directory: its trajectory files and its metrics log (if any)."""

    root: Path
    sources: tuple[TrajectorySource, ...]
    metrics: Path | None

    @property
    def name(self) -> str:
        return self.root.name if self.root.is_dir() else self.root.stem


def read_run(path: str | Path) -> RunInfo:
    """Find the trajectory files of a run directory (or take one ``.jsonl`` file) and their metadata.

    Raises:
        ReportInputError: When ``path`` does not exist or holds no trajectory file.
    """
    root = Path(path)
    if not root.exists():
        raise ReportInputError(f"{root} does not exist; give the folder `medvr run`/`medvr eval` wrote "
                               f"(runs/<name>/) or a trajectory .jsonl file")
    if root.is_file():
        return RunInfo(root, (TrajectorySource(root, None, root.stem.split("__")[-1], {},
                                               root.name.endswith(".partial")),), None)
    sources = _eval_sources(root) or _run_sources(root) or _loose_sources(root)
    metrics = next((root / n for n in METRICS_NAMES if (root / n).is_file()), None)
    if not sources and metrics is None:
        raise ReportInputError(
            f"{root} holds no trajectory file: expected trajectories.jsonl (medvr run), trajectories/*.jsonl "
            f"(medvr eval), *.jsonl episode records (a .jsonl.partial file counts when the run was interrupted) "
            f"or a training metrics log ({', '.join(METRICS_NAMES)})")
    return RunInfo(root, tuple(sources), metrics)


def _finished_or_partial(path: Path) -> tuple[Path, bool] | None:
    partial = path.with_name(path.name + ".partial")
    if path.is_file():
        return path, False
    if partial.is_file():
        return partial, True
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportInputError(f"{path} is not readable JSON ({exc}); re-run the command that wrote it") from exc
    if not isinstance(data, dict):
        raise ReportInputError(f"{path} should hold a JSON object, found {type(data).__name__}")
    return data


def _run_sources(root: Path) -> list[TrajectorySource]:
    found = _finished_or_partial(root / "trajectories.jsonl")
    if found is None:
        return []
    meta = _read_json(root / "summary.json") if (root / "summary.json").is_file() else {}
    return [TrajectorySource(found[0], meta.get("env"), str(meta.get("agent", "agent")),
                             dict(meta.get("env_kwargs") or {}), found[1])]


def _eval_sources(root: Path) -> list[TrajectorySource]:
    folder = root / "trajectories"
    if not folder.is_dir():
        return []
    results = _read_json(root / "results.json").get("results", []) if (root / "results.json").is_file() else []
    by_file = {f"{r.get('env_id')}__{str(r.get('agent', '')).replace(':', '.')}": r for r in results}
    # an interrupted evaluation has no results.json yet, but the settings it was started with (eval.json)
    settings = _read_json(root / "eval.json") if (root / "eval.json").is_file() else {}
    sources = []
    names = sorted({p.name.removesuffix(".partial") for p in folder.glob("*.jsonl*")
                    if p.name.endswith((".jsonl", ".jsonl.partial"))})
    for name in names:
        found = _finished_or_partial(folder / name)
        if found is None:
            continue
        stem = name.removesuffix(".jsonl")
        meta = by_file.get(stem, {})
        env_id, _, agent = stem.partition("__")
        kwargs = dict(meta.get("env_kwargs") or settings.get("env_kwargs") or {})
        split = meta.get("split") or settings.get("split")
        if split and "split" not in kwargs:
            kwargs["split"] = split
        sources.append(TrajectorySource(found[0], meta.get("env_id", env_id or None), str(meta.get("agent", agent)),
                                        kwargs, found[1]))
    return sources


def _loose_sources(root: Path) -> list[TrajectorySource]:
    files = sorted(p for p in root.glob("*.jsonl") if p.name not in METRICS_NAMES)
    env_id, env_kwargs = _training_env(root)
    return [TrajectorySource(p, env_id, p.stem, dict(env_kwargs), False) for p in files]


def _training_env(root: Path) -> tuple[str | None, dict[str, Any]]:
    """The env of a ``medvr train`` output folder (its ``config.yaml``), so the report can load the images."""
    import yaml

    try:
        config = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # no config: the records alone still make a report
        return None, {}
    env = config.get("env") if isinstance(config, dict) else None
    if not isinstance(env, dict) or not isinstance(env.get("id"), str):
        return None, {}
    return env["id"], dict(env.get("kwargs") or {})


def iter_records(source: TrajectorySource) -> Iterator[dict[str, Any]]:
    """The episode records of ``source``, in file order.

    A last line cut short by an interruption is skipped; any other line that is not an
    episode record is an error naming the file and line.
    """
    with open(source.path, encoding="utf-8") as fh:
        lines = fh.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and (source.partial or not line.endswith("\n")):
                return  # the line being written when the run stopped
            raise ReportInputError(f"{source.path}:{number} is not JSON ({exc.msg}); each line must be one "
                                   f"Episode.to_dict() record") from exc
        check_record(record, f"{source.path}:{number}")
        yield record


def check_record(record: Any, where: str) -> None:
    """Raise :class:`ReportInputError` unless ``record`` looks like an ``Episode.to_dict()`` record."""
    if not isinstance(record, dict):
        raise ReportInputError(f"{where}: expected an episode record (a JSON object), got {type(record).__name__}")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ReportInputError(f"{where}: not an episode record, missing {missing} (records are written by "
                               f"Episode.to_dict(); found keys {sorted(record)[:8]})")


def read_metrics(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Learning curves from a JSON-lines metrics log: ``{name: [(step, value), ...]}``.

    The x value is the first of :data:`STEP_KEYS` a line holds, else the line's position.
    Non-numeric and non-finite values are skipped; unreadable lines are skipped too (a
    log being written may end mid-line).
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    with open(path, encoding="utf-8") as fh:
        for position, line in enumerate(fh):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            step_key = next((k for k in STEP_KEYS if _number(row.get(k)) is not None), None)
            x = _number(row[step_key]) if step_key else float(position)
            for key, value in row.items():
                y = _number(value)
                if key != step_key and key not in CLOCK_KEYS and y is not None:
                    curves.setdefault(key, []).append((x, y))
    return curves


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def sample_from_dict(fields: dict[str, Any]) -> Sample:
    """The :class:`Sample` of a record's ``sample`` dict (``Sample.to_dict()``); unknown keys are ignored."""
    values = {f.name: fields[f.name] for f in dataclasses.fields(Sample) if f.name in fields}
    values["options"] = tuple(values.get("options") or ())
    values["eval_boxes"] = tuple(tuple(b) for b in values.get("eval_boxes") or ())
    return Sample(**values)


def episode_from_record(record: dict[str, Any], original: np.ndarray | None = None) -> Episode:
    """An :class:`Episode` rebuilt from its ``to_dict()`` record, to draw it with ``medvr_env.render``.

    Args:
        record: One trajectory line.
        original: The original image; without it a zero-memory black stand-in of the
            record's ``image_size`` is used (boxes and geometry stay exact).

    View pixel filters (e.g. a window/level tool) are recorded only as descriptions and are
    not re-applied.
    """
    width, height = (int(v) for v in record["image_size"])
    if original is None:
        original = np.broadcast_to(np.zeros((1, 1, 3), dtype=np.uint8), (height, width, 3))
    views = [View(int(v["index"]), Box(*(int(c) for c in v["box"])), (int(v["size"][0]), int(v["size"][1])),
                  v.get("parent"), str(v.get("tool", "")), int(v.get("step", 0))) for v in record["views"]]
    step_fields = {f.name for f in dataclasses.fields(StepRecord)}
    steps = []
    for s in record["steps"]:
        values = {k: v for k, v in s.items() if k in step_fields}
        if values.get("token_entropies") is not None:
            values["token_entropies"] = tuple(values["token_entropies"])
        values.setdefault("reward_terms", {})
        steps.append(StepRecord(**{f: values.get(f) for f in step_fields}))
    return Episode(sample=sample_from_dict(record["sample"]), original=original,
                   views=views, steps=steps, current_view=int(record.get("current_view", 0)),
                   stop_reason=str(record.get("stop_reason", "")), grade=record.get("grade"))


__all__ = ["ReportInputError", "RunInfo", "TrajectorySource", "check_record", "episode_from_record", "iter_records",
           "read_metrics", "read_run", "sample_from_dict"]
