"""Bad input: every error names the file and the column and row (or byte offset); the
rows before damage are delivered first."""

import numpy as np
import pyarrow as pa
import pytest
from connector_data import FORMATS, read_all, source, write_file, write_lines

from stream import SchemaError, SourceError

TABLE = pa.table({"key": np.array(["a", "b"])[np.arange(400) % 2], "ts": np.arange(400),
                  "x": np.arange(400) * 0.5})


def drain(src, position=None) -> tuple[int, Exception | None]:
    """Rows delivered before the source raised, and what it raised."""
    rows = 0
    try:
        for b in src.batches(position):
            rows += b.num_rows
    except (SourceError, SchemaError) as exc:
        return rows, exc
    return rows, None


def test_missing_file_folder_and_glob(tmp_path):
    for cls, _, ext in FORMATS.values():
        with pytest.raises(SourceError, match=r"nope\.\w+: no such file or folder"):
            cls(str(tmp_path / ("nope" + ext)))
        with pytest.raises(SourceError, match="no file matches"):
            cls(str(tmp_path / ("*" + ext)))
        (tmp_path / "readme.txt").write_text("hi")
        with pytest.raises(SourceError, match=rf"holds no .*{ext}.* files \(found: readme.txt\)"):
            cls(str(tmp_path))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_empty_file(tmp_path, fmt):
    path = tmp_path / ("empty" + FORMATS[fmt][2])
    path.write_bytes(b"")
    rows, exc = drain(source(fmt, str(path)))
    assert rows == 0 and isinstance(exc, SourceError)
    assert str(path) in str(exc) and "empty (0 bytes)" in str(exc)


def test_header_only_csv(tmp_path):
    path = write_lines(tmp_path / "h.csv", ["key,ts,x"])
    rows, exc = drain(source("csv", path))
    assert isinstance(exc, SourceError) and f"{path}: has a header but no rows" in str(exc)


@pytest.mark.parametrize("fmt", ["arrow", "arrows"])
def test_truncated_arrow_delivers_rows_before_the_damage(tmp_path, fmt):
    path = str(tmp_path / f"t.{fmt}")
    write_file(TABLE, path, fmt, chunk=100)
    data = open(path, "rb").read()
    cut = str(tmp_path / f"cut.{fmt}")
    open(cut, "wb").write(data[:int(len(data) * 0.6)])
    rows, exc = drain(source("arrow", cut, key="key", batch_size=30))
    assert rows == 200  # two complete record batches of 100 rows
    assert isinstance(exc, SourceError)
    assert cut in str(exc) and "truncated or damaged at byte" in str(exc)
    assert "after row 199" in str(exc)


def test_arrow_file_missing_only_its_footer(tmp_path):
    path = str(tmp_path / "t.arrow")
    write_file(TABLE, path, "arrow", chunk=100)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-10])
    rows, exc = drain(source("arrow", path))
    assert rows == 400 and isinstance(exc, SourceError) and "footer" in str(exc)


def test_not_arrow_at_all(tmp_path):
    path = tmp_path / "junk.arrow"
    path.write_bytes(b"this is not arrow data at all")
    rows, exc = drain(source("arrow", str(path)))
    assert rows == 0 and isinstance(exc, SourceError) and "not an Arrow IPC file" in str(exc)


def test_truncated_parquet_names_file_size(tmp_path):
    path = str(tmp_path / "t.parquet")
    write_file(TABLE, path, "parquet", chunk=100)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    size = len(data) // 2
    with pytest.raises(SourceError, match=rf"t.parquet: not a readable Parquet file \({size} "):
        source("parquet", path).length()
    rows, exc = drain(source("parquet", path))
    assert rows == 0 and "truncated or damaged footer" in str(exc)


def test_parquet_damaged_row_group_after_good_ones(tmp_path):
    path = str(tmp_path / "t.parquet")
    write_file(TABLE, path, "parquet", chunk=100)
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(2).column(2)  # column x of the third row group
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(open(path, "rb").read())
    data[start:start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    open(path, "wb").write(bytes(data))
    rows, exc = drain(source("parquet", path, batch_size=64))
    assert rows == 200
    assert isinstance(exc, SourceError) and "row group 2 (rows 200..299)" in str(exc)


def test_truncated_csv_names_row_and_line(tmp_path):
    lines = ["key,ts,x"] + [f"a,{i},{i}.5" for i in range(3000)]
    path = write_lines(tmp_path / "t.csv", [*lines, "a,3000"])  # last row cut short
    rows, exc = drain(source("csv", path, block_size=4096))
    assert isinstance(exc, SourceError)
    assert 0 < rows <= 3000
    assert f"{path} row 3000 (line 3002): expected 3 cells, got 2" in str(exc)


def test_csv_cell_of_the_wrong_type_names_file_column_row(tmp_path):
    lines = ["key,ts,x"] + [f"a,{i},{i}.5" for i in range(3000)]
    lines[2501] = "a,2500,hot"
    path = write_lines(tmp_path / "w.csv", lines)
    rows, exc = drain(source("csv", path, key="key", time="ts", block_size=4096))
    assert isinstance(exc, SourceError) and 0 < rows <= 2500
    assert f"{path} row 2500 (line 2502), column 'x': 'hot' is not of type double" in str(exc)


def test_csv_bad_timestamp_with_format(tmp_path):
    path = write_lines(tmp_path / "t.csv", ["ts,x", "01/02/2024 10:00,1", "yesterday,2"])
    rows, exc = drain(source("csv", path, time="ts", timestamp_format="%d/%m/%Y %H:%M"))
    assert "row 1 (line 3), column 'ts': 'yesterday' is not of type timestamp[s]" in str(exc)


def test_csv_types_follow_the_first_file(tmp_path):
    write_lines(tmp_path / "p1.csv", ["key,x", "a,1", "b,2"])
    write_lines(tmp_path / "p2.csv", ["key,x", "a,3", "b,4.5"])
    rows, exc = drain(source("csv", str(tmp_path)))
    # p2.csv row 0 reads with the first file's types and is delivered; row 1 does not
    assert rows == 3 and isinstance(exc, SourceError)
    assert "p2.csv row 1 (line 3), column 'x': '4.5' is not of type int64" in str(exc)
    got, _ = read_all(source("csv", str(tmp_path), column_types={"x": "float64"}))
    assert got.column("x").to_pylist() == [1.0, 2.0, 3.0, 4.5]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("role", ["key", "time"])
def test_missing_key_or_time_column(tmp_path, fmt, role):
    path = str(tmp_path / ("t" + FORMATS[fmt][2]))
    write_file(TABLE, path, fmt)
    rows, exc = drain(source(fmt, path, **{role: "device"}))
    assert rows == 0 and isinstance(exc, SchemaError)
    assert f"{path}: the {role} column 'device' is missing (columns: key, ts, x)" in str(exc)


def test_time_column_of_strings(tmp_path):
    path = write_lines(tmp_path / "t.csv", ["when,x", "noon,1"])
    rows, exc = drain(source("csv", path, time="when"))
    assert isinstance(exc, SchemaError) and "time column 'when' holds string" in str(exc)


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_files_with_different_schemas(tmp_path, fmt):
    ext = FORMATS[fmt][2]
    write_file(TABLE, str(tmp_path / ("a" + ext)), fmt)
    wider = TABLE.append_column("extra", pa.array(np.zeros(400)))
    write_file(wider, str(tmp_path / ("b" + ext)), fmt)
    rows, exc = drain(source(fmt, str(tmp_path)))
    assert rows == 400 and isinstance(exc, SchemaError)
    assert "b" + ext in str(exc) and "new column 'extra'" in str(exc) and "a" + ext in str(exc)


def test_resume_position_from_another_file_list(tmp_path):
    for name in ("a", "b"):
        write_file(TABLE, str(tmp_path / f"{name}.arrow"), "arrow")
    src = source("arrow", str(tmp_path))
    with pytest.raises(SourceError, match="file 1 is now b.arrow, not c.arrow"):
        list(src.batches({"file": 1, "path": "c.arrow", "row": 5}))
    with pytest.raises(SourceError, match="holds 2 file"):
        list(src.batches({"file": 7, "row": 0}))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_selected_column_missing(tmp_path, fmt):
    path = str(tmp_path / ("t" + FORMATS[fmt][2]))
    write_file(TABLE, path, fmt)
    rows, exc = drain(source(fmt, path, columns=["x", "y"]))
    assert isinstance(exc, SchemaError) and path in str(exc) and "'y'" in str(exc), fmt
