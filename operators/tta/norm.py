"""``NormAdapt``: re-estimate normalisation statistics on the test stream, no gradient.

The "BN" column of TTA tables (Schneider et al. 2020; Nado et al. 2020). Every
``BatchNorm`` becomes a :class:`~operators.tta.norm_stats.StreamingNorm`; each full
mini-batch blends its statistics into the running ones with momentum
``1 - (1 - 1/norm_window)^batch_size``. Weights never change. Only BatchNorm has
statistics to re-estimate: GroupNorm, LayerNorm and InstanceNorm normalise each sample
by itself, so a model without BatchNorm is refused (Tent adapts those layers).

Example:
    >>> import numpy as np, pyarrow as pa, torch
    >>> from stream import Batch
    >>> from stream.batch import to_arrow
    >>> from operators.tta import NormAdapt
    >>> from operators.tta.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> op = NormAdapt(build_model("small_cnn", width=4), batch_size=4)
    >>> images = np.random.default_rng(0).random((10, 8, 8), dtype=np.float32)
    >>> out = op(Batch(pa.record_batch({"image": to_arrow(images)})))
    >>> op.summary()
    {'seen': 10, 'adapted_batches': 2, 'resets': 0}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import TTAOperator


class NormAdapt(TTAOperator):
    """Normalisation statistics from the test stream. Arguments: those of
    :class:`~operators.tta.base.TTAOperator` (``norm_window`` is the one that matters)."""

    needs_norm = "batch"

    def __init__(self, model: nn.Module | None = None, **common: Any):
        super().__init__(model, **common)

    def adapt(self, images: torch.Tensor, logits: torch.Tensor | None) -> None:
        """Nothing beyond the statistics, which the base class commits."""
