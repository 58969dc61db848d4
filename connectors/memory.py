"""In-memory sources and sinks: Python rows, NumPy arrays, pandas, Arrow, River datasets.

:class:`MemorySource` accepts

- a ``pyarrow.Table`` or ``RecordBatch``, a pandas ``DataFrame``, or a dict of columns
  (NumPy arrays, lists; a 2-d or larger array becomes a fixed-shape tensor column):
  batches are zero-copy slices (pandas is converted once);
- an iterable of dicts (one per event);
- a River dataset or any iterable of ``(x, y)`` pairs: the columns of ``x`` plus a
  target column (``target="y"``).

Rows of Python objects are turned into columns a batch at a time; the first batch fixes
the column types (later batches are cast to them, e.g. ``1`` to ``1.0``) and a batch
with a column the first did not have raises :class:`SchemaError` naming the row. To
resume at a position, the data must be iterable again from the start (a list, a table,
a River dataset; not a one-shot generator).

Example:
    >>> import numpy as np
    >>> from river import datasets
    >>> from connectors.memory import MemorySource, MemorySink
    >>> src = MemorySource(datasets.Phishing(), batch_size=500)
    >>> src.length(), [b.num_rows for b in src.batches({"row": 200})]
    (1250, [500, 500, 50])
    >>> next(iter(src.batches())).column_names[-2:]
    ['ip_in_url', 'y']
    >>> MemorySource({"x": np.arange(3.0)}).length()
    3
    >>> from stream import Operator, run
    >>> class Identity(Operator):
    ...     def process(self, batch):
    ...         return batch
    >>> sink = MemorySink()
    >>> _ = run(MemorySource([{"key": "a", "x": 1}, {"key": "b", "x": 2.5}]), Identity(), sink)
    >>> sink.to_table().to_pydict()
    {'key': ['a', 'b'], 'x': [1.0, 2.5]}
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from stream.batch import DEFAULT_KEY, DEFAULT_TIME, Batch, to_arrow
from stream.connector import Sink, Source
from stream.errors import SchemaError

from .file_source import schema_difference


def _as_table(data: Any) -> pa.Table | None:
    """A columnar input as an Arrow table; ``None`` for row iterables."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if type(data).__module__.startswith("pandas") and type(data).__name__ == "DataFrame":
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, Mapping):
        return pa.table({name: to_arrow(values, name) for name, values in data.items()})
    return None


class MemorySource(Source):
    """Events from memory.

    Args:
        data: a table, data frame, dict of columns, iterable of dicts or of ``(x, y)``.
        key / time: the stream key and event-time columns (must exist when given).
        batch_size: rows per batch.
        target: name of the column holding ``y`` for ``(x, y)`` pairs.
        name: shown in error messages.
    """

    def __init__(self, data: Any, *, key: str | None = None, time: str | None = None,
                 batch_size: int = 1024, target: str = "y", name: str = "memory"):
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size must be at least 1, got {batch_size}")
        self.data = data
        self.table = _as_table(data)
        self.key, self.time = key, time
        self.batch_size = int(batch_size)
        self.target = target
        self.name = name

    def length(self) -> int | None:
        if self.table is not None:
            return self.table.num_rows
        n = getattr(self.data, "n_samples", None)  # River datasets
        if isinstance(n, int):
            return n
        try:
            return len(self.data)
        except TypeError:
            return None

    def batches(self, position: dict[str, Any] | None = None) -> Iterator[Batch]:
        start = int((position or {}).get("row", 0))
        chunks = self._table_chunks(start) if self.table is not None else self._row_chunks(start)
        key, tcol = self.key or DEFAULT_KEY, self.time or DEFAULT_TIME
        for offset, rb in chunks:
            if offset == start:
                for role, col in (("key", self.key), ("time", self.time)):
                    if col and rb.schema.get_field_index(col) < 0:
                        raise SchemaError(f"{self.name}: the {role} column {col!r} is missing "
                                          f"(columns: {', '.join(rb.schema.names)})")
            yield Batch(rb, source=self.name, offset=offset, key_column=key, time_column=tcol)

    def _table_chunks(self, start: int) -> Iterator[tuple[int, pa.RecordBatch]]:
        table = self.table.slice(start)
        offset = start
        for rb in table.to_batches(max_chunksize=self.batch_size):
            if rb.num_rows:
                yield offset, rb
                offset += rb.num_rows

    def _row_chunks(self, start: int) -> Iterator[tuple[int, pa.RecordBatch]]:
        rows: Iterable[Any] = itertools.islice(self.data, start, None)
        schema: pa.Schema | None = None
        offset = start
        it = iter(rows)
        while chunk := list(itertools.islice(it, self.batch_size)):
            rb = self._columns(chunk, offset)
            if schema is None:
                schema = rb.schema
            elif not rb.schema.equals(schema):
                rb = self._conform(rb, schema, offset)
            yield offset, rb
            offset += rb.num_rows

    def _columns(self, chunk: list[Any], offset: int) -> pa.RecordBatch:
        first = chunk[0]
        if isinstance(first, tuple) and len(first) == 2 and isinstance(first[0], Mapping):
            rows = [{**x, self.target: y} for x, y in chunk]
        elif isinstance(first, Mapping):
            rows = chunk
        else:
            raise SchemaError(f"{self.name} row {offset}: expected a dict or an (x, y) pair, "
                              f"got {type(first).__name__}")
        names = dict.fromkeys(k for r in rows for k in r)
        return pa.record_batch({n: to_arrow([r.get(n) for r in rows], str(n)) for n in names})

    def _conform(self, rb: pa.RecordBatch, schema: pa.Schema, offset: int) -> pa.RecordBatch:
        if set(rb.schema.names) - set(schema.names):
            raise SchemaError(f"{self.name} rows {offset}..{offset + rb.num_rows - 1}: "
                              f"{schema_difference(schema, rb.schema)}")
        cols = []
        for f in schema:
            i = rb.schema.get_field_index(f.name)
            col = rb.column(i) if i >= 0 else pa.nulls(rb.num_rows, f.type)
            try:
                cols.append(col.cast(f.type) if col.type != f.type else col)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"{self.name} rows {offset}..{offset + rb.num_rows - 1}: "
                                  f"column {f.name!r} holds {col.type}, earlier rows {f.type}: "
                                  f"{exc}") from exc
        return pa.RecordBatch.from_arrays(cols, schema=schema)


class MemorySink(Sink):
    """Collects the output batches; :meth:`to_table` joins them.

    The flush point is the number of batches kept, so a resumed run drops what was
    collected after its checkpoint (exactly-once within one process).
    """

    name = "memory"

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def open(self, flush_point: dict[str, Any] | None = None) -> None:
        del self.batches[(flush_point or {}).get("batches", 0):]

    def write(self, batch: Batch) -> None:
        self.batches.append(batch)

    def flush(self) -> dict[str, Any]:
        return {"batches": len(self.batches)}

    def to_table(self) -> pa.Table:
        """All rows written, as one table (raises :class:`SchemaError` if schemas differ)."""
        if not self.batches:
            return pa.table({})
        first = self.batches[0].schema
        for b in self.batches[1:]:
            if not b.schema.equals(first):
                where = b.where(0) if b.num_rows else b.source
                raise SchemaError(f"memory sink: a batch from {where} has another schema: "
                                  f"{schema_difference(first, b.schema)}")
        return pa.Table.from_batches([b.data for b in self.batches], schema=first)
