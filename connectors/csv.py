"""CSV files as source (``pyarrow.csv.open_csv``, streaming) and sink (``CSVWriter``).

Parsing and type conversion run in Arrow's C++ reader, block by block. Column types are
inferred from the first block of the first file (later files of a folder or glob are
read with the same types), or set with ``column_types``; ISO-8601 timestamps parse by
themselves, others with ``timestamp_format`` (``strptime`` codes). Resuming reads and
drops the rows before the position: CSV has no index to seek with.

Bad rows: a cell that does not parse (``abc`` in a column of numbers), a row with the
wrong number of cells (a truncated file), a quote that never closes, or bytes that are
not valid text in the file's encoding. Without a dead-letter sink the rows before it
are delivered and :class:`SourceError` names the file, the row (0-based, header not
counted), the line and the column. With one (:attr:`FileSource.skip_bad_rows`), the row
goes to the dead-letter sink with its raw text and reading goes on after it; positions
still count it, so a resumed run neither repeats nor loses it.

Text columns stay text: inference ignores rows that are not valid UTF-8 (pyarrow would
turn the column into ``binary``), and such a row is a bad row like any other. A column
is binary only when ``column_types`` says so.

How a bad row is found: only once Arrow's reader has failed on a block, the rows from
that block on are split by a byte scan (line ends; with ``newlines_in_values``, quotes)
and read again with Arrow, halving the range until the bad row is alone; so the good
rows get exactly Arrow's conversion, and reading goes on with Arrow's reader after it.

Example:
    >>> import os, tempfile
    >>> from connectors.csv import CSVSource
    >>> path = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> _ = open(path, "w").write("ts;key;x\\n2024-01-01 00:00;a;1.5\\n2024-01-01 00:05;b;oops\\n")
    >>> src = CSVSource(path, key="key", time="ts", delimiter=";", column_types={"x": "float64"})
    >>> [b.num_rows for b in src.batches()]  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    stream.errors.SourceError: ...m.csv row 1 (line 3), column 'x': 'oops' is not of type double
    >>> src.skip_bad_rows = True  # what a run with a dead-letter sink sets
    >>> [(type(b).__name__, b.offset) for b in src.batches()]
    [('Batch', 0), ('BadEventError', 1)]
"""

from __future__ import annotations

import codecs
import collections
import csv as pycsv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from stream.errors import BadEventError, ConfigError, SchemaError, SourceError
from stream.options import at_least

from .file_sink import FileSink
from .file_source import FileSource

_EOL = re.compile(rb"\r\n|\n|\r")
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4", ".br")


def arrow_type(spec: str | pa.DataType, where: str = "") -> pa.DataType:
    """A pyarrow type from its name in a config file (``"float64"``, ``"timestamp[ms]"``).

    >>> arrow_type("timestamp[s]"), arrow_type("string")
    (TimestampType(timestamp[s]), DataType(string))
    """
    if isinstance(spec, pa.DataType):
        return spec
    try:
        return pa.type_for_alias(spec)
    except (ValueError, KeyError) as exc:
        raise SchemaError(f"{where}: unknown column type {spec!r} (use names like int64, float64, "
                          "string, bool, timestamp[s], timestamp[ms], date32)") from exc


class CSVSource(FileSource):
    """Read CSV files (one file, a folder, a glob or a URI; ``.gz`` etc. decompressed).

    Args:
        path: where the data is.
        key / time: the stream key and event-time columns (must exist when given).
        batch_size: largest batch handed to the runtime, in rows.
        columns: read only these columns.
        delimiter: cell separator.
        column_types: column name -> type name or ``pyarrow.DataType``.
        timestamp_format: ``strptime`` format(s) for timestamp columns (ISO-8601 works
            without one); a column named by ``time`` is parsed as a timestamp.
        null_values: strings read as missing (pyarrow's defaults when ``None``).
        block_size: bytes parsed per block.
        encoding: the files' text encoding.
        newlines_in_values: allow line breaks inside quoted cells (slower to parse;
            needed to read back text columns holding line breaks).
    """

    extensions = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".csv.bz2", ".csv.zst")
    option_checks = {**FileSource.option_checks, "block_size": at_least(1)}

    def __init__(self, path: str, *, key: str | None = None, time: str | None = None,
                 batch_size: int = 65536, columns: list[str] | None = None, delimiter: str = ",",
                 column_types: dict[str, Any] | None = None,
                 timestamp_format: str | list[str] | None = None,
                 null_values: list[str] | None = None, block_size: int = 1 << 20,
                 encoding: str = "utf8", newlines_in_values: bool = False,
                 files: list[str] | None = None):
        super().__init__(path, key=key, time=time, batch_size=batch_size, columns=columns,
                         files=files)
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ConfigError(f"{path}: unknown encoding {encoding!r} (e.g. 'utf8', 'latin1', 'cp1252')") from None
        self.delimiter = delimiter
        self.column_types = {k: arrow_type(v, path) for k, v in (column_types or {}).items()}
        formats = [timestamp_format] if isinstance(timestamp_format, str) else timestamp_format
        self.timestamp_formats = list(formats or [])
        if time and self.timestamp_formats and time not in self.column_types:
            self.column_types[time] = pa.timestamp("s")
        self.null_values = null_values
        self.block_size = int(block_size)
        self.encoding = encoding
        self.newlines_in_values = newlines_in_values

    # -- options -----------------------------------------------------------------------
    def _convert(self, types: dict[str, pa.DataType] | None) -> pacsv.ConvertOptions:
        kw: dict[str, Any] = {"column_types": types, "include_columns": self.columns}
        if self.timestamp_formats:
            kw["timestamp_parsers"] = [pacsv.ISO8601, *self.timestamp_formats]
        if self.null_values is not None:
            kw["null_values"] = self.null_values
        return pacsv.ConvertOptions(**{k: v for k, v in kw.items() if v is not None})

    def _parse(self, **kw: Any) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=self.newlines_in_values, **kw)

    def _read_options(self, names: list[str] | None, size: int = 0) -> pacsv.ReadOptions:
        return pacsv.ReadOptions(block_size=max(self.block_size, size + 1), encoding=self.encoding,
                                 use_threads=False, column_names=names)

    def _table(self, data: bytes, names: list[str], types: dict[str, pa.DataType],
               convert: pacsv.ConvertOptions | None = None) -> pa.Table:
        """Rows (no header) read by Arrow with fixed types; raises what Arrow raises."""
        # one block through the streaming reader: read_csv costs several times more per call
        read = pacsv.ReadOptions(block_size=len(data) + 1, encoding=self.encoding, use_threads=False,
                                 column_names=names)
        return pacsv.open_csv(pa.BufferReader(data), read, self._parse(),
                              convert or self._convert(types)).read_all()

    # -- bytes -------------------------------------------------------------------------
    def _open_at(self, file: str, at: int) -> Any:
        """The (decompressed) bytes of ``file`` from byte ``at``."""
        if not file.lower().endswith(_COMPRESSED):
            f = self.fs.open_input_file(file)
            f.seek(at)
            return f
        f = self.fs.open_input_stream(file)  # decompressed by its extension: skip by reading
        while at > 0:
            chunk = f.read(min(at, 1 << 20))
            if not chunk:
                break
            at -= len(chunk)
        return f

    def _records(self, f: Any, at: int, line: int) -> Iterator[_Record]:
        """The non-empty records (rows, or the header) of ``f``, which is at byte ``at``, line ``line``."""
        start = at
        parts: list[bytes] = []
        quotes = 0
        for text in _lines(f):
            if not parts and not text.strip(b"\r\n"):
                start, line = start + len(text), line + 1  # Arrow skips empty lines too
                continue
            parts.append(text)
            if self.newlines_in_values:
                quotes += text.count(b'"')
            if quotes % 2 == 0:
                data = b"".join(parts)
                yield _Record(start, line, data, len(parts))
                start, line, parts = start + len(data), line + len(parts), []
        if parts:  # an unclosed quote runs to the end
            yield _Record(start, line, b"".join(parts), len(parts))

    def _layout(self, file: str) -> tuple[list[str], dict[str, pa.DataType], _Record]:
        """Header names, the type of every column read, and the header record."""
        with self._open_at(file, 0) as f:
            records = self._records(f, 0, 1)
            header = next(records)
            text = header.data.decode(self.encoding, "replace").lstrip("\ufeff")
            names = next(pycsv.reader(io.StringIO(text), delimiter=self.delimiter))
            pinned = self._types()
            if self._schema is not None:
                return names, pinned, header
            # the first block, without the rows Arrow's inference would stumble on
            sample, size = [], header.end
            for rec in records:
                if sample and size + len(rec.data) > self.block_size:
                    break
                size += len(rec.data)
                if self._utf8 and not _decodes(rec.data):
                    continue
                sample.append(rec.data)
        data = header.data + b"".join(sample)
        try:
            table = pacsv.read_csv(pa.BufferReader(data), self._read_options(None, len(data)),
                                   self._parse(invalid_row_handler=lambda _row: "skip"),
                                   self._convert(None))
        except pa.ArrowKeyError as exc:  # a column asked for is not in the header
            raise SchemaError(f"{file}: {str(exc).strip(chr(34))}") from exc
        types = {f.name: pa.string() if pa.types.is_binary(f.type) else f.type for f in table.schema}
        return names, {**types, **pinned}, header

    # -- reading -------------------------------------------------------------------------
    def _read(self, file: str, start_row: int) -> Iterator[tuple[pa.RecordBatch, int] | BadEventError]:
        try:
            names, types, header = self._layout(file)
        except StopIteration:
            raise SourceError(f"{file}: the file is empty") from None
        except OSError as exc:
            raise SourceError(f"{file}: cannot be read: {exc}") from exc
        at, line, row = header.end, header.next_line, 0  # where Arrow's reader (re)starts
        while True:
            first = row
            try:
                for rb in self._arrow(file, at, names, types):
                    yield from _from(rb, row, start_row)
                    row += rb.num_rows
                break
            except pa.ArrowInvalid as exc:
                failure = exc
            except OSError as exc:
                raise SourceError(f"{file}: cannot be read after row {row - 1} ({row} rows before it "
                                  f"were delivered): {exc}") from exc
            resumed = yield from self._recover(file, names, types, at, line, first, row, start_row)
            if resumed is None or resumed[2] == row and resumed[0] == at:
                raise SourceError(f"{file} after row {row - 1}: {str(failure).splitlines()[0]}") \
                    from failure
            at, line, row = resumed
        if row == 0:
            raise SourceError(f"{file}: has a header but no rows")

    def _arrow(self, file: str, at: int, names: list[str],
               types: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
        with self._open_at(file, at) as f:
            try:
                reader = pacsv.open_csv(f, self._read_options(names), self._parse(), self._convert(types))
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" in str(exc):
                    return  # (re)started at the end of the file
                raise
            yield from reader

    def _recover(self, file: str, names: list[str], types: dict[str, pa.DataType], at: int, line: int,
                 first: int, row: int,
                 start_row: int) -> Iterator[tuple[pa.RecordBatch, int] | BadEventError]:
        """After Arrow's reader (started at byte ``at``, row ``first``) failed at ``row``:
        read on in windows, setting bad rows apart, until twice a block has read cleanly;
        return where Arrow's reader restarts ``(byte, line, row)``, or ``None`` when there
        was no row left to read."""
        with self._open_at(file, at) as f:
            records = _Pushback(self._records(f, at, line))
            for _ in range(row - first):  # the rows Arrow delivered
                if next(records, None) is None:
                    return None  # the scan and Arrow disagree on the rows: give up, name the error
            # windows grow from a few rows (bad rows close together cost little) to a block
            target, clean, end = 4096, 0, None
            while clean <= 2 * self.block_size:
                window, size = [], 0
                for rec in records:
                    window.append(rec)
                    size += len(rec.data)
                    if size >= target:
                        break
                if not window:
                    break
                good, bad = self._split(window, names, types)
                if good is not None:
                    for rb in good.to_batches():
                        yield from _from(rb, row, start_row)
                        row += rb.num_rows
                if bad is None:
                    clean, target, end = clean + size, min(2 * target, self.block_size), window[-1]
                    continue
                self._reject(file, names, types, window[bad], row, start_row)
                if row >= start_row:
                    yield self._bad_event(file, names, types, window[bad], row)
                row += 1
                records.push(window[bad + 1:])  # the rows after it are read again
                target, clean, end = 4096, 0, window[bad]
        return None if end is None else (end.end, end.next_line, row)

    def _split(self, window: list[_Record], names: list[str],
               types: dict[str, pa.DataType]) -> tuple[pa.Table | None, int | None]:
        """The rows of ``window`` before its first bad row, read, and that row's index."""
        def read(n: int) -> pa.Table | None:
            try:
                return self._table(b"".join(r.data for r in window[:n]), names, types)
            except (pa.ArrowInvalid, UnicodeDecodeError):
                return None

        whole = read(len(window))
        if whole is not None:
            return whole, None
        lo, hi, good = 0, len(window), None  # window[:lo] reads, window[:hi] does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            table = read(mid)
            if table is None:
                hi = mid
            else:
                lo, good = mid, table
        return good, hi - 1

    def _reject(self, file: str, names: list[str], types: dict[str, pa.DataType], rec: _Record,
                row: int, start_row: int) -> None:
        """Stop at a bad row, unless a dead-letter sink takes it or it was taken before."""
        if self.skip_bad_rows or row < start_row:
            return
        column, why = self._diagnose(rec.data, names, types)
        where = f", column {column!r}" if column else ""
        raise SourceError(f"{file} row {row} (line {rec.line}){where}: {why}")

    def _bad_event(self, file: str, names: list[str], types: dict[str, pa.DataType], rec: _Record,
                   row: int) -> BadEventError:
        column, why = self._diagnose(rec.data, names, types)
        where = f", column {column!r}" if column else ""
        raw = rec.data.rstrip(b"\r\n").decode(self.encoding, "backslashreplace")
        return BadEventError(f"line {rec.line}{where}: {why}", source=file, offset=row, column=column,
                             record=raw)

    def _diagnose(self, data: bytes, names: list[str], types: dict[str, pa.DataType]) -> tuple[str | None, str]:
        """``(column or None, what is wrong)`` for one bad row."""
        text = data.decode(self.encoding, "surrogateescape" if self._utf8 else "replace")
        try:
            cells = next(pycsv.reader(io.StringIO(text), delimiter=self.delimiter, strict=True))
        except (pycsv.Error, StopIteration) as exc:
            return None, f"not a CSV row ({exc})"
        for name, cell in zip(names, cells):
            if not _decodes(cell.encode("utf-8", "surrogateescape")):
                raw = cell.encode("utf-8", "surrogateescape")
                return name, f"{raw!r} is not valid {self.encoding} text"
        if len(cells) != len(names):
            return None, f"expected {len(names)} cells, got {len(cells)} (truncated or malformed)"
        for name, cell in zip(names, cells):
            if name in types:
                try:
                    self._table(data, names, types, self._cell_options(name, types[name]))
                except pa.ArrowInvalid:
                    return name, f"{cell!r} is not of type {types[name]}"
        try:
            self._table(data, names, types)
        except pa.ArrowInvalid as exc:
            return None, str(exc).splitlines()[0]
        return None, "Arrow cannot read this row"

    def _cell_options(self, name: str, typ: pa.DataType) -> pacsv.ConvertOptions:
        options = self._convert({name: typ})
        options.include_columns = [name]
        return options

    @property
    def _utf8(self) -> bool:
        return codecs.lookup(self.encoding).name == "utf-8"

    def _types(self) -> dict[str, pa.DataType]:
        # later files of a multi-file source get the first file's types, so that a
        # column inferred as int64 in one file is not double in the next
        pinned = {f.name: f.type for f in self._schema} if self._schema is not None else {}
        return {**pinned, **self.column_types}


@dataclass(frozen=True)
class _Record:
    """One row (or the header) as bytes: where it starts, its first line, its text."""

    start: int
    line: int
    data: bytes
    lines: int

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    @property
    def next_line(self) -> int:
        return self.line + self.lines


class _Pushback:
    """An iterator of records that takes some back, to hand them out again first."""

    def __init__(self, records: Iterator[_Record]):
        self._records = records
        self._back: collections.deque[_Record] = collections.deque()

    def __iter__(self) -> _Pushback:
        return self

    def __next__(self) -> _Record:
        return self._back.popleft() if self._back else next(self._records)

    def push(self, records: list[_Record]) -> None:
        self._back.extendleft(reversed(records))


def _lines(f: Any) -> Iterator[bytes]:
    """Lines of a binary stream with their ends: ``\\n``, ``\\r\\n`` or a lone ``\\r``, as Arrow reads them."""
    tail = b""
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        data, start = tail + chunk, 0
        for end in _EOL.finditer(data):
            if end.end() == len(data) and data.endswith(b"\r"):
                break  # a \r\n may be cut between two reads
            yield data[start:end.end()]
            start = end.end()
        tail = data[start:]
    if tail:
        yield tail


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _from(rb: pa.RecordBatch, row: int, start_row: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    """The part of ``rb`` (whose first row is ``row``) at or after ``start_row``."""
    if row + rb.num_rows > start_row:
        skip = max(0, start_row - row)
        yield (rb.slice(skip) if skip else rb), row + skip


class CSVSink(FileSink):
    """Write CSV with a header (one per part file). See :mod:`connectors.file_sink`.

    Read the parts back with ``pyarrow.dataset.dataset(path, format="csv")`` or
    :class:`CSVSource` (give ``column_types`` where inference from text is not enough).
    """

    extension = ".csv"

    def __init__(self, path: str, *, delimiter: str = ",", parts: bool | None = None,
                 durable: bool = True):
        super().__init__(path, parts=parts, durable=durable)
        self.delimiter = delimiter

    def _new_writer(self, stream: Any, schema: pa.Schema) -> Any:
        options = pacsv.WriteOptions(delimiter=self.delimiter)
        return pacsv.CSVWriter(stream, schema, write_options=options)
