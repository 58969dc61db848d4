"""File sinks: FIFOs and devices are written in place (never renamed over), and an
operating-system error is one SinkError naming the path and the step; Parquet page
checksums turn a flipped bit into an error naming the file and row group."""

import errno
import os
import stat
import threading

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from connectors.arrow_ipc import ArrowSink
from connectors.csv import CSVSink
from connectors.parquet import ParquetSink, ParquetSource
from stream import CheckpointError, ConfigError, SourceError
from stream.batch import Batch
from stream.errors import SinkError


def rows(lo: int, n: int) -> Batch:
    return Batch(pa.record_batch({"x": list(range(lo, lo + n))}), source="in.csv", offset=lo)


@pytest.fixture
def null_clone(tmp_path):
    """A character device with /dev/null's numbers: if a sink replaced it, only this copy is lost."""
    path = tmp_path / "null"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.stat(os.devnull).st_rdev)
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    return path


@pytest.mark.parametrize("sink_type", [CSVSink, ParquetSink, ArrowSink])
def test_a_discard_device_stays_a_device_with_checkpoints(null_clone, sink_type):
    sink = sink_type(str(null_clone))
    sink.open(None)
    sink.write(rows(0, 3))
    assert sink.flush() == {"device": str(null_clone)}
    sink.write(rows(3, 2))
    sink.close()
    sink.open({"device": str(null_clone)})  # a resume
    assert stat.S_ISCHR(os.stat(null_clone).st_mode)
    assert os.listdir(null_clone.parent) == ["null"]  # no temporary files, no part folder


@pytest.mark.parametrize("sink_type, read", [
    (CSVSink, lambda b: pacsv.read_csv(pa.BufferReader(b))),
    (ParquetSink, lambda b: pq.read_table(pa.BufferReader(b))),  # writers that ask for the position
    (ArrowSink, lambda b: pa.ipc.open_file(pa.BufferReader(b)).read_all()),
])
def test_a_fifo_is_written_in_place(tmp_path, sink_type, read):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    sink = sink_type(str(fifo))
    sink.open(None)
    sink.write(rows(0, 2))
    sink.write(rows(2, 1))
    sink.close()
    reader.join(10)
    assert read(got[0]).column("x").to_pylist() == [0, 1, 2]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["pipe"]


def test_a_fifo_cannot_take_parts_or_checkpoints(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a FIFO; it cannot hold part files"):
        CSVSink(str(fifo), parts=True).open(None)
    sink = CSVSink(str(fifo))
    sink.open(None)  # nothing written yet: the FIFO is not opened, so no reader is needed
    with pytest.raises(ConfigError, match="is a FIFO: with checkpoints"):
        sink.flush()


def test_a_device_checkpoint_does_not_resume_a_regular_path(tmp_path):
    with pytest.raises(CheckpointError, match="wrote this sink to a device"):
        CSVSink(str(tmp_path / "out.csv")).open({"device": "/dev/null"})


class _Failing:
    """A pyarrow writer whose n-th write_batch fails with ``code``."""

    def __init__(self, writer, n, code):
        self.writer, self.n, self.code = writer, n, code

    def write_batch(self, rb):
        self.n -= 1
        if self.n == 0:
            raise OSError(self.code, os.strerror(self.code))
        self.writer.write_batch(rb)

    def close(self):
        self.writer.close()


def test_disk_full_is_one_line_naming_path_and_rows(tmp_path, monkeypatch):
    make = CSVSink._new_writer
    monkeypatch.setattr(CSVSink, "_new_writer", lambda self, s, schema: _Failing(make(self, s, schema), 2,
                                                                                 errno.ENOSPC))
    sink = CSVSink(str(tmp_path / "out"), durable=False)
    sink.open(None)
    sink.write(rows(0, 4))
    with pytest.raises(SinkError) as info:
        sink.write(rows(4, 3))
    assert str(info.value) == (f"{tmp_path / 'out'}: cannot write 3 rows (from in.csv row 4): "
                               "[Errno 28] No space left on device")


def test_a_commit_that_fails_names_the_part(tmp_path, monkeypatch):
    sink = CSVSink(str(tmp_path / "out"), durable=False)
    sink.open(None)
    sink.write(rows(0, 2))

    def denied(*_args):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(type(sink), "_commit", lambda self, final, durable=True: denied())
    with pytest.raises(SinkError, match=r"out: cannot commit part file 0: \[Errno 13\] Permission denied"):
        sink.flush()


def test_a_sink_under_a_file_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    sink = ArrowSink(str(tmp_path / "f" / "out.arrow"))
    sink.open(None)
    with pytest.raises(SinkError, match=r"f/out\.arrow: cannot create the output file: .*"):
        sink.write(rows(0, 1))


def test_a_flipped_bit_in_a_parquet_page_names_file_and_row_group(tmp_path):
    path = str(tmp_path / "o.parquet")
    sink = ParquetSink(path, compression="none")
    sink.open(None)
    for lo in (0, 100, 200):
        sink.write(Batch(pa.record_batch({"x": [i / 7 for i in range(lo, lo + 100)]})))
    sink.close()
    col = pq.ParquetFile(path).metadata.row_group(1).column(0)
    first = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(open(path, "rb").read())
    data[first + col.total_compressed_size - 8] ^= 0x01  # a value byte of row group 1's last page
    open(path, "wb").write(bytes(data))
    got = []
    with pytest.raises(SourceError, match=r"o\.parquet: row group 1 \(rows 100\.\.199\) is damaged .*CRC"):
        for batch in ParquetSource(path).batches():
            got.append(batch.num_rows)
    assert sum(got) == 100  # the group before it, unchanged
