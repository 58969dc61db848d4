"""The batch-1 sparse forward as one TorchScript function (no Python per layer).

At batch 1 the sparse path runs ~12 small tensor operations per layer (mask prediction,
three gathers, the conv); from Python each costs microseconds of interpreter time,
which on a small CNN is a large share of the whole forward. Compiling the loop with
TorchScript removes the interpreter from it. It covers the common shape of a CNN:
ReLU activations, max/avg pooling with ``stride == kernel`` between blocks, and a head
that is either global average pooling or a plain flatten before the first Linear.
:func:`compile_fast_path` returns ``None`` for anything else and the executor keeps
its Python path; both give the same numbers (tests compare them).

The kept indices are padded to a multiple of ``bucket`` with the index of an all-zero
filter (see :data:`operators.pruning.executor.BUCKET`).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _forward(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
             pred_w: list[torch.Tensor], pred_b: list[torch.Tensor], sentinels: list[torch.Tensor],
             geometry: list[list[int]], pools: list[list[int]], head_w: torch.Tensor,
             head_b: torch.Tensor, spatial: int, global_pool: bool,
             bucket: int) -> tuple[torch.Tensor, list[int]]:
    prev = torch.empty(0, dtype=torch.long, device=x.device)
    n_real = 0
    kept: list[int] = []
    for i in range(len(weights)):
        pooled = x.mean(dim=(2, 3))
        if i == 0:
            logits = torch.addmm(pred_b[i], pooled, pred_w[i].t())[0]
        else:
            pw = pred_w[i].index_select(1, prev[:n_real])
            logits = torch.addmm(pred_b[i], pooled[:, :n_real], pw.t())[0]
        keep = torch.nonzero(logits > 0).view(-1)
        n_real = keep.numel()
        if n_real == 0:
            keep = logits.argmax().view(1)
            n_real = 1
        kept.append(n_real)
        pad = (bucket - n_real % bucket) % bucket
        if pad > 0:
            keep = torch.cat((keep, sentinels[i][:pad]))
        w = weights[i].index_select(0, keep)
        if i == 0:
            w = w[:, :-1]
        else:
            w = w.index_select(1, prev)
        g = geometry[i]
        x = F.conv2d(x, w, biases[i].index_select(0, keep), [g[0], g[1]], [g[2], g[3]], [g[4], g[5]])
        x = torch.relu(x)
        if len(pools[i]) > 0:
            p = pools[i]
            if p[0] == 0:
                x = F.max_pool2d(x, [p[1], p[2]], [p[1], p[2]], [p[3], p[4]])
            else:
                x = F.avg_pool2d(x, [p[1], p[2]], [p[1], p[2]], [p[3], p[4]])
        prev = keep
    real = prev[:n_real]
    if global_pool:
        feats = x.mean(dim=(2, 3))[:, :n_real]
        cols = real
    else:
        feats = x.flatten(1)[:, :n_real * spatial]
        cols = (real[:, None] * spatial + torch.arange(spatial, device=x.device)).view(-1)
    return F.linear(feats, head_w.index_select(1, cols), head_b), kept


with warnings.catch_warnings():
    # TorchScript is deprecated in favour of torch.compile, which needs a C++ toolchain at
    # run time and compiles for seconds to minutes; scripting is instant and still works.
    warnings.simplefilter("ignore", DeprecationWarning)
    _forward = torch.jit.script(_forward)


def _pool_code(mod: nn.Module) -> list[int] | None:
    if not isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
        return None
    pair = nn.modules.utils._pair
    k, s, p = pair(mod.kernel_size), pair(mod.stride or mod.kernel_size), pair(mod.padding)
    if k != s or mod.ceil_mode or (isinstance(mod, nn.MaxPool2d) and pair(mod.dilation) != (1, 1)) \
            or (isinstance(mod, nn.AvgPool2d) and (not mod.count_include_pad or mod.divisor_override)):
        return None
    return [0 if isinstance(mod, nn.MaxPool2d) else 1, k[0], k[1], p[0], p[1]]


def compile_fast_path(executor: Any, bucket: int):
    """A callable ``x -> (logits, kept list)`` for batch 1, or ``None`` if unsupported."""
    geometry, pools = [], []
    for block, layer in zip(executor.net.blocks, executor.layers, strict=True):
        if not isinstance(block.act, nn.ReLU) or len(layer.post) > 1:
            return None
        codes = [_pool_code(m) for m in layer.post]
        if any(c is None for c in codes):
            return None
        pools.append(codes[0] if codes else [])
        geometry.append([*layer.stride, *layer.padding, *layer.dilation])
    pre = executor.pre_linear
    if len(pre) == 2 and isinstance(pre[0], nn.AdaptiveAvgPool2d) and pre[0].output_size in (1, (1, 1)) \
            and isinstance(pre[1], nn.Flatten):
        global_pool = True
    elif len(pre) == 1 and isinstance(pre[0], nn.Flatten) and pre[0].start_dim == 1:
        global_pool = False
    else:
        return None
    layers = executor.layers
    args = ([lay.padded_weight for lay in layers], [lay.padded_bias for lay in layers],
            [lay.pred_weight for lay in layers], [lay.pred_bias for lay in layers],
            [lay.sentinel for lay in layers], geometry, pools)
    lin, spatial = executor.linear, executor.spatial
    bias = lin.bias if lin.bias is not None else torch.zeros(lin.out_features, device=lin.weight.device)

    def run(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        return _forward(x, *args, lin.weight, bias, spatial, global_pool, bucket)

    return run
