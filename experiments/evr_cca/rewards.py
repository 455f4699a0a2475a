"""Reward functions the grid adds to agents.train's three: arm 6's box-supervised tool reward, and a grounding probe.

Both take TRL's reward-function call (``f(completions=, episode=, group=, accuracy=, log_metric=, ...)``, the
columns :class:`agents.train.trainer.MedVRGRPOTrainer` attaches) and return one float per trajectory.

- :func:`make_box_reward` (arm 6 only): the same ``R_tool`` rule as CCA (:func:`agents.credit.score_footprint`: 1.0
  when the footprint's IoU with the reference exceeds ``eta``, 0.5 otherwise, 0 for a wrong answer or no look), but
  the reference is the evaluation boxes' reading windows (:func:`.grounding.reading_window`) instead of the group's
  consensus (a sample without evaluation boxes, such as a "no" presence answer, has no reference: a correct zoom
  gets 0.5, as in CCA without a consensus). The raw boxes would not do as a reference: a finding is ~10 px and a zoom at least 28 px, so no zoom
  could pass ``eta`` and every correct zoom would get the same 0.5. This is the upper reference of Table 6: it reads
  annotations that the method claims not to need.
- :func:`grounding_probe`: logs ``probe/iou``, ``probe/window_iou`` and ``probe/coverage`` of the batch's
  trajectories (:mod:`.grounding`) and returns 0 for every trajectory; the grid gives it weight 0, so it never
  changes an advantage. It is how the learning curves show grounding in every arm.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .grounding import episode_grounding, reading_window


def make_box_reward(eta: float = 0.5, grid: Any = 64, no_look_reward: float = 0.0) -> Callable[..., list[float]]:
    """``1[R_acc > 0]·R_tool`` with the evaluation boxes' reading windows as the reference (see the module doc)."""
    from agents.credit import footprint_mask, read_footprint, score_footprint

    def tool(completions: Sequence[Any], episode: Sequence[Any], accuracy: Sequence[float],
             log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float]:
        out, agrees = [], []
        for ep, acc in zip(episode, accuracy):
            fp = read_footprint(ep)
            boxes = list(ep.sample.eval_boxes)
            # no evaluation box (e.g. a "no" presence answer: nothing to find): no reference, like CCA without a
            # consensus, so a correct zoom gets the 0.5 of a look that cannot be graded
            reference = (footprint_mask([reading_window(b, fp.image_size) for b in boxes], fp.image_size, grid)
                         if boxes else None)
            case, _, value = score_footprint(acc > 0, fp.mask(grid), reference, eta=eta,
                                             no_look_reward=no_look_reward)
            out.append(float(value))
            agrees.append(float(getattr(case, "value", case) == "agrees"))
        if log_metric is not None and agrees:
            log_metric("box/agrees", sum(agrees) / len(agrees))
        return out

    tool.__name__ = "tool"
    return tool


def grounding_probe(completions: Sequence[Any], episode: Sequence[Any],
                    log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float]:
    """Log the batch's grounding against the evaluation boxes; reward 0 (weight 0: never trained on)."""
    scores = [g for g in (episode_grounding(ep) for ep in episode) if g is not None]
    if log_metric is not None and scores:
        for name in ("iou", "window_iou", "coverage"):
            log_metric(f"probe/{name}", sum(s[name] for s in scores) / len(scores))
    return [0.0] * len(completions)


grounding_probe.__name__ = "probe"

__all__ = ["grounding_probe", "make_box_reward"]
