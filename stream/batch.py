"""The micro-batch: an Arrow record batch plus where its rows came from.

Operators read columns as NumPy or torch views (zero-copy where Arrow allows it) and
return a new batch with their outputs appended. A batch also remembers the source
positions of its rows, so any error or dead-letter record can name the file and the
row an event came from.

Example:
    >>> import pyarrow as pa
    >>> from stream.batch import Batch
    >>> b = Batch(pa.record_batch({"key": ["a", "b", "a"], "value": [1.0, 2.0, 3.0]}),
    ...           source="demo.csv", offset=10)
    >>> b.numpy("value")
    array([1., 2., 3.])
    >>> b2 = b.with_columns({"double": b.numpy("value") * 2})
    >>> b2.column_names
    ['key', 'value', 'double']
    >>> b.filter([True, False, True]).positions().tolist()
    [10, 12]
    >>> b.where(1)
    'demo.csv row 11'
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from .tensors import tensor_array, tensor_numpy

DEFAULT_KEY = "key"
DEFAULT_TIME = "ts"


def to_arrow(values: Any, name: str = "") -> pa.Array:
    """Convert NumPy arrays (including n-d tensors), torch tensors or lists to Arrow.

    An array with more than one dimension becomes a fixed-shape tensor column
    (``pa.fixed_shape_tensor``), the Arrow type for images and embeddings: row-major,
    its ``shape`` the array's shape without the rows, whatever the array's strides
    (see :mod:`stream.tensors`).
    """
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if hasattr(values, "detach"):  # torch.Tensor without importing torch here
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.ndim > 1:
        return tensor_array(values)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TypeError(f"column {name!r}: cannot convert to Arrow: {exc}") from exc


def event_time_ns(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Event times as int64 nanoseconds since the epoch: timestamps and dates as the
    instants they name (UTC), numbers as seconds (Unix time). The one conversion every
    operator that measures time in an event-time column uses.

    >>> import datetime as dt
    >>> event_time_ns(pa.array([dt.datetime(1970, 1, 1, 0, 0, 2)], pa.timestamp("ms"))).tolist()
    [2000000000]
    >>> event_time_ns(pa.array([dt.date(1970, 1, 2)])).tolist()
    [86400000000000]
    >>> event_time_ns(pa.array([1.5, 3])).tolist()
    [1500000000, 3000000000]
    """
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        tz = arr.type.tz if pa.types.is_timestamp(arr.type) else None
        return arr.cast(pa.timestamp("ns", tz)).to_numpy(zero_copy_only=False).view(np.int64)
    return np.round(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64) * 1e9).astype(np.int64)


@dataclass(frozen=True)
class Batch:
    """A micro-batch of events.

    Attributes:
        data: the rows, as one Arrow record batch.
        source: name of the origin (file path, topic) used in error messages.
        offset: source position of the first row when rows are contiguous.
        row_offsets: explicit per-row source positions once rows are no longer
            contiguous (after a filter); ``None`` means ``offset + arange(n)``.
        key_column / time_column: which columns hold the stream key and event time.
        arrival: monotonic time the rows entered the engine (for latency metrics).
        meta: source-specific information that travels with the batch (for example
            Kafka partitions), never interpreted by operators.
    """

    data: pa.RecordBatch
    source: str = ""
    offset: int = 0
    row_offsets: np.ndarray | None = None
    key_column: str = DEFAULT_KEY
    time_column: str = DEFAULT_TIME
    arrival: float = field(default_factory=time.monotonic)
    meta: Mapping[str, Any] = field(default_factory=dict)

    # -- shape -------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return self.data.num_rows

    def __len__(self) -> int:
        return self.data.num_rows

    @property
    def schema(self) -> pa.Schema:
        return self.data.schema

    @property
    def column_names(self) -> list[str]:
        return self.data.schema.names

    def __contains__(self, name: str) -> bool:
        return self.data.schema.get_field_index(name) >= 0

    # -- positions -----------------------------------------------------------------
    def positions(self) -> np.ndarray:
        """Source position (row offset) of every row."""
        if self.row_offsets is not None:
            return self.row_offsets
        return np.arange(self.offset, self.offset + self.num_rows, dtype=np.int64)

    def where(self, i: int) -> str:
        """Human-readable location of row ``i``: ``"file.csv row 123"``."""
        pos = int(self.positions()[i])
        return f"{self.source or '<stream>'} row {pos}"

    # -- column access ---------------------------------------------------------------
    def column(self, name: str) -> pa.Array:
        idx = self.data.schema.get_field_index(name)
        if idx < 0:
            raise KeyError(f"{self.source or '<stream>'}: no column {name!r} "
                           f"(columns: {', '.join(self.column_names)})")
        return self.data.column(idx)

    def numpy(self, name: str) -> np.ndarray:
        """Column as NumPy: zero-copy for primitive columns without nulls.

        Fixed-shape tensor columns come back as an n-d array (rows first) in their
        logical layout (a ``permutation`` in the type is honoured, see :mod:`stream.tensors`).
        """
        arr = self.column(name)
        if isinstance(arr.type, pa.FixedShapeTensorType):
            return tensor_numpy(arr)
        if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
            return arr.to_numpy(zero_copy_only=False)
        if arr.null_count == 0 and (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)
                                    or pa.types.is_boolean(arr.type)):
            return arr.to_numpy(zero_copy_only=not pa.types.is_boolean(arr.type))
        return arr.to_numpy(zero_copy_only=False)

    def torch(self, name: str, device: Any = None):
        """Column as a torch tensor (shares memory with Arrow on CPU where possible)."""
        import torch

        values = self.numpy(name)
        with warnings.catch_warnings():
            # Arrow buffers are read-only; sharing them is the point, and operators
            # never write into their inputs.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.as_tensor(values)
        return t.to(device) if device is not None else t

    def keys(self) -> np.ndarray:
        """The stream key of each row (a single key ``""`` when there is no key column)."""
        if self.key_column in self:
            return self.column(self.key_column).to_numpy(zero_copy_only=False)
        return np.full(self.num_rows, "", dtype=object)

    def times(self) -> np.ndarray | None:
        """Event times as int64 (nanoseconds for timestamps), or ``None`` without a time column."""
        if self.time_column not in self:
            return None
        arr = self.column(self.time_column)
        if pa.types.is_timestamp(arr.type):
            arr = arr.cast(pa.timestamp("ns", arr.type.tz))
            return arr.to_numpy(zero_copy_only=False).view(np.int64)
        return arr.to_numpy(zero_copy_only=False)

    def times_ns(self) -> np.ndarray | None:
        """Event times as int64 nanoseconds (see :func:`event_time_ns`), or ``None`` without a time column."""
        if self.time_column not in self:
            return None
        return event_time_ns(self.column(self.time_column))

    def key_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct keys (sorted) and each row's index into them, like ``np.unique``.

        Requires a key column (see :meth:`key_groups` for streams without one).
        """
        col = self.column(self.key_column)
        typ = col.type
        if col.null_count == 0 and (pa.types.is_string(typ) or pa.types.is_large_string(typ)
                                    or pa.types.is_integer(typ)):
            # hash in Arrow, sort only the distinct keys: sorting one Python string per
            # row (np.unique on objects) cost more than everything else in a passthrough
            enc = col.dictionary_encode()
            uniq = enc.dictionary.to_numpy(zero_copy_only=False)
            by_key = np.argsort(uniq, kind="stable")
            rank = np.empty(len(uniq), dtype=np.int64)
            rank[by_key] = np.arange(len(uniq))
            return uniq[by_key], rank[enc.indices.to_numpy()]
        return np.unique(self.keys(), return_inverse=True)

    def key_groups(self) -> dict[Any, np.ndarray]:
        """Row indices of each key, in stream order within each key."""
        if self.key_column not in self:
            return {"": np.arange(self.num_rows)}
        uniq, inverse = self.key_codes()
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        return {uniq[i]: order[bounds[i]:bounds[i + 1]] for i in range(len(uniq))}

    # -- derived batches -----------------------------------------------------------
    def with_columns(self, columns: Mapping[str, Any]) -> Batch:
        """Return a batch with ``columns`` appended (or replaced when the name exists)."""
        data = self.data
        for name, values in columns.items():
            arr = to_arrow(values, name)
            if len(arr) != data.num_rows:
                raise ValueError(f"column {name!r} has {len(arr)} rows, batch has {data.num_rows}")
            idx = data.schema.get_field_index(name)
            if idx >= 0:
                data = data.set_column(idx, name, arr)
            else:
                data = data.append_column(name, arr)
        return replace(self, data=data)

    def filter(self, mask: Sequence[bool] | np.ndarray) -> Batch:
        mask = np.asarray(mask, dtype=bool)
        if mask.all():
            return self
        return replace(self, data=self.data.filter(pa.array(mask)), row_offsets=self.positions()[mask])

    def take(self, indices: np.ndarray) -> Batch:
        indices = np.asarray(indices, dtype=np.int64)
        return replace(self, data=self.data.take(pa.array(indices)), row_offsets=self.positions()[indices])

    def slice(self, start: int, length: int | None = None) -> Batch:
        n = self.num_rows - start if length is None else length
        if self.row_offsets is not None:
            return replace(self, data=self.data.slice(start, n), row_offsets=self.row_offsets[start:start + n])
        return replace(self, data=self.data.slice(start, n), offset=self.offset + start)

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Concatenate batches of one source (copies the column buffers once)."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        contiguous = all(b.row_offsets is None for b in batches) and all(
            batches[i].offset + batches[i].num_rows == batches[i + 1].offset
            for i in range(len(batches) - 1))
        data = pa.concat_batches([b.data for b in batches])
        offsets = None if contiguous else np.concatenate([b.positions() for b in batches])
        return replace(first, data=data, row_offsets=offsets,
                       arrival=min(b.arrival for b in batches))
