"""Continual pre-training on a stream with the infinite learning-rate schedule.

- :mod:`.schedules`: the infinite schedule and the baselines, as torch LR schedulers;
- :mod:`.models`: byte-level LM and masked autoencoder;
- :mod:`.pretrainer`: the :class:`ContinualPretrainer` operator;
- :mod:`.training`: one training run, annealing branches, held-out loss;
- :mod:`.annealed`: annealed checkpoint records and files;
- :mod:`.replay`: the replay buffer; :mod:`.columns`: reading text and vector columns.
"""

from .annealed import load_annealed
from .models import ByteLM, MaskedAutoencoder, build_model
from .pretrainer import ContinualPretrainer
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
