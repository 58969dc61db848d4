"""The River wrapper scores like the operator, follows River's score-then-learn order and
passes River's own checks (``river.checks``) that apply to it."""

from __future__ import annotations

import datetime as dt
import pickle

import numpy as np
import pyarrow as pa
import pytest
from river import anomaly, checks, evaluate, metrics, preprocessing
from river.base import AnomalyDetector

from operators.htm import HTMDetector
from operators.htm.model import HTMConfig
from operators.htm.river_wrapper import HTMAnomalyDetector
from stream import Batch


def _records(n=60):
    t0 = dt.datetime(2024, 1, 1)
    rng = np.random.default_rng(1)
    return [{"value": float(np.sin(i / 4) + 0.1 * rng.normal()),
             "timestamp": t0 + dt.timedelta(minutes=5 * i)} for i in range(n)]


@pytest.mark.parametrize("score", ["likelihood", "raw"])
def test_wrapper_scores_equal_the_operator(score):
    recs = _records()
    model = HTMAnomalyDetector(config=HTMConfig.small(), resolution=0.1, probationary_period=20,
                               score=score)
    assert isinstance(model, AnomalyDetector)
    got = []
    for x in recs:
        got.append(model.score_one(x))
        model.learn_one(x)
    ts = np.array([np.datetime64(r["timestamp"], "ns") for r in recs])
    data = pa.record_batch({"key": ["river"] * len(recs), "timestamp": pa.array(ts),
                            "value": [r["value"] for r in recs]})
    det = HTMDetector(HTMConfig.small(), resolution=0.1, probationary_period=20, device="numpy")
    out = det(Batch(data, time_column="timestamp"))
    want = out.numpy("anomaly_score" if score == "raw" else "anomaly_likelihood")
    np.testing.assert_allclose(got[20:], want[20:], rtol=0, atol=1e-12)
    assert got[:20] == [0.0] * 20  # the probationary period: no anomaly yet


def test_wrapper_takes_any_record_as_river_detectors_do():
    model = HTMAnomalyDetector(config=HTMConfig.small(), resolution=0.1, probationary_period=5)
    for x in _records(10):
        model.learn_one(x)
    t = dt.datetime(2024, 1, 2)
    for x in ({"value": float("nan"), "timestamp": t}, {"value": None, "timestamp": t}, {"timestamp": t},
              {"other": 3.0}):
        assert model.score_one(x) == 0.0
        model.learn_one(x)  # nothing to learn from
    assert model._learnt == 10
    assert model.score_one({"value": 0.5}) > -1e-9  # no timestamp: at the last record's time
    model.learn_one({"value": 0.5})
    assert model._learnt == 11


def test_wrapper_pickles_mid_stream():
    model = HTMAnomalyDetector(config=HTMConfig.small(), resolution=0.1, probationary_period=5)
    recs = _records(30)
    for x in recs[:20]:
        model.learn_one(x)
    copy = pickle.loads(pickle.dumps(model))
    got, want = [], []
    for x in recs[20:]:
        got.append(copy.score_one(x))
        copy.learn_one(x)
        want.append(model.score_one(x))
        model.learn_one(x)
    assert got == want


def _labelled(n=300, seed=0, times=True):
    """A daily-like sine every 5 minutes with a few spikes, labelled: a small River dataset."""
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2024, 1, 1)
    spikes = set(rng.choice(np.arange(n // 2, n), 6, replace=False).tolist())
    for i in range(n):
        value = float(np.sin(i / 6) + 0.05 * rng.normal()) + (4.0 if i in spikes else 0.0)
        x = {"value": value, "timestamp": t0 + dt.timedelta(minutes=5 * i)} if times else {"value": value}
        yield x, i in spikes


def _river_checks():
    """River's checks for this detector, with a small labelled stream where a check wants a dataset
    (River's own is a download). ``check_bounded_memory_growth`` feeds 10,000 records: not run here."""
    model = HTMAnomalyDetector(**next(HTMAnomalyDetector._unit_test_params()))
    for check in checks.yield_checks(model):
        name = check.__name__
        if name == "check_bounded_memory_growth":
            continue
        if "dataset" in getattr(check, "keywords", {}):
            dataset = list(_labelled(120))
            yield pytest.param(check.func, dataset, id=name)
        else:
            yield pytest.param(check, None, id=name)


@pytest.mark.parametrize("check,dataset", list(_river_checks()))
def test_river_check(check, dataset):
    model = HTMAnomalyDetector(**next(HTMAnomalyDetector._unit_test_params()))
    if dataset is None:
        check(model)
    else:
        check(model, dataset=dataset)


def test_progressive_val_score_behind_a_fresh_min_max_scaler():
    # MinMaxScaler scales every feature and cannot scale a datetime: records without one
    model = preprocessing.MinMaxScaler() | HTMAnomalyDetector()
    result = evaluate.progressive_val_score(list(_labelled(times=False)), model, metrics.ROCAUC())
    assert 0.0 <= result.get() <= 1.0
    assert model["HTMAnomalyDetector"]._learnt == 300


def test_quantile_filter_lets_the_detector_learn():
    model = anomaly.QuantileFilter(HTMAnomalyDetector(probationary_period=100), q=0.95)
    result = evaluate.progressive_val_score(list(_labelled()), model, metrics.ROCAUC())
    assert 0.0 <= result.get() <= 1.0
    # protected from records it flags, the detector still learns the others
    assert 250 <= model.anomaly_detector._learnt < 300
