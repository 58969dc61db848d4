"""The River wrapper scores like the operator and follows River's score-then-learn order."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
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
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_wrapper_rejects_bad_records():
    model = HTMAnomalyDetector(config=HTMConfig.small(), resolution=0.1)
    with pytest.raises(ValueError, match="not a finite number"):
        model.learn_one({"value": float("nan"), "timestamp": dt.datetime(2024, 1, 1)})
    with pytest.raises(ValueError, match="timestamp"):
        model.score_one({"value": 1.0})
