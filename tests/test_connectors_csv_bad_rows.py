"""CSV rows that cannot be read: named at their real row and line, or handed to the run
as BadEventError (raw text, position after them) when it has a dead-letter sink; the
good rows are exactly what Arrow reads from the file without the bad ones."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from connectors.csv import CSVSink, CSVSource
from connectors.memory import MemorySink
from stream import BadEventError, SourceError, run
from stream.checks import EventTimeOrder

HEADER = "key,ts,x,note"


def good_rows(n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return [f"{'abc'[i % 3]},{i},{rng.normal():.6f},n{i}" for i in range(n)]


def write(path: Path, rows: list[str], header: str = HEADER, newline: str = "\n") -> str:
    data = (newline.join([header, *rows]) + newline).encode("utf-8", "surrogateescape")
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


def drain(src: CSVSource, position=None) -> tuple[pa.Table | None, list[BadEventError]]:
    batches, bad = [], []
    for item in src.batches(position):
        if isinstance(item, BadEventError):
            bad.append(item)
        else:
            batches.append(item)
            assert item.positions().tolist() == list(range(item.offset, item.offset + item.num_rows))
    table = pa.Table.from_batches([b.data for b in batches]) if batches else None
    return table, bad


def skipping(path: str, **kw) -> CSVSource:
    src = CSVSource(path, key="key", time="ts", column_types={"x": "float64"}, **kw)
    src.skip_bad_rows = True
    return src


BAD_KINDS = {"cell": "a,{i},oops,n{i}", "short": "a,{i},1.0", "long": "a,{i},1.0,n,extra",
             "utf8": "a,{i},2.0,caf\udcff", "number-utf8": "a,{i},\udcff,n{i}"}


@pytest.mark.parametrize("block_size", [64, 1000, 1 << 20])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_bad_rows_are_set_apart_and_the_rest_reads_as_arrow_reads_it(tmp_path, block_size, suffix):
    rows = good_rows(300)
    bad_at = [0, 1, 2, 57, 58, 150, 299]
    mixed = list(rows)
    kinds = list(BAD_KINDS)
    for j, i in enumerate(bad_at):
        mixed[i] = BAD_KINDS[kinds[j % len(kinds)]].format(i=i)
    path = write(tmp_path / f"mixed{suffix}", mixed)
    table, bad = drain(skipping(path, block_size=block_size))
    want = pacsv.read_csv(write(tmp_path / "clean.csv", [r for i, r in enumerate(rows) if i not in bad_at]),
                          convert_options=pacsv.ConvertOptions(column_types={"x": pa.float64()}))
    assert table.equals(want)
    assert table.schema.field("note").type == pa.string()
    assert [b.offset for b in bad] == bad_at
    assert [b.record for b in bad] == [mixed[i].replace("\udcff", "\\xff") for i in bad_at]
    assert [b.position for b in bad] == [{"row": i + 1} for i in bad_at]
    assert all(f"line {i + 2}" in b.reason and b.source == path for b, i in zip(bad, bad_at))


@pytest.mark.parametrize("kind, names", [
    ("cell", ["row 4 (line 6), column 'x': 'oops' is not of type double"]),
    ("short", ["row 4 (line 6): expected 4 cells, got 3"]),
    ("utf8", ["row 4 (line 6), column 'note'", "is not valid utf8 text"]),
])
def test_without_a_dead_letter_sink_the_first_bad_row_stops_the_source_at_its_row(tmp_path, kind, names):
    rows = good_rows(50)
    rows[4] = BAD_KINDS[kind].format(i=4)
    src = CSVSource(write(tmp_path / "m.csv", rows), key="key", time="ts", column_types={"x": "float64"})
    got = 0
    with pytest.raises(SourceError) as info:
        for batch in src.batches():
            got += batch.num_rows
    assert got == 4  # the rows before it, not a block's worth of nothing
    for name in names:
        assert name in str(info.value)


def test_invalid_utf8_leaves_text_columns_text_and_binary_when_asked(tmp_path):
    rows = good_rows(20)
    rows[3] = "a,3,1.0,caf\udcff"
    path = write(tmp_path / "u.csv", rows)
    table, bad = drain(skipping(path))
    assert table.schema.field("note").type == pa.string() and [b.offset for b in bad] == [3]
    src = CSVSource(path, column_types={"note": "binary"})
    assert pa.Table.from_batches([b.data for b in src.batches()]).column("note")[3].as_py() == b"caf\xff"


def test_resuming_past_bad_rows_does_not_hand_them_out_again(tmp_path):
    rows = good_rows(100)
    for i in (10, 40, 41):
        rows[i] = f"a,{i},bad,n"
    path = write(tmp_path / "m.csv", rows)
    table, bad = drain(skipping(path, block_size=128), {"row": 41})
    assert [b.offset for b in bad] == [41]
    assert table.column("ts").to_pylist() == list(range(42, 100))
    table, bad = drain(skipping(path, block_size=128), {"row": 42})
    assert bad == [] and table.column("ts")[0].as_py() == 42


def test_positions_in_a_folder_name_the_file(tmp_path):
    write(tmp_path / "p1.csv", good_rows(5))
    rows = good_rows(5)
    rows[2] = "a,2,x,n"
    write(tmp_path / "p2.csv", rows)
    _, bad = drain(skipping(str(tmp_path)))
    assert [(b.offset, b.position) for b in bad] == [(2, {"file": 1, "path": "p2.csv", "row": 3})]


def test_line_numbers_count_empty_lines_and_quoted_line_breaks(tmp_path):
    rows = ['a,0,1.0,"two\nlines"', "", "b,1,2.0,n", "c,2,bad,n", 'a,3,"4.0', "b,4,5.0,n"]
    path = write(tmp_path / "q.csv", rows)
    table, bad = drain(skipping(path, newlines_in_values=True))
    assert table.column("ts").to_pylist() == [0, 1] and table.column("note")[0].as_py() == "two\nlines"
    # row 2 is on line 6 (header, two lines, an empty line, row 1); the unclosed quote runs to the end
    assert [(b.offset, b.reason.split(",")[0].split(":")[0]) for b in bad] == [(2, "line 6"), (3, "line 7")]
    assert bad[1].record == 'a,3,"4.0\nb,4,5.0,n'


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_windows_and_old_mac_line_ends(tmp_path, newline):
    rows = good_rows(30)
    rows[7] = "a,7,bad,n"
    table, bad = drain(skipping(write(tmp_path / "w.csv", rows, newline=newline), block_size=100))
    assert table.num_rows == 29 and [(b.record, b.reason.split(",")[0]) for b in bad] == [("a,7,bad,n", "line 9")]


def test_a_latin1_file(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("key,ts,x,note\na,0,1.0,caf\xe9\na,1,zwei,n\na,2,3.0,\xfc\n".encode("latin-1"))
    table, bad = drain(skipping(str(path), encoding="latin1"))
    assert table.column("note").to_pylist() == ["caf\xe9", "\xfc"] and [b.record for b in bad] == ["a,1,zwei,n"]


class _CrashAfter(CSVSink):
    """A sink that fails on its n-th write, like a process killed part-way."""

    def __init__(self, path: str, n: int):
        super().__init__(path, durable=False)
        self.n = n

    def write(self, batch):
        self.n -= 1
        if self.n == 0:
            raise RuntimeError("crash")
        super().write(batch)


def test_a_run_resumed_after_a_crash_dead_letters_every_bad_row_once(tmp_path):
    rows = good_rows(400)
    for i in range(5, 400, 37):
        rows[i] = f"{'abc'[i % 3]},{i},bad{i},n"
    path = write(tmp_path / "m.csv", rows)

    def go(name, sink, resume=False):
        dead = CSVSink(str(tmp_path / name / "dead"), durable=False)
        return run(CSVSource(path, key="key", time="ts", column_types={"x": "float64"}, block_size=256),
                   EventTimeOrder(), sink, dead_letter=dead, batch_size=16, checkpoint=str(tmp_path / name / "ck"),
                   checkpoint_every_batches=3, resume=resume)

    whole = go("whole", CSVSink(str(tmp_path / "whole" / "out"), durable=False))
    with pytest.raises(RuntimeError):
        go("crashed", _CrashAfter(str(tmp_path / "crashed" / "out"), 11))
    go("crashed", CSVSink(str(tmp_path / "crashed" / "out"), durable=False), resume=True)
    for part in ("out", "dead"):
        a = CSVSource(str(tmp_path / "whole" / part))
        b = CSVSource(str(tmp_path / "crashed" / part))
        ta = pa.Table.from_batches([x.data for x in a.batches()])
        tb = pa.Table.from_batches([x.data for x in b.batches()])
        assert ta.equals(tb), part
    dead = pa.Table.from_batches([x.data for x in CSVSource(str(tmp_path / "whole" / "dead")).batches()])
    assert dead.column("offset").to_pylist() == list(range(5, 400, 37)) == \
        [o for o in range(400) if rows[o].split(",")[2].startswith("bad")]
    assert whole["dead_letter"] == len(range(5, 400, 37))
    assert [json.loads(r) for r in dead.column("record").to_pylist()] == [rows[i] for i in range(5, 400, 37)]


def test_a_run_without_a_dead_letter_sink_stops_naming_the_row(tmp_path):
    rows = good_rows(30)
    rows[12] = "a,12,bad,n"
    src = CSVSource(write(tmp_path / "m.csv", rows), key="key", time="ts", column_types={"x": "float64"})
    sink = MemorySink()
    with pytest.raises(SourceError, match=r"m\.csv row 12 \(line 14\), column 'x'"):
        run(src, EventTimeOrder(), sink, batch_size=4)


def test_a_paced_replay_dead_letters_a_bad_row_too(tmp_path):
    rows = good_rows(20)
    rows[6] = "a,6,bad,n"
    src = CSVSource(write(tmp_path / "m.csv", rows), key="key", time="ts", column_types={"x": "float64"})
    out, dead = MemorySink(), MemorySink()
    summary = run(src, EventTimeOrder(), out, dead_letter=dead, speed=1e6)
    assert summary["events"] == 19 and summary["dead_letter"] == 1
    assert dead.to_table().column("offset").to_pylist() == [6]
