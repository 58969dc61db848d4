"""Property tests of the run loop's micro-batcher: whatever the source chunking, batch
size and max delay, every row arrives exactly once, in order within its key, and a run
stopped at a checkpoint and resumed adds up to the uninterrupted run."""

import tempfile
from unittest import mock

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import ListSink, ListSource

from stream import CheckpointStore, Operator, run

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Sizes(Operator):
    """Records each micro-batch's size and tags each row with its batch number."""

    def __init__(self):
        self.sizes: list[int] = []

    def process(self, batch):
        self.sizes.append(batch.num_rows)
        return batch.with_columns({"micro": np.full(batch.num_rows, len(self.sizes) - 1)})


@st.composite
def chunked_streams(draw):
    n = draw(st.integers(1, 300))
    keys = draw(st.lists(st.sampled_from("abcd"), min_size=n, max_size=n))
    table = pa.table({"key": keys, "ts": np.arange(n), "x": np.arange(n, dtype=float)})
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=20)) if n > 1 else []))
    bounds = [0, *cuts, n]
    return table, [table.slice(lo, hi - lo).combine_chunks().to_batches()[0]
                   for lo, hi in zip(bounds, bounds[1:], strict=False)]


@SETTINGS
@given(stream=chunked_streams(), batch_size=st.integers(1, 64),
       max_delay=st.sampled_from([0.0, 0.001, 0.05]), read_ahead=st.integers(1, 4))
def test_every_row_once_in_order_within_key(stream, batch_size, max_delay, read_ahead):
    table, chunks = stream
    op, sink = Sizes(), ListSink()
    summary = run(ListSource(chunks), op, sink, batch_size=batch_size, max_delay=max_delay,
                  read_ahead=read_ahead)
    out = sink.table()
    assert summary["events"] == table.num_rows == out.num_rows
    assert out.column("ts").to_pylist() == list(range(table.num_rows))  # once each, in order
    assert all(0 < s <= batch_size for s in op.sizes)
    assert sum(op.sizes) == table.num_rows
    keys = np.array(out.column("key").to_pylist())
    for k in set(keys):
        ts = out.column("ts").to_numpy()[keys == k]
        assert np.all(np.diff(ts) > 0), f"key {k} out of order"


@settings(SETTINGS, max_examples=20)  # three runs an example, each taking its locks
@given(stream=chunked_streams(), batch_size=st.integers(1, 40), every=st.integers(1, 4),
       stop=st.floats(0.0, 1.0))
def test_stop_and_resume_equals_uninterrupted(stream, batch_size, every, stop):
    table, chunks = stream
    full = ListSink()
    run(ListSource(chunks), Sizes(), full, batch_size=batch_size)
    sink = ListSink()
    # this checks what is resumed, not durability: skip the (slow, shared-disk) fsyncs
    with tempfile.TemporaryDirectory() as d, mock.patch("os.fsync"):
        store = CheckpointStore(d, fingerprint="sizes")
        run(ListSource(chunks), Sizes(), sink, batch_size=batch_size, checkpoint=store,
            checkpoint_every_batches=every, max_events=int(stop * table.num_rows))
        if sink.batches:
            sink.batches.append(sink.batches[-1])  # output after the last checkpoint
        run(ListSource(chunks), Sizes(), sink, batch_size=batch_size, checkpoint=store, resume=True)
    got = sink.table()
    assert got.column("ts").to_pylist() == full.table().column("ts").to_pylist()
    assert got.column("x").equals(full.table().column("x"))


def reference_order_check(batches):
    """Per-row reference of the event-time check: bad rows per batch, last time per key."""
    last, bad = {}, []
    for keys, times in batches:
        flags = []
        for k, t in zip(keys, times, strict=True):
            flags.append(k in last and t < last[k])
            last[k] = max(last.get(k, t), t)
        bad.append(flags)
    return bad, last


@SETTINGS
@given(chunks=st.lists(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 30)), min_size=1,
                         max_size=20), min_size=1, max_size=6),
       sort=st.booleans(), int_keys=st.booleans())
def test_event_time_check_matches_a_per_row_reference(chunks, sort, int_keys):
    from stream.batch import Batch
    from stream.checks import EventTimeOrder

    if sort:  # the fast path: times in order overall
        flat = sorted(t for c in chunks for _, t in c)
        it = iter(flat)
        chunks = [[(k, next(it)) for k, _ in c] for c in chunks]
    batches = [([ord(k) if int_keys else k for k, _ in c], [t for _, t in c]) for c in chunks]
    want_bad, want_last = reference_order_check(batches)
    op = EventTimeOrder()
    for (keys, times), want in zip(batches, want_bad, strict=True):
        found = op.check_rows(Batch(pa.record_batch({"key": keys, "ts": pa.array(times, pa.int64())})))
        got = np.zeros(len(keys), bool) if found is None else found[0]
        assert got.tolist() == want
    assert {k: int(v) for k, v in op.last.items()} == want_last
