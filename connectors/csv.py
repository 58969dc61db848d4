"""CSV files as source (``pyarrow.csv.open_csv``, streaming) and sink (``CSVWriter``).

Parsing and type conversion run in Arrow's C++ reader, block by block. Column types are
inferred from the first block of the first file (later files of a folder or glob are
read with the same types), or set with ``column_types``; ISO-8601 timestamps parse by
themselves, others with ``timestamp_format`` (``strptime`` codes). Resuming reads and
drops the rows before the position: CSV has no index to seek with.

When a cell does not parse (``abc`` in a column of numbers), a row has the wrong number
of cells (a truncated file) or a quote never closes, the rows before it are delivered
and :class:`SourceError` names the file, the row (0-based, header not counted), the
line and the column. Finding that row re-reads the damaged part in Python, only once
the error has happened.

Example:
    >>> import os, tempfile
    >>> from connectors.csv import CSVSource
    >>> path = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> _ = open(path, "w").write("ts;key;x\\n2024-01-01 00:00;a;1.5\\n2024-01-01 00:05;b;oops\\n")
    >>> src = CSVSource(path, key="key", time="ts", delimiter=";", column_types={"x": "float64"})
    >>> next(iter(src.batches())).num_rows  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    stream.errors.SourceError: ...m.csv row 1 (line 3), column 'x': 'oops' is not of type double ...
"""

from __future__ import annotations

import codecs
import csv as pycsv
import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from stream.errors import ConfigError, SchemaError, SourceError
from stream.options import at_least

from .file_sink import FileSink
from .file_source import FileSource

_SCAN_LIMIT = 1_000_000  # rows re-read in Python to find a bad cell


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

    def _options(self, types: dict[str, pa.DataType]) -> tuple[Any, Any, Any]:
        read = pacsv.ReadOptions(block_size=self.block_size, encoding=self.encoding,
                                 use_threads=False)
        parse = pacsv.ParseOptions(delimiter=self.delimiter,
                                   newlines_in_values=self.newlines_in_values)
        kw: dict[str, Any] = {"column_types": types, "include_columns": self.columns}
        if self.timestamp_formats:
            kw["timestamp_parsers"] = [pacsv.ISO8601, *self.timestamp_formats]
        if self.null_values is not None:
            kw["null_values"] = self.null_values
        return read, parse, pacsv.ConvertOptions(**{k: v for k, v in kw.items() if v is not None})

    def _types(self) -> dict[str, pa.DataType]:
        # later files of a multi-file source get the first file's types, so that a
        # column inferred as int64 in one file is not double in the next
        pinned = {f.name: f.type for f in self._schema} if self._schema is not None else {}
        return {**pinned, **self.column_types}

    def _read(self, file: str, start_row: int) -> Iterator[tuple[pa.RecordBatch, int]]:
        types = self._types()
        row = 0
        schema = None
        try:
            reader = pacsv.open_csv(self.fs.open_input_stream(file), *self._options(types))
            schema = reader.schema
            for rb in reader:
                n = rb.num_rows
                if row + n > start_row:
                    skip = max(0, start_row - row)
                    yield (rb.slice(skip) if skip else rb), row + skip
                row += n
        except pa.ArrowKeyError as exc:  # a column asked for is not in the header
            raise SchemaError(f"{file}: {str(exc).strip(chr(34))}") from exc
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, UnicodeDecodeError) as exc:
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise SourceError(f"{file}: cannot be opened: {exc}") from exc
            known = {f.name: f.type for f in schema} if schema is not None else types
            where = self._locate(file, row, known) or (
                f"after row {row - 1}" if row else "in its first rows")
            raise SourceError(f"{file} {where} ({row} rows before it were delivered): "
                              f"{str(exc).splitlines()[0]}") from exc
        if row == 0:
            raise SourceError(f"{file}: has a header but no rows")

    def _locate(self, file: str, start: int, types: dict[str, pa.DataType]) -> str | None:
        """Find the first bad row at or after ``start`` by re-reading in Python."""
        opts = pacsv.ConvertOptions()
        nulls = set(self.null_values if self.null_values is not None else opts.null_values)
        with self.fs.open_input_stream(file) as raw:
            text = io.TextIOWrapper(io.BufferedReader(raw), encoding=self.encoding, newline="")
            reader = pycsv.reader(text, delimiter=self.delimiter, strict=True)
            row = -1
            try:
                names = next(reader)
                for cells in reader:
                    if not cells:
                        continue  # pyarrow skips empty lines too
                    row += 1
                    if row < start:
                        continue
                    if row > start + _SCAN_LIMIT:
                        return None
                    where = f"row {row} (line {reader.line_num})"
                    if len(cells) != len(names):
                        return (f"{where}: expected {len(names)} cells, got {len(cells)} "
                                "(truncated or malformed)")
                    for name, value in zip(names, cells, strict=True):
                        typ = types.get(name)
                        if typ is None or value in nulls or self._parses(value, typ):
                            continue
                        return f"{where}, column {name!r}: {value!r} is not of type {typ}"
            except pycsv.Error as exc:
                return f"row {row + 1} (line {reader.line_num}): {exc}"
            except UnicodeDecodeError as exc:
                return f"after row {row}: not {self.encoding} text ({exc.reason})"
        return None

    def _parses(self, value: str, typ: pa.DataType) -> bool:
        if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ):
            return True
        cell = pa.array([value])
        try:
            cell.cast(typ)
            return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        if pa.types.is_timestamp(typ):
            for fmt in self.timestamp_formats:
                try:
                    pc.strptime(cell, format=fmt, unit=typ.unit)
                    return True
                except pa.ArrowInvalid:
                    continue
        return False


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
