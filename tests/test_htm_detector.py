"""HTMDetector as an operator: batching across keys, backends, resume, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from streams import ListSink, ListSource

from operators.htm import HTMDetector
from operators.htm.model import HTMConfig
from stream import Batch, CheckpointStore, run
from stream.errors import BadEventError, SchemaError
from stream.testing import assert_same_outputs

MIN5 = 300 * 10**9
SMALL = HTMConfig.small()


def _stream(n=80, keys=("a",), seed=0):
    rng = np.random.default_rng(seed)
    rows_key, rows_t, rows_v = [], [], []
    for i in range(n):
        for j, k in enumerate(keys):
            rows_key.append(k)
            rows_t.append(i * MIN5)
            rows_v.append(float(np.sin(i / 5.0) * 10 + rng.normal() + 5 * j))
    return pa.record_batch({"key": rows_key, "timestamp": pa.array(rows_t, pa.timestamp("ns")),
                            "value": rows_v})


def _det(**kw):
    args = dict(config=SMALL, resolution=0.5, probationary_period=20)
    args.update(kw)
    return HTMDetector(**args)


def _batch(rb, source="test"):
    return Batch(rb, source=source, time_column="timestamp")


def test_outputs_and_alerts():
    out = _det(alert_threshold=0.3)(_batch(_stream(60)))
    raw, score = out.numpy("anomaly_score"), out.numpy("anomaly_likelihood")
    assert raw[0] == 1.0 and np.all((raw >= 0) & (raw <= 1))
    # NuPIC's log scale dips a hair below 0 at likelihood 0; the range check reports 1.0
    assert np.all((score >= -1e-9) & (score <= 1))
    assert set(np.round(score[:20], 4).tolist()) <= {0.0301, 1.0}
    assert np.array_equal(out.numpy("alert"), (score >= 0.3) & (np.arange(60) >= 20))


def test_batched_keys_equal_each_key_alone_and_new_key_mid_stream():
    keys = ("a", "b", "c")
    together = _det()(_batch(_stream(60, keys=keys)))
    # key "d" appears mid-stream: its scores equal a fresh detector's on "d" alone
    late = _det()
    late(_batch(_stream(30, keys=keys)))
    d_rows = pa.record_batch({"key": ["d"] * 30, "timestamp": pa.array(np.arange(30) * MIN5,
                                                                       pa.timestamp("ns")),
                              "value": np.cos(np.arange(30.0))})
    d_late = late(_batch(d_rows)).numpy("anomaly_score")
    d_alone = _det()(_batch(d_rows)).numpy("anomaly_score")
    np.testing.assert_array_equal(d_late, d_alone)
    rb = _stream(60, keys=keys)
    for k in keys:
        alone = _det()(_batch(rb.filter(pa.array(np.array(rb.column("key").to_pylist()) == k))))
        mask = np.array(together.keys()) == k
        for col in ("anomaly_score", "anomaly_likelihood"):
            np.testing.assert_array_equal(together.numpy(col)[mask], alone.numpy(col))


def test_numpy_and_torch_backends_give_the_same_scores():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    data = _batch(_stream(50, keys=("a", "b")))
    a = _det(device="numpy")(data)
    b = _det(device="torch")(data)
    assert_same_outputs(a, b, "numpy vs torch", rtol=0, atol=0)
    moved = _det(device="numpy")
    moved(_batch(data.data.slice(0, 50)))
    moved.to("torch")
    tail = moved(_batch(data.data.slice(50)))
    np.testing.assert_array_equal(tail.numpy("anomaly_score"),
                                  a.numpy("anomaly_score")[50:])


def test_resume_mid_file_through_engine_checkpoints(tmp_path):
    data = pa.Table.from_batches([_stream(60, keys=("a", "b"))]).to_batches(max_chunksize=16)

    def source():
        return ListSource(data, name="two-keys", time="timestamp")

    ref = ListSink()
    run(source(), _det(), ref, batch_size=16)
    store = str(tmp_path / "ckpt")
    first = ListSink()
    run(source(), _det(), first, batch_size=16, checkpoint=store, max_events=48)
    second = ListSink()
    run(source(), _det(), second, batch_size=16, checkpoint=store, resume=True)
    got = pa.concat_tables([first.table(), second.table()])
    want = ref.table()
    for col in ("anomaly_score", "anomaly_likelihood"):
        np.testing.assert_array_equal(got.column(col).to_numpy(), want.column(col).to_numpy())
    assert CheckpointStore(store).latest() is not None


def test_nan_value_is_rejected_naming_row_and_key():
    rb = _stream(20)
    values = np.array(rb.column("value").to_pylist())
    values[7] = np.nan
    bad = Batch(rb.set_column(2, "value", pa.array(values)), source="f.csv", offset=100,
                time_column="timestamp")
    with pytest.raises(BadEventError, match=r"f.csv, row 107.*key 'a'.*value"):
        _det()(bad)


def test_missing_value_and_timestamp_are_rejected():
    rb = _stream(10)
    no_value = rb.set_column(2, "value", pa.array([1.0, None] + [1.0] * 8))
    with pytest.raises(BadEventError, match="row 1.*'value' is missing"):
        _det()(_batch(no_value))
    ts = rb.column("timestamp").to_pylist()
    ts[4] = None
    no_time = rb.set_column(1, "timestamp", pa.array(ts, pa.timestamp("ns")))
    with pytest.raises(BadEventError, match="row 4.*'timestamp' is missing"):
        _det()(_batch(no_time))
    with pytest.raises(SchemaError, match="timestamp"):
        _det()(_batch(rb.remove_column(1)))


def test_bad_rows_go_to_dead_letter_and_the_rest_is_scored():
    rb = _stream(30)
    values = np.array(rb.column("value").to_pylist())
    values[[3, 9]] = np.nan
    data = [rb.set_column(2, "value", pa.array(values))]
    out, dead = ListSink(), ListSink()
    run(ListSource(data, name="nan.csv", time="timestamp"), _det(), out, dead_letter=dead,
        batch_size=8)
    assert out.table().num_rows == 28
    assert dead.table().column("offset").to_pylist() == [3, 9]


def test_constant_stream_scores_are_sane():
    n = 200
    rb = pa.record_batch({"key": ["c"] * n, "timestamp": pa.array(np.arange(n) * MIN5,
                                                                  pa.timestamp("ns")),
                          "value": np.full(n, 42.0)})
    out = HTMDetector(config=SMALL, probationary_period=50, warmup=20)(_batch(rb))
    raw, score = out.numpy("anomaly_score"), out.numpy("anomaly_likelihood")
    assert np.all(np.isfinite(raw)) and np.all(np.isfinite(score))
    assert raw[-50:].mean() < 0.2          # a constant is easy to predict
    assert score.max() < 0.5                # and never alarming


def test_time_going_backwards_is_rejected_by_the_engine():
    rb = _stream(10)
    ts = rb.column("timestamp").to_numpy().astype("int64")
    ts[6] = ts[2]
    back = rb.set_column(1, "timestamp", pa.array(ts, pa.timestamp("ns")))
    with pytest.raises(BadEventError, match="row 6.*goes backwards within key 'a'"):
        run(ListSource([back], name="back.csv", time="timestamp"), _det(), ListSink())


def test_auto_resolution_never_looks_ahead():
    full = _det(resolution="auto", warmup=15)(_batch(_stream(40)))
    prefix = _det(resolution="auto", warmup=15)(_batch(_stream(40).slice(0, 25)))
    np.testing.assert_array_equal(full.numpy("anomaly_score")[:25],
                                  prefix.numpy("anomaly_score"))
    assert np.all(full.numpy("anomaly_score")[:15] == 1.0)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="value_range"):
        HTMDetector(config=SMALL, resolution="minmax")
    with pytest.raises(ValueError, match="resolution"):
        HTMDetector(config=SMALL, resolution="wide")
    det = _det()
    det(_batch(_stream(5)))
    other = HTMDetector(config=HTMConfig.small(seed=9), resolution=0.5)
    with pytest.raises(ValueError, match="configuration"):
        other.load_state_dict(det.state_dict())
