"""HTM as a River anomaly detector: ``score_one`` / ``learn_one`` on one stream.

:class:`HTMAnomalyDetector` subclasses :class:`river.base.AnomalyDetector` (River's
anomaly-detector base class), so it drops into River pipelines and evaluation loops (``score_one`` never learns; call
``learn_one`` after it, River's order). Each record is a dict with a value and,
optionally, a timestamp (``datetime`` or nanoseconds); the model is one key of an
:class:`~operators.htm.detector.HTMDetector`, so scores equal the operator's.

Like River's detectors it takes any record: one without the value, or whose value is
``None`` or NaN (what a fresh ``preprocessing.MinMaxScaler`` can emit), is scored 0 and
not learnt; one without a timestamp is taken to come at the time of the last record.
During the probationary period the score is 0 ("no anomaly yet"): a constant score would
make ``anomaly.QuantileFilter`` take every record for an anomaly and never let the model
learn. The detector pickles, clones and passes River's own ``river.checks``.

Example:
    >>> import datetime as dt, math
    >>> from operators.htm.model import HTMConfig
    >>> model = HTMAnomalyDetector(config=HTMConfig.small(), resolution=0.1,
    ...                            probationary_period=30)
    >>> t0 = dt.datetime(2024, 1, 1)
    >>> scores = []
    >>> for i in range(60):
    ...     x = {"value": math.sin(i / 3), "timestamp": t0 + dt.timedelta(minutes=5 * i)}
    ...     scores.append(model.score_one(x))
    ...     model.learn_one(x)
    >>> len(scores), max(scores[:30]), min(scores) > -1e-9, max(scores) <= 1.0   # NuPIC's log scale
    (60, 0.0, True, True)
    >>> model.score_one({"value": 0.0, "timestamp": t0}) == model.score_one(
    ...     {"value": 0.0, "timestamp": t0})      # scoring changes nothing
    True
    >>> model.score_one({"other": 1.0})          # no value: nothing to score
    0.0
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np
import pyarrow as pa
from river.base import AnomalyDetector

from stream import Batch
from stream.errors import ConfigError

from .detector import HTMDetector
from .model import HTMConfig

_KEY = "river"


class HTMAnomalyDetector(AnomalyDetector):
    """River-compatible HTM anomaly detector.

    Args:
        config: HTM hyper-parameters (default NuPIC's NAB detector).
        value_key / time_key: keys of the record dict (``time_key=None``: no time encoder).
        score: ``"likelihood"`` (NuPIC's reported score, default) or ``"raw"``.
        resolution, warmup, probationary_period, spatial_tolerance, seed: as
            :class:`~operators.htm.detector.HTMDetector`.
    """

    def __init__(self, config: HTMConfig | None = None, value_key: str = "value",
                 time_key: str | None = "timestamp", score: str = "likelihood",
                 resolution: Any = "auto", warmup: int = 100, probationary_period: int = 750,
                 spatial_tolerance: float | None = 0.05, seed: int = 0):
        if score not in ("likelihood", "raw"):
            raise ConfigError(f"score must be 'likelihood' or 'raw', got {score!r}")
        self.config = config
        self.value_key, self.time_key, self.score = value_key, time_key, score
        self.resolution, self.warmup = resolution, warmup
        self.probationary_period, self.spatial_tolerance, self.seed = (
            probationary_period, spatial_tolerance, seed)
        cfg = config or HTMConfig()
        if time_key is None:
            cfg = HTMConfig.from_dict({**cfg.to_dict(), "time_of_day": False})
        self._detector = HTMDetector(
            cfg, resolution=resolution, warmup=warmup, probationary_period=probationary_period,
            spatial_tolerance=spatial_tolerance, seed=seed, device="numpy",
            time_column="timestamp" if time_key is not None else None)
        self._learnt = 0  # records learnt: the probationary period is counted in them
        self._time = 0  # the last record's time, for a record without one

    @classmethod
    def _unit_test_params(cls):
        yield {"config": HTMConfig.small(), "resolution": 0.1, "warmup": 10, "probationary_period": 20}

    def _read(self, x: dict) -> tuple[float, int] | None:
        """The record's (value, time in ns), or ``None`` when it has no usable value."""
        value = x.get(self.value_key)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        if not np.isfinite(value):
            return None
        if self.time_key is None:
            return value, 0
        t = x.get(self.time_key)
        if t is None:
            return value, self._time
        if isinstance(t, _dt.datetime):
            t = int(np.datetime64(t.replace(tzinfo=None), "ns").astype(np.int64))
        try:
            return value, int(t)
        except (TypeError, ValueError):
            return value, self._time

    def learn_one(self, x: dict) -> None:
        record = self._read(x)
        if record is None:
            return
        value, t = record
        self._time = t
        self._learnt += 1
        data = pa.record_batch({"key": [_KEY], "timestamp": pa.array([t], pa.timestamp("ns")),
                                "value": [value]})
        self._detector(Batch(data, source="river", time_column="timestamp"))

    def score_one(self, x: dict) -> float:
        record = self._read(x)
        if record is None or self._learnt < self.probationary_period:
            return 0.0
        raw, reported = self._detector.peek(_KEY, *record)
        return raw if self.score == "raw" else reported
