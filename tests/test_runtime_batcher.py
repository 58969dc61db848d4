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


@SETTINGS
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
