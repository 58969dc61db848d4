"""Prequential River metrics over a stream that carries labels or targets.

Placed after a predicting operator, :class:`Evaluate` updates River metrics with each
event's target and prediction, overall and per key, exactly as
``river.evaluate.progressive_val_score`` does: metrics that need labels (Accuracy, F1,
MAE, ...) read the ``prediction`` column, metrics that need scores (ROCAUC, LogLoss)
read the ``proba`` column (probability of ``True``); events without a prediction (a
classifier that has not seen a label yet) are skipped, as River skips them. The stream
passes through unchanged; :meth:`summary` goes into the run summary under ``metrics``.

Example:
    >>> import pyarrow as pa
    >>> from stream import Batch
    >>> from operators.river.evaluate import Evaluate
    >>> ev = Evaluate(target="y", metrics=["Accuracy", "ROCAUC"])
    >>> _ = ev(Batch(pa.record_batch({"key": ["a", "a", "b", "b"], "y": [True, False, True, True],
    ...                               "prediction": [True, True, None, True],
    ...                               "proba": [0.9, 0.6, None, 0.8]})))
    >>> s = ev.summary()
    >>> s["overall"]["Accuracy"], s["per_key"]["a"]["Accuracy"], s["per_key"]["b"]["Accuracy"]
    (0.6666666666666666, 0.5, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from river import metrics as river_metrics

from stream.batch import Batch
from stream.errors import CheckpointError, ConfigError, SchemaError
from stream.operator import Operator
from stream.testing import UnitTest

from . import shape as river_shape
from . import state as river_state


def build_metric(spec: Any) -> Any:
    """A River metric from its name in ``river.metrics`` or ``{"metric": name, "params": {...}}``.

    >>> build_metric("MAE"), build_metric({"metric": "FBeta", "params": {"beta": 2}})
    (MAE: 0., FBeta: 0.00%)
    """
    if isinstance(spec, river_metrics.base.Metric):
        return spec
    params: dict[str, Any] = {}
    if isinstance(spec, dict):
        params = spec.get("params", {})
        spec = spec.get("metric")
    cls = getattr(river_metrics, str(spec), None)
    if not isinstance(cls, type) or not issubclass(cls, river_metrics.base.Metric):
        known = sorted(n for n in dir(river_metrics) if isinstance(getattr(river_metrics, n), type)
                       and issubclass(getattr(river_metrics, n), river_metrics.base.Metric)
                       and not n.startswith("_"))
        raise ConfigError(f"unknown River metric {spec!r}; known: {', '.join(known)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"cannot build metric {spec}({', '.join(params)}): {exc}") from exc


class Evaluate(Operator):
    """Update River metrics prequentially, overall and per key.

    Args:
        target: the column with the true label or value.
        metrics: metric names in ``river.metrics`` (``"Accuracy"``, ``"F1"``, ``"MAE"``,
            ``"ROCAUC"``, ...) or ``{"metric": name, "params": {...}}``.
        prediction: column holding predicted labels / values.
        proba: column holding the probability of ``True`` (for ROCAUC, LogLoss).
        per_key: also keep one set of metrics per stream key.
    """

    def __init__(self, target: str, metrics: list[Any], *, prediction: str = "prediction",
                 proba: str = "proba", per_key: bool = True):
        if not metrics:
            raise ConfigError("Evaluate needs at least one metric")
        self.target, self.prediction_col, self.proba_col = target, prediction, proba
        self.metrics = [build_metric(m) for m in metrics]
        self.names = [type(m).__name__ for m in self.metrics]
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"Evaluate: metrics {self.names} name one metric twice")
        self.per_key = per_key
        self.keyed: dict[Any, list[Any]] = {}

    @classmethod
    def from_config(cls, **kwargs: Any) -> Evaluate:
        return cls(**kwargs)

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        return [UnitTest({"target": "label", "metrics": ["Accuracy", "ROCAUC"]}, _unit_test_stream),
                UnitTest({"target": "label", "metrics": ["F1"], "per_key": False}, _unit_test_stream)]

    def required_columns(self) -> dict[str, str]:
        return {self.target: "any"}

    def _input(self, metric: Any) -> str:
        # regression metrics have no requires_labels: they read predictions
        return self.prediction_col if getattr(metric, "requires_labels", True) else self.proba_col

    def validate_schema(self, schema, source: str = "") -> None:
        super().validate_schema(schema, source)
        for m in self.metrics:
            col = self._input(m)
            if schema.get_field_index(col) < 0:
                raise SchemaError(f"{source or '<stream>'}: Evaluate metric {type(m).__name__} reads "
                                  f"column {col!r}, the stream has {schema.names}")

    def process(self, batch: Batch) -> Batch:
        ys = batch.numpy(self.target).tolist()
        inputs = {col: batch.column(col).to_pylist() for col in {self._input(m) for m in self.metrics}}
        keys = batch.keys().tolist() if self.per_key and batch.key_column in batch else None
        for j, metric in enumerate(self.metrics):
            update = metric.update
            preds = inputs[self._input(metric)]
            if keys is None:
                for y, p in zip(ys, preds):
                    if p is not None:
                        update(y, p)
                continue
            keyed = self.keyed
            for y, p, k in zip(ys, preds, keys):
                if p is not None:
                    update(y, p)
                    own = keyed.get(k)
                    if own is None:
                        own = keyed[k] = [m.clone() for m in self.metrics]
                    own[j].update(y, p)
        return batch

    def summary(self) -> dict[str, Any]:
        """``{"overall": {name: value}, "per_key": {key: {name: value}}}``."""
        return {"overall": {n: m.get() for n, m in zip(self.names, self.metrics)},
                "per_key": {str(k): {n: m.get() for n, m in zip(self.names, ms)}
                            for k, ms in self.keyed.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"metrics": river_state.encode({"overall": self.metrics, "keyed": self.keyed})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the metrics; each must have the class and parameters of the configured one."""
        if not isinstance(state, dict) or "metrics" not in state:
            raise CheckpointError("Evaluate: the checkpoint holds no metrics")
        try:
            restored = river_state.decode(state["metrics"])
        except CheckpointError as exc:
            raise CheckpointError(f"Evaluate: {exc}") from exc
        overall = restored.get("overall") if isinstance(restored, dict) else None
        keyed = restored.get("keyed") if isinstance(restored, dict) else None
        if not isinstance(overall, list) or not isinstance(keyed, dict):
            raise CheckpointError("Evaluate: the checkpoint does not hold overall and per-key metrics")
        for where, metrics in [("overall", overall), *((f"key {k!r}", ms) for k, ms in keyed.items())]:
            try:
                diff = river_shape.difference(self.metrics, metrics, "metrics") if isinstance(metrics, list) \
                    else "metrics are not a list"
            except Exception as exc:  # noqa: BLE001 - a malformed metric is a mismatch, not a crash
                diff = f"they cannot be compared: {type(exc).__name__}: {exc}"
            if diff is not None:
                got = [type(m).__name__ for m in metrics] if isinstance(metrics, list) else None
                raise CheckpointError(f"Evaluate: the checkpoint holds metrics {got} ({where}), this pipeline "
                                      f"{self.names}: {diff}")
        self.metrics, self.keyed = overall, keyed


def _unit_test_stream(n: int = 60, seed: int = 0) -> Batch:
    """Labels and targets with a model's predictions beside them: input for the contract checks."""
    rng = np.random.default_rng(seed)
    label = rng.uniform(size=n) > 0.5
    proba = np.clip(label * 0.6 + rng.uniform(size=n) * 0.4, 0, 1)
    return Batch(pa.record_batch({
        "key": np.array(["a", "b"])[rng.integers(0, 2, n)], "label": label,
        "prediction": proba > 0.5, "proba": proba,
    }), source="contract")
