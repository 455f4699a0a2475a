"""Trainer callbacks: JSON-lines metrics and rollout records that survive a kill and line up after a resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from agents.runner import json_default, write_text


class JsonlMetrics(TrainerCallback):
    """Append every log event (TRL's and the rollout's ``medvr/*`` metrics) to ``path`` as one JSON line.

    Each line is ``{"step": global_step, "time": ..., <metric>: value, ...}``, written and flushed as the trainer
    logs, on the main process only. On a resume, lines from steps after the checkpoint (the killed run's tail) are
    removed first, rewriting the file atomically, so the file reads as one uninterrupted run.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keep_lines(self.path, lambda record: int(record.get("step", 0)) <= state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record: dict[str, Any] = {"step": int(state.global_step), "epoch": state.epoch}
        for key, value in logs.items():
            record[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=json_default) + "\n")
            fh.flush()


class RolloutRecords(TrainerCallback):
    """Stream the episode records of a sample of generations to ``path`` (``rollouts.jsonl``), for ``medvr report``.

    The trainer asks :meth:`due` before each training generation and hands the records of a due one to
    :meth:`write`: the generation at the run's first step, then the first one at or after each multiple of
    ``every`` steps, until the file holds ``max_records`` records. Each record is one line, written and flushed
    whole (a kill cuts at most the last line); only the main process writes. On a resume, records of generations
    at or after the checkpoint's step (the killed run's tail, which the resumed run plays again) are removed first.

    Args:
        path: The JSON-lines file.
        every: Steps between written generations; 0 writes none (the file is left alone).
        max_records: The most records the file holds.
    """

    def __init__(self, path: str | os.PathLike, every: int, max_records: int) -> None:
        self.path = Path(path)
        self.every = int(every)
        self.max_records = int(max_records)
        self.written = 0
        self._next_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.enabled:
            return
        step = int(state.global_step)
        self.written = keep_lines(self.path, lambda record: int((record.get("group") or {}).get("step", 0)) < step)
        self._next_step = step

    @property
    def enabled(self) -> bool:
        return self.every > 0 and self.max_records > 0

    def due(self, step: int) -> bool:
        """Whether the generation made at optimizer step ``step`` is written."""
        return self.enabled and self.written < self.max_records and step >= self._next_step

    def write(self, step: int, records: list[dict[str, Any]]) -> int:
        """Append ``records`` (up to the cap) as the generation of ``step``; returns how many were written."""
        records = records[:self.max_records - self.written]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, default=json_default) + "\n")
                fh.flush()
        self.written += len(records)
        self._next_step = (step // self.every + 1) * self.every
        return len(records)


def keep_lines(path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite the JSON-lines file ``path`` atomically with only the records ``keep`` accepts (a line cut by a
    kill is dropped); returns how many were kept. A missing file stays missing."""
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if isinstance(record, dict) and keep(record):
            kept.append(line + "\n")
    write_text(path, "".join(kept))
    return len(kept)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics file (a trailing line cut by a kill is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


__all__ = ["JsonlMetrics", "RolloutRecords", "keep_lines", "read_metrics"]
