"""``SAR``: sharpness-aware and reliable entropy minimisation (Niu et al., ICLR 2023).

Designed for the "wild" settings where Tent fails: batch size 1, mixed shifts, label
shifts (streams ordered by class). Per mini-batch, on Tent's parameters (the
normalisation affine γ, β):

1. **Reliable samples**: those whose entropy is below ``E0 = entropy_margin · ln(classes)``
   (the paper: 0.4); the others are left out of the loss.
2. **Sharpness-aware step** (SAM, Foret et al. 2021) on their mean entropy: the gradient
   ``g`` at ``θ``, a step to ``θ + ρ · g / ‖g‖`` (``rho``), a second forward and
   backward pass there (on the samples reliable at ``θ`` whose entropy is still below
   ``E0``), back to ``θ``, and the base optimiser (SGD, momentum 0.9) steps with the
   second gradient: a flat minimum of the entropy, which noisy gradients do not push
   towards a collapse.
3. **Model recovery**: a moving average (0.9) of the second pass's entropy; when it falls
   below ``recovery_entropy · ln(classes)`` the model goes back to the source weights
   (the paper: 0.2 nats with 1,000 classes, 0.03 · ln 1000). ``None`` turns it off.

The loss is computed as Tent's (``loss_stats``; see :mod:`operators.tta.base`): with
``"batch"`` both passes normalise with the mini-batch's own statistics. The paper freezes
the top layers of its ResNet-50-GN and ViT; here every affine is trained. The learning
rate is given at batch 64 and scaled with the batch size, and the default reset (the
collapse detector of :mod:`operators.tta.reset`) works beside the recovery.

Example:
    >>> import numpy as np, pyarrow as pa, torch
    >>> from stream import Batch
    >>> from stream.batch import to_arrow
    >>> from operators.tta import SAR
    >>> from operators.tta.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> op = SAR(build_model("small_cnn", width=4), batch_size=1, lr=0.05)
    >>> images = np.random.default_rng(0).random((12, 8, 8), dtype=np.float32)
    >>> out = op(Batch(pa.record_batch({"image": to_arrow(images)})))
    >>> op.summary()["adapted_batches"], out.numpy("prediction").shape
    (12, (12,))
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn

from stream.errors import ConfigError
from stream.options import above, at_least

from .base import TTAOperator, affine_parameters, check_loss_stats, entropy
from .eata import sgd
from .norm_stats import batch_statistics


class SAR(TTAOperator):
    """Sharpness-aware entropy minimisation on reliable samples, with model recovery.

    Args:
        model: the trained classifier (needs normalisation layers with affine
            parameters: BatchNorm, GroupNorm, LayerNorm, InstanceNorm; the paper
            recommends GroupNorm or LayerNorm models at batch size 1).
        lr: SGD learning rate (momentum 0.9) at batch size 64, scaled with the batch
            size (the paper: 0.00025 at batch 64 on ImageNet).
        rho: radius of the sharpness-aware perturbation (the paper: 0.05).
        entropy_margin: ``E0`` as a fraction of ``ln(classes)`` (the paper: 0.4).
        recovery_entropy: reset when the moving average of the reliable samples'
            entropy falls below this fraction of ``ln(classes)``; ``None``: never.
        loss_stats: ``"batch"`` or ``"running"``, as for :class:`~operators.tta.tent.Tent`.
        **common: ``batch_size``, ``norm_window``, ``reset``, ... of
            :class:`~operators.tta.base.TTAOperator`.
    """

    needs_norm = "affine"
    default_reset = "collapse"
    option_checks = {"lr": at_least(0), "rho": at_least(0), "entropy_margin": above(0),
                     "recovery_entropy": at_least(0)}

    def __init__(self, model: nn.Module | None = None, *, lr: float = 0.00025, rho: float = 0.05,
                 entropy_margin: float = 0.4, recovery_entropy: float | None = 0.03,
                 loss_stats: str = "batch", **common: Any):
        if lr < 0 or rho < 0 or entropy_margin <= 0 or (recovery_entropy is not None and recovery_entropy < 0):
            raise ConfigError("SAR: lr, rho and recovery_entropy must be >= 0, entropy_margin > 0")
        self.lr, self.rho, self.entropy_margin = lr, rho, entropy_margin
        self.recovery_entropy = recovery_entropy
        self.loss_stats = check_loss_stats("SAR", loss_stats)
        self._ema: float | None = None
        self._recover = False
        self.recoveries = 0
        super().__init__(model, **common)

    def trainable(self) -> list[nn.Parameter]:
        return affine_parameters(self.net)

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return sgd(params, self.scaled(self.lr))

    def _forward_for_loss(self, images: torch.Tensor) -> torch.Tensor:
        """The second pass, normalised as the first (``loss_stats``)."""
        stats = batch_statistics(self.norms) if self.loss_stats == "batch" else contextlib.nullcontext()
        with stats, torch.enable_grad():
            return self.net(images)

    def adapt(self, images: torch.Tensor, logits: torch.Tensor | None) -> None:
        if logits is None:
            return
        margin = self.entropy_margin * math.log(logits.shape[1])
        ent = entropy(logits)
        reliable = ent.detach() < margin
        if not bool(reliable.any()):
            return
        params = self.trainable()
        self.optimizer.zero_grad(set_to_none=True)
        ent[reliable].mean().backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2)
        with torch.no_grad():
            steps = [g * (self.rho / (norm + 1e-12)) for g in grads]
            for p, e in zip(params, steps):
                p.add_(e)                                   # to the sharpest nearby point
        second = entropy(self._forward_for_loss(images))[reliable]
        still = second.detach() < margin
        self.optimizer.zero_grad(set_to_none=True)
        if bool(still.any()):
            loss = second[still].mean()
            loss.backward()
            value = float(loss.detach())
            self._ema = value if self._ema is None else 0.9 * self._ema + 0.1 * value
        with torch.no_grad():
            for p, e in zip(params, steps):
                p.sub_(e)                                   # back to θ, then step with the second gradient
        if bool(still.any()):
            self.optimizer.step()
        if self.recovery_entropy is not None and self._ema is not None \
                and self._ema < self.recovery_entropy * math.log(logits.shape[1]):
            self._recover = True

    def _step(self, num_classes: int) -> None:
        super()._step(num_classes)
        if self._recover:    # after the mini-batch is done, so the reset replays nothing
            self.recoveries += 1
            self.reset()

    def reset(self) -> None:
        self._ema, self._recover = None, False
        super().reset()

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["sar"] = {"ema": self._ema, "recoveries": self.recoveries}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        extra = state.get("sar") or {}
        ema = extra.get("ema")
        if ema is not None and not (isinstance(ema, (int, float)) and math.isfinite(ema)):
            raise ValueError(f"{self.name}: checkpoint's entropy average is not a finite number: {ema!r}")
        self._ema = None if ema is None else float(ema)
        self.recoveries = int(extra.get("recoveries", 0))

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "recoveries": self.recoveries}
