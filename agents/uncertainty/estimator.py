"""ReaderEstimator: the env's uncertainty estimator backed by the trained image reader.

Use it through ``gym.make`` kwargs (an import path, built with no arguments, so it
works in ``SubprocVecEnv`` workers too)::

    MEDVR_READER=/path/reader.pt python train.py   # or the default path below
    gym.make("MedVR-VQA-Tensor-v0", uncertainty_estimator="agents.uncertainty:ReaderEstimator")

or pass an instance: ``uncertainty_estimator=ReaderEstimator("/path/reader.pt")``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvr_env.episode import Episode

from .reader import ImageReader

CHECKPOINT_ENV = "MEDVR_READER"


def default_checkpoint_path() -> Path:
    """``$MEDVR_READER`` if set, else ``~/.cache/medvr/reader.pt``."""
    env = os.environ.get(CHECKPOINT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medvr" / "reader.pt"


class ReaderEstimator:
    """Normalised entropy of the reader's answer distribution on the episode's current view.

    Implements :class:`medvr_env.entropy.UncertaintyEstimator`. View features are
    cached (LRU, keyed by image, box and filters), so asking again about a view the
    env has shown before costs only the head.

    Args:
        checkpoint: Path of a reader saved by ``python -m agents.uncertainty.train``
            (default: :func:`default_checkpoint_path`).
        cache_size: Views whose features are kept.
    """

    def __init__(self, checkpoint: str | Path | None = None, cache_size: int = 8192) -> None:
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint is not None else default_checkpoint_path()
        if not self.checkpoint.is_file():
            raise FileNotFoundError(
                f"no reader checkpoint at {self.checkpoint}: train one with "
                f"`python -m agents.uncertainty.train --out {self.checkpoint}`, or point ${CHECKPOINT_ENV} at one"
            )
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.reader = ImageReader.load(self.checkpoint)
        self.cache_size = cache_size
        self._features: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def estimate(self, episode: Episode) -> float | None:
        probs, cands = self._distribution(episode)
        return self.reader.normalised_entropy(probs, cands)

    def distribution(self, episode: Episode) -> dict[str, float]:
        """The reader's answer probabilities on the current view (candidates only)."""
        probs, cands = self._distribution(episode)
        return {a: float(p) for a, p, c in zip(self.reader.config.answers, probs, cands) if c}

    def _distribution(self, episode: Episode) -> tuple[np.ndarray, np.ndarray]:
        view = episode.view
        w, h = episode.image_size
        box = [view.box.x1 / w, view.box.y1 / h, view.box.x2 / w, view.box.y2 / h]
        feats = self._view_features(episode)
        sample = episode.sample
        cands = self.reader.candidates(sample.question_type, sample.options)
        return self.reader.probabilities(feats, sample.question, box, cands), cands

    def _view_features(self, episode: Episode) -> torch.Tensor:
        view = episode.view
        key = (episode.sample.image_key, tuple(view.box.as_list()), repr([f.describe() for f in view.filters]))
        feats = self._features.get(key)
        if feats is not None:
            self._features.move_to_end(key)
            return feats
        r = self.reader.config.resolution
        pixels = episode.render_view(episode.current_view, (r, r))
        feats = self.reader.encode_views(pixels[None])[0]
        if self.cache_size:
            self._features[key] = feats
            while len(self._features) > self.cache_size:
                self._features.popitem(last=False)
        return feats

    def __getstate__(self) -> dict[str, Any]:  # workers rebuild from the checkpoint; caches stay behind
        return {"checkpoint": str(self.checkpoint), "cache_size": self.cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["checkpoint"], state["cache_size"])


__all__ = ["CHECKPOINT_ENV", "ReaderEstimator", "default_checkpoint_path"]
