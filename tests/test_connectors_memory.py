"""MemorySource over every in-memory shape; MemorySink through a resumed run."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from river import datasets
from running_sum import RunningSum
from streams import make_stream

from connectors.memory import MemorySink, MemorySource
from stream import CheckpointStore, SchemaError, run

EXPECTED = {"key": ["a", "b", "a"], "x": [1.0, 2.0, 3.0]}


@pytest.mark.parametrize("data", [
    [{"key": "a", "x": 1.0}, {"key": "b", "x": 2.0}, {"key": "a", "x": 3.0}],
    {"key": np.array(["a", "b", "a"]), "x": np.array([1.0, 2.0, 3.0])},
    pd.DataFrame(EXPECTED),
    pa.table(EXPECTED),
    pa.record_batch(EXPECTED),
], ids=["dicts", "numpy", "pandas", "table", "record_batch"])
def test_every_shape_gives_the_same_columns(data):
    src = MemorySource(data, key="key", batch_size=2)
    batches = list(src.batches())
    assert [b.num_rows for b in batches] == [2, 1] and [b.offset for b in batches] == [0, 2]
    assert pa.Table.from_batches([b.data for b in batches]).to_pydict() == EXPECTED
    assert src.length() == 3
    assert [b.num_rows for b in src.batches({"row": 1})] == [2]


def test_numpy_tensor_column():
    images = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    (b,) = list(MemorySource({"image": images, "y": np.arange(4)}).batches())
    assert b.numpy("image").shape == (4, 2, 3) and np.array_equal(b.numpy("image"), images)


def test_river_dataset_gives_x_columns_and_target():
    ds = datasets.Phishing()
    src = MemorySource(ds, batch_size=300, target="label")
    table = pa.Table.from_batches([b.data for b in src.batches()])
    x0, y0 = next(iter(ds))
    assert table.num_rows == 1250 == src.length()
    assert table.slice(0, 1).to_pylist()[0] == {**x0, "label": y0}
    resumed = pa.Table.from_batches([b.data for b in src.batches({"row": 700})])
    assert resumed.equals(table.slice(700))


def test_later_rows_are_cast_to_the_first_batch_types():
    rows = [{"x": 1.5}, {"x": 2}, {"x": None}]
    got = pa.Table.from_batches([b.data for b in MemorySource(rows, batch_size=1).batches()])
    assert got.schema.field("x").type == pa.float64() and got.column("x").to_pylist() == [1.5, 2.0, None]


def test_a_new_column_later_is_an_error_naming_the_rows():
    rows = [{"x": 1.0}, {"x": 2.0, "extra": 1}]
    with pytest.raises(SchemaError, match=r"memory rows 1\.\.1: new column 'extra'"):
        list(MemorySource(rows, batch_size=1).batches())


def test_missing_key_column_and_bad_rows():
    with pytest.raises(SchemaError, match="the key column 'device' is missing"):
        list(MemorySource(EXPECTED, key="device").batches())
    with pytest.raises(SchemaError, match="expected a dict or an"):
        list(MemorySource([1, 2, 3]).batches())


def test_memory_sink_resumed_run_equals_uninterrupted(tmp_path):
    data = pa.Table.from_batches(make_stream(300, chunk=40))
    full = MemorySink()
    run(MemorySource(data, key="key", time="ts", batch_size=40), RunningSum(), full, batch_size=16)
    sink = MemorySink()
    store = CheckpointStore(str(tmp_path), fingerprint="sum")
    src = MemorySource(data, key="key", time="ts", batch_size=40)
    run(src, RunningSum(), sink, batch_size=16, checkpoint=store, checkpoint_every_batches=4,
        max_events=130)
    run(src, RunningSum(), sink, batch_size=16, checkpoint=store, resume=True)
    assert sink.to_table().equals(full.to_table()) and full.to_table().num_rows == 300
