"""Shared helpers for the pruning tests."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from operators.pruning.executor import SparseExecutor, SparseResult
from operators.pruning.network import PrunableNetwork


def check_fast_path(net: PrunableNetwork, shape: tuple[int, ...],
                    seeds: Iterable[int] = range(3)) -> list[tuple[SparseResult, SparseResult]]:
    """Run ``net``'s TorchScript fast path and its Python path on one random input of
    ``shape`` per seed and assert that both keep the filters of the masked dense forward
    and that the fast path's logits are the masked dense ones.

    Returns the ``(fast, python)`` results of each input, for checks of the caller's own.

    Example:
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
        ...                       nn.Flatten(), nn.Linear(4 * 25, 2))
        >>> net = PrunableNetwork(model, (1, 5, 5), seed=0).eval()
        >>> [fast.logits.shape for fast, _ in check_fast_path(net, (1, 1, 5, 5))]
        [torch.Size([1, 2]), torch.Size([1, 2]), torch.Size([1, 2])]
    """
    fast, slow = SparseExecutor(net), SparseExecutor(net, fast=False)
    assert fast.fast is not None
    out = []
    for seed in seeds:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
        a, b = fast(x), slow(x)
        with torch.no_grad():
            ref = net(x)
        assert a.kept.tolist() == b.kept.tolist() == [[int(m.sum()) for m in ref.masks]]
        torch.testing.assert_close(a.logits, ref.logits, atol=1e-5, rtol=1e-4)
        out.append((a, b))
    return out
