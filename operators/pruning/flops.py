"""Exact multiply-accumulate counts of a pruned network, per sample.

A conv layer costs ``active_out × (active_in / groups) × k_h × k_w × H_out × W_out``
(the formula of Fire Together Wire Together); a linear layer ``active_in × out``. A mask
predictor is a linear layer over its pooled input: ``active_in × C_out``. "FLOPs" here
means these multiply-accumulates, the convention of the pruning literature.

Example (two 3×3 convs on a 1×8×8 image, 4 then 6 filters, a 10-way linear head):
    >>> from operators.pruning.flops import ConvGeometry, FlopsCounter
    >>> fc = FlopsCounter(in_channels=1,
    ...                   convs=[ConvGeometry(4, 9, 64), ConvGeometry(6, 9, 16)],
    ...                   head=[(6 * 1, 10)], head_spatial=1)
    >>> fc.dense()                 # 4*1*9*64 + 6*4*9*16 + 6*10
    5820
    >>> fc.count([[2, 3]])         # 2*1*9*64 + 3*2*9*16 + 3*10
    [2046]
    >>> fc.count([[2, 3]], predictors=True)   # + predictors 1*4 + 2*6
    [2062]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConvGeometry:
    """What a conv layer's cost depends on besides its active channels."""

    out_channels: int
    kernel_area: int       # k_h * k_w
    out_area: int          # H_out * W_out
    groups: int = 1


def conv_flops(active_out: int, active_in: int, kernel_area: int, out_area: int, groups: int = 1) -> int:
    """``active_out × (active_in / groups) × k² × H_out × W_out``."""
    return int(active_out * (active_in // groups) * kernel_area * out_area)


class FlopsCounter:
    """Counts a network's MACs from the number of kept filters of each conv layer.

    Args:
        in_channels: channels of the network input.
        convs: geometry of each prunable conv layer, in order.
        head: ``(in_features, out_features)`` of each linear layer after the convs; the
            first one's input is ``last conv channels × head_spatial`` features.
        head_spatial: spatial positions per channel that the first linear layer sees.
    """

    def __init__(self, in_channels: int, convs: Sequence[ConvGeometry],
                 head: Sequence[tuple[int, int]], head_spatial: int):
        self.in_channels = in_channels
        self.convs = list(convs)
        self.head = list(head)
        self.head_spatial = head_spatial

    def count(self, kept: Sequence[Sequence[int]] | np.ndarray, predictors: bool = False) -> list[int]:
        """MACs of each sample, given ``kept[sample][layer]`` (filters kept per conv layer)."""
        kept = np.asarray(kept, dtype=np.int64).reshape(-1, len(self.convs))
        active_in = np.full(len(kept), self.in_channels, dtype=np.int64)
        total = np.zeros(len(kept), dtype=np.int64)
        for layer, geo in enumerate(self.convs):
            out = kept[:, layer]
            total += out * (active_in // geo.groups) * geo.kernel_area * geo.out_area
            if predictors:
                total += active_in * geo.out_channels
            active_in = out
        for i, (fan_in, fan_out) in enumerate(self.head):
            total += (active_in * self.head_spatial if i == 0 else fan_in) * fan_out
        return total.tolist()

    def dense(self) -> int:
        """MACs of the unpruned network (no predictors)."""
        return self.count([[g.out_channels for g in self.convs]])[0]
