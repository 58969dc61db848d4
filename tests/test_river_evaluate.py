"""Evaluate gives the numbers of river.evaluate.progressive_val_score, and round-trips."""

from __future__ import annotations

import pyarrow as pa
import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, tree

from connectors.memory import MemorySink, MemorySource
from operators.river import RiverOperator
from operators.river.evaluate import Evaluate, build_metric
from stream import Batch, ConfigError, SchemaError, run
from stream import state as codec


def _engine(data, model, target, names, batch_size=97):
    pipe = RiverOperator(model, target=target) | Evaluate(target=target, metrics=names)
    summary = run(MemorySource(data, batch_size=50), pipe, MemorySink(), batch_size=batch_size)
    (found,) = [v for k, v in summary["metrics"].items() if k.endswith(".Evaluate")]
    return found["overall"]


def _river(data, factory, name):
    return evaluate.progressive_val_score(data, factory(), build_metric(name)).get()


@pytest.mark.parametrize("factory", [
    lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    lambda: tree.HoeffdingTreeClassifier(grace_period=50),
])
def test_classifier_metrics_equal_progressive_val_score(factory):
    data = list(datasets.Phishing())
    names = ["Accuracy", "F1", "ROCAUC", "LogLoss"]
    got = _engine(data, factory(), "y", names)
    for name in names:
        assert got[name] == _river(data, factory, name), name


def test_integer_labels_score_like_river():
    data = list(datasets.synth.Agrawal(seed=3).take(1500))  # labels 0/1

    def factory():
        return preprocessing.StandardScaler() | linear_model.LogisticRegression()

    names = ["Accuracy", "ROCAUC", "LogLoss"]
    got = _engine(data, factory(), "y", names)
    for name in names:
        assert got[name] == _river(data, factory, name), name


def test_regressor_metrics_equal_progressive_val_score():
    data = list(datasets.TrumpApproval())
    names = ["MAE", "RMSE", "R2"]

    def factory():
        return preprocessing.StandardScaler() | linear_model.LinearRegression()

    got = _engine(data, factory(), "y", names, batch_size=13)
    for name in names:
        assert got[name] == _river(data, factory, name), name


def _labelled(n=60):
    keys = ["a", "b", "c"]
    ys = [i % 3 == 0 for i in range(n)]
    preds = [None if i < 3 else (i % 2 == 0) for i in range(n)]
    proba = [None if p is None else (0.8 if p else 0.3) for p in preds]
    return Batch(pa.record_batch({"key": [keys[i % 3] for i in range(n)], "y": ys,
                                  "prediction": pa.array(preds, pa.bool_()),
                                  "proba": pa.array(proba, pa.float64())}), source="labels")


def test_per_key_and_state_round_trip():
    data = _labelled()
    whole = Evaluate(target="y", metrics=["Accuracy", "ROCAUC"])
    whole(data)
    first = Evaluate(target="y", metrics=["Accuracy", "ROCAUC"])
    first(data.slice(0, 25))
    second = Evaluate(target="y", metrics=["Accuracy", "ROCAUC"])
    second.load_state_dict(codec.loads(*codec.dumps(first.state_dict())))
    second(data.slice(25))
    assert second.summary() == whole.summary()
    assert sorted(whole.summary()["per_key"]) == ["a", "b", "c"]
    # per key numbers are the metric over that key's rows only
    acc = metrics.Accuracy()
    for y, p, k in zip(data.numpy("y"), data.column("prediction").to_pylist(), data.keys()):
        if k == "b" and p is not None:
            acc.update(bool(y), p)
    assert whole.summary()["per_key"]["b"]["Accuracy"] == acc.get()


def test_bad_config_and_missing_columns():
    with pytest.raises(ConfigError, match="unknown River metric 'Acuracy'.*Accuracy"):
        Evaluate(target="y", metrics=["Acuracy"])
    with pytest.raises(ConfigError, match="twice"):
        Evaluate(target="y", metrics=["MAE", "MAE"])
    ev = Evaluate(target="y", metrics=["ROCAUC"], proba="score")
    with pytest.raises(SchemaError, match="ROCAUC reads column 'score'"):
        ev(_labelled())
    other = Evaluate(target="y", metrics=["F1"])
    with pytest.raises(Exception, match="Accuracy"):
        other.load_state_dict(Evaluate(target="y", metrics=["Accuracy"]).state_dict())
