"""What the streaming anomaly detectors share: one model per key, scored then taught row by row.

A :class:`KeyedDetector` reads a number column (``value``), keeps one model per stream
key and, for every row in stream order, scores the value against what the key's model
has seen so far and then teaches the model that value (prequential). Batch boundaries
therefore change nothing. Models keep their state as plain values and arrays
(:meth:`KeyModel.state` / :meth:`KeyModel.load`), so checkpoints go through the
pickle-free codec of :mod:`stream.state`.

A model needs the range of its stream's values to quantise or normalise them: from
``value_range={key: (min, max)}`` (NAB tells its detectors each file's min and max,
see :meth:`KeyedDetector.for_nab`), else from the first ``warmup`` values of the key
(its rows score 0 while it waits).

Example (a toy model scoring the jump from the previous value):
    >>> import numpy as np, pyarrow as pa
    >>> from stream import Batch
    >>> class Jump(KeyModel):
    ...     def __init__(self, lo, hi, **_):
    ...         self.scale, self.last = (hi - lo) or 1.0, None
    ...     def score_learn(self, value):
    ...         score = 0.0 if self.last is None else abs(value - self.last) / self.scale
    ...         self.last = value
    ...         return score
    ...     def state(self):
    ...         return {"scale": self.scale, "last": self.last}
    ...     def load(self, state):
    ...         self.scale, self.last = state["scale"], state["last"]
    >>> class JumpDetector(KeyedDetector):
    ...     model = Jump
    >>> det = JumpDetector(value_range={"a": (0.0, 10.0)})
    >>> batch = Batch(pa.record_batch({"key": ["a", "a", "a"], "value": [1.0, 3.0, 2.0]}))
    >>> det(batch).numpy("anomaly_score").tolist()
    [0.0, 0.2, 0.1]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from stream import Batch, Operator, spill
from stream.errors import CheckpointError, ConfigError
from stream.options import at_least


class KeyModel:
    """One key's model. Subclasses take ``(lo, hi, **params)`` (the value range, kept as
    :attr:`range`, and the detector's parameters) and implement :meth:`score_learn`,
    :meth:`state`, :meth:`load`."""

    range: tuple[float, float] = (0.0, 1.0)

    def score_learn(self, value: float) -> float:
        """The anomaly score of ``value`` given the past, then learn it."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


#: value range per key of :func:`unit_test_stream` (detectors that need one)
UNIT_TEST_RANGE = {"a": [0.0, 10.0], "b": [0.0, 10.0]}


def unit_test_stream(n: int = 48) -> Batch:
    """Two keys of a noisy sine in [1, 9]: the contract checks' input for these detectors."""
    import pyarrow as pa

    rng = np.random.default_rng(3)
    keys = np.where(np.arange(n) % 3 == 0, "b", "a")
    values = np.round(5 + 4 * np.sin(np.arange(n) / 2.0) + rng.normal(0, 0.5, n), 3)
    return Batch(pa.record_batch({"key": keys, "value": values}), source="test")


class KeyedDetector(Operator):
    """Base operator: one :attr:`model` per key, prequential, over ``value_column``.

    Subclasses set :attr:`model` and list the constructor parameters that go to each
    model in :attr:`model_params`. ``max_resident_keys``: at most this many keys' models in
    memory, the least recently used spilled to disk (:mod:`stream.spill`); ``None``: off.
    """

    requires = {"value": "number"}
    model: ClassVar[type[KeyModel]] = KeyModel
    model_params: ClassVar[tuple[str, ...]] = ()
    option_checks: ClassVar[dict[str, Any]] = {"warmup": at_least(2)}

    def __init__(self, *, value_range: dict[str, list[float]] | None = None, warmup: int = 100,
                 value_column: str = "value", score_column: str = "anomaly_score",
                 max_resident_keys: int | None = None) -> None:
        if int(warmup) < 2:
            raise ConfigError(f"{type(self).__name__}: warmup must be >= 2, got {warmup}")
        self.value_range = {k: (float(v[0]), float(v[1])) for k, v in (value_range or {}).items()}
        for key, (lo, hi) in self.value_range.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ConfigError(f"{type(self).__name__}: value_range of key {key!r} must be "
                                  f"[min, max] with min <= max, got {[lo, hi]}")
        self.warmup, self.value_column, self.score_column = int(warmup), value_column, score_column
        self.max_resident_keys = spill.check_limit(max_resident_keys, type(self).__name__)
        self.models: dict[Any, KeyModel] = {}
        self.pending: dict[Any, list[float]] = {}   # warm-up values of keys without a range

    @classmethod
    def for_nab(cls, streams: Mapping[str, Any], seed: int = 0, **kwargs: Any) -> KeyedDetector:
        """The NAB setting: each file's min and max as its value range (``streams`` maps
        names to objects with ``min``, ``max`` and ``rows``, as :class:`operators.nab.NABStream`).
        The detectors here are deterministic: ``seed`` is accepted and unused."""
        del seed
        return cls(value_range={k: [s.min, s.max] for k, s in streams.items()}, **kwargs)

    def required_columns(self) -> dict[str, str]:
        return {self.value_column: "number"}

    def params(self) -> dict[str, Any]:
        """The parameters every key's model is built with."""
        return {name: getattr(self, name) for name in self.model_params}

    def _model(self, key: Any, value: float) -> KeyModel | None:
        model = self.models.get(key)
        if model is not None:
            return model
        if key in self.value_range:
            lo, hi = self.value_range[key]
        else:
            seen = self.pending.setdefault(key, [])
            seen.append(value)
            if len(seen) < self.warmup:
                return None
            lo, hi = min(seen), max(seen)
            del self.pending[key]
        model = self.models[key] = self._build(lo, hi)
        return model

    def _build(self, lo: float, hi: float) -> KeyModel:
        model = self.model(lo, hi, **self.params())
        model.range = (lo, hi)
        return model

    def process(self, batch: Batch) -> Batch:
        values = np.asarray(batch.numpy(self.value_column), dtype=np.float64)
        scores = np.zeros(len(values))
        for key, idx in batch.key_groups().items():
            for i in idx.tolist():
                value = float(values[i])
                model = self._model(key, value)
                scores[i] = model.score_learn(value) if model is not None else 0.0
        return batch.with_columns({self.score_column: scores})

    # -- per-key state: spilling idle keys (stream.spill) ------------------------------
    def resident_keys(self) -> list[Any]:
        return [*self.models, *self.pending]

    def key_state(self, key: Any) -> dict[str, Any]:
        if key in self.models:
            model = self.models[key]
            return {"range": list(model.range), "model": model.state()}
        return {"pending": list(self.pending[key])}

    def evict_key(self, key: Any) -> None:
        if self.models.pop(key, None) is None:
            del self.pending[key]

    def restore_key(self, key: Any, state: dict[str, Any]) -> None:
        if "model" in state:
            lo, hi = state["range"]
            model = self._build(float(lo), float(hi))
            model.load(state["model"])
            self.models[key] = model
        else:
            self.pending[key] = [float(v) for v in state["pending"]]

    # -- checkpoints: keys as a list (any key type), each model's plain state ----------
    def state_dict(self) -> dict[str, Any]:
        keys = list(self.models)
        waiting = list(self.pending)
        return {"keys": keys, "models": [self.models[k].state() for k in keys],
                "ranges": [list(self.models[k].range) for k in keys],
                "waiting": waiting, "pending": [list(self.pending[k]) for k in waiting]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            models: dict[Any, KeyModel] = {}
            for key, (lo, hi), st in zip(state["keys"], state["ranges"], state["models"], strict=True):
                model = self._build(float(lo), float(hi))
                model.load(st)
                models[key] = model
            pending = {k: [float(v) for v in vs] for k, vs in zip(state["waiting"], state["pending"], strict=True)}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{type(self).__name__}: malformed checkpoint state: {exc!r}") from exc
        self.models, self.pending = models, pending
