"""The run loop: micro-batching, resume, dead letters, pacing, back-pressure, summary."""

import json
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from streams import ListSink, ListSource, make_stream
from test_engine_batch_operator import Cumsum

from stream import BadEventError, Batch, CheckpointError, CheckpointStore, Operator, Source, run


def test_every_event_once_in_order_with_per_key_state():
    data = make_stream(200, chunk=13)
    sink = ListSink()
    summary = run(ListSource(data), Cumsum(), sink, batch_size=32)
    out = sink.table()
    assert summary["events"] == 200 and out.num_rows == 200
    assert out.column("ts").to_pylist() == list(range(200))
    x, keys, before = out.column("x").to_numpy(), out.column("key").to_numpy(zero_copy_only=False), \
        out.column("before").to_numpy()
    for k in set(keys):
        m = keys == k
        np.testing.assert_allclose(before[m], np.concatenate([[0], np.cumsum(x[m])[:-1]]))


def test_resume_after_stop_equals_uninterrupted(tmp_path):
    data = make_stream(300, chunk=11)
    full = ListSink()
    run(ListSource(data), Cumsum(), full, batch_size=20)

    sink = ListSink()
    store = CheckpointStore(str(tmp_path), fingerprint="cumsum")
    run(ListSource(data), Cumsum(), sink, batch_size=20, checkpoint=store, max_events=130,
        checkpoint_every_batches=2)
    # output written after the last checkpoint is discarded on resume (sink reopened at the flush point)
    sink.batches.append(sink.batches[-1])
    summary = run(ListSource(data), Cumsum(), sink, batch_size=20, checkpoint=store, resume=True)
    assert summary["resumed_from"] == {"row": 130} and summary["events_total"] == 300
    assert sink.table().equals(full.table())


def test_resume_into_a_different_pipeline_is_refused(tmp_path):
    data = make_stream(50)
    run(ListSource(data), Cumsum(), ListSink(), checkpoint=str(tmp_path), max_events=20)
    with pytest.raises(CheckpointError):
        run(ListSource(data), Cumsum() | Cumsum(), ListSink(), checkpoint=str(tmp_path), resume=True)


def test_bad_event_stops_run_with_location():
    rb = pa.record_batch({"key": ["a", "a", "b"], "ts": [1, 2, 3], "x": [1.0, float("nan"), 2.0]})
    with pytest.raises(BadEventError, match=r"events.csv, row 1, key 'a'.*column 'x' is nan"):
        run(ListSource([rb], name="events.csv"), Cumsum(), ListSink())


def test_dead_letter_sink_gets_reasons_and_nothing_is_lost():
    rb = pa.record_batch({"key": ["a", "a", "a", "b"], "ts": [1, 2, 0, 5], "x": [1.0, np.nan, 3.0, 4.0]})
    out, dead = ListSink(), ListSink()
    summary = run(ListSource([rb], name="e.csv"), Cumsum(), out, dead_letter=dead)
    assert summary["dead_letter"] == 2
    d = dead.table().to_pylist()
    assert [r["offset"] for r in d] == [2, 1]  # time check runs first, then the operator's
    assert "goes backwards" in d[0]["reason"] and "not a finite number" in d[1]["reason"]
    assert json.loads(d[1]["record"])["ts"] == 2 and d[0]["source"] == "e.csv"
    assert out.table().column("ts").to_pylist() == [1, 5]


def test_paced_replay_follows_event_time():
    ts = pa.array(np.arange(0, 10, dtype=np.int64) * 10**8, pa.timestamp("ns"))  # 0.1 s apart
    rb = pa.record_batch({"ts": ts, "x": np.arange(10.0)})
    t0 = time.monotonic()
    run(ListSource([rb]), Cumsum(), ListSink(), speed=4.0, batch_size=1)  # 0.9 s of events at 4x
    assert time.monotonic() - t0 >= 0.9 / 4 * 0.9


def test_max_delay_flushes_a_partial_batch():
    """A slow source must not hold events until batch_size fills."""
    rb = [pa.record_batch({"x": [float(i)]}) for i in range(3)]
    sizes = []

    class Sizes(Operator):
        def process(self, batch):
            sizes.append(batch.num_rows)
            return batch

    run(ListSource(rb, pause=0.15), Sizes(), None, batch_size=1000, max_delay=0.01)
    assert sizes == [1, 1, 1]


def test_reader_is_bounded_by_read_ahead():
    produced = []
    gate = threading.Event()

    class Endless(Source):
        def batches(self, position=None):
            for i in range(1000):
                produced.append(i)
                yield Batch(pa.record_batch({"x": [float(i)]}), offset=i)

    class Slow(Operator):
        def process(self, batch):
            gate.wait(0.02)
            return batch

    run(Endless(), Slow(), None, batch_size=1, read_ahead=4, max_events=20)
    # the reader never ran more than read_ahead (+ one in hand) batches ahead
    assert len(produced) <= 20 + 4 + 2


def test_source_error_surfaces_in_the_caller():
    class Broken(Source):
        def batches(self, position=None):
            yield Batch(pa.record_batch({"x": [1.0]}))
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        run(Broken(), Cumsum(), ListSink())


def test_summary_json(tmp_path):
    path = tmp_path / "s.json"
    run(ListSource(make_stream(50)), Cumsum(), ListSink(), summary_path=str(path), batch_size=10)
    s = json.loads(path.read_text())
    assert s["events"] == 50 and s["batches"] == 5
    assert set(s["latency_s"]) == {"p50", "p95", "p99"} and "1.Cumsum" in s["operator_seconds"]
    assert s["machine"]["cores"] >= 1


def test_a_max_delay_longer_than_the_platform_can_wait_is_capped():
    class SlowEnd(ListSource):
        def batches(self, position=None):
            yield from super().batches(position)
            time.sleep(0.2)  # the run waits on a partial micro-batch meanwhile (max_delay, capped)

    summary = run(SlowEnd(make_stream(5, chunk=5)), Cumsum(), ListSink(), batch_size=4, max_delay=1.8e10)
    assert summary["events"] == 5
