"""From MedVR rollouts to GRPO samples: the exact token sequence, its loss mask, log-probs and images.

A rollout of the VLM policy (:class:`agents.vlm.Rollout`) records the model input it was played on as segments.
During training the image budget never evicts, so each trajectory is one segment, and one GRPO sample:

- ``prompt_ids``: the tokens before the first generated one (system prompt, question, view 0's placeholders);
- ``completion_ids``: everything after: the model's turns and what the env inserted between them (tool results,
  crop placeholders), exactly as the model saw them (never re-tokenised);
- ``tool_mask``: 1 where the policy sampled the token, 0 for env-inserted tokens (kept out of the loss);
- ``logprobs``: the sampler's log-probabilities (NaN on env tokens);
- ``images``: every image of the sequence, in placeholder order (view 0 first, then each crop as it came).

:func:`check_image_tokens` verifies, before any forward pass, that each sample's placeholders match its images;
TRL would otherwise drop every image of the batch without a word when a single sample disagrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


class ImageTokenMismatch(ValueError):
    """A training sample's image placeholder tokens do not match its images (the forward would lose them)."""


class MultiSegmentRollout(RuntimeError):
    """A rollout made of several segments (the image budget evicted or shrank an image): not one GRPO sample."""


@dataclass
class TrainSample:
    """One trajectory as TRL's GRPO trainer takes it (see the module docstring)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    tool_mask: list[int]
    logprobs: list[float]
    images: list[Any]
    text: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    @property
    def generated_tokens(self) -> int:
        return sum(self.tool_mask)


def rollout_to_sample(rollout: Any) -> TrainSample:
    """The GRPO sample of a one-segment rollout; raises :class:`MultiSegmentRollout` otherwise."""
    if len(rollout.segments) != 1:
        raise MultiSegmentRollout(
            f"rollout {rollout.key!r} has {len(rollout.segments)} segments (the image budget evicted "
            f"{rollout.evictions} and shrank {rollout.downscales} images); training needs one token sequence per "
            f"trajectory: use ImageBudget(max_images=None, max_image_tokens=None), which never evicts, and bound "
            f"the context with policy.max_turns and policy.max_tokens_per_image instead"
        )
    seg = rollout.segments[0]
    first = next((i for i, g in enumerate(seg.generated) if g), None)
    if first is None or first == 0:
        raise ValueError(f"rollout {rollout.key!r}: a segment must start with a prompt and contain generated tokens")
    episode = rollout.episode
    steps = episode.steps
    answered = episode.grade is not None
    looks = episode.looks()  # steps that made a new view, read from what each step recorded
    return TrainSample(
        prompt_ids=list(seg.token_ids[:first]),
        completion_ids=list(seg.token_ids[first:]),
        tool_mask=[int(g) for g in seg.generated[first:]],
        logprobs=[float(v) for v in seg.logprobs[first:]],
        images=list(seg.images),
        text="\n".join(t.text for t in rollout.turns),
        fields={
            "episode": episode,
            "accuracy": float(episode.grade["score"]) if answered else 0.0,
            "correct": bool(answered and episode.grade["correct"]),
            "answered": answered,
            "well_formed": answered and all(s.error is None for s in steps),
            "looked": bool(looks),
            "looks": len(looks),
            "turns": len(rollout.turns),
            "entropy": _mean([h for t in rollout.turns for h in t.entropies]),
            "branched": getattr(rollout, "parent", None) is not None,
        },
    )


def check_image_tokens(samples: Sequence[TrainSample], image_token_id: int,
                       tokens_per_image: Callable[[Any], int]) -> None:
    """Raise :class:`ImageTokenMismatch` unless every sample's placeholders equal what its images expand to.

    Args:
        samples: The batch, in order.
        image_token_id: The image placeholder token (``<|image_pad|>`` for Qwen-VL).
        tokens_per_image: Placeholder tokens one image expands to (the family adapter's ``image_tokens``).
    """
    for i, sample in enumerate(samples):
        in_prompt = sum(1 for t in sample.prompt_ids if t == image_token_id)
        in_completion = sum(1 for t in sample.completion_ids if t == image_token_id)
        per_image = [int(tokens_per_image(im)) for im in sample.images]
        if in_prompt + in_completion != sum(per_image):
            raise ImageTokenMismatch(
                f"sample {i} has {in_prompt + in_completion} image placeholder tokens ({in_prompt} in the prompt, "
                f"{in_completion} in the completion) but its {len(per_image)} images expand to {sum(per_image)} "
                f"({per_image}); TRL would drop every image of the batch. Was the sequence cut inside an image, or "
                f"an image added or removed after the rollout?"
            )
        if any(sample.tool_mask[j] for j, t in enumerate(sample.completion_ids) if t == image_token_id):
            raise ImageTokenMismatch(f"sample {i}: an image placeholder is marked as generated (it would be trained)")


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


__all__ = ["ImageTokenMismatch", "MultiSegmentRollout", "TrainSample", "check_image_tokens", "rollout_to_sample"]
