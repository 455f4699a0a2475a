"""The patch reader's network and checkpoint: a 3-layer CNN that tells finding kinds from background spots.

Input: a patch (:func:`~agents.patch_reader.candidates.cut_patches`) plus a constant channel holding the
view's magnification (:attr:`~agents.patch_reader.candidates.ViewGeometry.scale_feature`), so one network
reads every zoom level. Output: probabilities over :data:`~agents.patch_reader.candidates.CLASSES`
(background and the four finding kinds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..runner import write_atomic
from .candidates import CLASSES, PATCH_FRACTION, PATCH_PIXELS, PATCH_UNIT

FORMAT = "medvr-patch-reader-v1"


@dataclass
class PatchReaderConfig:
    """Everything needed to rebuild the network (stored in the checkpoint)."""

    channels: tuple[int, int, int] = (16, 32, 32)
    hidden: int = 64
    dropout: float = 0.2
    classes: tuple[str, ...] = CLASSES
    patch_pixels: int = PATCH_PIXELS
    patch_fraction: float = PATCH_FRACTION
    patch_unit: float = PATCH_UNIT
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)  # type: ignore[assignment]
        self.classes = tuple(self.classes)
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"channels must be three positive integers, got {self.channels!r}")
        if self.patch_pixels % 8:
            raise ValueError(f"patch_pixels must be a multiple of 8, got {self.patch_pixels}")


class PatchCNN(nn.Module):
    """conv-BN-ReLU-maxpool x 3 -> MLP -> class logits."""

    def __init__(self, config: PatchReaderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        inputs = 2
        for c in config.channels:
            layers += [nn.Conv2d(inputs, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            inputs = c
        self.features = nn.Sequential(*layers)
        flat = inputs * (config.patch_pixels // 8) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
                                  nn.Linear(config.hidden, len(config.classes)))

    def forward(self, patches: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``patches`` (N, P, P) and ``scale`` (N,) -> logits (N, classes)."""
        x = torch.stack([patches, scale[:, None, None].expand_as(patches)], dim=1)
        return self.head(self.features(x))


class PatchReader:
    """The trained network and its config; :meth:`classify` is all the agents need."""

    def __init__(self, config: PatchReaderConfig | None = None, model: PatchCNN | None = None) -> None:
        self.config = config or PatchReaderConfig()
        self.model = model if model is not None else PatchCNN(self.config)
        self.model.eval()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @torch.inference_mode()
    def classify(self, patches: np.ndarray, scale: float | np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Class probabilities ``(N, len(classes))`` for ``(N, P, P)`` patches read at magnification ``scale``."""
        p = self.config.patch_pixels
        if patches.ndim != 3 or patches.shape[1:] != (p, p):
            raise ValueError(f"patches must have shape (N, {p}, {p}), got {patches.shape}")
        if len(patches) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        scales = np.array(np.broadcast_to(np.asarray(scale, np.float32), (len(patches),)))
        self.model.eval()
        out = []
        for i in range(0, len(patches), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(patches[i : i + batch_size], dtype=np.float32))
            s = torch.from_numpy(np.ascontiguousarray(scales[i : i + batch_size]))
            out.append(torch.softmax(self.model(x, s), dim=1).numpy())
        return np.concatenate(out)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write config and weights atomically (a temp file in the same folder, then rename)."""
        path = Path(path)
        payload = {"format": FORMAT, "config": asdict(self.config), "state": self.model.state_dict()}
        return write_atomic(path, lambda fh: torch.save(payload, fh))

    @classmethod
    def load(cls, path: str | Path) -> PatchReader:
        """Load a reader written by :meth:`save`; errors name the file and what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no patch reader at {path}; build one with `medvr train-patch-reader --out {path}`")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path} is not a readable patch-reader checkpoint: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not a MedVR patch-reader checkpoint (expected format {FORMAT!r})")
        config = PatchReaderConfig(**payload["config"])
        model = PatchCNN(config)
        model.load_state_dict(payload["state"], strict=True)
        return cls(config, model)


__all__ = ["FORMAT", "PatchCNN", "PatchReader", "PatchReaderConfig"]
