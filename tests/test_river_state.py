"""The River state codec: restored models continue exactly like the originals; nothing
outside the allowlist is saved or rebuilt."""

from __future__ import annotations

import collections
import functools
import json
import random

import numpy as np
import pytest
from river import (
    anomaly,
    cluster,
    compose,
    datasets,
    ensemble,
    forest,
    linear_model,
    naive_bayes,
    neighbors,
    optim,
    preprocessing,
    stats,
    tree,
)

from operators.river.state import decode, encode
from stream import CheckpointError
from stream import state as codec


def _round_trip(obj):
    return decode(codec.loads(*codec.dumps(encode(obj))))


PHISHING = list(datasets.Phishing().take(400))
TRUMP = list(datasets.TrumpApproval().take(400))

ESTIMATORS = {
    "HalfSpaceTrees": (lambda: anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=50, seed=3), "score"),
    "MinMax|HST": (lambda: preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=1), "score"),
    "OneClassSVM": (lambda: anomaly.OneClassSVM(nu=0.2), "score"),
    "QuantileFilter": (lambda: anomaly.QuantileFilter(anomaly.HalfSpaceTrees(seed=2), q=0.95), "score"),
    "LogisticRegression": (lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.Adam(0.05)), "proba"),
    "HoeffdingTreeClassifier": (lambda: tree.HoeffdingTreeClassifier(grace_period=50), "proba"),
    "HoeffdingAdaptiveTree": (lambda: tree.HoeffdingAdaptiveTreeClassifier(grace_period=50, seed=4), "proba"),
    "GaussianNB": (lambda: naive_bayes.GaussianNB(), "proba"),
    "KNNClassifier": (lambda: neighbors.KNNClassifier(n_neighbors=3), "proba"),
    "ARFClassifier": (lambda: forest.ARFClassifier(n_models=3, seed=5), "proba"),
    "BaggingClassifier": (lambda: ensemble.BaggingClassifier(linear_model.LogisticRegression(), n_models=3,
                                                             seed=6), "proba"),
    "LinearRegression": (lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(), "regress"),
    "HoeffdingTreeRegressor": (lambda: tree.HoeffdingTreeRegressor(grace_period=50), "regress"),
    "KMeans": (lambda: cluster.KMeans(n_clusters=3, seed=7), "cluster"),
    "StandardScaler": (lambda: preprocessing.StandardScaler(), "transform"),
}


def _continue(model, how, data):
    out = []
    for x, y in data:
        if how == "score":
            out.append(model.score_one(x))
            model.learn_one(x)
        elif how == "proba":
            out.append(model.predict_proba_one(x))
            model.learn_one(x, y)
        elif how == "regress":
            out.append(model.predict_one(x))
            model.learn_one(x, y)
        elif how == "cluster":
            out.append(model.predict_one(x))
            model.learn_one(x)
        else:
            out.append(model.transform_one(x))
            model.learn_one(x)
    return out


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_restored_model_continues_exactly(name):
    factory, how = ESTIMATORS[name]
    data = TRUMP if how == "regress" else PHISHING
    model = factory()
    _continue(model, how, data[:250])
    restored = _round_trip(model)
    assert type(restored) is type(model)
    assert _continue(restored, how, data[250:]) == _continue(model, how, data[250:])


def test_shared_references_stay_shared():
    pipe = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in PHISHING[:20]:
        pipe.learn_one(x, y)
    back = _round_trip(pipe)
    assert back._last_step_cached is back.steps["LogisticRegression"]
    shared = [1, 2]
    both = _round_trip({"a": shared, "b": shared})
    assert both["a"] is both["b"] and both["a"] == [1, 2]
    cyc: list = []
    cyc.append(cyc)
    back_cyc = _round_trip(cyc)
    assert back_cyc[0] is back_cyc


def test_random_generators_round_trip_bit_exactly():
    rng = random.Random(42)
    rng.random()
    rng.gauss(0, 1)  # leaves a cached gauss value in the state
    gen = np.random.default_rng(3)
    gen.normal(size=5)
    legacy = np.random.RandomState(9)
    legacy.standard_normal()
    back = _round_trip({"r": rng, "g": gen, "l": legacy})
    assert [back["r"].gauss(0, 1) for _ in range(3)] == [rng.gauss(0, 1) for _ in range(3)]
    assert np.array_equal(back["g"].random(10), gen.random(10))
    assert np.array_equal(back["l"].standard_normal(7), legacy.standard_normal(7))


def test_containers_and_numpy_values():
    value = {
        "dd": collections.defaultdict(float, {"a": 1.5}), "counter": collections.Counter("abca"),
        "deque": collections.deque([1, 2, 3], maxlen=4), "od": collections.OrderedDict(b=1, a=2),
        "tuple_keys": {(1, "x"): np.float32(2.5), 3: {True, None}}, "frozen": frozenset({1, 2}),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "dtype": np.dtype("int16"),
        "partial": functools.partial(tuple, (0.0, 1.0)), "stat": stats.Mean(), "nan": float("nan"),
        "objects": np.array([{"a": 1}, None], dtype=object), "~": "a key like the tag",
    }
    back = _round_trip(value)
    assert back["dd"] == value["dd"] and back["dd"].default_factory is float
    assert back["counter"] == value["counter"] and back["od"] == value["od"]
    assert back["deque"] == value["deque"] and back["deque"].maxlen == 4
    assert back["tuple_keys"] == value["tuple_keys"]
    assert type(back["tuple_keys"][(1, "x")]) is np.float32
    assert back["fortran"].flags.f_contiguous and np.array_equal(back["fortran"], value["fortran"])
    assert back["dtype"] == np.int16 and back["partial"]() == (0.0, 1.0) and back["frozen"] == {1, 2}
    assert np.isnan(back["nan"]) and back["objects"][0] == {"a": 1} and back["~"] == value["~"]


class NotRiver:
    pass


def test_disallowed_objects_fail_on_save_naming_the_path():
    model = preprocessing.StandardScaler()
    model.counts["x"] = 1
    model.helper = NotRiver()
    with pytest.raises(CheckpointError, match=r"model\.helper: a .*NotRiver is not allowed"):
        encode(model)
    with pytest.raises(CheckpointError, match=r"model\['f'\]: function .*<lambda> is not registered"):
        encode({"f": lambda: 0})
    with pytest.raises(CheckpointError, match=r"model\['d'\]\.default_factory: function .*<lambda>"):
        encode({"d": collections.defaultdict(lambda: 0)})
    with pytest.raises(CheckpointError, match=r"model\['c'\]: type .*NotRiver is a class"):
        encode({"c": NotRiver})


def _tamper(tree, old, new):
    return json.loads(json.dumps(tree).replace(old, new))


def test_tampered_state_is_refused_on_load():
    tree = encode(compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression()))
    plain = codec.loads(*codec.dumps(tree))
    for evil in ("os:system", "builtins:eval", "subprocess:Popen", "river.utils.math:sigmoid",
                 "river.preprocessing:Nope", "river.datasets.phishing:Phishing", "river.stream.cache:Cache"):
        bad = _tamper(plain, "river.preprocessing.scale:StandardScaler", evil)
        with pytest.raises(CheckpointError, match="is not allowed"):
            decode(bad)
    with pytest.raises(CheckpointError, match="not a hebbstream-river-state"):
        decode({"format": "hebbstream-river-state/2"})
    with pytest.raises(CheckpointError, match="another hebbstream version"):
        decode(dict(plain, format="hebbstream-river-state/1"))
    broken = dict(plain, objects=plain["objects"] + [{"~": "r", "i": 999}])
    with pytest.raises(CheckpointError):
        decode(broken)


def test_names_are_only_resolved_where_they_are_defined():
    plain = codec.loads(*codec.dumps(encode({"f": collections.defaultdict(float)})))
    text = json.dumps(plain)
    # functools.partial reached through a River module, os through River's globals, a
    # function that is River's but not registered
    for evil in ("river.compose.pipeline:functools.partial", "river.utils.math:math.sqrt",
                 "river.compose.pipeline:contextlib.os.system", "river.utils.math:sigmoid", "builtins:getattr"):
        with pytest.raises(CheckpointError, match="not a registered function"):
            decode(json.loads(text.replace("builtins:float", evil)))
    model = linear_model.PAClassifier()
    model.learn_one({"x": 1.0}, True)
    back = _round_trip(model)  # holds a bound method, rebuilt from the METHODS table
    assert back.calc_tau.__self__ is back
    dump = json.dumps(codec.loads(*codec.dumps(encode(model))), default=str)
    name = back.calc_tau.__name__
    for other in ("__class__", "learn_one", "__init__"):
        with pytest.raises(CheckpointError, match="is not allowed"):
            decode(json.loads(dump.replace(f'"{name}"', f'"{other}"')))
