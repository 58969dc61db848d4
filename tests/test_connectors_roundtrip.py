"""Property tests: any table written by a sink (one file or parts) reads back the same,
at any batch size, and resuming at any position gives exactly the rows after it."""

import os
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from connector_data import FORMATS, read_all, source, write_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.arrow_ipc import ArrowSink, ArrowSource
from stream import Batch

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# no \r or \n: CSV rows are lines unless the reader is told otherwise
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=8)


@st.composite
def tables(draw, min_rows: int = 1, max_rows: int = 60) -> pa.Table:
    n = draw(st.integers(min_rows, max_rows))
    ints = draw(st.lists(st.one_of(st.none(), st.integers(-2**62, 2**62)), min_size=n, max_size=n))
    floats = draw(st.lists(st.one_of(st.none(), st.floats(allow_nan=False, width=64)),
                           min_size=n, max_size=n))
    texts = draw(st.lists(TEXT, min_size=n, max_size=n))
    keys = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
    seconds = np.cumsum(draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n)))
    return pa.table({
        "key": pa.array(keys),
        "ts": pa.array(seconds.astype("datetime64[ms]"), pa.timestamp("ms")),
        "i": pa.array(ints, pa.int64()),
        "f": pa.array(floats, pa.float64()),
        "s": pa.array(texts, pa.string()),
    })


def write_parts(table: pa.Table, folder: str, fmt: str, cuts: list[int]) -> str:
    """Write ``table`` through the format's sink, committing a part at each cut."""
    sink = FORMATS[fmt][1](os.path.join(folder, "out" + FORMATS[fmt][2]), durable=False)
    sink.open(None)
    lo = 0
    for hi in [*sorted(set(cuts)), table.num_rows]:
        if hi > lo:
            sink.write(Batch(table.slice(lo, hi - lo).combine_chunks().to_batches()[0]))
        if hi < table.num_rows:
            sink.flush()
        lo = max(lo, hi)
    sink.close()
    return sink.path


@pytest.mark.parametrize("fmt", list(FORMATS))
@SETTINGS
@given(table=tables(), batch_size=st.integers(1, 70), data=st.data())
def test_round_trip_and_resume_anywhere(fmt, table, batch_size, data):
    cuts = data.draw(st.lists(st.integers(1, table.num_rows), max_size=3), label="part cuts")
    with tempfile.TemporaryDirectory() as d:
        path = write_parts(table, d, fmt, cuts)
        src = source(fmt, path, table.schema, key="key", time="ts", batch_size=batch_size)
        back, batches = read_all(src)
        assert back.equals(table), f"{fmt}: {back} != {table}"
        assert all(b.num_rows <= batch_size for b in batches)
        # resume after any batch: the position the runtime would checkpoint
        k = data.draw(st.integers(0, len(batches) - 1), label="resume after batch")
        for b in batches[:k + 1]:
            position = src.position_after(b)
        done = sum(b.num_rows for b in batches[:k + 1])
        rest, _ = read_all(source(fmt, path, table.schema, key="key", time="ts",
                                  batch_size=batch_size), position)
        if done == table.num_rows:
            assert rest is None
        else:
            assert rest.equals(table.slice(done)), f"resumed at {position}"


@pytest.mark.parametrize("fmt", ["arrow", "arrows", "parquet", "csv"])
@SETTINGS
@given(table=tables(), batch_size=st.integers(1, 70), chunk=st.integers(1, 30), data=st.data())
def test_plain_file_resume_at_any_row(fmt, table, batch_size, chunk, data):
    """Files written by plain pyarrow, any record-batch/row-group size, any row."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t." + fmt)
        write_file(table, path, fmt, chunk=chunk)
        row = data.draw(st.integers(0, table.num_rows - 1), label="row")
        src = source(fmt, path, table.schema, batch_size=batch_size)
        got, batches = read_all(src, {"row": row})
        assert got.equals(table.slice(row))
        starts = np.cumsum([row] + [b.num_rows for b in batches[:-1]])
        assert [b.offset for b in batches] == starts.tolist()
        if fmt in ("arrow", "parquet"):
            assert src.length() == table.num_rows


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_parts_read_back_with_pyarrow_dataset(tmp_path, fmt):
    table = pa.table({"key": ["a", "b"] * 50, "x": np.arange(100.0)})
    path = write_parts(table, str(tmp_path), fmt, [10, 60])
    assert sorted(os.listdir(path)) == [f"part-0000{i}{FORMATS[fmt][2]}" for i in range(3)]
    # CSV stores text: give the schema, or 0.0 written as "0" is read back as an integer
    back = ds.dataset(path, format="ipc" if fmt == "arrow" else fmt, schema=table.schema).to_table()
    assert back.sort_by("x").equals(table)


def test_stream_format_parts_read_back_in_order_with_arrow_source(tmp_path):
    """pyarrow.dataset reads only the IPC file format; a folder of stream-format parts
    (``.arrows``) reads back as one stream, in part order, with ArrowSource."""
    table = pa.table({"key": ["a", "b"] * 50, "x": np.arange(100.0)})
    sink = ArrowSink(str(tmp_path / "out.arrows"), format="stream", durable=False)
    sink.open(None)
    for lo, hi in ((0, 10), (10, 60), (60, 100)):
        sink.write(Batch(table.slice(lo, hi - lo).combine_chunks().to_batches()[0]))
        sink.flush()
    sink.close()
    assert sorted(os.listdir(sink.path)) == [f"part-0000{i}.arrows" for i in range(3)]
    with pytest.raises(pa.ArrowInvalid):
        ds.dataset(sink.path, format="ipc")
    got, _ = read_all(ArrowSource(sink.path))
    assert got.equals(table)


def test_csv_options(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("when\tkey\tv\n03/01/2024 10:00\tk1\t1\n03/01/2024 10:05\tk2\t\n")
    src = source("csv", str(path), key="key", time="when", delimiter="\t",
                 timestamp_format="%d/%m/%Y %H:%M", column_types={"v": "float32"},
                 columns=["v"])
    (b,) = list(src.batches())
    assert b.column_names == ["v", "key", "when"]  # the columns asked for, then key and time
    assert b.schema.field("when").type == pa.timestamp("s")
    assert b.schema.field("v").type == pa.float32() and b.column("v").null_count == 1
    assert b.times().tolist() == [1704276000 * 10**9, 1704276300 * 10**9]
    assert b.key_column == "key" and b.time_column == "when"


def test_glob_and_folder_read_files_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        write_file(pa.table({"x": [i, i]}), str(tmp_path / f"p-{i}.parquet"), "parquet")
    (tmp_path / "_SUCCESS").write_text("")
    for path in (str(tmp_path), str(tmp_path / "p-*.parquet"), "file://" + str(tmp_path)):
        got, batches = read_all(source("parquet", path))
        assert got.column("x").to_pylist() == [1, 1, 2, 2, 10, 10], path
        assert os.path.basename(batches[-1].source) == "p-10.parquet"
    assert source("parquet", str(tmp_path)).length() == 6


def test_csv_text_with_line_breaks_and_quotes(tmp_path):
    table = pa.table({"s": ['line\nbreak', 'say "hi", twice', "", "NA"], "i": [1, 2, 3, 4]})
    path = write_parts(table, str(tmp_path), "csv", [2])
    got, _ = read_all(source("csv", path, table.schema, newlines_in_values=True))
    assert got.equals(table)
