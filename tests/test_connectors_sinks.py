"""File sinks: plain files, committed parts, resume at a flush point, schema changes."""

import os

import numpy as np
import pyarrow as pa
import pytest
from connector_data import FORMATS, read_all, source
from running_sum import RunningSum
from streams import make_stream

from stream import Batch, CheckpointError, CheckpointStore, SchemaError, run


def test_running_sum_meets_the_operator_contract():
    from stream.testing import check_operator

    data = Batch(pa.Table.from_batches(make_stream(60)).combine_chunks().to_batches()[0])
    check_operator(RunningSum, data)


def sink(fmt, path, **kw):
    return FORMATS[fmt][1](str(path), durable=False, **kw)


def rb(lo, hi, **extra):
    return Batch(pa.record_batch({"x": np.arange(lo, hi, dtype=float), **extra}), offset=lo)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_plain_file_without_checkpoints(tmp_path, fmt):
    path = tmp_path / ("out" + FORMATS[fmt][2])
    s = sink(fmt, path)
    s.open(None)
    s.write(rb(0, 5))
    assert not path.exists()  # in progress under a hidden name until the run ends
    s.write(rb(5, 8))
    s.close()
    assert path.is_file() and os.listdir(tmp_path) == [path.name]
    got, _ = read_all(source(fmt, str(path), pa.schema([("x", pa.float64())])))
    assert got.column("x").to_pylist() == list(range(8))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_reopen_at_flush_point_drops_later_parts_and_leftovers(tmp_path, fmt):
    path = tmp_path / "out"
    s = sink(fmt, path)
    s.open(None)
    s.write(rb(0, 4))
    point = s.flush()
    s.write(rb(4, 6))
    s.flush()
    s.write(rb(6, 9))  # in progress when the process dies
    assert point == {"parts": 1} and len(os.listdir(path)) == 3

    again = sink(fmt, path)
    again.open(point)  # resumed from the checkpoint that saw one part
    assert os.listdir(path) == ["part-00000" + FORMATS[fmt][2]]
    again.write(rb(4, 9))
    assert again.flush() == {"parts": 2}
    again.close()
    got, _ = read_all(source(fmt, str(path), pa.schema([("x", pa.float64())])))
    assert got.column("x").to_pylist() == list(range(9))


def test_fresh_run_replaces_earlier_output(tmp_path):
    path = tmp_path / "out.csv"
    s = sink("csv", path)
    s.open(None)
    s.write(rb(0, 3))
    s.flush()
    s.close()
    assert path.is_dir()
    s = sink("csv", path)
    s.open(None)  # no checkpoint: start over, as a plain file
    s.write(rb(10, 12))
    s.close()
    assert path.is_file() and path.read_text().splitlines() == ['"x"', "10", "11"]


def test_missing_committed_part_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "out"
    s = sink("parquet", path)
    s.open(None)
    for lo in (0, 3):
        s.write(rb(lo, lo + 3))
        s.flush()
    os.remove(path / "part-00000.parquet")
    with pytest.raises(CheckpointError, match=r"counts 2 committed part files, but part\(s\) \[0\]"):
        sink("parquet", path).open({"parts": 2})


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_schema_change_is_refused_and_the_file_stays_valid(tmp_path, fmt):
    path = tmp_path / ("out" + FORMATS[fmt][2])
    s = sink(fmt, path)
    s.open(None)
    s.write(rb(0, 3))
    bad = Batch(pa.record_batch({"x": [3.0], "extra": [1]}), source="in.csv", offset=3)
    with pytest.raises(SchemaError, match=r"in.csv row 3 has another schema .*new column 'extra'"):
        s.write(bad)
    with pytest.raises(SchemaError, match=r"column 'x' is int64, expected double"):
        s.write(Batch(pa.record_batch({"x": [4]})))
    s.write(rb(3, 5))
    s.close()
    got, _ = read_all(source(fmt, str(path), pa.schema([("x", pa.float64())])))
    assert got.column("x").to_pylist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_run_stopped_and_resumed_writes_every_row_once(tmp_path, fmt):
    """In-process version of the reliability test: stop after a checkpoint, leave junk
    written after it, resume: the file output equals an uninterrupted run's."""
    data = pa.Table.from_batches(make_stream(400, chunk=37))
    inp = tmp_path / "in.arrow"
    with pa.ipc.new_file(str(inp), data.schema) as w:
        w.write_table(data, max_chunksize=50)

    def go(out, **kw):
        return run(source("arrow", str(inp), key="key", time="ts", batch_size=23), RunningSum(),
                   sink(fmt, out), batch_size=20, **kw)

    go(tmp_path / "full")
    store = CheckpointStore(str(tmp_path / "ckpt"), fingerprint="sum")
    go(tmp_path / "resumed", checkpoint=store, checkpoint_every_batches=3, max_events=170)
    go(tmp_path / "resumed", checkpoint=store, checkpoint_every_batches=3, resume=True)
    full, _ = read_all(source(fmt, str(tmp_path / "full"), None))
    resumed, _ = read_all(source(fmt, str(tmp_path / "resumed"), None))
    assert resumed.num_rows == 400 and resumed.equals(full)
    # within each key the running sum matches the input
    keys = np.array(full.column("key").to_pylist())
    for k in set(keys):
        np.testing.assert_allclose(full.column("sum").to_numpy()[keys == k],
                                   np.cumsum(data.column("x").to_numpy()[keys == k]))


def test_built_from_a_pipeline_file(tmp_path):
    """The [source] / [sink] sections pass their keys to the constructors."""
    from stream.config import build, parse

    inp = tmp_path / "in.csv"
    inp.write_text("when;device;x\n2024-01-01T00:00:00;a;1\n2024-01-01T00:01:00;a;2\n")
    spec = parse(f"""
[source]
type = "csv"
path = "{inp}"
key = "device"
time = "when"
delimiter = ";"
batch_size = 1
column_types = {{ x = "float64" }}
[sink]
type = "parquet"
path = "file://{tmp_path}/out.parquet"
""")
    built = build(spec)
    summary = run(built.source, RunningSum(), built.sink, checkpoint=str(tmp_path / "ck"))
    assert summary["events"] == 2
    got, _ = read_all(source("parquet", str(tmp_path / "out.parquet")))
    assert got.column("sum").to_pylist() == [1.0, 3.0]
    assert os.listdir(tmp_path / "out.parquet") == ["part-00000.parquet"]
