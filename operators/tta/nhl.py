"""``NHL``: neuro-modulated Hebbian learning (Tang et al., CVPR 2023), as we read it.

Two updates per mini-batch, the classifier (every other weight) frozen:

1. **Soft Hebbian rule on the first convolution** (feed-forward, unsupervised). For the
   input patches ``x`` of that convolution (optionally centred over the mini-batch), the
   filters ``ŵ_k`` (each scaled to unit norm) and pre-activations ``u_k = <ŵ_k, x>``,
   soft competition ``y = softmax(u / temperature)`` across channels and

   - ``rule="oja"``: ``Δŵ_k = hebbian_lr · mean(y_k · (x − u_k · ŵ_k))``;
   - ``rule="softhebb"``: the same with ``y_k`` negated for every non-winning channel
     (anti-Hebbian, lateral inhibition) and ``Δŵ`` divided by its largest magnitude.

   Each filter is then rescaled to its source norm, so the rule turns filters and never
   changes their gain.
2. **Neuro-modulator** trained by Adam (``lr``) on the mean prediction entropy
   back-propagated from the top: ``modulator="layer1"`` is a channel-wise scale and
   shift after the first convolution (the affine of the normalisation that follows it
   when there is one, since a normalisation would cancel an affine placed before it);
   ``"all_norm"`` trains every normalisation affine (Tent's parameters). The loss is
   computed as Tent's (``loss_stats``: ``"batch"`` normalises with the mini-batch's own
   statistics, gradient through them, as the paper's BatchNorm in train mode). With
   ``modulator="all_norm"`` and Tent's ``lr``/``loss_stats``, NHL is Tent plus the
   Hebbian first layer, which is how benchmarks/tta.py runs it.

Safeguards the paper leaves open (documented parameters): normalisation statistics from
the stream (``adapt_norm``, ``norm_window``), ``entropy_filter`` and the reset policies
of :mod:`operators.tta.reset`. The Hebbian step takes the first convolution's input from
the forward pass that predicted the mini-batch; the modulator's loss is computed as
``loss_stats`` says. The paper adapts on a mini-batch before predicting it; in a stream,
a row's output cannot wait for later rows, so the adapted model predicts the next
mini-batch (see :mod:`operators.tta.base`).

Example:
    >>> import numpy as np, pyarrow as pa, torch
    >>> from stream import Batch
    >>> from stream.batch import to_arrow
    >>> from operators.tta import NHL
    >>> from operators.tta.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> model = build_model("small_cnn", width=4)
    >>> op = NHL(model, batch_size=4, hebbian_lr=0.05)
    >>> images = np.random.default_rng(0).random((8, 8, 8), dtype=np.float32)
    >>> out = op(Batch(pa.record_batch({"image": to_arrow(images)})))
    >>> bool((op.conv.weight != model.conv1.weight).any())   # the first conv was tuned
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stream.errors import ConfigError

from .base import CONVS, NORMS, TTAOperator, affine_parameters, check_loss_stats, entropy_loss, first_conv
from .norm_stats import StreamingNorm


def _padding(conv: nn.Module) -> tuple[int, ...]:
    """The zero padding of ``conv`` per spatial dimension ('valid' and 'same' resolved)."""
    if conv.padding == "valid":
        return (0,) * len(conv.kernel_size)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in total):
            raise ConfigError(f"NHL: convolution {conv} pads 'same' unevenly; give the padding as numbers")
        return tuple(t // 2 for t in total)
    return tuple(conv.padding)


def unfold(conv: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The input patches of a ``Conv2d`` or ``Conv1d`` (a ``Conv1d`` is a ``Conv2d`` with
    a 1-high kernel on a 1-high image): ``(N, C·k…, patches)``, in the order of
    ``conv.weight.flatten(1)``."""
    pad = _padding(conv)
    if isinstance(conv, nn.Conv1d):
        return nn.functional.unfold(inputs.unsqueeze(2), (1, conv.kernel_size[0]), (1, conv.dilation[0]),
                                    (0, pad[0]), (1, conv.stride[0]))
    return nn.functional.unfold(inputs, conv.kernel_size, conv.dilation, pad, conv.stride)


class ChannelAffine(nn.Module):
    """``x · scale[c] + shift[c]``, initialised to the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


class NHL(TTAOperator):
    """Soft Hebbian first convolution plus an entropy-trained neuro-modulator.

    Args:
        model: the trained classifier (needs a ``Conv1d`` or ``Conv2d``, ``groups=1``;
            the first registered one is tuned).
        hebbian_lr: step size of the Hebbian rule at batch size 64 (0 turns it off); the
            step applied per mini-batch is ``hebbian_lr · batch_size / 64``.
        temperature: softmax temperature of the soft competition.
        rule: ``"oja"`` or ``"softhebb"`` (see the module docstring).
        center_patches: subtract the mini-batch mean patch before the rule (without it
            every filter drifts toward the mean patch, the DC component).
        modulator: ``"layer1"`` or ``"all_norm"`` (the affine parameters of every
            normalisation layer: BatchNorm, GroupNorm, LayerNorm, InstanceNorm).
        lr: Adam learning rate of the modulator at batch size 64 (0 turns it off); the
            rate applied is ``lr · batch_size / 64`` (see :mod:`operators.tta.base`).
        entropy_filter: train the modulator only on samples whose entropy is below this
            fraction of ``ln(classes)``.
        adapt_norm: BatchNorm statistics follow the stream (when the model has BatchNorm;
            GroupNorm and LayerNorm have none to follow).
        loss_stats: ``"batch"`` or ``"running"``, as for :class:`~operators.tta.tent.Tent`.
        **common: ``batch_size``, ``norm_window``, ``reset``, ... of
            :class:`~operators.tta.base.TTAOperator`.
    """

    needs_conv = True
    default_reset = "collapse"

    def __init__(self, model: nn.Module | None = None, *, hebbian_lr: float = 0.01,
                 temperature: float = 1.0, rule: str = "oja", center_patches: bool = True,
                 modulator: str = "layer1", lr: float = 1e-3, entropy_filter: float | None = None,
                 adapt_norm: bool = True, loss_stats: str = "batch", **common: Any):
        if rule not in ("oja", "softhebb"):
            raise ConfigError(f"NHL: rule must be 'oja' or 'softhebb', got {rule!r}")
        if modulator not in ("layer1", "all_norm"):
            raise ConfigError(f"NHL: modulator must be 'layer1' or 'all_norm', got {modulator!r}")
        if temperature <= 0 or hebbian_lr < 0 or lr < 0:
            raise ConfigError("NHL: temperature must be > 0, hebbian_lr and lr >= 0")
        self.hebbian_lr, self.temperature, self.rule = hebbian_lr, temperature, rule
        self.center_patches, self.modulator, self.lr = center_patches, modulator, lr
        self.entropy_filter, self.adapt_norm = entropy_filter, adapt_norm
        self.loss_stats = check_loss_stats("NHL", loss_stats)
        self.needs_norm = "affine" if modulator == "all_norm" else False
        super().__init__(model, **common)

    def _momentum(self) -> float:
        return super()._momentum() if self.adapt_norm else 0.0

    def prepare(self) -> None:
        name, conv = first_conv(self.net)
        self.conv = conv
        with torch.no_grad():
            self._gain = conv.weight.flatten(1).norm(dim=1).clamp_min(1e-12)
        self._captured: list[torch.Tensor] = []
        conv.register_forward_pre_hook(self._capture)
        if self.modulator == "all_norm":
            self._mod_params = affine_parameters(self.net)
            return
        after = self._norm_after(name)
        if after is not None and isinstance(after.weight, nn.Parameter) and isinstance(after.bias, nn.Parameter):
            self._mod_params = [after.weight, after.bias]
        else:  # no normalisation (or one without affine) follows: insert a modulator
            parent_name, _, attr = name.rpartition(".")
            parent = self.net.get_submodule(parent_name) if parent_name else self.net
            affine = ChannelAffine(conv.out_channels)
            setattr(parent, attr, nn.Sequential(conv, affine))
            self._mod_params = [affine.weight, affine.bias]

    def _norm_after(self, conv_name: str) -> nn.Module | None:
        """The normalisation registered right after the first conv, when it is per channel
        (BatchNorm, GroupNorm, InstanceNorm of ``out_channels``; a LayerNorm normalises
        the trailing dimensions, so its affine is not a channel-wise modulator)."""
        names = [n for n, _ in self.net.named_modules()]
        mods = dict(self.net.named_modules())
        for n in names[names.index(conv_name) + 1:]:
            mod = mods[n]
            if isinstance(mod, NORMS):
                per_channel = isinstance(mod, (StreamingNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm))
                weight = getattr(mod, "weight", None)
                return mod if per_channel and weight is not None and weight.numel() == self.conv.out_channels \
                    else None
            if isinstance(mod, CONVS):
                return None
        return None

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if self._collecting:  # a forward pass of the current mini-batch's rows
            self._captured.append(args[0].detach())

    def forget_pending(self) -> None:
        super().forget_pending()
        self._captured = []

    def trainable(self) -> list[nn.Parameter]:
        return list(self._mod_params) if self.lr > 0 else []

    def adapt(self, images: torch.Tensor, logits: torch.Tensor | None) -> None:
        if logits is not None:
            loss = entropy_loss(logits, self.entropy_filter)
            if loss is not None:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        if self.hebbian_lr > 0:
            self._hebbian(torch.cat(self._captured))

    @torch.no_grad()
    def _hebbian(self, inputs: torch.Tensor) -> None:
        conv = self.conv
        patches = unfold(conv, inputs)
        x = patches.transpose(1, 2).reshape(-1, patches.shape[1])          # (patches, C·k·k)
        if self.center_patches:
            x = x - x.mean(dim=0, keepdim=True)
        gain = self._gain.to(conv.weight.device).unsqueeze(1)
        w = conv.weight.flatten(1) / gain                                   # unit-norm filters
        u = x @ w.T                                                         # (patches, K)
        y = torch.softmax(u / self.temperature, dim=1)
        if self.rule == "softhebb":
            winner = nn.functional.one_hot(u.argmax(dim=1), u.shape[1]).bool()
            y = torch.where(winner, y, -y)
        dw = (y.T @ x - (y * u).sum(dim=0).unsqueeze(1) * w) / x.shape[0]
        if self.rule == "softhebb":
            dw = dw / dw.abs().max().clamp_min(1e-12)
        w = w + self.scaled(self.hebbian_lr) * dw
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        conv.weight.copy_((w * gain).view_as(conv.weight))
