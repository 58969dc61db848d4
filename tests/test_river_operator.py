"""RiverOperator: outputs per model kind, prequential order, per-key models, configs, state."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from river import anomaly, dummy, linear_model, preprocessing, stats, tree

from operators.river import RiverOperator, build_model
from stream import BadEventError, Batch, CheckpointError, ConfigError
from stream import state as codec


def _batch(n=40, seed=0, **extra):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    cols = {"key": np.where(np.arange(n) % 2 == 0, "a", "b"), "ts": np.arange(n), "x": x,
            "z": rng.uniform(size=n), "y": x > 0, **extra}
    return Batch(pa.record_batch(cols), source="unit")


def test_prequential_predicts_before_learning():
    op = RiverOperator(linear_model.LinearRegression(), features=["x"], target="y_num")
    data = _batch(y_num=np.arange(40, dtype=float))
    out = op(data)
    reference = linear_model.LinearRegression()
    expected = []
    for x, y in zip(data.numpy("x"), data.numpy("y_num")):
        expected.append(reference.predict_one({"x": float(x)}))
        reference.learn_one({"x": float(x)}, float(y))
    assert out.numpy("prediction").tolist() == expected
    assert expected[0] == 0.0  # the first event is predicted by an untrained model


def test_default_features_skip_key_time_target_and_outputs():
    op = RiverOperator(anomaly.HalfSpaceTrees(seed=1), target="y")
    out = op(_batch())
    assert op.features == ["x", "z"]
    again = op(out)  # a stream that already carries anomaly_score: it is not a feature
    assert op.features == ["x", "z"] and again.column_names.count("anomaly_score") == 1


def test_per_key_models_are_independent_clones():
    data = _batch()
    per_key = RiverOperator(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
                            features=["x"], target="y", per_key=True)
    out = per_key(data)
    assert sorted(per_key.models) == ["a", "b"]
    for key in ("a", "b"):
        rows = np.flatnonzero(data.keys() == key)
        alone = RiverOperator(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
                              features=["x"], target="y")
        solo = alone(data.take(rows))
        assert solo.column("proba").to_pylist() == out.take(rows).column("proba").to_pylist()


def test_classifier_outputs_for_multiclass_labels():
    labels = np.array(["cat", "dog", "eel"])[np.arange(40) % 3]
    op = RiverOperator(tree.HoeffdingTreeClassifier(), features=["x", "z"], target="label")
    out = op(_batch(label=labels))
    assert out.column("prediction").type == pa.string()
    preds, probas = out.column("prediction").to_pylist(), out.column("proba").to_pylist()
    assert preds[0] is None and probas[0] is None  # nothing learnt yet: no prediction
    assert all(p in {"cat", "dog", "eel"} and 0 <= q <= 1 for p, q in zip(preds[5:], probas[5:]))


def test_binary_classifier_on_integer_labels_predicts_booleans():
    op = RiverOperator(linear_model.LogisticRegression(), features=["x"], target="y_int")
    out = op(_batch(y_int=np.arange(40) % 2))
    assert out.column("prediction").type == pa.bool_()


def test_overridden_predict_one_is_called():
    op = RiverOperator(dummy.NoChangeClassifier(), features=["x"], target="y")
    assert not op._labels_from_proba
    data = _batch()
    out = op(data)
    assert out.column("prediction").to_pylist() == [None, *data.column("y").to_pylist()[:-1]]
    assert out.column("proba").to_pylist()[1:] == [float(v) for v in data.column("y").to_pylist()[:-1]]


def test_anomaly_filter_flags():
    op = RiverOperator(anomaly.QuantileFilter(anomaly.HalfSpaceTrees(seed=3), q=0.8), features=["x"])
    out = op(_batch())
    assert out.column_names[-2:] == ["anomaly_score", "is_anomaly"]
    assert out.column("is_anomaly").type == pa.bool_()


def test_transformer_columns_and_unexpected_features():
    op = RiverOperator(preprocessing.StandardScaler(), features=["x", "z"], prefix="s_")
    out = op(_batch())
    assert out.column_names[-2:] == ["s_x", "s_z"]
    onehot = RiverOperator(preprocessing.OneHotEncoder(), features=["kind"])
    data = _batch(kind=np.where(np.arange(40) < 3, "red", "blue"))
    with pytest.raises(BadEventError, match=r"unit, row 3.*'kind_blue'.*outputs=\[\.\.\.\]"):
        onehot(data)
    listed = RiverOperator(preprocessing.OneHotEncoder(), features=["kind"],
                           outputs=["kind_red", "kind_blue"], prefix="")
    assert listed(data).column("kind_blue").to_pylist()[:4] == [None, None, None, 1.0]


def test_from_config_builds_nested_models_and_pipelines():
    op = RiverOperator.from_config(
        model="linear_model.LogisticRegression",
        params={"optimizer": {"model": "optim.SGD", "params": {"lr": 0.05}}, "l2": 0.01},
        target="y")
    assert op.model.optimizer.lr.learning_rate == 0.05 and op.model.l2 == 0.01
    pipe = build_model([{"model": "preprocessing.StandardScaler"}, "linear_model.LinearRegression"])
    assert list(pipe.steps) == ["StandardScaler", "LinearRegression"]
    for bad, message in [("HalfSpaceTrees", "module.Class"), ("anomaly.Nope", "does not exist"),
                         ([], "empty list"), ({"modle": "x"}, "expected a table")]:
        with pytest.raises(ConfigError, match=message):
            build_model(bad)
    with pytest.raises(ConfigError, match="not a River anomaly detector"):
        RiverOperator(stats.Mean())


def test_state_refuses_another_model_or_layout():
    op = RiverOperator(anomaly.HalfSpaceTrees(seed=1), features=["x"])
    op(_batch())
    state = codec.loads(*codec.dumps(op.state_dict()))
    other = RiverOperator(anomaly.OneClassSVM(), features=["x"])
    with pytest.raises(CheckpointError, match=r"River\[OneClassSVM\].*model is a river.anomaly.hst.HalfSpaceTrees "
                                              "in the checkpoint, a river.anomaly.svm.OneClassSVM in the pipeline"):
        other.load_state_dict(state)
    keyed = RiverOperator(anomaly.HalfSpaceTrees(seed=1), features=["x"], per_key=True)
    with pytest.raises(CheckpointError, match="per_key=True"):
        keyed.load_state_dict(state)


def test_resumed_per_key_run_continues_exactly():
    data = _batch(n=80)

    def make():
        return RiverOperator(tree.HoeffdingAdaptiveTreeClassifier(grace_period=5, seed=9),
                             features=["x", "z"], target="y", per_key=True)

    whole = make()(data)
    first = make()
    head = first(data.slice(0, 33))
    second = make()
    second.load_state_dict(codec.loads(*codec.dumps(first.state_dict())))
    tail = second(data.slice(33))
    assert Batch.concat([head, tail]).data.equals(whole.data)


def test_river_failure_names_the_event():
    data = _batch(kind=np.where(np.arange(40) < 5, "1.5", "oops"))
    op = RiverOperator(preprocessing.StandardScaler() | linear_model.LinearRegression(),
                       features=["x", "kind"], target="x")
    with pytest.raises(BadEventError, match=r"unit, row 0.*LinearRegression failed.*TypeError"):
        op(data)


def test_text_feature_failure_says_the_column_holds_text():
    # what a CSV with one unparsable cell in a numeric column looks like downstream
    data = _batch(level=np.array(["1.5"] * 39 + ["oops"]))
    op = RiverOperator(anomaly.HalfSpaceTrees(seed=1), features=["x", "level"])
    with pytest.raises(BadEventError, match=r"\['level'\] hold text.*column_types"):
        op(data)


def test_default_features_say_which_text_columns_they_leave_out(caplog):
    op = RiverOperator(anomaly.HalfSpaceTrees(seed=1))
    with caplog.at_level("WARNING", logger="hebbstream"):
        op(_batch(level=np.array(["1.5"] * 40)))
    assert "level" not in op.features
    assert "not used (not numeric)" in caplog.text and "'level'" in caplog.text
