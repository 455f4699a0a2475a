"""The ``oracle`` agent: an upper reference that READS THE SAMPLE'S EVALUATION-ONLY FINDING BOXES.

It is not a policy and must never be used to train or select one: it looks where the dataset says the
findings are (``sample.meta["findings"]`` of the procedural dataset), which no policy observes. It
answers what a perfect *where* is worth to the patch reader: one 4x zoom on each finding (the asked
kind's *and* the distractors, so the zooms do not say which finding the question is about), plus
``decoys`` zooms at random places, in shuffled order; each finding sits at a random offset inside its
box (seeded by the sample id). The patch reader then reads the views and answers with the same rules as
the ``scripted`` agent. A zoom on the asked findings only would leak the answer through the box
position (on the first procedural task the box position alone answered location and side questions
0.92-0.93); this one does not.

It refuses the ``train`` split unless ``allow_train_split=True`` (for measurements only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medvr_env import MedVRVQAEnv

from .base import AgentSetupError
from .scripted import PatchReaderAgent, box_around, sample_rng


@dataclass
class OracleAgent(PatchReaderAgent):
    """One zoom per finding (targets and distractors) plus random decoys, shuffled; see the module docstring.

    Args:
        decoys: Random zooms added to the findings' zooms.
        allow_train_split: Run on the train split too (measurement only; never train on this agent).
    """

    max_zooms: int = 7
    decoys: int = 2
    allow_train_split: bool = False
    name: str = "oracle"

    def reset(self, env: MedVRVQAEnv, obs: dict[str, Any], info: dict[str, Any]) -> None:
        split = getattr(env.episode.sample, "split", None)
        if split == "train" and not self.allow_train_split:
            raise AgentSetupError(
                "the oracle agent reads evaluation-only finding boxes and is not for the train split; "
                "evaluate it with --split test (or pass allow_train_split=True to measure it there)")
        if "findings" not in env.episode.sample.meta:
            raise AgentSetupError(
                f"the oracle agent needs a dataset with finding boxes in sample.meta['findings'] "
                f"(the procedural dataset); {env.episode.sample.sample_id!r} has none")
        super().reset(env, obs, info)

    def plan(self, obs: dict[str, Any], budget: int) -> tuple[list[tuple[float, float, float, float]], float]:
        sample = self._env.episode.sample
        size = float(sample.meta.get("image_size") or self._env.episode.image_size[0])
        rng = sample_rng(self._env, "oracle")
        side = self.zoom_fraction
        boxes = []
        for finding in sample.meta["findings"]:
            x1, y1, x2, y2 = (v / size for v in finding["box"])
            reach = max(side / 2 - max(x2 - x1, y2 - y1) / 2 - 0.01, 0.0)  # keep the finding inside the box
            dx, dy = rng.uniform(-reach, reach, 2)
            boxes.append(box_around((x1 + x2) / 2 + dx, (y1 + y2) / 2 + dy, side))
        decoys = min(self.decoys, max(0, budget - len(boxes)))  # a short budget drops decoys, not findings
        boxes += [box_around(*rng.uniform(side / 2, 1 - side / 2, 2), side) for _ in range(decoys)]
        order = rng.permutation(len(boxes))
        return [boxes[i] for i in order], 0.0


__all__ = ["OracleAgent"]
