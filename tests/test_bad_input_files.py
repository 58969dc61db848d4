"""Bad paths, files and rows, through the ``hebbstream`` command: nothing the user had is
lost, every refusal is one message naming the file, section, row or path, and with a
``[dead_letter]`` sink a bad source row is written there and the run completes."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from bad_input import assert_kept, assert_refused, run_cli, snapshot, write_pipeline

from connectors.csv import CSVSink

ROWS = [f"{'ab'[i % 2]},{i},{i / 4}" for i in range(40)]
SOURCE = '[source]\ntype = "csv"\npath = "{src}"\nkey = "key"\ntime = "ts"\n'
BAD = {"cell": "a,3,oops", "cells": "a,3", "utf8": "a,3,\xff", "quote": 'a,3,"1.5'}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_csv(tmp_path / "data.csv", ROWS)
    return tmp_path


def write_csv(path: Path, rows: list[str], header: str = "key,ts,x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([header, *rows]) + "\n"
    path.write_bytes(text.encode("utf-8", "surrogateescape").replace("\xff".encode(), b"\xff"))
    return path


def pipeline(folder: Path, src: str = "data.csv", sink: str | None = "out.csv", dead: str | None = None,
             checkpoint: bool = False, extra: str = "", sink_type: str = "csv") -> Path:
    text = SOURCE.format(src=src) + extra
    if sink is not None:
        text += f'[sink]\ntype = "{sink_type}"\npath = "{sink}"\n'
    if dead is not None:
        text += f'[dead_letter]\ntype = "csv"\npath = "{dead}"\n'
    if checkpoint:
        text += '[checkpoint]\npath = "ckpt"\nevery_batches = 1\n[run]\nbatch_size = 8\n'
    return write_pipeline(folder, text)


def cli(folder: Path, *flags: str, toml: Path | None = None):
    return run_cli(["run", str(toml or folder / "pipeline.toml"), *flags], cwd=folder)


def read_out(path: Path) -> pa.Table:
    if path.is_dir():
        return ds.dataset(str(path), format="csv").to_table()
    return pacsv.read_csv(str(path))


def assert_ran(result) -> None:
    assert result.escaped is None and result.rc == 0, result.err
    assert "Traceback" not in result.err


# -- section 3: sink paths that would lose data, refused before anything is opened ---------

def _link(folder: Path) -> str:
    (folder / "link.csv").symlink_to(folder / "data.csv")
    return "link.csv"


def _hard(folder: Path) -> str:
    os.link(folder / "data.csv", folder / "hard.csv")
    return "hard.csv"


def _in_folder(folder: Path) -> str:
    write_csv(folder / "in" / "data.csv", ROWS)
    return "in"


def _linked_folder(folder: Path) -> str:
    write_csv(folder / "real" / "data.csv", ROWS)
    (folder / "alias").symlink_to(folder / "real", target_is_directory=True)
    return "alias"


# (id, set-up returning the source path or None, source, sink, dead letter, names in the message)
OVERLAPS = [
    ("sink-is-source", None, "data.csv", "data.csv", None, ["[sink] path", "[source] path", "data.csv"]),
    ("sink-is-source-via-dotdot", None, "data.csv", "sub/../data.csv", None, ["[sink] path", "data.csv"]),
    ("sink-is-symlink-to-source", _link, "data.csv", "link.csv", None, ["[sink] path", "link.csv", "data.csv"]),
    ("sink-is-hard-link-to-source", _hard, "data.csv", "hard.csv", None, ["[sink] path", "hard.csv"]),
    ("sink-folder-holds-source", _in_folder, "in/data.csv", "in", None, ["[sink] path", "is a folder holding"]),
    ("sink-inside-source-folder", _in_folder, "in", "in/out.csv", None, ["[sink] path", "inside the folder"]),
    ("sink-in-symlinked-source-folder", _linked_folder, "alias", "real/out.csv", None,
     ["[sink] path", "inside the folder", "[source] path"]),
    ("dead-letter-is-source", None, "data.csv", "out.csv", "data.csv", ["[dead_letter] path", "[source] path"]),
    ("dead-letter-is-sink", None, "data.csv", "out.csv", "out.csv", ["[dead_letter] path", "[sink] path"]),
    ("dead-letter-inside-sink-folder", None, "data.csv", "out", "out/dead.csv",
     ["[dead_letter] path", "[sink] path", "inside the folder"]),
]


@pytest.mark.parametrize("case_id, setup, src, sink, dead, names", OVERLAPS, ids=[c[0] for c in OVERLAPS])
def test_overlapping_paths_are_refused_before_anything_is_opened(folder, case_id, setup, src, sink, dead, names):
    if setup is not None:
        setup(folder)
    (folder / "out").mkdir()
    (folder / "out" / "kept.csv").write_text("an earlier run's output\n")
    before = snapshot(folder)
    toml = pipeline(folder, src=src, sink=sink, dead=dead, checkpoint=True)
    result = cli(folder)
    assert_refused(result, str(toml), *names, rc=1)
    assert_kept(before)
    assert not (folder / "ckpt").exists()  # refused before the checkpoint store was made


# -- section 3: FIFOs and devices are written in place, never renamed over -----------------

def test_dev_null_is_a_discard_sink_with_and_without_checkpoints(folder):
    for checkpoint in (False, True):
        pipeline(folder, sink="/dev/null", dead="/dev/null" if not checkpoint else None, checkpoint=checkpoint)
        assert_ran(cli(folder))
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert_ran(cli(folder, "--resume"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt", "data.csv", "pipeline.toml"]


def test_a_fifo_sink_is_written_in_place(folder):
    os.mkfifo(folder / "pipe")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append((folder / "pipe").read_bytes()))
    reader.start()
    pipeline(folder, sink="pipe")
    result = cli(folder)
    reader.join(10)
    assert_ran(result)
    assert stat.S_ISFIFO(os.stat(folder / "pipe").st_mode)
    assert pacsv.read_csv(pa.BufferReader(got[0])).equals(pacsv.read_csv(folder / "data.csv"))


def test_a_fifo_sink_with_checkpoints_is_refused_naming_it(folder):
    os.mkfifo(folder / "pipe")
    toml = pipeline(folder, sink="pipe", checkpoint=True)
    assert_refused(cli(folder), str(toml), "[sink] path", "pipe", "is a FIFO", "checkpoints", rc=1)
    assert stat.S_ISFIFO(os.stat(folder / "pipe").st_mode)


# -- sections 4 and 6: bad rows named at their real row, or dead-lettered ------------------

def rows_with(bad: str, at: int) -> list[str]:
    return [*ROWS[:at], bad, *ROWS[at:]]


@pytest.mark.parametrize("kind, names", [
    ("cell", ["row 3 (line 5)", "column 'x'", "'oops' is not of type double"]),
    ("cells", ["row 3 (line 5)", "expected 3 cells, got 2"]),
    ("utf8", ["row 3 (line 5)", "column 'x'", "not valid utf8 text"]),
])
def test_a_bad_row_in_the_first_block_is_named_at_its_row(folder, kind, names):
    write_csv(folder / "data.csv", rows_with(BAD[kind], 3))
    before = snapshot(folder)
    pipeline(folder, extra='column_types = { x = "float64" }\n')
    assert_refused(cli(folder), "data.csv", *names, rc=1)
    assert_kept(before)


@pytest.mark.parametrize("kind", ["cell", "cells", "utf8"])
def test_a_bad_row_goes_to_the_dead_letter_sink_and_the_run_completes(folder, kind):
    write_csv(folder / "data.csv", rows_with(BAD[kind], 3))
    pipeline(folder, dead="dead.csv", extra='column_types = { x = "float64" }\n')
    assert_ran(cli(folder))
    assert read_out(folder / "out.csv").num_rows == len(ROWS)
    dead = read_out(folder / "dead.csv").to_pylist()
    assert len(dead) == 1 and dead[0]["source"].endswith("data.csv") and dead[0]["offset"] == 3
    assert "line 5" in dead[0]["reason"]
    raw = json.loads(dead[0]["record"])
    assert raw == BAD[kind].replace("\xff", "\\xff")


def test_invalid_utf8_keeps_a_text_column_text_in_parquet(folder):
    write_csv(folder / "data.csv", [*ROWS[:2], "caf\xff,2,0.5", *ROWS[3:]])
    pipeline(folder, sink="out.parquet", sink_type="parquet", dead="dead.csv")
    assert_ran(cli(folder))
    out = pq.read_table(folder / "out.parquet")
    assert out.schema.field("key").type == pa.string() and out.num_rows == len(ROWS) - 1
    assert read_out(folder / "dead.csv").column("offset").to_pylist() == [2]


def test_bad_rows_after_the_first_block_keep_their_rows(folder):
    rows = [*ROWS]
    for at in (9, 20, 33):
        rows[at] = f"a,{at},bad{at}"
    write_csv(folder / "data.csv", rows)
    pipeline(folder, dead="dead.csv", extra='column_types = { x = "float64" }\nblock_size = 64\n')
    assert_ran(cli(folder))
    assert read_out(folder / "out.csv").column("ts").to_pylist() == [i for i in range(40) if i not in (9, 20, 33)]
    dead = read_out(folder / "dead.csv")
    assert dead.column("offset").to_pylist() == [9, 20, 33]
    assert [json.loads(r) for r in dead.column("record").to_pylist()] == [rows[9], rows[20], rows[33]]


def test_dead_letter_records_are_strict_json(folder):
    # ts 5 after ts 9 within key "b": rejected by the event-time check, with x = inf
    write_csv(folder / "data.csv", ["a,1,0.5", "b,9,1.5", "b,5,inf", "a,10,-inf"])
    pipeline(folder, dead="dead.csv")
    assert_ran(cli(folder))
    record = read_out(folder / "dead.csv").column("record").to_pylist()[0]
    assert "Infinity" in record and json.loads(record, parse_constant=lambda c: pytest.fail(c)) == \
        {"key": "b", "ts": 5, "x": "Infinity"}


def test_resume_after_a_stop_dead_letters_each_bad_row_once(folder):
    rows = [*ROWS]
    for at in (5, 17, 30):
        rows[at] = f"b,{at},x{at}"
    write_csv(folder / "data.csv", rows)
    pipeline(folder, dead="dead", checkpoint=True, sink="out", extra='column_types = { x = "float64" }\n')
    assert_ran(cli(folder, "--max-events", "20"))
    assert_ran(cli(folder, "--resume"))
    assert read_out(folder / "out").column("ts").to_pylist() == [i for i in range(40) if i not in (5, 17, 30)]
    assert read_out(folder / "dead").column("offset").to_pylist() == [5, 17, 30]


# -- section 4: Parquet page checksums --------------------------------------------------------

def test_a_flipped_bit_in_parquet_names_file_and_row_group(folder):
    path = folder / "data.parquet"
    pq.write_table(pa.table({"key": ["a"] * 300, "ts": list(range(300)), "x": [i / 3 for i in range(300)]}),
                   path, row_group_size=100, compression="none", write_page_checksum=True)
    col = pq.ParquetFile(path).metadata.row_group(1).column(2)
    first = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(path.read_bytes())
    data[first + col.total_compressed_size - 8] ^= 0x10
    path.write_bytes(bytes(data))
    before = snapshot(path)
    write_pipeline(folder, '[source]\ntype = "parquet"\npath = "data.parquet"\nkey = "key"\ntime = "ts"\n'
                           '[sink]\ntype = "csv"\npath = "out.csv"\n')
    assert_refused(cli(folder), "data.parquet", "row group 1", "checksum", rc=1)
    assert_kept(before)


# -- section 5: sinks that cannot be written -------------------------------------------------

@pytest.mark.parametrize("case_id, sink, dead, names", [
    ("sink-under-a-file", "data.csv/out.csv", None, ["data.csv/out.csv", "cannot create"]),
    ("dead-letter-under-a-file", "out.csv", "data.csv/dead.csv", ["data.csv/dead.csv", "cannot create"]),
    ("sink-permission-denied", "/sys/hebbstream-out.csv", None, ["/sys/hebbstream-out.csv", "cannot create"]),
    ("sink-no-space", "/dev/full", None, ["/dev/full", "No space left on device"]),
])
def test_a_sink_that_cannot_be_written_is_one_line(folder, case_id, sink, dead, names):
    if case_id == "dead-letter-under-a-file":
        write_csv(folder / "data.csv", rows_with(BAD["cell"], 3))
    before = snapshot(folder)
    pipeline(folder, sink=sink, dead=dead, extra='column_types = { x = "float64" }\n')
    result = cli(folder)
    assert_refused(result, *names, rc=1)
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert_kept(before)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_missing_sink_folder_is_created(folder):
    pipeline(folder, sink="new/deeper/out.csv")
    assert_ran(cli(folder))
    assert read_out(folder / "new" / "deeper" / "out.csv").num_rows == len(ROWS)


def test_disk_full_mid_run_then_resume_gives_the_uninterrupted_output(folder, monkeypatch):
    pipeline(folder, sink="out", checkpoint=True)
    assert_ran(cli(folder))
    want = read_out(folder / "out")
    for leftover in (folder / "out", folder / "ckpt"):
        for p in sorted(leftover.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
    writes = {"n": 0}
    make = CSVSink._new_writer

    def full_disk(self, stream, schema):
        writer = make(self, stream, schema)

        class Full:
            def write_batch(self, rb):
                writes["n"] += 1
                if writes["n"] == 3:
                    raise OSError(errno.ENOSPC, "No space left on device")
                writer.write_batch(rb)

            def close(self):
                writer.close()
        return Full()

    monkeypatch.setattr(CSVSink, "_new_writer", full_disk)
    assert_refused(cli(folder), "out", "No space left on device", "write 8 rows (from", rc=1)
    monkeypatch.undo()
    assert_ran(cli(folder, "--resume"))
    assert read_out(folder / "out").equals(want)


def test_a_source_under_a_file_is_named(folder):
    pipeline(folder, src="data.csv/inner.csv")
    assert_refused(cli(folder), "data.csv/inner.csv", rc=1)


def test_resuming_a_finished_run_whose_last_row_was_bad_adds_nothing(folder):
    write_csv(folder / "data.csv", rows_with(BAD["cell"], len(ROWS)))
    pipeline(folder, dead="dead", checkpoint=True, sink="out", extra='column_types = { x = "float64" }\n')
    assert_ran(cli(folder))
    assert_ran(cli(folder, "--resume"))
    assert read_out(folder / "dead").column("offset").to_pylist() == [len(ROWS)]
    assert read_out(folder / "out").num_rows == len(ROWS)
