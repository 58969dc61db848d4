"""Save and load a :class:`~operators.pruning.network.PrunableNetwork` without pickle.

The file holds the layer list as plain data (type name and constructor arguments of each
layer), the input shape and the weights; :func:`load_network` reads it with
``torch.load(weights_only=True)``, so loading never executes code from the file. This is
how a pipeline file points the ``dynamic_pruning`` operator at a trained network.

Example:
    >>> import os, tempfile, torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(4 * 16, 3))
    >>> net = PrunableNetwork(model, (1, 4, 4)).eval()
    >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
    >>> save_network(net, path)
    >>> back = load_network(path).eval()
    >>> x = torch.randn(2, 1, 4, 4)
    >>> torch.equal(back(x).logits, net(x).logits)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .network import PrunableNetwork, _flatten

#: Constructor arguments recorded for each supported layer type.
_ARGS: dict[type, tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.Linear: ("in_features", "out_features"),
    nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    nn.AvgPool2d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    nn.AdaptiveAvgPool2d: ("output_size",),
    nn.AdaptiveMaxPool2d: ("output_size",),
    nn.Flatten: ("start_dim", "end_dim"),
    nn.Dropout: ("p",),
    nn.Dropout2d: ("p",),
    nn.LeakyReLU: ("negative_slope",),
    nn.ELU: ("alpha",),
    nn.GELU: ("approximate",),
}
_NO_ARGS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Tanh, nn.Hardswish, nn.Sigmoid, nn.Identity)
_TYPES = {t.__name__: t for t in (*_ARGS, *_NO_ARGS)}


def describe(model: nn.Sequential) -> list[dict[str, Any]]:
    """The layer list of ``model`` as plain data."""
    out = []
    for name, mod in _flatten(model):
        typ = type(mod)
        if typ not in _ARGS and typ not in _NO_ARGS:
            raise ValueError(f"layer {name}: cannot save layer type {typ.__name__}")
        args = {a: getattr(mod, a) for a in _ARGS.get(typ, ())}
        if typ in (nn.Conv2d, nn.Linear):
            args["bias"] = mod.bias is not None
        out.append({"type": typ.__name__, "args": args})
    return out


def build(layers: list[dict[str, Any]], where: str = "<spec>") -> nn.Sequential:
    """Inverse of :func:`describe`."""
    mods = []
    for i, layer in enumerate(layers):
        typ = _TYPES.get(layer.get("type"))
        if typ is None:
            raise ValueError(f"{where}: layer {i} has unknown type {layer.get('type')!r}")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in layer.get("args", {}).items()}
        mods.append(typ(**args))
    return nn.Sequential(*mods)


def save_network(net: PrunableNetwork, path: str) -> None:
    """Write layers, input shape, and weights (backbone and predictors) to ``path``."""
    torch.save({"layers": describe(net.backbone), "input_shape": list(net.input_shape),
                "state": net.state_dict()}, path)


def load_network(path: str) -> PrunableNetwork:
    """Read a network written by :func:`save_network` (never unpickles code)."""
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
        net = PrunableNetwork(build(blob["layers"], path), blob["input_shape"])
        net.load_state_dict(blob["state"])
    except (OSError, KeyError, RuntimeError, TypeError) as exc:
        raise ValueError(f"cannot load a pruning network from {path}: {exc}") from exc
    return net
