"""Evaluate a trained checkpoint on the procedural test split: greedy, batched, the same questions for every run.

Episodes are played by :class:`agents.vlm.VLMPolicy` (temperature 0) in ``batch`` envs at a time and counted by
:class:`agents.metrics.MetricTally` (accuracy overall and by question type, looks), plus the grounding measures of
:mod:`.grounding` and the tokens the model generated. The first ``questions`` questions of the test split are used,
in order, with the env seeded per question, so every arm and seed answers exactly the same questions.
"""

from __future__ import annotations

import math
import time
from typing import Any

import gymnasium as gym
from tqdm.auto import tqdm

import medvr_env  # noqa: F401  (registers the env ids)
from agents.metrics import MetricTally

from .grounding import episode_grounding


def evaluate_checkpoint(model: str, env_id: str, env_kwargs: dict[str, Any], *, questions: int,
                        max_new_tokens: int, max_turns: int | None, batch: int = 16, seed: int = 0,
                        progress: bool = True, policy: Any = None) -> dict[str, Any]:
    """Play the first ``questions`` test questions with ``model`` (or a ready ``policy``); returns the numbers.

    Args:
        env_kwargs: The training env's kwargs; ``split`` is replaced by ``"test"`` and ``dataset_kwargs.num_samples``
            by ``questions`` (the procedural test split draws its samples in order, so these are its first ones).
    """
    from agents.vlm import ImageBudget, SamplingConfig, VLMPolicy, load_vlm

    if questions < 1 or batch < 1:
        raise ValueError(f"questions and batch must be >= 1, got {questions}, {batch}")
    kwargs = dict(env_kwargs)
    kwargs["split"] = "test"
    kwargs["dataset_kwargs"] = {**dict(kwargs.get("dataset_kwargs") or {}), "num_samples": int(questions)}
    if policy is None:
        vlm = load_vlm(model, device="cpu", dtype="float32")
        policy = VLMPolicy(vlm, sampling=SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens,
                                                        max_turns=max_turns, seed=seed),
                           budget=ImageBudget(max_images=None))
    envs = [gym.make(env_id, **kwargs) for _ in range(min(batch, questions))]
    total = min(int(questions), len(envs[0].unwrapped.dataset))
    tally = MetricTally()
    sums = {"iou": 0.0, "window_iou": 0.0, "coverage": 0.0}
    zoomed = {"iou": 0.0, "window_iou": 0.0, "coverage": 0.0}
    scored = scored_zoomed = 0
    generated = 0
    started = time.perf_counter()
    bar = tqdm(total=total, desc=f"eval {model}", unit="q", disable=not progress, leave=False)
    try:
        for start in range(0, total, len(envs)):
            indices = list(range(start, min(total, start + len(envs))))
            rollouts = policy.rollout(envs[:len(indices)], seeds=[seed + i for i in indices],
                                      options=[{"index": i} for i in indices], keys=indices)
            for r in rollouts:
                stats = tally.add(r.episode)
                generated += sum(len(t.token_ids) for t in r.turns)
                g = episode_grounding(r.episode)
                if g is not None:
                    scored += 1
                    for k in sums:
                        sums[k] += g[k]
                    if stats.zoomed:
                        scored_zoomed += 1
                        for k in zoomed:
                            zoomed[k] += g[k]
            bar.update(len(indices))
            bar.set_postfix(acc=f"{tally.accuracy:.3f}")
    finally:
        bar.close()
        for env in envs:
            env.close()
    tools = tally.tool_stats()
    return {
        "questions": tally.episodes,
        "accuracy": tally.accuracy,
        "by_question_type": {k: {"accuracy": v.accuracy, "n": v.n} for k, v in
                             tally.accuracy_by("question_type").items()},
        "tool_rate": tools.zoom_rate,
        "zooms_per_episode": tools.mean_zooms,
        "answered_rate": tools.answered_rate,
        "invalid_action_rate": tools.invalid_action_rate,
        "miou": sums["iou"] / scored if scored else math.nan,
        "window_iou": sums["window_iou"] / scored if scored else math.nan,
        "coverage": sums["coverage"] / scored if scored else math.nan,
        "miou_zoomed": zoomed["iou"] / scored_zoomed if scored_zoomed else math.nan,
        "window_iou_zoomed": zoomed["window_iou"] / scored_zoomed if scored_zoomed else math.nan,
        "coverage_zoomed": zoomed["coverage"] / scored_zoomed if scored_zoomed else math.nan,
        "generated_tokens_per_episode": generated / max(1, tally.episodes),
        "seconds": time.perf_counter() - started,
    }


__all__ = ["evaluate_checkpoint"]
