"""The image reader: a frozen EfficientNet-Lite0 and a small answer head trained on question-answer pairs.

Given a view of the image (pixels), the question (word ids, the same
:class:`~medvr_env.wrappers.tokens.Tokenizer` the SB3 wrappers use) and where the
view lies in the original (``view_box`` fractions), the reader outputs a
distribution over a fixed list of answer texts, restricted to the candidates that
fit the question: the options of a multiple-choice question, else the answers seen
for its question type during training, else all answers. Its normalised entropy
(``H / log K`` over the K candidates) is what :class:`~agents.uncertainty.estimator.ReaderEstimator`
puts in the env's entropy channel.

Only the head is trained and saved; the backbone is rebuilt from the pretrained
file (its SHA-256 is stored in the checkpoint and checked on load).

View features: the backbone's feature maps after the configured stages (default 3
and 5, stride 8 and 16), each max-pooled to a ``pool`` x ``pool`` grid (default 2:
the quadrants; small findings survive max pooling) plus a global mean.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medvr_env.grading import normalize_answer
from medvr_env.wrappers.tokens import Tokenizer

from ..runner import write_atomic
from .backbone import EfficientNetLite0, load_pretrained, normalize, pretrained_weights_path

FORMAT = "medvr-reader-v1"


@dataclass
class ReaderConfig:
    """Everything needed to rebuild a reader (stored in its checkpoint)."""

    answers: tuple[str, ...]
    resolution: int = 128
    stages: tuple[int, ...] = (3, 5)
    pool: int = 2
    hidden: int = 128
    dropout: float = 0.3
    tokenizer: dict[str, Any] = field(default_factory=lambda: Tokenizer().config())
    type_answers: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.answers = tuple(self.answers)
        self.stages = tuple(int(s) for s in self.stages)
        if not self.answers:
            raise ValueError("a reader needs at least one answer text")
        if len(set(self.answers)) != len(self.answers):
            raise ValueError("answers must be unique")
        if not isinstance(self.resolution, int) or self.resolution < 32:
            raise ValueError(f"resolution must be an integer >= 32, got {self.resolution!r}")
        if not self.stages or any(not 1 <= s <= 7 for s in self.stages):
            raise ValueError(f"stages must be backbone stages in 1..7, got {self.stages!r}")

    @property
    def feature_dim(self) -> int:
        return sum(EfficientNetLite0.stage_channels(s) * (self.pool**2 + 1) for s in self.stages)


class ViewEncoder(nn.Module):
    """Frozen backbone -> pooled multi-stage feature vector per view."""

    def __init__(self, config: ReaderConfig, weights: str | Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = load_pretrained(weights).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, R, R, 3) views -> float (N, feature_dim)."""
        x = normalize(images).contiguous(memory_format=torch.channels_last)
        bb = self.backbone
        h = bb.act(bb._bn0(bb._conv_stem(x)))
        out, done = [], 0
        for stage in sorted(self.config.stages):
            for block in bb._blocks[done : bb.stage_ends[stage - 1]]:
                h = block(h)
            done = bb.stage_ends[stage - 1]
            grid = nn.functional.adaptive_max_pool2d(h, self.config.pool).flatten(1)
            out.extend([grid, h.mean(dim=(2, 3))])
        return torch.cat(out, dim=1)


class AnswerHead(nn.Module):
    """Question-gated MLP over view features: logits over ``config.answers``."""

    def __init__(self, config: ReaderConfig) -> None:
        super().__init__()
        hidden, num_ids = config.hidden, Tokenizer(**config.tokenizer).num_ids
        self.norm = nn.LayerNorm(config.feature_dim)
        self.image = nn.Linear(config.feature_dim, hidden)
        self.question = nn.EmbeddingBag(num_ids, hidden, mode="mean", padding_idx=0)
        self.gate = nn.Linear(hidden, hidden)
        self.box = nn.Linear(4, hidden)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, len(config.answers)))

    def forward(self, features: torch.Tensor, question_ids: torch.Tensor, view_box: torch.Tensor) -> torch.Tensor:
        q = self.question(question_ids)
        h = self.image(self.norm(features)) * torch.sigmoid(self.gate(q)) + q + self.box(view_box)
        return self.mlp(h)


class ImageReader:
    """Encoder + head + the candidate rules; see the module docstring.

    Build a fresh one with ``ImageReader(config)``, or load a trained one with :meth:`load`.
    """

    def __init__(self, config: ReaderConfig, head: AnswerHead | None = None, weights: str | Path | None = None) -> None:
        self.config = config
        self.tokenizer = Tokenizer(**config.tokenizer)
        self.encoder = ViewEncoder(config, weights)
        self.head = head if head is not None else AnswerHead(config)
        self.head.eval()
        self._norm_answers = [normalize_answer(a) for a in config.answers]

    # ------------------------------------------------------------------ inputs
    def candidates(self, question_type: str = "", options: Sequence[str] = ()) -> np.ndarray:
        """Boolean mask over ``config.answers`` of the answers that fit the question."""
        n = len(self.config.answers)
        if options:
            wanted = {normalize_answer(o) for o in options}
            mask = np.array([a in wanted for a in self._norm_answers], dtype=bool)
        elif question_type in self.config.type_answers:
            mask = np.zeros(n, dtype=bool)
            mask[self.config.type_answers[question_type]] = True
        else:
            mask = np.ones(n, dtype=bool)
        return mask if mask.any() else np.ones(n, dtype=bool)

    def answer_index(self, answer: str) -> int | None:
        """Index of ``answer`` in ``config.answers`` (normalised match), or ``None``."""
        norm = normalize_answer(answer)
        return self._norm_answers.index(norm) if norm in self._norm_answers else None

    def encode_views(self, images: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        """uint8 (N, R, R, 3) -> (N, feature_dim) features."""
        r = self.config.resolution
        if images.ndim != 4 or images.shape[1:] != (r, r, 3) or images.dtype != np.uint8:
            raise ValueError(f"views must be uint8 arrays of shape (N, {r}, {r}, 3), got {images.dtype} {images.shape}")
        parts = [self.encoder(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])))
                 for i in range(0, len(images), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.config.feature_dim)

    # ------------------------------------------------------------------ outputs
    @torch.inference_mode()
    def probabilities(self, features: torch.Tensor, question: str, view_box: Sequence[float],
                      candidates: np.ndarray) -> np.ndarray:
        """Answer distribution (zero outside ``candidates``) for one view's features."""
        ids = torch.from_numpy(self.tokenizer.encode(question))[None]
        box = torch.tensor([list(view_box)], dtype=torch.float32)
        logits = self.head(features.reshape(1, -1).float(), ids, box)[0]
        logits = logits.masked_fill(~torch.from_numpy(candidates), -math.inf)
        return torch.softmax(logits, dim=0).numpy().astype(np.float64)

    @staticmethod
    def normalised_entropy(probs: np.ndarray, candidates: np.ndarray) -> float:
        """``H(p) / log K`` over the ``K`` candidates, in [0, 1]; 0 when ``K = 1``."""
        k = int(candidates.sum())
        if k <= 1:
            return 0.0
        p = probs[candidates]
        p = p[p > 0]
        return float(min(max(-(p * np.log(p)).sum() / math.log(k), 0.0), 1.0))

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the head and config atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        payload = {
            "format": FORMAT,
            "config": asdict(self.config),
            "head": self.head.state_dict(),
            "backbone_sha256": _sha256(pretrained_weights_path()),
            "extra": extra or {},
        }
        return write_atomic(path, lambda fh: torch.save(payload, fh))

    @classmethod
    def load(cls, path: str | Path, weights: str | Path | None = None) -> ImageReader:
        """Load a reader saved with :meth:`save`; errors name the file and what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no reader checkpoint at {path}; train one with `python -m agents.uncertainty.train --out {path}`"
            )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path} is not a readable reader checkpoint: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not a MedVR reader checkpoint (expected format {FORMAT!r})")
        backbone = Path(weights) if weights is not None else pretrained_weights_path()
        if payload.get("backbone_sha256") != _sha256(backbone):
            raise ValueError(f"{path} was trained on different backbone weights than {backbone}")
        config = ReaderConfig(**payload["config"])
        head = AnswerHead(config)
        head.load_state_dict(payload["head"], strict=True)
        reader = cls(config, head, weights)
        reader.extra = payload.get("extra", {})
        return reader


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["AnswerHead", "FORMAT", "ImageReader", "ReaderConfig", "ViewEncoder"]
