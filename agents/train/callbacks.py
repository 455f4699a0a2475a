"""Trainer callbacks: JSON-lines metrics that survive a kill and line up after a resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

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
        if self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if int(record.get("step", 0)) <= state.global_step:
                    kept.append(line + "\n")
            write_text(self.path, "".join(kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record: dict[str, Any] = {"step": int(state.global_step), "epoch": state.epoch}
        for key, value in logs.items():
            record[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=json_default) + "\n")
            fh.flush()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics file (a trailing line cut by a kill is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


__all__ = ["JsonlMetrics", "read_metrics"]
