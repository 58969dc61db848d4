"""Sparse inference: compute only the filters each sample's mask keeps.

:class:`SparseExecutor` compiles a :class:`~operators.pruning.network.PrunableNetwork`
for inference: batch norm is folded into the conv weights once, and at every layer the
kept output filters' weights — and, of those, only the input channels the previous
layer kept — are gathered into a smaller conv that then runs. Nothing is multiplied by
zero at batch size 1. For a batch, samples rarely share a mask, so three strategies:

- ``"union"``: one conv over the union of the batch's kept filters, then each sample's
  own mask zeroes what it dropped (exact per-sample semantics; saves what *no* sample
  needs).
- ``"grouped"``: per-sample gathered weights, padded to the batch's largest kept count,
  run as one grouped convolution (``groups = N``).
- ``"loop"``: the batch-1 path once per sample.

``"dense"`` runs the same folded network with every filter kept and no predictors: the
like-for-like dense baseline (at batch 1 through the same TorchScript path).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from operators.pruning.network import PrunableNetwork
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
    ...                       nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
    ...                       nn.Linear(8 * 36, 3))
    >>> net = PrunableNetwork(model, input_shape=(1, 6, 6), seed=0).eval()
    >>> x = torch.randn(5, 1, 6, 6)
    >>> ref = net(x)                                     # masks multiplied in
    >>> for mode in ("union", "grouped", "loop"):
    ...     out = SparseExecutor(net, mode)(x)
    ...     assert torch.allclose(out.logits, ref.logits, atol=1e-5), mode
    >>> out.kept.tolist() == torch.stack([m.sum(1) for m in ref.masks], 1).tolist()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stream.errors import ConfigError

from .fastpath import compile_fast_path
from .network import PASSIVE, PrunableNetwork, binarize

MODES = ("union", "grouped", "loop", "dense")


@dataclass
class SparseResult:
    """Class logits, filters kept per sample and layer (``[N, L]``), optional full masks.

    ``kept`` may be given as nested lists (the batch-1 fast path's): it becomes a tensor
    when first read, so a caller that only wants the logits does not pay for it.
    """

    logits: torch.Tensor
    _kept: torch.Tensor | list[list[int]]
    masks: list[torch.Tensor] | None = None

    @property
    def kept(self) -> torch.Tensor:
        if not isinstance(self._kept, torch.Tensor):
            self._kept = torch.tensor(self._kept)
        return self._kept


@dataclass
class _Layer:
    weight: torch.Tensor          # folded conv weight [C_out, C_in, kh, kw]
    bias: torch.Tensor            # folded bias [C_out]
    pred_weight: torch.Tensor     # predictor weight [C_out, C_in] (shares the parameter)
    pred_bias: torch.Tensor
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    act: Callable | None
    post: list[nn.Module]


class SparseExecutor:
    """Inference with only the kept filters computed.

    Args:
        net: the network (its current weights are captured; predictor weights are shared,
            so online predictor updates are seen; rebuild after changing the backbone).
        mode: batch strategy, one of :data:`MODES`.
        fast: use the TorchScript batch-1 path where the network allows it
            (:mod:`operators.pruning.fastpath`).
    """

    def __init__(self, net: PrunableNetwork, mode: str = "union", fast: bool = True):
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.net = net
        self.layers = [self._compile(b, p) for b, p in zip(net.blocks, net.predictors, strict=True)]
        head = [m for m in net.head if not isinstance(m, PASSIVE)]
        first = next(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
        self.pre_linear = head[:first]
        self.linear: nn.Linear = head[first]
        self.rest = head[first + 1:]
        self.spatial = net.flops.head_spatial
        dev = self.linear.weight.device
        self._offsets = torch.arange(self.spatial, device=dev)
        self.fast = compile_fast_path(self) if fast else None

    @staticmethod
    @torch.no_grad()
    def _compile(block, predictor) -> _Layer:
        conv = block.conv
        w = conv.weight.detach()
        b = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels, device=w.device)
        if block.norm is not None:
            bn = block.norm
            scale = (bn.weight.detach() if bn.weight is not None else 1.0) / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias.detach() if bn.bias is not None else 0.0
            w = w * scale[:, None, None, None]
            b = (b - bn.running_mean) * scale + shift
        return _Layer(w.contiguous(), b.contiguous(), predictor.linear.weight.detach(),
                      predictor.linear.bias.detach(), conv.stride, conv.padding, conv.dilation,
                      block.act, [m for m in block.post if not isinstance(m, PASSIVE)])

    def __call__(self, x: torch.Tensor, return_masks: bool = False) -> SparseResult:
        if self.fast is not None and x.shape[0] == 1 and not return_masks:
            # the hot path: no inference_mode or no_grad context (entering one cost tens of
            # µs a call in our measurements, several % of a pruned forward); no weight it
            # reads requires grad, so with a detached input nothing records a graph
            if x.requires_grad:
                x = x.detach()
            logits, kept = self.fast(x, self.mode == "dense")
            if self.rest:
                with torch.no_grad():
                    for op in self.rest:
                        logits = op(logits)
            return SparseResult(logits, [kept], None)
        return self._run(x, return_masks)

    @torch.inference_mode()
    def _run(self, x: torch.Tensor, return_masks: bool) -> SparseResult:
        if self.mode == "grouped" and x.shape[0] > 1:
            return self._grouped(x, return_masks)
        if self.mode == "loop" and x.shape[0] > 1:
            parts = [self._union(x[i:i + 1], return_masks) for i in range(x.shape[0])]
            masks = [torch.cat(m) for m in zip(*[p.masks for p in parts], strict=True)] if return_masks else None
            return SparseResult(torch.cat([p.logits for p in parts]), torch.cat([p.kept for p in parts]), masks)
        return self._union(x, return_masks)

    # -- strategies ---------------------------------------------------------------------
    def _union(self, x: torch.Tensor, return_masks: bool) -> SparseResult:
        n = x.shape[0]
        dense = self.mode == "dense"
        if n == 1 and self.fast is not None and not return_masks:
            return self(x)
        if n == 1 and not dense:
            return self._single(x, return_masks)
        prev: torch.Tensor | None = None      # input channels present in x (None: all)
        kept, masks = [], []
        for layer in self.layers:
            if dense:
                w, b, keep = layer.weight, layer.bias, None
                kept.append(torch.full((n,), w.shape[0], dtype=torch.long))
                mask = torch.ones(n, w.shape[0], dtype=torch.bool) if return_masks else None
            else:
                pw = layer.pred_weight if prev is None else layer.pred_weight.index_select(1, prev)
                mask = binarize(torch.addmm(layer.pred_bias, x.mean(dim=(2, 3)), pw.t()))
                kept.append(mask.sum(1))
                keep = mask.any(0).nonzero().view(-1)
                w = layer.weight.index_select(0, keep)
                if prev is not None:
                    w = w.index_select(1, prev)
                b = layer.bias.index_select(0, keep)
            x = F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation)
            if layer.act is not None:
                x = layer.act(x)
            if keep is not None:
                # samples that dropped a filter another sample kept: zero it for them
                x = x * mask.index_select(1, keep)[:, :, None, None].to(x.dtype)
            for op in layer.post:
                x = op(x)
            masks.append(mask)
            prev = keep
        return SparseResult(self._head(x, prev), torch.stack(kept, 1), masks if return_masks else None)

    def _single(self, x: torch.Tensor, return_masks: bool) -> SparseResult:
        """Batch 1 in Python (the TorchScript path's reference): gather, convolve, repeat."""
        prev: torch.Tensor | None = None
        kept: list[int] = []
        masks = []
        for layer in self.layers:
            pw = layer.pred_weight if prev is None else layer.pred_weight.index_select(1, prev)
            logits = torch.addmm(layer.pred_bias, x.mean(dim=(2, 3)), pw.t())[0]
            keep = (logits > 0).nonzero().view(-1)
            if keep.numel() == 0:                 # as binarize(): keep the most likely filter
                keep = logits.argmax().view(1)
            kept.append(keep.numel())
            if return_masks:
                masks.append(torch.zeros(1, len(logits), dtype=torch.bool,
                                         device=x.device).index_fill_(1, keep, True))
            w = layer.weight.index_select(0, keep)
            if prev is not None:
                w = w.index_select(1, prev)
            x = F.conv2d(x, w, layer.bias.index_select(0, keep), layer.stride, layer.padding,
                         layer.dilation)
            if layer.act is not None:
                x = layer.act(x)
            for op in layer.post:
                x = op(x)
            prev = keep
        return SparseResult(self._head(x, prev), torch.tensor([kept]), masks if return_masks else None)

    def _head(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        for op in self.pre_linear:
            x = op(x)
        lin = self.linear
        if prev is None:
            x = F.linear(x, lin.weight, lin.bias)
        else:
            cols = prev if self.spatial == 1 else (prev[:, None] * self.spatial + self._offsets).view(-1)
            x = F.linear(x, lin.weight.index_select(1, cols), lin.bias)
        for op in self.rest:
            x = op(x)
        return x

    def _grouped(self, x: torch.Tensor, return_masks: bool) -> SparseResult:
        n = x.shape[0]
        prev: torch.Tensor | None = None      # [N, k_in]: channel index of each input slot
        kept, masks = [], []
        for layer in self.layers:
            pooled = x.mean(dim=(2, 3))
            if prev is None:
                logits = torch.addmm(layer.pred_bias, pooled, layer.pred_weight.t())
            else:
                pw = layer.pred_weight.t()[prev]                     # [N, k_in, C_out]
                logits = torch.bmm(pooled[:, None, :], pw)[:, 0] + layer.pred_bias
            mask = binarize(logits)
            count = mask.sum(1)
            kmax = int(count.max())
            # kept channels first, in channel order; padded slots point at dropped ones
            idx = (~mask).to(torch.int8).argsort(dim=1, stable=True)[:, :kmax]
            valid = torch.arange(kmax)[None, :] < count[:, None]
            if prev is None:
                w = layer.weight[idx]                                # [N, kmax, C_in, kh, kw]
            else:
                w = layer.weight[idx[:, :, None], prev[:, None, :]]  # [N, kmax, k_in, kh, kw]
            h, wd = x.shape[2:]
            x = F.conv2d(x.reshape(1, -1, h, wd), w.reshape(n * kmax, *w.shape[2:]),
                         layer.bias[idx].reshape(-1), layer.stride, layer.padding, layer.dilation,
                         groups=n)
            x = x.view(n, kmax, *x.shape[2:])
            if layer.act is not None:
                x = layer.act(x)
            x = x * valid[:, :, None, None].to(x.dtype)
            for op in layer.post:
                x = op(x)
            kept.append(count)
            masks.append(mask)
            prev = idx
        for op in self.pre_linear:
            x = op(x)
        cols = (prev[:, :, None] * self.spatial + self._offsets).reshape(n, -1)
        w = self.linear.weight.t()[cols]                              # [N, kmax*S, out]
        x = torch.bmm(x[:, None, :], w)[:, 0]
        if self.linear.bias is not None:
            x = x + self.linear.bias
        for op in self.rest:
            x = op(x)
        return SparseResult(x, torch.stack(kept, 1), masks if return_masks else None)
