"""The batch-1 forward as one TorchScript function (no Python per layer), sparse or dense.

At batch 1 the sparse path runs about ten small tensor operations per layer besides the
conv (mask prediction, gathers, pooling); from Python each costs microseconds of
interpreter time, which on a small CNN is a large share of the whole forward. Compiling
the loop with TorchScript removes the interpreter from it. It covers the common shape of
a CNN: ReLU activations, max/avg pooling with ``stride == kernel`` between blocks, and a
head that is either global average pooling or a plain flatten before the first Linear.
:func:`compile_fast_path` returns ``None`` for anything else and the executor keeps its
Python path; both give the same numbers (tests compare them).

The same function with ``dense=True`` skips the predictors and the gathers and runs every
filter: the *like-for-like* dense baseline (same folded batch norm, same pooling, same
TorchScript), so a measured speedup is the gain of pruning alone.

What makes it cheap (measured on a 2-core EPYC, batch 1, one thread, 32×32 digits):

- at batch 1 on small inputs PyTorch convolves with im2col + one GEMM
  (``_slow_conv2d_forward``), which has no per-shape setup, so kept counts are used as
  they are (padding them to a multiple of 8 for oneDNN's primitive cache cost ~20 %);
- the mask predictor's global average pool is a sum, its ``1 / area`` goes into
  ``addmv``'s ``alpha``, and the predictor weights are used in place (the operator's
  online updates are seen without a rebuild);
- ``relu(logits).nonzero()`` finds the kept filters in two operations;
- max pooling is strided maxima and ReLU runs after it, in place, on a quarter of the
  values (ReLU commutes with max).
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


def _forward(x: torch.Tensor, dense: bool, weights: list[torch.Tensor], biases: list[torch.Tensor],
             pred_w: list[torch.Tensor], pred_b: list[torch.Tensor], pred_scale: list[float],
             geometry: list[list[int]], pools: list[list[int]], head_w: torch.Tensor,
             head_b: torch.Tensor, head_scale: float, spatial: int,
             global_pool: bool) -> tuple[torch.Tensor, list[int]]:
    keep = torch.empty(0, dtype=torch.long, device=x.device)   # channels x holds (if not full)
    full = True                   # x holds every channel of the previous layer, in order
    kept: list[int] = []
    for i in range(len(weights)):
        w, b = weights[i], biases[i]
        c_out = w.shape[0]
        n = c_out
        if not dense:
            s = x.view(x.shape[1], -1).sum(1)           # batch 1; 1 / area is in pred_scale
            pw = pred_w[i] if full else pred_w[i].index_select(1, keep)
            logits = torch.addmv(pred_b[i], pw, s, alpha=pred_scale[i])
            new = torch.relu(logits).nonzero().view(-1)   # relu(l) != 0 exactly when l > 0
            n = new.numel()
            if n == 0:                                  # as binarize(): keep the most likely
                new = logits.argmax().view(1)
                n = 1
            if n < c_out:
                b = b.index_select(0, new)
                if full:
                    w = w.index_select(0, new)
                elif n * w.shape[1] <= c_out * keep.numel():   # the smaller copy first
                    w = w.index_select(0, new).index_select(1, keep)
                else:
                    w = w.index_select(1, keep).index_select(0, new)
            elif not full:
                w = w.index_select(1, keep)
            keep = new
        kept.append(n)
        g = geometry[i]
        x = F.conv2d(x, w, b, [g[0], g[1]], [g[2], g[3]], [g[4], g[5]])
        if len(pools[i]) > 0:
            p = pools[i]
            if p[0] == 0 and p[3] == 0 and p[4] == 0:
                # relu commutes with max: pool first, then relu on a quarter of the values
                x = torch.relu_(_max_pool(x, p[1], p[2]))
            elif p[0] == 0:
                x = F.max_pool2d(torch.relu_(x), [p[1], p[2]], [p[1], p[2]], [p[3], p[4]])
            else:
                x = F.avg_pool2d(torch.relu_(x), [p[1], p[2]], [p[1], p[2]], [p[3], p[4]])
        else:
            x = torch.relu_(x)
        full = n == c_out
    if global_pool:
        feats = x.view(x.shape[1], -1).sum(1)           # 1 / area is in head_scale
        cols = keep
    else:
        feats = x.reshape(-1)
        cols = (keep[:, None] * spatial + torch.arange(spatial, device=x.device)).view(-1)
    hw = head_w if full else head_w.index_select(1, cols)
    return torch.addmv(head_b, hw, feats, alpha=head_scale).view(1, -1), kept


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


class FastPath:
    """Batch-1 forward ``x -> (logits before any layer after the first Linear, kept)``.

    ``dense=True`` runs every filter (no predictors, no gathers) through the same code.
    Build it with :func:`compile_fast_path`.
    """

    def __init__(self, args: tuple, head_args: tuple):
        self._args = args
        self._head_args = head_args

    def __call__(self, x: torch.Tensor, dense: bool = False) -> tuple[torch.Tensor, list[int]]:
        return _forward(x, dense, *self._args, *self._head_args)


def compile_fast_path(executor: Any) -> FastPath | None:
    """The TorchScript batch-1 path of a :class:`~operators.pruning.executor.SparseExecutor`,
    or ``None`` if the network has a layer it does not cover."""
    geometry, pools, scales = [], [], []
    area = executor.net.input_shape[1] * executor.net.input_shape[2]
    for block, layer in zip(executor.net.blocks, executor.layers, strict=True):
        if not isinstance(block.act, nn.ReLU) or len(layer.post) > 1:
            return None
        codes = [_pool_code(m) for m in layer.post]
        if any(c is None for c in codes):
            return None
        pools.append(codes[0] if codes else [])
        geometry.append([*layer.stride, *layer.padding, *layer.dilation])
        scales.append(1.0 / area)
        h, w = block.out_hw
        if codes:                                       # pooling with stride == kernel
            _, kh, kw, ph, pw = codes[0]
            h, w = (h + 2 * ph - kh) // kh + 1, (w + 2 * pw - kw) // kw + 1
        area = h * w                                    # the next layer's input area
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
            [lay.pred_weight for lay in layers], [lay.pred_bias for lay in layers], scales,
            geometry, pools)
    lin, spatial = executor.linear, executor.spatial
    # detached views of the parameters: no tensor the function reads requires grad, so it
    # records no graph even when called outside no_grad (the executor relies on this)
    weight = lin.weight.detach()
    bias = lin.bias.detach() if lin.bias is not None else torch.zeros(lin.out_features, device=weight.device)
    head = (weight, bias, 1.0 / area if global_pool else 1.0, spatial, global_pool)
    return FastPath(args, head)
