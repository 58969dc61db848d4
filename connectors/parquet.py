"""Parquet files as source (``ParquetFile.iter_batches``) and sink (``ParquetWriter``).

Resuming jumps to the row group holding the row, from the footer's metadata, without
reading the groups before it; :meth:`ParquetSource.length` comes from the same metadata.
Parquet keeps its metadata in a footer, so a file truncated by a crash has none and no
row of it can be read: the source raises :class:`SourceError` naming the file and its
size. Damage inside a row group is reported with the row group and its first row,
after the rows of the groups before it were delivered. The sink writes a CRC-32 checksum
with every data page and the source verifies the checksums it finds, so a flipped bit
is such an error, not a wrong value (files without checksums are read as before).

Example:
    >>> import os, tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> from connectors.parquet import ParquetSource
    >>> path = os.path.join(tempfile.mkdtemp(), "events.parquet")
    >>> pq.write_table(pa.table({"x": list(range(10))}), path, row_group_size=4)
    >>> src = ParquetSource(path)
    >>> src.length()
    10
    >>> [(b.offset, b.num_rows) for b in src.batches({"row": 5})]
    [(5, 3), (8, 2)]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stream.errors import SchemaError, SourceError
from stream.options import one_of

from .file_sink import FileSink
from .file_source import FileSource

_ERRORS = (pa.ArrowInvalid, pa.ArrowIOError, OSError)


class ParquetSource(FileSource):
    """Read Parquet files (one file, a folder, a glob or a URI).

    Args:
        path: where the data is.
        key / time: the stream key and event-time columns (must exist when given).
        batch_size: rows per batch read (``iter_batches(batch_size=...)``).
        columns: read only these columns.
    """

    extensions = (".parquet", ".pq")

    def _open(self, file: str) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.fs.open_input_file(file), page_checksum_verification=True)
        except _ERRORS as exc:
            size = self.fs.get_file_info(file).size
            raise SourceError(f"{file}: not a readable Parquet file ({size} bytes; truncated or "
                              f"damaged footer, byte offset {max(0, (size or 0) - 8)}): "
                              f"{exc}") from exc

    def _read(self, file: str, start_row: int) -> Iterator[tuple[pa.RecordBatch, int]]:
        pf = self._open(file)
        meta = pf.metadata
        if self.columns is not None:
            missing = [c for c in self.columns if c not in pf.schema_arrow.names]
            if missing:
                raise SchemaError(f"{file}: column(s) {missing} are missing "
                                  f"(columns: {', '.join(pf.schema_arrow.names)})")
        row = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if row + n <= start_row:
                row += n
                continue
            skip = max(0, start_row - row)
            at = row + skip
            try:
                for rb in pf.iter_batches(batch_size=self.batch_size, row_groups=[g],
                                          columns=self.columns, use_threads=False):
                    if skip >= rb.num_rows:
                        skip -= rb.num_rows
                        continue
                    out = rb.slice(skip) if skip else rb
                    skip = 0
                    yield out, at
                    at += out.num_rows
            except _ERRORS as exc:
                raise SourceError(f"{file}: row group {g} (rows {row}..{row + n - 1}) is damaged "
                                  f"at row {at}: {exc}") from exc
            row += n

    def _count(self, file: str) -> int | None:
        return self._open(file).metadata.num_rows


class ParquetSink(FileSink):
    """Write Parquet (``compression`` as in ``pyarrow.parquet.ParquetWriter``).

    See :mod:`connectors.file_sink` for exactly-once part files and reading them back
    (``pyarrow.dataset.dataset(path, format="parquet")``). Parquet has no second-resolution
    timestamps: ``timestamp[s]`` columns come back as ``timestamp[ms]``.
    """

    extension = ".parquet"
    #: pyarrow's codecs, checked when a pipeline file is loaded (see :mod:`stream.options`)
    option_checks = {"compression": one_of("snappy", "gzip", "brotli", "zstd", "lz4", "none")}

    def __init__(self, path: str, *, compression: str = "snappy", parts: bool | None = None,
                 durable: bool = True):
        super().__init__(path, parts=parts, durable=durable)
        self.compression = compression

    def _new_writer(self, stream: Any, schema: pa.Schema) -> Any:
        return pq.ParquetWriter(stream, schema, compression=self.compression, write_page_checksum=True)
