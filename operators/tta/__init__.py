"""Fully test-time adaptation: a trained classifier adapts on the unlabeled stream.

- :class:`NHL` — soft Hebbian first convolution + entropy-trained neuro-modulator.
- :class:`Tent` — entropy minimisation on normalisation affine parameters (BatchNorm,
  GroupNorm, LayerNorm).
- :class:`EATA` — entropy minimisation on reliable, non-redundant samples with a
  Fisher anti-forgetting term (ETA without clean samples).
- :class:`SAR` — sharpness-aware entropy minimisation on reliable samples with model
  recovery (batch 1, mixed and label shifts).
- :class:`NormAdapt` — BatchNorm statistics from the stream.
- :class:`Source` — no adaptation.

All read samples (images, or signals for a Conv1d model) from a fixed-shape tensor
column (default ``image``) and add ``prediction``, ``confidence`` and ``entropy``;
batch size is their own parameter, and learning rates are given at batch 64 and
scaled with it (see :mod:`operators.tta.base`). :mod:`operators.tta.corruptions` shifts small
grayscale images; :mod:`operators.tta.models` holds small CNNs for TOML pipelines.

Example:
    >>> import numpy as np, pyarrow as pa, torch
    >>> from stream import Batch
    >>> from stream.batch import to_arrow
    >>> from operators.tta import NHL, Source
    >>> from operators.tta.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> model = build_model("small_cnn", width=4)
    >>> images = np.random.default_rng(0).random((6, 8, 8), dtype=np.float32)
    >>> batch = Batch(pa.record_batch({"image": to_arrow(images)}))
    >>> out = (NHL(model, batch_size=2) | Source(model))(batch)
    >>> out.column_names[:4]
    ['image', 'prediction', 'confidence', 'entropy']
"""

from .base import TTAOperator
from .eata import EATA
from .nhl import NHL
from .norm import NormAdapt
from .sar import SAR
from .source import Source
from .tent import Tent

__all__ = ["EATA", "NHL", "SAR", "NormAdapt", "Source", "TTAOperator", "Tent"]
