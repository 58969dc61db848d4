"""Run a 1-D CNN (``Conv1d`` …) through the pruning code as the exactly equivalent 2-D one.

A ``Conv1d(c_in, c_out, k)`` over a length-``L`` signal is a ``Conv2d(c_in, c_out, (1, k))``
over a ``1 × L`` image: same weights (with a unit height axis), same outputs, same
multiply-accumulates. :func:`as_conv2d` rewrites a 1-D ``nn.Sequential`` that way (weights
and batch-norm statistics copied), so :class:`~operators.pruning.network.PrunableNetwork`,
the sparse executor, its TorchScript fast path and the FLOPs counter need no 1-D code of
their own. Feed it signals ``[N, C, L]`` as ``x.unsqueeze(2)`` (``[N, C, 1, L]``) and give
``input_shape=(C, 1, L)``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> m1 = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.BatchNorm1d(4), nn.ReLU(),
    ...                    nn.MaxPool1d(2), nn.Conv1d(4, 6, 3, padding=1), nn.ReLU(),
    ...                    nn.Flatten(), nn.Linear(6 * 8, 3)).eval()
    >>> m2 = as_conv2d(m1).eval()
    >>> x = torch.randn(2, 1, 16)
    >>> torch.allclose(m1(x), m2(x.unsqueeze(2)), atol=1e-6)
    True
    >>> try:
    ...     as_conv2d(nn.Sequential(nn.Conv1d(1, 2, 3), nn.LSTM(2, 2)))
    ... except ValueError as e:
    ...     print(str(e)[:40])
    layer 1: cannot convert LSTM to 2-D (sup
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .network import ACTIVATIONS, _flatten

_KEEP = (nn.Linear, nn.Flatten, nn.Dropout, nn.Identity, *ACTIVATIONS)
_SUPPORTED = ("Conv1d, BatchNorm1d, MaxPool1d, AvgPool1d, AdaptiveAvgPool1d, AdaptiveMaxPool1d, "
              "Dropout, Flatten, Linear, element-wise activations")


def _one(v) -> int:
    return v[0] if isinstance(v, tuple) else v


@torch.no_grad()
def _convert(mod: nn.Module) -> nn.Module | None:
    if isinstance(mod, nn.Conv1d):
        if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
            return None
        conv = nn.Conv2d(mod.in_channels, mod.out_channels, (1, mod.kernel_size[0]), (1, mod.stride[0]),
                         (0, mod.padding[0]), (1, mod.dilation[0]), mod.groups, mod.bias is not None)
        conv.weight.copy_(mod.weight.unsqueeze(2))
        if mod.bias is not None:
            conv.bias.copy_(mod.bias)
        return conv
    if isinstance(mod, nn.BatchNorm1d):
        bn = nn.BatchNorm2d(mod.num_features, mod.eps, mod.momentum, mod.affine, mod.track_running_stats)
        bn.load_state_dict(mod.state_dict())
        return bn
    if isinstance(mod, nn.MaxPool1d):
        return nn.MaxPool2d((1, _one(mod.kernel_size)), (1, _one(mod.stride)), (0, _one(mod.padding)),
                            (1, _one(mod.dilation)), ceil_mode=mod.ceil_mode)
    if isinstance(mod, nn.AvgPool1d):
        return nn.AvgPool2d((1, _one(mod.kernel_size)), (1, _one(mod.stride)), (0, _one(mod.padding)),
                            mod.ceil_mode, mod.count_include_pad)
    if isinstance(mod, nn.AdaptiveAvgPool1d):
        return nn.AdaptiveAvgPool2d((1, _one(mod.output_size)))
    if isinstance(mod, nn.AdaptiveMaxPool1d):
        return nn.AdaptiveMaxPool2d((1, _one(mod.output_size)))
    if isinstance(mod, nn.Dropout1d):
        return nn.Dropout2d(mod.p)
    if isinstance(mod, _KEEP):
        return copy.deepcopy(mod)
    return None


def as_conv2d(model: nn.Sequential) -> nn.Sequential:
    """The 2-D equivalent of a 1-D CNN (a new model; ``model`` is left as it is)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"convert an nn.Sequential 1-D CNN; got {type(model).__name__}")
    out = []
    for name, mod in _flatten(model):
        new = _convert(mod)
        if new is None:
            raise ValueError(f"layer {name}: cannot convert {type(mod).__name__} to 2-D "
                             f"(supported: {_SUPPORTED})")
        out.append(new)
    return nn.Sequential(*out).train(model.training)
