"""The streaming anomaly detectors (CAD-style, ARTime-style, ensemble): the operator contract,
scores on hand-made streams against a direct computation, checkpoints, parameters, NAB by name."""

from __future__ import annotations

import os

import numpy as np
import pytest

from operators.anomaly import ARTDetector, ContextualDetector, ScoreEnsemble
from operators.anomaly.artime import ARTMemory
from operators.anomaly.cad import NEURON, ContextMemory
from operators.anomaly.keyed import UNIT_TEST_RANGE, unit_test_stream
from stream.errors import CheckpointError, ConfigError
from stream.options import check_options
from stream.state import decode_state, encode_state

EXCERPT = os.path.join(os.path.dirname(__file__), "data", "nab")
RANGE = UNIT_TEST_RANGE
_stream = unit_test_stream


FACTORIES = {
    "cad": lambda: ContextualDetector(value_range=RANGE, rest=3),
    "art": lambda: ARTDetector(value_range=RANGE, window=4, levels=1, mask=2),
    "ensemble": lambda: ScoreEnsemble(members=["cad", "art"], value_range=RANGE,
                                      member_options={"art": {"window": 4, "levels": 1}}),
    "warming up": lambda: ContextualDetector(warmup=5),
}


def test_cad_scores_a_hand_made_stream():
    # one bit per value: facts (0,) for 0 and (1,) for 1 (see the module docstring)
    model = ContextMemory(0.0, 1.0, bits=1, rest=0)
    scores = [model.score_learn(v) for v in [0.0, 1.0, 0.0, 1.0, 0.0]]
    # 0: no past; 1: nothing selected, the one potential context (0,)→(1,) is new:
    # (1 - 0 + 1/1) / 2; 2: the same for (1,)→(0,); 3: (0,)→(1,) is selected and active,
    # nothing new: (1 - 1/1 + 0) / 2; 4: (1,)→(0,) selected and active, the potential
    # (1, neuron of context 0)→(0,) is new: (1 - 1 + 1/1) / 2
    assert scores == [0.0, 1.0, 1.0, 0.0, 0.5]
    assert model.left_group == (0, NEURON + 1)
    assert model.contexts == [(0, 0), (1, 1), (2, 1)]


def test_cad_quiet_period_after_a_high_score():
    # the raw scores are 0, 1, 1, 0, 0.5 (above); a raw score >= 0.75 silences the next `rest`
    model = ContextMemory(0.0, 1.0, bits=1, rest=1, threshold=0.75)
    assert [model.score_learn(v) for v in [0.0, 1.0, 0.0, 1.0, 0.0]] == [0.0, 1.0, 0.0, 0.0, 0.5]
    model = ContextMemory(0.0, 1.0, bits=1, rest=2, threshold=0.75)
    assert [model.score_learn(v) for v in [0.0, 1.0, 0.0, 1.0, 0.0]] == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_art_scores_against_the_fuzzy_art_formulas():
    model = ARTMemory(0.0, 1.0, window=4, levels=0, mask=0)
    values = [0.0, 0.5, 1.0, 0.5, 0.0, 1.0]
    scores = [model.score_learn(v) for v in values]
    assert scores[:4] == [0.0] * 4                 # filling the window, then the first category

    def vector(window):
        x = np.array([*window, np.mean(window)])   # the window and its Haar average
        return np.concatenate([x, 1 - x])

    first, second = vector(values[0:4]), vector(values[1:5])
    match = np.minimum(second, first).sum() / 5
    # rho 0.9 and rho_low 0.8 before adapting; the step-4 match decides the score
    assert match < 0.8
    span = 0.9 - 0.8
    assert scores[4] == pytest.approx(0.5 + 0.5 * min(1.0, (0.8 - match) / span))
    assert model.clusters == 3 and len(model.weights) == 3


def test_ensemble_is_the_mean_of_prequential_ranks():
    batch = _stream()
    cad = ContextualDetector(value_range=RANGE, score_column="s")(batch).numpy("s")
    art = ARTDetector(value_range=RANGE, window=4, levels=1, score_column="s")(batch).numpy("s")
    ens = ScoreEnsemble(members=["cad", "art"], value_range=RANGE,
                        member_options={"art": {"window": 4, "levels": 1}})(batch).numpy("anomaly_score")
    keys = batch.keys()
    expected = np.zeros(len(keys))
    for key in set(keys):
        idx = np.flatnonzero(keys == key)
        for member in (cad, art):
            s = member[idx]
            expected[idx] += [np.mean(s[:t] < s[t]) if t else 0.0 for t in range(len(s))]
    np.testing.assert_allclose(ens, expected / 2)


def test_state_goes_through_the_codec_and_a_bad_one_is_refused():
    det = FACTORIES["cad"]()
    det(_stream())
    tree, arrays = encode_state(det.state_dict())
    again = FACTORIES["cad"]()
    again.load_state_dict(decode_state(tree, arrays))
    assert again.state_dict()["models"] == det.state_dict()["models"]
    broken = det.state_dict()
    broken["models"][0]["contexts"].append([999, 0])
    with pytest.raises(CheckpointError, match="malformed"):
        FACTORIES["cad"]().load_state_dict(broken)
    with pytest.raises(CheckpointError):
        FACTORIES["art"]().load_state_dict({"keys": ["a"], "ranges": [[0, 1]], "models": [{}]})


@pytest.mark.parametrize("cls, values, key", [
    (ContextualDetector, {"bits": 0}, "bits"),
    (ContextualDetector, {"threshold": 2}, "threshold"),
    (ARTDetector, {"quantile": "x"}, "quantile"),
    (ScoreEnsemble, {"combine": "median"}, "combine"),
])
def test_pipeline_parameters_are_checked(cls, values, key):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        check_options(cls, values, "p.toml [operator]")


def test_bad_constructor_values_are_config_errors():
    with pytest.raises(ConfigError, match="power of two"):
        ARTDetector(window=6)
    with pytest.raises(ConfigError, match="unknown member"):
        ScoreEnsemble(members=["nope"])
    with pytest.raises(ConfigError, match="value_range"):
        ContextualDetector(value_range={"a": [2.0, 1.0]})


@pytest.mark.parametrize("name", ["cad", "art", "ensemble"])
def test_nab_runs_a_detector_by_name(tmp_path, capsys, name):
    from stream.cli import main

    assert main(["nab", "--nab-dir", EXCERPT, "--out", str(tmp_path), "--detector", name]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{name}: ")
    assert sorted(os.listdir(tmp_path / name)) == ["realAdExchange", "realKnownCause"]


@pytest.mark.parametrize("model", ["cad", "art"])
def test_river_wrapper_scores_without_learning_and_learns_like_the_operator(model):
    from operators.anomaly.river_wrapper import RiverDetector

    params = {"window": 4, "levels": 1} if model == "art" else {"rest": 3}
    values = _stream().numpy("value")[:30].tolist()
    det = RiverDetector(model, lo=0.0, hi=10.0, **params)
    direct = (ARTMemory if model == "art" else ContextMemory)(0.0, 10.0, **params)
    for v in values:
        first = det.score_one({"x": v})
        assert det.score_one({"x": v}) == first            # scoring changes nothing
        det.learn_one({"x": v})
        assert first == direct.score_learn(v)               # prequential, as the operator
    assert det.score_one({}) == 0.0 and det.score_one({"x": float("nan")}) == 0.0


@pytest.mark.parametrize("cls", [ContextualDetector, ARTDetector, ScoreEnsemble])
def test_nab_seed_changes_nothing(cls):
    # why one NAB run stands for every seed: these detectors draw no random numbers
    from operators.nab.replay import NABStream

    batch = _stream()
    streams = {k: NABStream(k, 100, *RANGE[k]) for k in RANGE}
    outs = [cls.for_nab(streams, seed=seed)(batch).numpy("anomaly_score") for seed in (0, 1)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].any()
