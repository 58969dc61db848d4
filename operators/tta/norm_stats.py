"""Normalisation statistics that follow the test stream, down to one sample per batch.

:class:`StreamingNorm` replaces a ``BatchNorm`` layer. It keeps a running mean and
variance per channel, initialised from the source model's, and always normalises with
them, so a sample's output never depends on which other samples share its forward
pass (that is what makes the operators independent of micro-batch cuts). While
:attr:`StreamingNorm.collect` is on, it sums the per-channel moments of what passes
through; :meth:`StreamingNorm.commit` turns the sums of one full mini-batch into its
mean and variance and blends them into the running statistics with momentum ``m``.

:func:`batch_statistics` (a context manager over a list of layers) switches the
layers to the mini-batch's own statistics, differentiably, as ``BatchNorm`` in train
mode: Tent's and NHL's entropy loss is computed that way (the paper's formulation, the
gradient flows through the batch mean and variance); predictions never are.

Why not ``BatchNorm`` in train mode for predictions: with one sample per batch its
statistics are those of a single image (a 1-d BatchNorm even raises), so predictions
collapse. Running statistics with momentum are what the TTA literature recommends for
small batches. The blended variance is the variance of the mixture
(``(1-m)·v + m·v_b + m(1-m)·(μ_b-μ)²``), so it stays unbiased when the batch is one
image.

``momentum_for(batch_size, window)`` turns a memory length in samples into the
per-mini-batch momentum ``1 - (1 - 1/window)^batch_size``, so the same ``window`` means
the same amount of history at every batch size; ``window <= 1`` gives ``m = 1`` (the
statistics of the last mini-batch alone).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from operators.tta.norm_stats import StreamingNorm, batch_statistics, swap_batchnorm
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    >>> norms = swap_batchnorm(net, momentum=1.0)
    >>> type(net[1]).__name__, len(norms)
    ('StreamingNorm', 1)
    >>> net[1].collect = True
    >>> x = torch.randn(4, 1, 5, 5) * 3 + 1
    >>> _ = net(x[:1]), net(x[1:])          # one mini-batch seen in two pieces
    >>> net[1].commit()
    >>> net[1].collect = False
    >>> y = net(x)                          # normalised with that mini-batch's statistics
    >>> round(abs(y.mean().item()), 4), round(y.var(unbiased=False).item(), 4)
    (0.0, 1.0)
    >>> with batch_statistics(norms):      # the batch's own statistics, with gradient
    ...     z = net(x * 2)
    >>> round(abs(z.mean().item()), 4), round(z.var(unbiased=False).item(), 4)
    (0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def momentum_for(batch_size: int, window: float) -> float:
    """Per-mini-batch momentum that remembers about ``window`` samples."""
    if window <= 1:
        return 1.0
    return 1.0 - (1.0 - 1.0 / window) ** batch_size


class StreamingNorm(nn.Module):
    """A BatchNorm whose statistics are running estimates updated by test mini-batches.

    Args:
        bn: the source model's BatchNorm (its affine parameters and running statistics
            are copied).
        momentum: weight of a mini-batch's statistics in the blend (0 keeps the source
            statistics forever, 1 uses only the last mini-batch).
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, momentum: float):
        super().__init__()
        n = bn.num_features
        if bn.affine:
            self.weight = nn.Parameter(bn.weight.detach().clone())
            self.bias = nn.Parameter(bn.bias.detach().clone())
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        mean = bn.running_mean if bn.running_mean is not None else torch.zeros(n)
        var = bn.running_var if bn.running_var is not None else torch.ones(n)
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("var", var.detach().clone().float())
        # moments of the current mini-batch so far: rebuilt from the pending samples on
        # resume, so they are not part of the state dict
        self.register_buffer("acc", torch.zeros(3, n, dtype=torch.float64), persistent=False)
        self.eps = bn.eps
        self.momentum = float(momentum)
        self.collect = False
        self.use_batch_stats = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_batch_stats and x.numel() > x.shape[1]:
            # train-mode BatchNorm (biased variance, gradient through the moments), the
            # fused kernel; with one value per channel there is no variance to take, so
            # running statistics serve below
            return nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        if self.collect and self.momentum > 0:
            with torch.no_grad():
                # one fused two-pass kernel per layer, accumulated in float64 across calls
                n = x.numel() / x.shape[1]
                var, mean = torch.var_mean(x.detach(), dim=[0, *range(2, x.dim())], correction=0)
                mean = mean.double()
                self.acc[0] += n
                self.acc[1] += mean * n
                self.acc[2] += (var.double() + mean * mean) * n
        # the fused inference kernel; gradients reach the input and the affine parameters
        return nn.functional.batch_norm(x, self.mean, self.var, self.weight, self.bias, False, 0.0, self.eps)

    @torch.no_grad()
    def commit(self) -> None:
        """Blend the collected mini-batch's statistics into the running ones."""
        count = self.acc[0]
        if self.momentum > 0 and bool((count > 0).all()):
            bmean = self.acc[1] / count
            bvar = (self.acc[2] / count - bmean * bmean).clamp_min(0)
            m = self.momentum
            mean = self.mean.double()
            var = (1 - m) * self.var.double() + m * bvar + m * (1 - m) * (bmean - mean) ** 2
            self.mean.copy_((1 - m) * mean + m * bmean)
            self.var.copy_(var)
        self.acc.zero_()

    def extra_repr(self) -> str:
        return f"{self.mean.numel()}, momentum={self.momentum:.4g}"


@contextmanager
def batch_statistics(norms: list[StreamingNorm]) -> Iterator[None]:
    """Within the block, ``norms`` normalise with the statistics of what passes through
    (differentiably) and collect nothing; running statistics are left untouched."""
    saved = [(n.use_batch_stats, n.collect) for n in norms]
    for n in norms:
        n.use_batch_stats, n.collect = True, False
    try:
        yield
    finally:
        for n, (use, collect) in zip(norms, saved):
            n.use_batch_stats, n.collect = use, collect


def swap_batchnorm(model: nn.Module, momentum: float) -> list[StreamingNorm]:
    """Replace every BatchNorm in ``model`` (in place) by a :class:`StreamingNorm`."""
    swapped: list[StreamingNorm] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                norm = StreamingNorm(child, momentum)
                setattr(parent, name, norm)
                swapped.append(norm)
    return swapped
