"""``SmallResNet``: a ResNet-style classifier for small colour images, with BatchNorm or
GroupNorm (the normalisation robust TTA methods recommend at batch size 1).

A 3×3 stem, three stages of one basic residual block each (``width``, 2×, 4× channels,
the last two with stride 2), global average pooling and a linear head: 0.08 M
parameters at ``width=16``, about 25 MFLOP per 32×32 image. ``stem_stride=2`` halves
the resolution in the stem (the stages run at 16×16, 8×8, 4×4): a quarter of the cost,
for CPU-sized benchmarks.

Example:
    >>> import torch
    >>> from operators.tta.resnet import SmallResNet
    >>> net = SmallResNet(num_classes=32, width=8, norm="group")
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 32])
    >>> SmallResNet(3, 32, width=8, stem_stride=2)(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 32])
    >>> sorted({type(m).__name__ for m in net.modules()} & {"BatchNorm2d", "GroupNorm"})
    ['GroupNorm']
"""

from __future__ import annotations

import torch
from torch import nn

from stream.errors import ConfigError

NORMS = ("batch", "group")


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm with groups of 4 channels (at least 1 group): per-sample statistics
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(max(1, channels // 4), channels)


class Block(nn.Module):
    """conv-norm-ReLU-conv-norm plus the (projected when the shape changes) input, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _norm(norm, cout)
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.skip(x))


class SmallResNet(nn.Module):
    """Args: ``in_channels`` (3 for colour), ``num_classes``, ``width`` (channels of the
    stem; stages have 1×, 2×, 4×), ``norm`` (``"batch"`` or ``"group"``), ``stem_stride``
    (1, or 2 to halve the resolution in the stem)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16, norm: str = "batch",
                 stem_stride: int = 1):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"SmallResNet: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if stem_stride not in (1, 2):
            raise ConfigError(f"SmallResNet: stem_stride must be 1 or 2, got {stem_stride!r}")
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, stem_stride, 1, bias=False)
        self.norm1 = _norm(norm, w)
        self.stages = nn.Sequential(Block(w, w, 1, norm), Block(w, 2 * w, 2, norm), Block(2 * w, 4 * w, 2, norm))
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(torch.relu(self.norm1(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))
