"""Continual pre-training on a stream with the infinite learning-rate schedule.

See :mod:`operators.continual.schedules` (the schedules), :mod:`.models` (byte-level LM,
masked autoencoder), :mod:`.replay` (the replay buffer) and :mod:`.pretrainer` (the
operator).
"""

from .models import ByteLM, MaskedAutoencoder, build_model
from .pretrainer import ContinualPretrainer, load_annealed
from .replay import ReplayBuffer
from .schedules import (
    ConstantLR,
    InfiniteLR,
    RepeatedCosineLR,
    WarmupStableDecayLR,
    make_schedule,
    plot_schedules,
)

__all__ = [
    "ContinualPretrainer",
    "load_annealed",
    "ByteLM",
    "MaskedAutoencoder",
    "build_model",
    "ReplayBuffer",
    "InfiniteLR",
    "RepeatedCosineLR",
    "WarmupStableDecayLR",
    "ConstantLR",
    "make_schedule",
    "plot_schedules",
]
