"""An equal budget of generated tokens per run: a trainer callback that stops GRPO once the budget is spent.

Arms generate different numbers of tokens per step (no tools: one short answer; tools: a zoom call and an answer),
so a fixed number of steps would not be a fair comparison; a fixed number of generated tokens is (the paper's
Table 2 compares at equal rollout cost). A step's tokens are read from its log line (``logging_steps`` must be 1):

- EVR arms: ``evr/generated_tokens``, the engine's count of tokens it sampled in the step (summed over processes).
  A branch's shared prefix is sampled once, by its parent, and counted once; a discarded duplicate child's tokens
  were sampled and are counted.
- Other arms: ``medvr/generated_tokens`` (the mean number of model-sampled tokens per trajectory; env-inserted
  text and image tokens excluded) x rollouts per step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from transformers import TrainerCallback

GENERATED = "medvr/generated_tokens"
EVR_GENERATED = "evr/generated_tokens"


def step_tokens(record: Mapping[str, Any], rollouts_per_step: int) -> float | None:
    """Generated tokens of the step a metrics record logs, or ``None`` if it is not a step's log line."""
    if record.get(EVR_GENERATED) is not None:
        return float(record[EVR_GENERATED])
    value = record.get(GENERATED)
    return None if value is None else float(value) * rollouts_per_step


def cumulative_tokens(records: Iterable[Mapping[str, Any]], rollouts_per_step: int) -> list[tuple[int, float]]:
    """``(step, tokens generated up to and including it)`` for every step's log line, in order."""
    out, total = [], 0.0
    for record in records:
        tokens = step_tokens(record, rollouts_per_step)
        if tokens is not None:
            total += tokens
            out.append((int(record.get("step", 0)), total))
    return out


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON lines of a metrics file (a line cut by a kill is skipped; a missing file has none)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class TokenBudget(TrainerCallback):
    """Stop training at the end of the step that brings the run's generated tokens to ``budget`` or more.

    Args:
        budget: Generated tokens per run.
        rollouts_per_step: Trajectories played per optimizer step (``per_device_train_batch_size`` x processes, with
            one generation per step).
        metrics_path: The run's ``metrics.jsonl``: on a resume, the tokens of the steps before the checkpoint are
            counted from it (the metrics callback has trimmed the killed run's tail by then; list it first).
    """

    def __init__(self, budget: int, rollouts_per_step: int, metrics_path: str | os.PathLike) -> None:
        if budget < 1 or rollouts_per_step < 1:
            raise ValueError(f"budget and rollouts_per_step must be >= 1, got {budget}, {rollouts_per_step}")
        self.budget = int(budget)
        self.rollouts_per_step = int(rollouts_per_step)
        self.metrics_path = Path(metrics_path)
        self.used = 0.0
        self.steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        done = [r for r in read_records(self.metrics_path) if int(r.get("step", 0)) <= state.global_step]
        counted = cumulative_tokens(done, self.rollouts_per_step)
        self.used = counted[-1][1] if counted else 0.0
        self.steps = len(counted)

    def on_log(self, args, state, control, logs=None, **kwargs):
        tokens = step_tokens(logs or {}, self.rollouts_per_step)
        if tokens is None:
            return
        self.used += tokens
        self.steps += 1
        if self.used >= self.budget:
            control.should_training_stop = True

    @property
    def spent(self) -> bool:
        return self.used >= self.budget


__all__ = ["EVR_GENERATED", "GENERATED", "TokenBudget", "cumulative_tokens", "read_records", "step_tokens"]
