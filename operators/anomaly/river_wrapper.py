"""The streaming detectors as River anomaly detectors: ``score_one`` then ``learn_one``.

:class:`RiverDetector` holds one model of :mod:`operators.anomaly` (``"cad"`` or ``"art"``)
for a single stream of dicts, reading one feature (``feature``, default: the only or
first one). River's contract: ``score_one`` leaves the model as it was, ``learn_one``
teaches it. The models here score and learn in one step, so ``score_one`` scores a copy
(its cost grows with the model: contexts or categories) and ``learn_one`` of the same
``x`` reuses the scored step. Values outside ``[lo, hi]`` are clipped by the models;
without a range the first ``warmup`` values set it (they score 0). Missing or non-finite
features score 0 and teach nothing, as River's detectors do with what they cannot use.

Example (after 1, 5, 1, 5, ... the expected value scores 0, another 1):
    >>> det = RiverDetector("cad", lo=0.0, hi=10.0, rest=0)
    >>> for v in [1.0, 5.0, 1.0, 5.0, 1.0, 5.0]:
    ...     det.learn_one({"x": v})
    >>> det.score_one({"x": 1.0}), det.score_one({"x": 9.0})
    (0.0, 1.0)
"""

from __future__ import annotations

import copy
import math
from typing import Any

from stream.errors import ConfigError

from .artime import ARTMemory
from .cad import ContextMemory
from .keyed import KeyModel

MODELS: dict[str, type[KeyModel]] = {"cad": ContextMemory, "art": ARTMemory}


class RiverDetector:
    """A River-style anomaly detector around one :class:`~operators.anomaly.keyed.KeyModel`."""

    def __init__(self, model: str = "cad", lo: float | None = None, hi: float | None = None,
                 feature: str | None = None, warmup: int = 100, **params: Any) -> None:
        if model not in MODELS:
            raise ConfigError(f"RiverDetector: model must be one of {sorted(MODELS)}, got {model!r}")
        if (lo is None) != (hi is None) or (lo is not None and not lo <= hi):
            raise ConfigError("RiverDetector: give both lo and hi, with lo <= hi, or neither")
        self.model_name, self.feature, self.warmup, self.params = model, feature, int(warmup), params
        self.model: KeyModel | None = None
        self.seen: list[float] = []
        if lo is not None:
            self.model = MODELS[model](float(lo), float(hi), **params)
        self._scored: tuple[float, KeyModel] | None = None   # the last score_one: value, model after it

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"model": "cad", "warmup": 10}

    def _value(self, x: dict[str, Any]) -> float | None:
        if not x:
            return None
        v = x.get(self.feature) if self.feature is not None else next(iter(x.values()))
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    def score_one(self, x: dict[str, Any]) -> float:
        v = self._value(x)
        if v is None or self.model is None:
            return 0.0
        after = copy.deepcopy(self.model)
        score = after.score_learn(v)
        self._scored = (v, after)
        return float(score)

    def learn_one(self, x: dict[str, Any]) -> None:
        v = self._value(x)
        if v is None:
            return
        if self.model is None:
            self.seen.append(v)
            if len(self.seen) >= self.warmup:
                self.model = MODELS[self.model_name](min(self.seen), max(self.seen), **self.params)
                self.seen = []
            return
        if self._scored is not None and self._scored[0] == v:
            self.model = self._scored[1]
        else:
            self.model.score_learn(v)
        self._scored = None
