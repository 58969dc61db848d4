"""Every flavour of RiverOperator goes through the shared operator contract."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from river import anomaly, linear_model, naive_bayes, preprocessing, tree

from operators.river import RiverOperator
from operators.river.evaluate import Evaluate
from stream import Batch
from stream.testing import check_operator


def _stream(n: int = 60, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.uniform(size=n)
    return Batch(pa.record_batch({
        "key": np.array(["a", "b", "c"])[rng.integers(0, 3, n)],
        "ts": np.arange(n, dtype=np.int64),
        "x1": x1, "x2": x2,
        "label": x1 + 0.3 * rng.normal(size=n) > 0,
        "value": 2 * x1 - x2 + 0.1 * rng.normal(size=n),
    }), source="contract")


CASES = {
    "detector": lambda **kw: RiverOperator(
        preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(n_trees=3, height=4, window_size=10, seed=1),
        features=["x1", "x2"], **kw),
    "detector-default-features": lambda **kw: RiverOperator(
        anomaly.HalfSpaceTrees(n_trees=3, height=4, window_size=10, seed=1), target="label", **kw),
    "filter": lambda **kw: RiverOperator(
        anomaly.QuantileFilter(anomaly.OneClassSVM(nu=0.2), q=0.9), features=["x1", "x2"], **kw),
    "classifier": lambda **kw: RiverOperator(
        preprocessing.StandardScaler() | linear_model.LogisticRegression(), features=["x1", "x2"],
        target="label", **kw),
    "tree-classifier": lambda **kw: RiverOperator(
        tree.HoeffdingTreeClassifier(grace_period=10), features=["x1", "x2"], target="label", **kw),
    "naive-bayes": lambda **kw: RiverOperator(naive_bayes.GaussianNB(), features=["x1", "x2"],
                                              target="label", **kw),
    "regressor": lambda **kw: RiverOperator(
        preprocessing.StandardScaler() | linear_model.LinearRegression(), features=["x1", "x2"],
        target="value", **kw),
    "transformer": lambda **kw: RiverOperator(preprocessing.StandardScaler(), features=["x1", "x2"],
                                              **kw),
}


@pytest.mark.parametrize("per_key", [False, True], ids=["one-model", "per-key"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_river_operator_contract(case, per_key):
    check_operator(lambda: CASES[case](per_key=per_key), _stream())


def test_evaluate_contract():
    def factory():
        return CASES["classifier"]() | Evaluate(target="label", metrics=["Accuracy", "ROCAUC"])

    check_operator(factory, _stream())
