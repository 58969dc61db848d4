"""Wrap a torch CNN so that every conv layer gets a mask predictor.

:class:`PrunableNetwork` takes an ``nn.Sequential`` (nested ones are flattened) made of
conv blocks — ``Conv2d`` [→ ``BatchNorm2d``] [→ an element-wise activation] [→ pooling
or dropout] — followed by a head of pooling, ``Flatten`` and ``Linear`` layers. Each conv
gets a :class:`~operators.pruning.masks.MaskPredictor` fed with the conv's input. The
forward pass here is the *training* view: masks multiply the activations (so gradients
flow); :mod:`operators.pruning.executor` is the inference view that skips the work.

A dropped filter's activation is zero after its mask, so the next conv's matching input
channel contributes nothing and can be left out: that is what makes the compute saving
exact rather than approximate.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
    ...                       nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    >>> net = PrunableNetwork(model, input_shape=(1, 8, 8), seed=0)
    >>> [b.conv.out_channels for b in net.blocks], net.flops.dense()
    ([4, 8], 6936)
    >>> out = net(torch.randn(2, 1, 8, 8), r=0.9)
    >>> out.logits.shape, [t.shape[1] for t in out.targets], [m.shape for m in out.masks][0]
    (torch.Size([2, 3]), [4, 8], torch.Size([2, 4]))
    >>> PrunableNetwork(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), input_shape=(1, 8, 8))
    Traceback (most recent call last):
    ...
    stream.errors.ConfigError: the model has no Conv2d layer to prune (layers: Flatten, Linear)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from stream.errors import ConfigError

from .flops import ConvGeometry, FlopsCounter
from .masks import MaskPredictor, check_ratio, heatmap_mass_targets

#: Element-wise activations allowed after a conv (a mask after them zeroes the channel).
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh,
               nn.Hardswish, nn.Sigmoid)
#: Per-channel spatial layers allowed between conv blocks and before the head's Flatten.
SPATIAL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
#: Layers that do nothing at inference.
PASSIVE = (nn.Dropout, nn.Dropout2d, nn.Identity)


@dataclass
class ConvBlock:
    """One prunable conv with what follows it up to the next conv."""

    conv: nn.Conv2d
    norm: nn.BatchNorm2d | None = None
    act: nn.Module | None = None
    post: list[nn.Module] = field(default_factory=list)
    out_hw: tuple[int, int] = (0, 0)


@dataclass
class PruneOutput:
    """Training-view outputs: class logits, per-layer mask logits, applied masks, targets."""

    logits: torch.Tensor
    mask_logits: list[torch.Tensor]
    masks: list[torch.Tensor | None]
    targets: list[torch.Tensor]


def binarize(mask_logits: torch.Tensor) -> torch.Tensor:
    """Keep decisions (bool ``[N, C]``): logit > 0, and always the most likely filter.

    Keeping the arg-max costs nothing when some logit is positive (it is kept anyway)
    and stops a layer from going entirely dark.
    """
    keep = mask_logits > 0
    return keep.scatter_(1, mask_logits.argmax(dim=1, keepdim=True), True)


def _flatten(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    for name, child in model.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _flatten(child, path + ".")
        else:
            yield path, child


class PrunableNetwork(nn.Module):
    """A CNN whose conv filters are kept or dropped per sample by mask predictors.

    Args:
        model: an ``nn.Sequential`` CNN (see the module docstring for what it may hold).
        input_shape: ``(channels, height, width)`` of one input image.
        init_bias: initial keep logit of every predictor (> 0: start dense).
        seed: seeds the predictors' initial weights.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], init_bias: float = 3.0,
                 seed: int = 0):
        super().__init__()
        if not isinstance(model, nn.Sequential):
            raise TypeError(f"wrap an nn.Sequential CNN; got {type(model).__name__}, whose "
                            "forward cannot be split into conv blocks")
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
        self.input_shape = shape
        self.backbone = model
        self.blocks, self.head = self._parse(list(_flatten(model)))
        gen = torch.Generator().manual_seed(seed)
        self.predictors = nn.ModuleList(
            MaskPredictor(b.conv.in_channels, b.conv.out_channels, init_bias, gen) for b in self.blocks)
        self.flops = self._probe()

    # -- structure ----------------------------------------------------------------------
    def _parse(self, layers: list[tuple[str, nn.Module]]) -> tuple[list[ConvBlock], list[nn.Module]]:
        if not any(isinstance(m, nn.Conv2d) for _, m in layers):
            names = ", ".join(type(m).__name__ for _, m in layers) or "none"
            raise ConfigError(f"the model has no Conv2d layer to prune (layers: {names})")
        if not isinstance(layers[0][1], nn.Conv2d):
            raise ConfigError(f"layer {layers[0][0]}: the model must start with a Conv2d, got "
                             f"{type(layers[0][1]).__name__}")
        blocks: list[ConvBlock] = []
        i = 0
        while i < len(layers) and isinstance(layers[i][1], nn.Conv2d):
            name, conv = layers[i]
            if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                raise ConfigError(f"layer {name} ({conv}): only groups=1, numeric zero padding "
                                 "convolutions are supported")
            if blocks and conv.in_channels != blocks[-1].conv.out_channels:
                raise ConfigError(f"layer {name}: expects {conv.in_channels} input channels, the "
                                 f"previous conv gives {blocks[-1].conv.out_channels}")
            block = ConvBlock(conv)
            i += 1
            if i < len(layers) and isinstance(layers[i][1], nn.BatchNorm2d):
                block.norm = layers[i][1]
                i += 1
            if i < len(layers) and isinstance(layers[i][1], ACTIVATIONS):
                block.act = layers[i][1]
                i += 1
            while i < len(layers) and isinstance(layers[i][1], SPATIAL + PASSIVE) \
                    and not self._head_starts(layers, i):
                block.post.append(layers[i][1])
                i += 1
            blocks.append(block)
        head: list[nn.Module] = []
        flattened = False
        for name, mod in layers[i:]:
            if isinstance(mod, nn.Flatten):
                flattened = True
            elif isinstance(mod, nn.Linear):
                if not flattened:
                    raise ConfigError(f"layer {name}: a Linear layer needs a Flatten before it")
            elif isinstance(mod, nn.Conv2d):
                raise ConfigError(f"layer {name}: a Conv2d after the head began (only a chain of "
                                 "conv blocks followed by a head is supported)")
            elif not isinstance(mod, SPATIAL + PASSIVE + ACTIVATIONS) or \
                    (flattened and isinstance(mod, SPATIAL)):
                raise ConfigError(f"layer {name}: unsupported layer type {type(mod).__name__} "
                                 "(supported: Conv2d, BatchNorm2d, element-wise activations, "
                                 "pooling, Dropout, Flatten, Linear)")
            head.append(mod)
        if not any(isinstance(m, nn.Linear) for m in head):
            raise ConfigError("the model needs a Flatten → Linear classifier head after its convs")
        return blocks, head

    @staticmethod
    def _head_starts(layers: list[tuple[str, nn.Module]], i: int) -> bool:
        """True when no conv follows position ``i``: the remaining layers are the head."""
        return not any(isinstance(m, nn.Conv2d) for _, m in layers[i:])

    @torch.no_grad()
    def _probe(self) -> FlopsCounter:
        """Run one zero image through the model to learn every layer's output size."""
        was_training = self.training
        self.eval()
        x = torch.zeros(1, *self.input_shape)
        try:
            for block in self.blocks:
                act = self._activate(block, x)
                block.out_hw = (int(act.shape[2]), int(act.shape[3]))
                x = self._finish(block, act, None)
            x = self._pre_linear(x)
        except RuntimeError as exc:
            raise ValueError(f"the model does not accept input of shape {self.input_shape}: {exc}") from exc
        finally:
            self.train(was_training)
        linears = [m for m in self.head if isinstance(m, nn.Linear)]
        last = self.blocks[-1].conv.out_channels
        if x.dim() != 2 or x.shape[1] != linears[0].in_features or x.shape[1] % last:
            raise ConfigError(f"the first Linear layer takes {linears[0].in_features} features, the "
                             f"convs give {tuple(x.shape[1:])} for input shape {self.input_shape}")
        convs = [ConvGeometry(b.conv.out_channels, b.conv.kernel_size[0] * b.conv.kernel_size[1],
                              b.out_hw[0] * b.out_hw[1]) for b in self.blocks]
        return FlopsCounter(self.input_shape[0], convs,
                            [(m.in_features, m.out_features) for m in linears],
                            head_spatial=x.shape[1] // last)

    @staticmethod
    def _activate(block: ConvBlock, x: torch.Tensor) -> torch.Tensor:
        """conv → norm → activation: the layer output the targets are computed from."""
        out = block.conv(x)
        if block.norm is not None:
            out = block.norm(out)
        return block.act(out) if block.act is not None else out

    @staticmethod
    def _finish(block: ConvBlock, act: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Apply the keep mask, then the block's pooling/dropout."""
        if mask is not None:
            act = act * mask[:, :, None, None].to(act.dtype)
        for op in block.post:
            act = op(act)
        return act

    def _pre_linear(self, x: torch.Tensor) -> torch.Tensor:
        for mod in self.head:
            if isinstance(mod, nn.Linear):
                break
            x = mod(x)
        return x

    # -- training view --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, r: float | None = None, masks: str | list = "predicted",
                decoupled: bool = True) -> PruneOutput:
        """Forward with masks multiplied in.

        Args:
            x: images ``[N, C, H, W]``.
            r: heatmap-mass threshold; when given, ``targets`` holds each layer's targets.
            masks: ``"predicted"`` (binarised predictor output, no gradient), ``"none"``
                (dense), or a list of bool ``[N, C_out]`` masks, one per conv.
            decoupled: predictors see a detached input (no mask gradient into the backbone).
        """
        if r is not None:
            check_ratio(r)
        mask_logits, applied, targets = [], [], []
        for i, block in enumerate(self.blocks):
            logits = self.predictors[i](x.detach() if decoupled else x)
            mask_logits.append(logits)
            if masks == "predicted":
                mask = binarize(logits.detach())
            elif masks == "none":
                mask = None
            else:
                mask = masks[i]
            applied.append(mask)
            act = self._activate(block, x)
            if r is not None:
                targets.append(heatmap_mass_targets(act.detach(), r))
            x = self._finish(block, act, mask)
        for mod in self.head:
            x = mod(x)
        return PruneOutput(x, mask_logits, applied, targets)
