"""Shared helpers for connector tests: formats, writing tables, reading sources back."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from connectors.arrow_ipc import ArrowSink, ArrowSource
from connectors.csv import CSVSink, CSVSource
from connectors.parquet import ParquetSink, ParquetSource
from stream import Batch

#: format name -> (source class, sink class, file extension)
FORMATS = {
    "arrow": (ArrowSource, ArrowSink, ".arrow"),
    "parquet": (ParquetSource, ParquetSink, ".parquet"),
    "csv": (CSVSource, CSVSink, ".csv"),
}


def write_file(table: pa.Table, path: str, fmt: str, chunk: int = 1000) -> None:
    """Write ``table`` with plain pyarrow (``chunk`` rows per batch / row group)."""
    if fmt == "arrow":
        with pa.ipc.new_file(path, table.schema) as w:
            w.write_table(table, max_chunksize=chunk)
    elif fmt == "arrows":
        with pa.ipc.new_stream(path, table.schema) as w:
            w.write_table(table, max_chunksize=chunk)
    elif fmt == "parquet":
        pq.write_table(table, path, row_group_size=chunk)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        raise ValueError(fmt)


def source(fmt: str, path: str, table_schema: pa.Schema | None = None, **kwargs):
    """A source of format ``fmt``; CSV gets the original column types."""
    cls = FORMATS["arrow" if fmt == "arrows" else fmt][0]
    if fmt == "csv" and table_schema is not None:
        kwargs.setdefault("column_types", {f.name: f.type for f in table_schema})
    return cls(path, **kwargs)


def read_all(src, position=None) -> tuple[pa.Table | None, list[Batch]]:
    """Every batch from ``position`` and the rows as one table (``None`` if no rows)."""
    batches = list(src.batches(position))
    if not batches:
        return None, batches
    return pa.Table.from_batches([b.data for b in batches]), batches


def write_lines(path, lines: list[str]) -> str:
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)
