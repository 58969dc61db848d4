"""Sink paths that would lose data are refused before anything is opened, from Python too."""

import os
import stat

import pyarrow as pa
import pytest

from connectors.csv import CSVSink, CSVSource
from connectors.memory import MemorySource
from stream import ConfigError, run
from stream.checks import EventTimeOrder
from stream.sink_paths import check_sink_paths, is_discard, special_kind


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "in" / "data.csv"
    path.parent.mkdir()
    path.write_text("key,ts,x\na,1,1.0\nb,2,2.0\n")
    return path


def test_run_refuses_a_sink_on_its_source_and_keeps_the_input(data):
    before = data.read_bytes()
    with pytest.raises(ConfigError, match=r"sink path .* is the file source path .*data\.csv"):
        run(CSVSource(str(data)), EventTimeOrder(), CSVSink(str(data)))
    assert data.read_bytes() == before


@pytest.mark.parametrize("sink, dead, match", [
    ("{d}/in", None, "sink path '.*in' is a folder holding source path"),
    ("{d}/in/sub/out.csv", None, "is inside the folder source path"),
    ("{d}/out.csv", "{d}/out.csv", "dead_letter path .* and sink path .* are one file"),
    ("{d}/out", "{d}/out/dead.csv", "dead_letter path .* is inside the folder sink path"),
    ("{d}/out.csv", "file://{d}/in/data.csv", "dead_letter path 'file://.*' is the file source path"),
])
def test_overlaps(data, sink, dead, match):
    d = data.parent.parent
    src = CSVSource(str(data.parent))
    parts = {"source path": src, "sink path": CSVSink(sink.format(d=d)),
             "dead_letter path": CSVSink(dead.format(d=d)) if dead else None}
    with pytest.raises(ConfigError, match=match):
        check_sink_paths(parts)


def test_paths_apart_memory_sources_and_other_filesystems_pass(data, tmp_path):
    check_sink_paths({"source path": CSVSource(str(data)), "sink path": CSVSink(str(tmp_path / "out.csv")),
                      "dead_letter path": CSVSink(str(tmp_path / "dead.csv"))})
    check_sink_paths({"source path": MemorySource(pa.table({"x": [1]})), "sink path": CSVSink(str(data))})
    check_sink_paths({"source path": CSVSource(str(data)), "sink path": CSVSink("mock://in/data.csv")})


def test_special_files_and_checkpoints(tmp_path, data):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert special_kind(str(fifo)) == "FIFO" and not is_discard(str(fifo))
    assert special_kind(str(data)) is None and special_kind(str(tmp_path / "nothing")) is None
    src = CSVSource(str(data))
    check_sink_paths({"source path": src, "sink path": CSVSink(str(fifo))})
    with pytest.raises(ConfigError, match="sink path .*pipe' is a FIFO: with checkpoints"):
        check_sink_paths({"source path": src, "sink path": CSVSink(str(fifo))}, checkpoints=True)
    with pytest.raises(ConfigError, match="is a FIFO"):
        run(src, EventTimeOrder(), CSVSink(str(fifo)), checkpoint=str(tmp_path / "ck"))
    # /dev/null discards, with checkpoints too, and may be both sinks
    check_sink_paths({"source path": src, "sink path": CSVSink(os.devnull),
                      "dead_letter path": CSVSink(os.devnull)}, checkpoints=True)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
