"""Anomaly likelihood and the spatial check: hand-checked streams, NuPIC's NAB outputs, state."""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import pyarrow.csv as pacsv
import pytest

from operators.htm.likelihood import (
    AnomalyLikelihood,
    NumentaScore,
    SpatialAnomaly,
    _running_totals,
    log_likelihood,
    tail_probability,
)
from stream import state as state_codec

HERE = os.path.dirname(__file__)
EXCERPT = os.path.join(HERE, "data", "nab", "results", "numenta")
CORPUS_RESULTS = os.path.normpath(os.path.join(HERE, "..", "examples", "data", "nab", "results", "numenta"))


def q(x: float, mean: float, var: float) -> float:
    """Upper tail P(X > x) of N(mean, var), with NuPIC's 1.4142 for sqrt(2)."""
    z = (x - mean) / math.sqrt(var)
    return 0.5 * math.erfc(z / 1.4142)


def test_probation_from_file_length():
    lik = AnomalyLikelihood(4032)            # NAB: P = 604 = 302 + 302
    assert (lik.probation, lik.learning_period, lik.estimation_samples) == (604, 302, 302)
    big = AnomalyLikelihood(22695)           # capped at 750
    assert (big.probation, big.learning_period, big.estimation_samples) == (750, 375, 375)
    assert all(lik.update(1.0 + i % 5, 1.0) == 0.5 for i in range(604))
    assert lik.update(3.0, 0.0) < 0.01         # first fitted record: 0.9 below the mean 1.0
    with pytest.raises(ValueError, match="either n_rows"):
        AnomalyLikelihood(100, learning_period=3)


def test_steady_stream_then_surprise_hand_checked():
    lik = AnomalyLikelihood(learning_period=10, estimation_samples=20)
    values = [1.0 + 0.5 * (i % 4) for i in range(100)]
    out = [lik.update(v, 0.0) for v in values[:30]]
    assert out == [0.5] * 30
    # fit at record 30 over records 10..29: moving average 0 → mean floor 0.03, var floor 3e-4
    quiet = lik.update(values[30], 0.0)
    assert quiet == pytest.approx(1.0 - (1.0 - q(0.06, 0.03, 0.0003)), abs=1e-15)
    assert quiet < 0.05                          # below the mean: not anomalous at all
    # one surprise: moving average 0.1, z = 0.07 / sqrt(3e-4)
    spike = lik.update(values[31], 1.0)
    assert spike == pytest.approx(1.0 - q(0.1, 0.03, 0.0003), abs=1e-15)
    assert spike > 0.9999
    # a second one: Q far below 1e-5 but the previous Q was not: stays red
    second = lik.update(values[32], 1.0)
    assert second == pytest.approx(1.0 - q(0.2, 0.03, 0.0003), abs=1e-15)
    # a third: the previous Q was red too, so this one is reported as 1e-3 (yellow)
    assert lik.update(values[33], 1.0) == pytest.approx(1.0 - (1.0 - 0.999), abs=1e-15)


def test_flat_input_values_use_the_null_distribution():
    lik = AnomalyLikelihood(learning_period=5, estimation_samples=5)
    for _ in range(10):
        lik.update(42.0, 0.3)
    # input variance 0 < 1.5e-5: mean 0.5, sd 1000 → everything looks ordinary
    assert lik.update(42.0, 1.0) == pytest.approx(1.0 - q(0.37, 0.5, 1e6), abs=1e-15)
    assert abs(lik.update(42.0, 1.0) - 0.5) < 1e-3


def test_reestimation_period_and_historic_window():
    lik = AnomalyLikelihood(learning_period=0, estimation_samples=10, historic_window=20,
                            reestimation_period=5)
    rng = np.random.default_rng(0)
    means = []
    for i in range(40):
        lik.update(float(rng.random()), float(rng.random()) * (2 if i > 25 else 1))
        means.append(lik.state_dict()["mean"])
    assert means[9] is None and means[10] is not None
    # the fit changes only at records 10, 15, 20, ... (checked after each update)
    changes = [i for i in range(11, 40) if means[i] != means[i - 1]]
    assert changes and all(i % 5 == 0 for i in changes)
    assert len(lik.state_dict()["scores"]) == 20     # only the last 20 records are kept


def test_running_totals_round_like_the_sequential_loop():
    rng = np.random.default_rng(1)
    scores = rng.random(500) ** 3
    window, total, recent, expected = 10, 0.0, [], []
    for s in scores:
        if len(recent) == window:
            total -= recent.pop(0)
        recent.append(s)
        total += s
        expected.append(total)
    assert np.array_equal(_running_totals(scores, window), np.array(expected))   # bit for bit
    assert np.array_equal(_running_totals(scores[:7], window), np.cumsum(scores[:7]))


def test_state_round_trip_is_bit_exact():
    rng = np.random.default_rng(2)
    values = rng.normal(size=600).cumsum()
    raws = (rng.random(600) < 0.1).astype(float) * rng.random(600)

    def make():
        return NumentaScore(learning_period=40, estimation_samples=60, historic_window=150,
                            reestimation_period=30)

    whole = make()
    expected = [whole.update(v, r) for v, r in zip(values, raws, strict=True)]
    for split in (0, 77, 100, 333):
        first = make()
        head = [first.update(v, r) for v, r in zip(values[:split], raws[:split], strict=True)]
        tree, blob = state_codec.dumps(first.state_dict())     # the checkpoint codec, no pickle
        second = make()
        second.load_state_dict(state_codec.loads(tree, blob))
        tail = [second.update(v, r) for v, r in zip(values[split:], raws[split:], strict=True)]
        assert head + tail == expected, split
    with pytest.raises(ValueError, match="historic_window"):
        AnomalyLikelihood(learning_period=40, estimation_samples=60).load_state_dict(
            make().likelihood.state_dict())


def test_spatial_anomaly():
    s = SpatialAnomaly()
    assert [s.update(v) for v in (5.0, 5.0, 5.0)] == [False, False, False]   # no range yet
    assert s.update(10.0) is False                                 # range was 0: no check
    assert s.update(10.25) is False and s.update(10.3) is False     # within 5 % of 5.25
    assert s.update(10.6) is True                                   # 10.3 + 0.265 < 10.6
    assert s.update(4.0) is True and s.update(3.9) is False
    back = SpatialAnomaly()
    back.load_state_dict(s.state_dict())
    assert (back.min, back.max) == (s.min, s.max)


def test_log_likelihood_and_tail():
    assert log_likelihood(0.5) == pytest.approx(0.0301029996659, abs=1e-12)
    assert log_likelihood(1.0) == pytest.approx(1.0)
    assert log_likelihood(0.0) == pytest.approx(0.0, abs=1e-9)
    assert tail_probability(0.5, 0.5, 1.0) == 0.5
    # below the mean it is the upper tail: more than one half
    assert tail_probability(0.4, 0.5, 0.1) == pytest.approx(1 - tail_probability(0.6, 0.5, 0.1))


def nupic_check(path: str) -> int:
    """Recompute NuPIC's anomaly_score column from its value and raw_score columns."""
    cols = pacsv.read_csv(path).to_pydict()
    scorer = NumentaScore(len(cols["value"]))
    ours = np.array([scorer.update(float(v), float(r))[0]
                     for v, r in zip(cols["value"], cols["raw_score"], strict=True)])
    # NAB's files keep 12 significant digits
    np.testing.assert_allclose(ours, cols["anomaly_score"], rtol=0, atol=1e-10, err_msg=path)
    return len(ours)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(EXCERPT, "*", "*.csv"))))
def test_reproduces_nupic_anomaly_scores_excerpt(path):
    assert nupic_check(path) > 1000


@pytest.mark.slow  # 58 files, 365,558 records; the excerpt test above runs by default
def test_reproduces_nupic_anomaly_scores_full_corpus():
    files = sorted(glob.glob(os.path.join(CORPUS_RESULTS, "*", "*.csv")))
    assert len(files) == 58
    assert sum(nupic_check(f) for f in files) == 365558


def test_the_history_grows_with_the_stream_up_to_the_window_and_survives_a_round_trip():
    """A young stream holds buffers in proportion to its length, not the 8,640-record
    window; scores are the same as with the window reserved, through a state round trip."""
    lik = AnomalyLikelihood(learning_period=10, estimation_samples=10, historic_window=300)
    scores = [lik.update(1.0 + 0.1 * (i % 7), 0.05 * (i % 5)) for i in range(150)]
    assert 150 <= lik._scores.shape[0] < 300
    resumed = AnomalyLikelihood(learning_period=10, estimation_samples=10, historic_window=300)
    resumed.load_state_dict(lik.state_dict())
    for i in range(150, 700):
        a, b = lik.update(1.0 + 0.1 * (i % 7), 0.05 * (i % 5)), resumed.update(1.0 + 0.1 * (i % 7), 0.05 * (i % 5))
        assert a == b
        scores.append(a)
    assert lik._scores.shape[0] == 300 == resumed._scores.shape[0]
    assert len(set(scores[20:])) > 1                    # fitted, not stuck at 0.5
