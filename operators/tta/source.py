"""``Source``: the trained model as it is, no adaptation — the baseline of every TTA table.

Normalisation uses the source model's running statistics (``BatchNorm`` in eval mode),
so outputs do not depend on batch size or on the micro-batch cut.

Example:
    >>> import numpy as np, pyarrow as pa, torch
    >>> from stream import Batch
    >>> from stream.batch import to_arrow
    >>> from operators.tta import Source
    >>> from operators.tta.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> op = Source(build_model("small_cnn", width=4))
    >>> images = np.random.default_rng(0).random((5, 8, 8), dtype=np.float32)
    >>> out = op(Batch(pa.record_batch({"image": to_arrow(images)})))
    >>> out.column_names
    ['image', 'prediction', 'confidence', 'entropy']
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import TTAOperator


class Source(TTAOperator):
    """The source model, unchanged. Takes the common arguments of
    :class:`~operators.tta.base.TTAOperator`; ``batch_size`` and ``norm_window`` have no
    effect."""

    batch_size_dependent = False

    def __init__(self, model: nn.Module | None = None, **common: Any):
        super().__init__(model, **common)

    def _momentum(self) -> float:
        return 0.0
