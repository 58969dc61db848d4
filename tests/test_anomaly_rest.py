"""The rest period after a detection (RestPeriod), the ``htm-rest`` NAB detector, and later
pipeline stages run over stored NAB results."""

from __future__ import annotations

import filecmp
import os

import numpy as np
import pyarrow as pa
import pytest

from operators.anomaly.rest import RED_SCORE, YELLOW_SCORE, RestPeriod
from operators.htm.likelihood import log_likelihood
from operators.nab.corpus import NABFormatError
from stream import Batch, Pipeline
from stream.errors import CheckpointError, ConfigError, HebbstreamError
from stream.options import check_options
from stream.state import decode_state, encode_state
from stream.testing import check_operator

EXCERPT = os.path.join(os.path.dirname(__file__), "data", "nab")


def scores_stream(n: int = 60) -> Batch:
    rng = np.random.default_rng(11)
    keys = np.where(rng.random(n) < 0.5, "a", "b")
    return Batch(pa.record_batch({"key": keys, "anomaly_score": np.round(rng.random(n) ** 2, 3)}), source="t")


def test_levels_are_nupic_red_and_yellow():
    assert RED_SCORE == log_likelihood(1.0 - 1e-5) and YELLOW_SCORE == log_likelihood(0.999)


@pytest.mark.parametrize("case", RestPeriod._unit_test_params(), ids=["records", "per key"])
def test_rest_period_keeps_the_operator_contract(case):
    check_operator(case.factory(RestPeriod), case.data())


def test_rest_period_against_a_direct_computation():
    batch = scores_stream()
    out = RestPeriod(records={"a": 3, "b": 1}, level=0.6, cap=0.05)(batch).numpy("anomaly_score")
    keys, scores = batch.keys(), batch.numpy("anomaly_score")
    expected = scores.copy()
    for key, length in (("a", 3), ("b", 1)):
        left = 0
        for i in np.flatnonzero(keys == key):
            if left:
                left -= 1
                expected[i] = min(scores[i], 0.05)
            elif scores[i] >= 0.6:
                left = length
    np.testing.assert_array_equal(out, expected)
    assert (out < scores).any()        # the stream does rest somewhere
    untouched = RestPeriod(records=0)(batch).numpy("anomaly_score")
    np.testing.assert_array_equal(untouched, scores)


def test_rest_state_goes_through_the_codec_and_a_bad_one_is_refused():
    rest = RestPeriod(records=100)
    rest(Batch(pa.record_batch({"key": ["a", "b"], "anomaly_score": [0.9, 0.1]})))
    tree, arrays = encode_state(rest.state_dict())
    again = RestPeriod(records=100)
    again.load_state_dict(decode_state(tree, arrays))
    assert again.resting == {"a": 100}
    with pytest.raises(CheckpointError, match="RestPeriod"):
        RestPeriod().load_state_dict({"keys": ["a", "b"], "left": [1]})
    with pytest.raises(CheckpointError, match="negative"):
        RestPeriod().load_state_dict({"keys": ["a"], "left": [-4]})


@pytest.mark.parametrize("kwargs, match", [
    ({"records": -1}, "records"), ({"records": 2.5}, "records"), ({"records": {"a": "x"}}, "records"),
    ({"level": float("nan")}, "level"),
])
def test_bad_rest_parameters_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RestPeriod(**kwargs)


def test_pipeline_file_checks_records():
    with pytest.raises(ConfigError, match="key 'records'"):
        check_options(RestPeriod, {"records": -3}, "p.toml [operator]")


def test_nab_rest_is_a_fraction_of_each_file():
    from operators.nab.replay import NABStream

    streams = {"x.csv": NABStream("x.csv", 4032, 0.0, 1.0), "y.csv": NABStream("y.csv", 150, 0.0, 1.0)}
    assert RestPeriod.for_nab(streams).records == {"x.csv": 40, "y.csv": 1}
    assert RestPeriod.for_nab(streams, fraction=0.05).records == {"x.csv": 201, "y.csv": 7}


def test_htm_rest_is_the_htm_detector_then_the_rest_period():
    from operators.htm.detector import HTMDetector
    from operators.nab.detectors import nab_factory
    from operators.nab.replay import NABStream

    streams = {"x.csv": NABStream("x.csv", 1000, 0.0, 1.0)}
    pipe = nab_factory("htm-rest", tm="plain", device="numpy")(streams, seed=2)
    assert isinstance(pipe, Pipeline)
    htm, rest = pipe.operators
    assert isinstance(htm, HTMDetector) and htm.config.seed == 2 and htm.config.tm == "plain"
    assert repr(htm) == repr(nab_factory("htm", tm="plain", device="numpy")(streams, seed=2))
    assert rest.records == {"x.csv": 10}


def test_later_stages_need_a_pipeline_and_every_stored_file(tmp_path):
    from operators.anomaly import ContextualDetector
    from operators.nab.stored import run_after_stored

    with pytest.raises(HebbstreamError, match="not a pipeline"):
        run_after_stored(ContextualDetector.for_nab, EXCERPT, str(tmp_path / "cad"), str(tmp_path), "cad")

    def cad_rest(streams, seed=0):
        return Pipeline([ContextualDetector.for_nab(streams), RestPeriod.for_nab(streams)])

    os.makedirs(tmp_path / "cad")
    with pytest.raises(NABFormatError, match="no stored result for realAdExchange/exchange-2_cpc_results.csv"):
        run_after_stored(cad_rest, EXCERPT, str(tmp_path / "cad"), str(tmp_path / "out"), "cad-rest")


@pytest.mark.slow
def test_htm_rest_over_stored_htm_results_writes_the_files_of_a_full_run(tmp_path):
    from operators.nab.detectors import nab_factory
    from operators.nab.stored import run_after_stored
    from stream.cli import main

    common = ["nab", "--nab-dir", EXCERPT, "--tm", "plain", "--files", "realAdExchange/*"]
    assert main([*common, "--out", str(tmp_path / "full"), "--detector", "htm-rest"]) == 0
    assert main([*common, "--out", str(tmp_path / "base"), "--detector", "htm"]) == 0
    report = run_after_stored(nab_factory("htm-rest", tm="plain"), EXCERPT, str(tmp_path / "base" / "htm"),
                              str(tmp_path / "after"), "htm-rest", files=["realAdExchange/exchange-2_cpc_results.csv"])
    names = [os.path.relpath(p, tmp_path / "after") for p in report["files"]]
    assert filecmp.cmpfiles(tmp_path / "full", tmp_path / "after", names, shallow=False)[0] == names
