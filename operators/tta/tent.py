"""``Tent``: test entropy minimisation (Wang et al., ICLR 2021).

Only the affine parameters (γ, β) of the normalisation layers (BatchNorm, GroupNorm,
LayerNorm, InstanceNorm: the method only needs a scale and a shift) are trained, by Adam on
the mean prediction entropy of each mini-batch, one step per mini-batch. As in the
paper, the loss is computed with every normalisation layer using the mini-batch's own
statistics and the gradient flows through them (``loss_stats="batch"``: one extra
forward pass per mini-batch); ``loss_stats="running"`` reuses the forward pass whose
predictions were returned instead (cheaper; the running statistics are constants for
the gradient). Predictions always use running statistics into which each mini-batch's
statistics are blended (``norm_window``; 1 keeps only the last mini-batch's; larger
windows keep batch size 1 stable), so they never depend on the other samples of the
batch (see :mod:`operators.tta.base`).

Example:
    >>> import numpy as np, pyarrow as pa, torch
    >>> from stream import Batch
    >>> from stream.batch import to_arrow
    >>> from operators.tta import Tent
    >>> from operators.tta.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> op = Tent(build_model("small_cnn", width=4), batch_size=4, lr=1e-3)
    >>> images = np.random.default_rng(0).random((12, 8, 8), dtype=np.float32)
    >>> out = op(Batch(pa.record_batch({"image": to_arrow(images)})))
    >>> op.summary()["adapted_batches"], out.numpy("prediction").shape
    (3, (12,))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import TTAOperator, affine_parameters, check_loss_stats, entropy_loss


class Tent(TTAOperator):
    """Entropy minimisation on the normalisation affine parameters.

    Args:
        model: the trained classifier (needs normalisation layers with affine
            parameters: BatchNorm, GroupNorm, LayerNorm, InstanceNorm; all are trained,
            and BatchNorm statistics also follow the stream).
        lr: Adam learning rate at batch size 64; the rate applied is
            ``lr · batch_size / 64`` (see :mod:`operators.tta.base`; the paper: 1e-3 at
            batch size 128 with Adam on CIFAR, 0.00025 · batch/64 with SGD on ImageNet).
        entropy_filter: train only on samples whose entropy is below this fraction of
            ``ln(classes)`` (``None``: all samples, as in the paper).
        loss_stats: ``"batch"`` (the paper: the loss normalises with the mini-batch's
            statistics, gradient through them) or ``"running"`` (reuse the prediction
            forward pass).
        **common: ``batch_size``, ``norm_window``, ``reset``, ... of
            :class:`~operators.tta.base.TTAOperator`.
    """

    needs_norm = "affine"
    default_reset = "collapse"

    def __init__(self, model: nn.Module | None = None, *, lr: float = 1e-3,
                 entropy_filter: float | None = None, loss_stats: str = "batch", **common: Any):
        self.lr, self.entropy_filter = lr, entropy_filter
        self.loss_stats = check_loss_stats("Tent", loss_stats)
        super().__init__(model, **common)

    def trainable(self) -> list[nn.Parameter]:
        return affine_parameters(self.net)

    def adapt(self, images: torch.Tensor, logits: torch.Tensor | None) -> None:
        loss = entropy_loss(logits, self.entropy_filter)
        if loss is not None:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
