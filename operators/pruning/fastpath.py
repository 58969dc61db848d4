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


def _max_pool(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """``max_pool2d`` with ``stride == kernel`` and no padding, as strided maxima.

    Exactly equal to ``F.max_pool2d`` (a max is a max) and ~4x faster at batch 1 on CPU,
    where ``max_pool2d`` goes through ``max_pool2d_with_indices`` and computes indices.
    """
    h = x.shape[2] // kh * kh
    w = x.shape[3] // kw * kw
    rows = x[:, :, 0:h:kh]
    for i in range(1, kh):
        rows = torch.maximum(rows, x[:, :, i:h:kh])
    out = rows[:, :, :, 0:w:kw]
    for j in range(1, kw):
        out = torch.maximum(out, rows[:, :, :, j:w:kw])
    return out


def _forward(x: torch.Tensor, full_w: list[torch.Tensor], full_b: list[torch.Tensor],
             pad_out_w: list[torch.Tensor], pad_in_w: list[torch.Tensor], weights: list[torch.Tensor],
             biases: list[torch.Tensor], pred_w: list[torch.Tensor], pred_b: list[torch.Tensor],
             sentinels: list[torch.Tensor], geometry: list[list[int]], pools: list[list[int]],
             head_w: torch.Tensor, head_b: torch.Tensor, spatial: int, global_pool: bool,
             bucket: int) -> tuple[torch.Tensor, list[int]]:
    prev = torch.empty(0, dtype=torch.long, device=x.device)
    n_real = 0
    prev_full = True              # x holds every channel of the previous layer, in order
    kept: list[int] = []
    for i in range(len(weights)):
        pooled = x.mean(dim=(2, 3))
        if prev_full:
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
        out_full = n_real == full_w[i].shape[0]
        # a layer that keeps everything needs no gather (and no padding: keep is arange)
        if out_full:
            b = full_b[i]
            w = full_w[i] if prev_full else pad_in_w[i].index_select(1, prev)
        else:
            pad = (bucket - n_real % bucket) % bucket
            if pad > 0:
                keep = torch.cat((keep, sentinels[i][:pad]))
            b = biases[i].index_select(0, keep)
            if prev_full:
                w = pad_out_w[i].index_select(0, keep)
            else:
                w = weights[i].index_select(0, keep).index_select(1, prev)
        g = geometry[i]
        x = F.conv2d(x, w, b, [g[0], g[1]], [g[2], g[3]], [g[4], g[5]])
        if len(pools[i]) > 0:
            p = pools[i]
            if p[0] == 0 and p[3] == 0 and p[4] == 0:
                # relu commutes with max: pool first, then relu on a quarter of the values
                x = torch.relu(_max_pool(x, p[1], p[2]))
            elif p[0] == 0:
                x = F.max_pool2d(torch.relu(x), [p[1], p[2]], [p[1], p[2]], [p[3], p[4]])
            else:
                x = F.avg_pool2d(torch.relu(x), [p[1], p[2]], [p[1], p[2]], [p[3], p[4]])
        else:
            x = torch.relu(x)
        prev = keep
        prev_full = out_full
    if prev_full:
        feats = x.mean(dim=(2, 3)) if global_pool else x.flatten(1)
        return F.linear(feats, head_w, head_b), kept
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
    _max_pool = torch.jit.script(_max_pool)
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
    args = ([lay.weight for lay in layers], [lay.bias for lay in layers],
            [lay.padded_weight[:, :-1].contiguous() for lay in layers],
            [lay.padded_weight[:-1].contiguous() for lay in layers],
            [lay.padded_weight for lay in layers], [lay.padded_bias for lay in layers],
            [lay.pred_weight for lay in layers], [lay.pred_bias for lay in layers],
            [lay.sentinel for lay in layers], geometry, pools)
    lin, spatial = executor.linear, executor.spatial
    bias = lin.bias if lin.bias is not None else torch.zeros(lin.out_features, device=lin.weight.device)

    def run(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        return _forward(x, *args, lin.weight, bias, spatial, global_pool, bucket)

    return run
