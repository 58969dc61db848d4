"""Any River estimator as an operator: detectors, classifiers, regressors, transformers.

Prequential, like ``river.evaluate.progressive_val_score``: for each event the model
scores or predicts first, then learns from it. Events are handed to River one at a time
in stream order (per key with ``per_key=True``: one ``clone()`` of the model per key),
so any batch size gives the outputs of batch size 1; batching only amortises the Arrow
↔ Python conversion, done once per batch column by column.

Outputs (appended columns):

- anomaly detectors: ``anomaly_score`` (plus ``is_anomaly`` for anomaly filters such as
  ``anomaly.QuantileFilter``);
- classifiers: ``prediction`` (the label ``predict_one`` gives, typed like the target)
  and ``proba``: the probability of ``positive`` (default: ``True`` — i.e. ``1`` —
  for a boolean or integer target, as River's ROCAUC reads it, else the predicted
  label); null before the model has seen a label, where
  ``progressive_val_score`` skips the event too;
- regressors: ``prediction``;
- transformers: one column per output feature, named ``prefix + feature``; the output
  features are fixed by the first event (or by ``outputs=[...]``).

Features are the ``features=[...]`` columns, by default every numeric column except the
key, time and target columns and this operator's outputs. Models are checkpointed
through :mod:`operators.river.state` (no pickle; RNG state included): loading one runs no
code from it, and a checkpoint whose model differs from the configured one in a class,
a parameter or a pipeline step is refused (:mod:`operators.river.shape`).

Example:
    >>> import numpy as np, pyarrow as pa
    >>> from river import linear_model, preprocessing
    >>> from stream import Batch
    >>> from operators.river import RiverOperator
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=200)
    >>> data = Batch(pa.record_batch({"x": x, "y": x + rng.normal(size=200) * 0.1 > 0}))
    >>> op = RiverOperator(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    ...                    target="y")
    >>> out = op(data)
    >>> out.column_names
    ['x', 'y', 'prediction', 'proba']
    >>> out.column("prediction")[0].as_py(), out.column("proba")[0].as_py()  # nothing learnt yet
    (False, 0.5)
    >>> float(np.mean(out.numpy("prediction")[100:] == data.numpy("y")[100:])) > 0.9
    True
    >>> hst = RiverOperator.from_config(model="anomaly.HalfSpaceTrees",
    ...                                 params={"seed": 1, "n_trees": 5})
    >>> hst(data).column_names[-1]
    'anomaly_score'
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
from river import base, compose

from stream import spill
from stream.batch import Batch
from stream.errors import BadEventError, CheckpointError, ConfigError
from stream.operator import Operator
from stream.options import check_options, show
from stream.testing import UnitTest

from . import shape as river_shape
from . import state as river_state

log = logging.getLogger("hebbstream")

Step = Callable[[dict, Any], Any]


def build_model(spec: Any, params: dict[str, Any] | None = None, where: str = "model") -> Any:
    """A River estimator from a name under ``river.`` (``"anomaly.HalfSpaceTrees"``), a
    ``{"model": name, "params": {...}}`` table, or a list of those (a pipeline).

    Parameter values may themselves be such tables (``optimizer = {model = "optim.SGD"}``).

    >>> pipe = build_model([{"model": "preprocessing.MinMaxScaler"},
    ...                     {"model": "anomaly.HalfSpaceTrees", "params": {"seed": 3}}])
    >>> list(pipe.steps), pipe["HalfSpaceTrees"].seed
    (['MinMaxScaler', 'HalfSpaceTrees'], 3)
    """
    if isinstance(spec, base.Base):
        return spec
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list is not a pipeline")
        if params:
            raise ConfigError(f"{where}: a pipeline takes its parameters per step")
        return compose.Pipeline(*[build_model(s, where=f"{where}[{i}]") for i, s in enumerate(spec)])
    if isinstance(spec, dict):
        unknown = set(spec) - {"model", "params"}
        if "model" not in spec or unknown:
            raise ConfigError(f"{where}: expected a table with 'model' (and 'params'), got {sorted(spec)}")
        return build_model(spec["model"], spec.get("params"), where)
    if not isinstance(spec, str) or "." not in spec:
        raise ConfigError(f"{where}: name a River class as 'module.Class' (e.g. "
                          f"'anomaly.HalfSpaceTrees'), got {spec!r}")
    module, _, name = spec.removeprefix("river.").rpartition(".")
    try:
        cls = getattr(importlib.import_module(f"river.{module}"), name)
    except (ImportError, AttributeError):
        raise ConfigError(f"{where}: river.{module}.{name} does not exist in River "
                          f"{importlib.import_module('river').__version__}") from None
    kwargs = {k: build_model(v, where=f"{where}.{k}") if isinstance(v, dict) and "model" in v else v
              for k, v in (params or {}).items()}
    _check_params(cls, kwargs, f"{where} (river.{module}.{name})")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: cannot build river.{module}.{name}({', '.join(kwargs)}): {exc}") from exc


def _check_params(cls: type, kwargs: dict[str, Any], where: str) -> None:
    """Refuse a parameter of the wrong kind before the model is built.

    River checks few of its parameters, so ``n_trees = "x"`` would only fail at the first
    event (or send every event to the dead-letter sink). Annotated parameters are checked
    against their annotation (:func:`stream.options.check_options`); an unannotated one
    against the kind of its default: a number takes a number, a flag a boolean, a text a
    string (a default of ``None`` says nothing, so anything goes).

    >>> from river import anomaly
    >>> _check_params(anomaly.HalfSpaceTrees, {"n_trees": "x"}, "model")
    Traceback (most recent call last):
    stream.errors.ConfigError: model key 'n_trees': expected a number (its default is 10), got "x"
    """
    check_options(cls, kwargs, where, only=kwargs)
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # an extension type without a signature
        return
    for key, value in kwargs.items():
        p = parameters.get(key)
        if p is None or p.annotation is not inspect.Parameter.empty or isinstance(value, base.Base):
            continue
        default = p.default
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, (int, float)):
            ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            raise ConfigError(f"{where} key {key!r}: expected {kind} (its default is {default!r}), got {show(value)}")


def _kind(model: Any) -> str:
    if isinstance(model, base.AnomalyFilter):
        return "filter"
    if isinstance(model, base.AnomalyDetector):
        return "detector"
    if isinstance(model, base.Classifier):
        return "classifier"
    if isinstance(model, base.Regressor):
        return "regressor"
    if isinstance(model, base.Transformer):
        return "transformer"
    raise ConfigError(f"{model!r} is not a River anomaly detector, classifier, regressor or "
                      "transformer")


def _text_hint(batch: Batch, features: list[str]) -> str:
    """Why a numeric model may have met a string: name the text-typed feature columns."""
    text = [f for f in features if pa.types.is_string(batch.schema.field(f).type)
            or pa.types.is_large_string(batch.schema.field(f).type)]
    if not text:
        return ""
    return (f" — feature column(s) {text} hold text; if they should be numbers, a cell that "
            "does not parse made the whole column text: set column_types on the source "
            f"(e.g. {{{text[0]!r}: 'float64'}}) and its error names the bad cell")


def _final_step(model: Any) -> Any:
    while isinstance(model, compose.Pipeline):
        model = list(model.steps.values())[-1]
    return model


def _stepper(kind: str, model: Any, labels_from_proba: bool) -> Step:
    """One event, prequentially: the output for ``x``, then learn from ``(x, y)``.

    Methods are bound once here so the per-event call does no attribute lookups.
    """
    learn = model.learn_one
    if kind == "detector":
        score = model.score_one
        if model._supervised:
            def step(x, y):
                s = score(x)
                learn(x, y)
                return s
        else:
            def step(x, y):
                s = score(x)
                learn(x)
                return s
    elif kind == "filter":
        score, classify = model.score_one, model.classify

        def step(x, y):
            s = score(x)
            flag = classify(s)
            learn(x)
            return s, flag
    elif kind == "classifier":
        proba = model.predict_proba_one
        if labels_from_proba:  # predict_one is argmax of predict_proba_one: call it once
            def step(x, y):
                p = proba(x)
                learn(x, y)
                return p
        else:
            predict = model.predict_one
            has_proba = type(_final_step(model)).predict_proba_one is not base.Classifier.predict_proba_one

            def step(x, y):
                out = predict(x), proba(x) if has_proba else None
                learn(x, y)
                return out
    elif kind == "regressor":
        predict = model.predict_one

        def step(x, y):
            p = predict(x)
            learn(x, y)
            return p
    else:
        transform = model.transform_one
        if model._supervised:
            def step(x, y):
                t = transform(x)
                learn(x, y)
                return t
        else:
            def step(x, y):
                t = transform(x)
                learn(x)
                return t
    return step


class RiverOperator(Operator):
    """Run a River estimator prequentially over the stream.

    Args:
        model: a River estimator or pipeline (see :func:`build_model` for names).
        features: feature columns; default: every numeric column except key, time,
            target and outputs (fixed by the first batch).
        target: the label / target column (needed by classifiers and regressors).
        per_key: one clone of the model per stream key.
        prediction / proba / score: names of the output columns (``proba=None``: none).
        positive: the class whose probability goes in ``proba`` (default: ``True`` for
            a boolean or integer target, else the predicted label).
        prefix / outputs: transformer output columns are ``prefix + name`` for the
            ``outputs`` names (default: the keys of the first transformed event).
        max_resident_keys: with ``per_key``, at most this many keys' models in memory, the
            least recently used spilled to disk (:mod:`stream.spill`); ``None``: off.
    """

    def __init__(self, model: Any, *, features: list[str] | None = None, target: str | None = None,
                 per_key: bool = False, prediction: str = "prediction", proba: str | None = "proba",
                 score: str = "anomaly_score", positive: Any = None, prefix: str = "transformed_",
                 outputs: list[str] | None = None, max_resident_keys: int | None = None):
        self.model = build_model(model)
        self.kind = _kind(self.model)
        self.target = target
        if self.kind in ("classifier", "regressor") and target is None:
            raise ConfigError(f"river {self.kind} {self.model!r} needs target= (the label column)")
        if self.model._supervised and target is None:
            raise ConfigError(f"river model {self.model!r} is supervised and needs target=")
        if isinstance(features, str):  # one column name, not its letters
            features = [features]
        self.features = list(features) if features is not None else None
        self._explicit_features = features is not None
        self.per_key = per_key
        self.max_resident_keys = spill.check_limit(max_resident_keys, "RiverOperator")
        if self.max_resident_keys is not None and not per_key:
            raise ConfigError("RiverOperator: max_resident_keys spills per-key models and needs per_key=true")
        self.prediction_col, self.proba_col, self.score_col = prediction, proba, score
        self.positive = positive
        self.prefix = prefix
        self.outputs = list(outputs) if outputs is not None else None
        self._labels_from_proba = self.kind == "classifier" and \
            type(_final_step(self.model)).predict_one is base.Classifier.predict_one
        self.models: dict[Any, Any] = {}
        self._steps: dict[Any, Step] = {}
        self._builder: tuple[tuple[str, ...], Callable[..., dict]] | None = None
        self._step = _stepper(self.kind, self.model, self._labels_from_proba)

    @classmethod
    def from_config(cls, model: Any, params: dict[str, Any] | None = None, **kwargs: Any) -> RiverOperator:
        """Build from a pipeline file: ``model = "anomaly.HalfSpaceTrees"``, ``params = {...}``
        or ``model = [{model = ...}, ...]`` for a River pipeline; other keys as in ``__init__``."""
        return cls(build_model(model, params), **kwargs)

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        hst = {"model": "anomaly.HalfSpaceTrees", "params": {"n_trees": 3, "height": 4, "window_size": 10, "seed": 1}}
        scaler = {"model": "preprocessing.StandardScaler"}
        xs = {"features": ["x1", "x2"]}
        return [UnitTest(params, _unit_test_stream) for params in (
            {"model": [{"model": "preprocessing.MinMaxScaler"}, hst], **xs},
            {"model": hst, "target": "label", "per_key": True},
            {"model": {"model": "anomaly.QuantileFilter", "params": {
                "anomaly_detector": {"model": "anomaly.OneClassSVM", "params": {"nu": 0.2}}, "q": 0.9}}, **xs},
            {"model": [scaler, {"model": "linear_model.LogisticRegression"}], **xs, "target": "label"},
            {"model": {"model": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 10}}, **xs,
             "target": "label", "per_key": True},
            {"model": "naive_bayes.GaussianNB", **xs, "target": "label"},
            {"model": [scaler, {"model": "linear_model.LinearRegression"}], **xs, "target": "value"},
            {"model": scaler, **xs, "per_key": True},
        )]

    @property
    def name(self) -> str:
        return f"River[{type(_final_step(self.model)).__name__}]"

    # -- columns ------------------------------------------------------------------------
    def _output_names(self) -> set[str]:
        names = {self.prediction_col, self.proba_col, self.score_col, "is_anomaly"}
        return names | {self.prefix + o for o in self.outputs or []}

    def required_columns(self) -> dict[str, str]:
        # Default features are whatever numeric columns the stream has: a stream without
        # one of them is not an error, but their values are still checked row by row.
        cols = {f: "any" for f in self.features or []} \
            if self._explicit_features or getattr(self, "_checking_rows", False) else {}
        if self.target is not None:
            cols[self.target] = "any"
        return cols

    def check_rows(self, batch: Batch):
        if self.features is None:
            self._resolve_features(batch)
        self._checking_rows = True
        try:
            return super().check_rows(batch)
        finally:
            self._checking_rows = False

    def _resolve_features(self, batch: Batch) -> None:
        skip = {batch.key_column, batch.time_column, self.target, *self._output_names()}
        self.features = [f.name for f in batch.schema if f.name not in skip and (
            pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))]
        if not self.features:
            raise ConfigError(f"{batch.source or '<stream>'}: {self.name} found no numeric feature "
                              f"column in {batch.column_names}; pass features=[...]")
        text = [f.name for f in batch.schema if f.name not in skip and f.name not in self.features]
        if text:
            # a CSV column with one unparsable cell is read as text and would otherwise
            # disappear from the features without a word
            log.warning("%s: %s uses the numeric columns %s; not used (not numeric): %s — pass "
                        "features=[...] to choose, or column_types on the source if they should "
                        "be numbers", batch.source or "<stream>", self.name, self.features, text)

    # -- the loop --------------------------------------------------------------------------
    def process(self, batch: Batch) -> Batch:
        # Columns become Python lists once per batch; each event's feature dict is built
        # just before River sees it, so it is freed (and its memory reused) right after.
        xs = map(self._row_builder(), *[batch.numpy(f).tolist() for f in self.features])
        ys = batch.numpy(self.target).tolist() if self.target is not None else repeat(None)
        out: list = []
        append = out.append
        try:
            if not self.per_key:
                step = self._step
                for x, y in zip(xs, ys):
                    append(step(x, y))
            else:
                steps = self._steps
                for x, y, k in zip(xs, ys, batch.keys().tolist()):
                    step = steps.get(k)
                    if step is None:
                        step = steps[k] = self._model_step(k)
                    append(step(x, y))
        except Exception as exc:
            # out holds one result per event done, so len(out) is the failing event
            i = len(out)
            raise BadEventError(
                f"River {type(_final_step(self.model)).__name__} failed on this event "
                f"(features {self.features}): {type(exc).__name__}: {exc}{_text_hint(batch, self.features)}",
                source=batch.source, offset=int(batch.positions()[i]),
                key=batch.keys()[i] if self.per_key else None, operator=self.name) from exc
        return batch.with_columns(self._columns(out, batch))

    def _row_builder(self) -> Callable[..., dict]:
        """A function of one value per feature returning the event's feature dict.

        It is generated as ``lambda a0, a1: {'x': a0, 'z': a1}``: a dict display with
        constant keys is the fastest way CPython builds a dict (2-3x ``dict(zip(...))``),
        and this is the only per-event work the engine adds to River's own loop. Names
        enter the source through ``repr``, so any column name is a safe literal.
        """
        names = tuple(self.features)
        if self._builder is None or self._builder[0] != names:
            args = ", ".join(f"a{i}" for i in range(len(names)))
            body = ", ".join(f"{name!r}: a{i}" for i, name in enumerate(names))
            self._builder = (names, eval(f"lambda {args}: {{{body}}}", {}))  # noqa: S307
        return self._builder[1]

    def _model_step(self, key: Any) -> Step:
        model = self.models.get(key)
        if model is None:
            model = self.models[key] = self.model.clone()
        return _stepper(self.kind, model, self._labels_from_proba)

    def _columns(self, out: list, batch: Batch) -> dict[str, Any]:
        if self.kind == "detector":
            return {self.score_col: np.asarray(out, dtype=np.float64)}
        if self.kind == "filter":
            return {self.score_col: np.asarray([s for s, _ in out], dtype=np.float64),
                    "is_anomaly": np.asarray([bool(f) for _, f in out])}
        if self.kind == "regressor":
            return {self.prediction_col: pa.array(out, type=pa.float64())}
        if self.kind == "classifier":
            return self._class_columns(out, batch)
        return self._transformed(out, batch)

    def _class_columns(self, out: list, batch: Batch) -> dict[str, Any]:
        label_type = batch.column(self.target).type
        if self._labels_from_proba:
            probas = out
            labels = [max(p, key=p.get) if p else None for p in out]
        else:
            labels = [lab for lab, _ in out]
            probas = [p for _, p in out]
        try:
            predicted = pa.array(labels, type=label_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # a binary classifier predicts True/False for 0/1 targets (River compares them equal)
            try:
                predicted = pa.array(labels)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise BadEventError(f"predicted labels do not fit in one column like {self.target!r} "
                                    f"({label_type}): {exc}", source=batch.source,
                                    operator=self.name) from exc
        cols = {self.prediction_col: predicted}
        if self.proba_col is not None:
            positive = self.positive
            if positive is None and (pa.types.is_boolean(label_type) or pa.types.is_integer(label_type)):
                positive = True  # P(True), which is P(1) for 0/1 labels: what River's ROCAUC reads
            if positive is None:
                values = [p.get(lab, 0.0) if p else None for p, lab in zip(probas, labels)]
            else:
                values = [p.get(positive, 0.0) if p else None for p in probas]
            cols[self.proba_col] = pa.array(values, type=pa.float64())
        return cols

    def _transformed(self, out: list[dict], batch: Batch) -> dict[str, Any]:
        if self.outputs is None:
            if not out:
                return {}
            self.outputs = list(out[0])
        known = set(self.outputs)
        for i, d in enumerate(out):
            extra = d.keys() - known
            if extra:
                raise BadEventError(
                    f"the transformer produced feature(s) {sorted(map(str, extra))} beyond the output "
                    f"columns {self.outputs} fixed by the first event; list them all in outputs=[...]",
                    source=batch.source, offset=int(batch.positions()[i]), operator=self.name)
        try:
            return {self.prefix + str(o): pa.array([d.get(o) for d in out], type=pa.float64())
                    for o in self.outputs}
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise BadEventError(f"transformer outputs must be numbers: {exc}", source=batch.source,
                                operator=self.name) from exc

    # -- per-key state: spilling idle keys (stream.spill) -----------------------------------
    def resident_keys(self) -> list[Any]:
        return list(self.models) if self.per_key else []

    def key_state(self, key: Any) -> dict[str, Any]:
        try:
            return {"model": river_state.encode(self.models[key])}
        except CheckpointError as exc:
            raise CheckpointError(f"{self.name}: {exc}") from exc

    def evict_key(self, key: Any) -> None:
        del self.models[key]
        self._steps.pop(key, None)

    def restore_key(self, key: Any, state: dict[str, Any]) -> None:
        """Restore one key's model; like a checkpoint's, it must match the configured model."""
        if not self.per_key:
            raise CheckpointError(f"{self.name}: per-key state for a model that is not per key")
        model = river_state.decode(state["model"])
        self._check_shape(model, f"the model of key {key!r}")
        self.models[key] = model

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        try:
            model = river_state.encode(self.models if self.per_key else self.model)
        except CheckpointError as exc:
            raise CheckpointError(f"{self.name}: {exc}") from exc
        return {"models" if self.per_key else "model": model, "features": self.features, "outputs": self.outputs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the models of a checkpoint; they must have the classes, parameters and
        pipeline structure of the configured model (:mod:`operators.river.shape`)."""
        slot = "models" if self.per_key else "model"
        if not isinstance(state, dict) or slot not in state:
            found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"{self.name}: the checkpoint has {found}, expected {slot!r} "
                                  f"(per_key={self.per_key})")
        features, outputs = state.get("features"), state.get("outputs")
        for key, names in (("features", features), ("outputs", outputs)):
            if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise CheckpointError(f"{self.name}: the checkpoint's {key} are not a list of column names")
        if self._explicit_features and features is not None and features != self.features:
            raise CheckpointError(f"{self.name}: the checkpoint's features {features} are not the configured "
                                  f"{self.features}")
        try:
            restored = river_state.decode(state[slot])
        except CheckpointError as exc:
            raise CheckpointError(f"{self.name}: {exc}") from exc
        if self.per_key:
            if not isinstance(restored, dict):
                raise CheckpointError(f"{self.name}: the checkpoint does not hold per-key models")
            for key, model in restored.items():
                self._check_shape(model, f"the model of key {key!r}")
            self.models, self._steps = restored, {}
        else:
            self._check_shape(restored, "the model")
            self.model = restored
            self._step = _stepper(self.kind, restored, self._labels_from_proba)
        self.features = features or self.features
        self.outputs = outputs or self.outputs

    def _check_shape(self, restored: Any, what: str) -> None:
        try:
            diff = river_shape.difference(self.model, restored)
        except Exception as exc:  # noqa: BLE001 - a malformed object is a mismatch, not a crash
            diff = f"it cannot be compared: {type(exc).__name__}: {exc}"
        if diff is not None:
            raise CheckpointError(f"{self.name}: {what} in the checkpoint does not match the configured "
                                  f"model: {diff}")


def _unit_test_stream(n: int = 60, seed: int = 0) -> Batch:
    """Keys, two features, a boolean label and a numeric target: input for the contract checks."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.uniform(size=n)
    return Batch(pa.record_batch({
        "key": np.array(["a", "b", "c"])[rng.integers(0, 3, n)], "ts": np.arange(n, dtype=np.int64),
        "x1": x1, "x2": x2, "label": x1 + 0.3 * rng.normal(size=n) > 0,
        "value": 2 * x1 - x2 + 0.1 * rng.normal(size=n),
    }), source="contract")
