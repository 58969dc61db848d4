"""Arrow IPC files and streams (``.arrow``, ``.arrows``, ``.feather`` v2) as source and sink.

The source reads both IPC formats and tells them apart by their first bytes: the file
format (``ARROW1`` magic, random access through its footer) and the stream format.
Local files are memory-mapped, so batches are zero-copy views of the file. Resuming a
file-format source jumps to the record batch holding the row; a stream is read from the
start and the rows before the position are skipped (no conversion, just slices).

A truncated file (a crash while it was written) loses its footer; the source then reads
it as the stream it contains, delivers every complete record batch, and raises
:class:`SourceError` naming the file and the byte offset where the damage starts.

Example:
    >>> import os, tempfile, pyarrow as pa
    >>> from connectors.arrow_ipc import ArrowSource
    >>> path = os.path.join(tempfile.mkdtemp(), "events.arrow")
    >>> table = pa.table({"key": ["a", "b", "a", "b"], "x": [1.0, 2.0, 3.0, 4.0]})
    >>> with pa.ipc.new_file(path, table.schema) as w:
    ...     w.write_table(table, max_chunksize=2)
    >>> src = ArrowSource(path, key="key", batch_size=3)
    >>> src.length()
    4
    >>> [(b.offset, b.num_rows) for b in src.batches({"row": 1})]
    [(1, 1), (2, 2)]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from stream.errors import SchemaError, SourceError

from .file_sink import FileSink
from .file_source import FileSource

_MAGIC = b"ARROW1"
_ERRORS = (pa.ArrowInvalid, pa.ArrowIOError, OSError)


class ArrowSource(FileSource):
    """Read Arrow IPC files or streams (one file, a folder, a glob or a URI).

    Args:
        path: where the data is.
        key / time: the stream key and event-time columns (must exist when given).
        batch_size: largest batch handed to the runtime, in rows.
        columns: read only these columns.
    """

    extensions = (".arrow", ".arrows", ".ipc", ".feather")

    def _open(self, file: str) -> Any:
        try:
            if isinstance(self.fs, pafs.LocalFileSystem):
                return pa.memory_map(file, "r")
            return self.fs.open_input_file(file)
        except OSError as exc:
            raise SourceError(f"{file}: cannot be opened: {exc}") from exc

    def _select(self, file: str, rb: pa.RecordBatch) -> pa.RecordBatch:
        if self.columns is None:
            return rb
        missing = [c for c in self.columns if rb.schema.get_field_index(c) < 0]
        if missing:
            raise SchemaError(f"{file}: column(s) {missing} are missing "
                              f"(columns: {', '.join(rb.schema.names)})")
        return rb.select(self.columns)

    def _read(self, file: str, start_row: int) -> Iterator[tuple[pa.RecordBatch, int]]:
        f = self._open(file)
        try:
            head = f.read(len(_MAGIC))
            if head == _MAGIC:
                f.seek(0)
                try:
                    reader = pa.ipc.open_file(f)
                except _ERRORS:
                    # no footer: a truncated file; its body is an IPC stream after the magic
                    yield from self._read_stream(file, f, start_row, 8,
                                                 "IPC file without its footer")
                    return
                yield from self._read_file_format(file, reader, start_row)
            else:
                yield from self._read_stream(file, f, start_row, 0, "IPC stream")
        finally:
            f.close()

    def _read_file_format(self, file: str, reader: Any,
                          start_row: int) -> Iterator[tuple[pa.RecordBatch, int]]:
        row = 0
        for i in range(reader.num_record_batches):
            try:
                rb = reader.get_batch(i)
            except _ERRORS as exc:
                raise SourceError(f"{file}: record batch {i} (row {row}) cannot be read: "
                                  f"{exc}") from exc
            yield from self._from_row(file, rb, row, start_row)
            row += rb.num_rows

    def _from_row(self, file: str, rb: pa.RecordBatch, row: int,
                  start_row: int) -> Iterator[tuple[pa.RecordBatch, int]]:
        """The part of ``rb`` (whose first row is ``row``) at or after ``start_row``."""
        if row + rb.num_rows > start_row:
            skip = max(0, start_row - row)
            yield self._select(file, rb.slice(skip) if skip else rb), row + skip

    def _read_stream(self, file: str, f: Any, start_row: int, at: int,
                     what: str) -> Iterator[tuple[pa.RecordBatch, int]]:
        f.seek(at)
        try:
            reader = pa.ipc.open_stream(f)
        except _ERRORS as exc:
            raise SourceError(f"{file}: not an Arrow IPC file or stream (no schema at byte "
                              f"{at}): {exc}") from exc
        row = 0
        while True:
            good = f.tell()
            try:
                rb = reader.read_next_batch()
            except StopIteration:
                break
            except _ERRORS as exc:
                raise SourceError(f"{file}: {what} is truncated or damaged at byte {good} "
                                  f"(after row {row - 1}; {row} rows before it were delivered): "
                                  f"{exc}") from exc
            yield from self._from_row(file, rb, row, start_row)
            row += rb.num_rows
        if at:
            # a file whose stream ended cleanly but whose footer is gone: still damaged
            raise SourceError(f"{file}: {what}: the footer at byte {f.tell()} is missing or "
                              f"damaged (the file is truncated); its {row} rows were delivered")

    def _count(self, file: str) -> int | None:
        f = self._open(file)
        try:
            if f.read(len(_MAGIC)) != _MAGIC:
                return None
            f.seek(0)
            reader = pa.ipc.open_file(f)
            return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        except _ERRORS:
            return None
        finally:
            f.close()


class ArrowSink(FileSink):
    """Write Arrow IPC (``format="file"``, random access; or ``"stream"``).

    See :mod:`connectors.file_sink` for exactly-once part files and reading them back:
    ``pyarrow.dataset.dataset(path, format="arrow")`` reads a folder of file-format parts;
    stream-format parts read back in order with :class:`ArrowSource`.
    """

    extension = ".arrow"

    def __init__(self, path: str, *, format: str = "file", parts: bool | None = None,
                 durable: bool = True):
        if format not in ("file", "stream"):
            raise ValueError(f"{path}: format must be 'file' or 'stream', got {format!r}")
        super().__init__(path, parts=parts, durable=durable)
        self.format = format
        if format == "stream":
            self.extension = ".arrows"

    def _new_writer(self, stream: Any, schema: pa.Schema) -> Any:
        new = pa.ipc.new_file if self.format == "file" else pa.ipc.new_stream
        return new(stream, schema)
