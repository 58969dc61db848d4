"""Kafka message payloads ↔ Arrow rows: JSON objects, Arrow IPC streams, raw bytes.

Decoding turns a list of message values into one record batch plus the messages that
could not be decoded, each with a reason (for the dead-letter topic or a clear stop).
The first decoded messages fix the schema unless one is given; later messages with
other fields or types are rejected, never silently coerced.

- ``json``: one JSON object per message, one row each (parsed in bulk by
  ``pyarrow.json``; a block with a bad message is re-read message by message to find it).
- ``arrow``: each message is an Arrow IPC stream holding one or more rows.
- ``raw``: the value as a ``binary`` column named ``value``.

Example:
    >>> from connectors.kafka.codec import Codec
    >>> codec = Codec("json")
    >>> rb, rows, bad = codec.decode([b'{"x": 1.5}', b'not json', b'{"x": 2}'])
    >>> rb.to_pydict(), rows.tolist(), bad
    ({'x': [1.5, 2.0]}, [1, 0, 1], [(1, 'not JSON: Expecting value: line 1 column 1 (char 0)')])
    >>> codec.decode([b'{"x": "hot"}'])[2][0][1]
    "field 'x' is a string, the stream's schema says double"
    >>> [v for v in codec.encode(rb)]
    [b'{"x":1.5}', b'{"x":2.0}']
"""

from __future__ import annotations

import datetime as _dt
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from stream.errors import ConfigError
from stream.timefmt import rfc3339_array

FORMATS = ("json", "arrow", "raw")
_TOMBSTONE = "the message has no value (a tombstone)"
_JSON_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "an object", type(None): "null"}


def parse_schema(spec: dict[str, str] | None) -> pa.Schema | None:
    """``{"x": "float64", "ts": "timestamp[ms]"}`` (from a pipeline file) → Arrow schema.

    >>> parse_schema({"x": "float64", "n": "int32"})
    x: double
    n: int32
    """
    if not spec:
        return None
    fields = []
    for name, typ in spec.items():
        try:
            fields.append(pa.field(name, _type_from_string(typ)))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"schema: column {name!r} has unknown type {typ!r}: {exc}") from exc
    return pa.schema(fields)


def _type_from_string(typ: str) -> pa.DataType:
    if typ.startswith("timestamp[") and typ.endswith("]"):
        unit, _, tz = typ[10:-1].partition(",")
        return pa.timestamp(unit.strip(), tz.strip() or None)
    aliases = {"float": "float32", "double": "float64", "str": "string", "bool": "bool_",
               "boolean": "bool_", "bytes": "binary"}
    factory = getattr(pa, aliases.get(typ, typ), None)
    if factory is None or not callable(factory):
        raise ValueError("not an Arrow type name")
    return factory()


class Codec:
    """Decode and encode message values in one of :data:`FORMATS`.

    Args:
        format: ``"json"``, ``"arrow"`` or ``"raw"``.
        schema: the expected columns; ``None`` takes the schema of the first messages,
            with JSON numbers as ``float64`` (a first message ``{"x": 1}`` must not make
            a later ``{"x": 1.5}`` a bad message) except in the ``exact`` columns.
        exact: JSON columns whose inferred type is kept as read (the key, the time).

    >>> codec = Codec("json", exact=("seq",))
    >>> codec.decode([b'{"x": 1, "seq": 1}'])[0].schema.types, codec.decode([b'{"x": 1.5, "seq": 2}'])[2]
    ([DataType(double), DataType(int64)], [])
    """

    def __init__(self, format: str = "json", schema: pa.Schema | None = None, exact: Sequence[str] = ()):
        if format not in FORMATS:
            raise ConfigError(f"Kafka payload format must be one of {FORMATS}, got {format!r}")
        self.format = format
        self.schema = pa.schema([("value", pa.binary())]) if format == "raw" else schema
        self.exact = frozenset(exact)

    # -- decoding ------------------------------------------------------------------
    def decode(self, values: Sequence[bytes | None]
               ) -> tuple[pa.RecordBatch, np.ndarray, list[tuple[int, str]]]:
        """Decode message values.

        Returns ``(rows, rows_per_message, bad)``: the decoded rows of the good messages
        in order, how many rows each message gave (0 for a bad one), and
        ``(message index, reason)`` for each bad message.
        """
        if self.format == "raw":
            col = pa.array(values, pa.binary())
            if not col.null_count:
                return pa.record_batch([col], schema=self.schema), np.ones(len(values), dtype=np.int64), []
            present = col.is_valid()
            counts = present.to_numpy(zero_copy_only=False).astype(np.int64)
            bad = [(int(i), _TOMBSTONE) for i in np.flatnonzero(counts == 0)]
            return pa.record_batch([col.filter(present)], schema=self.schema), counts, bad
        if self.format == "arrow":
            return self._decode_arrow(values)
        return self._decode_json(values)

    def _decode_json(self, values: Sequence[bytes | None]):
        if all(v for v in values):
            try:
                table = self._read_json(b"\n".join(values))
                if table.num_rows == len(values) and self._fits(table.schema):
                    if self.schema is None:
                        table = self._adopt(table)
                    return _one_batch(table), np.ones(len(values), dtype=np.int64), []
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass  # find the bad message(s) one by one below
        rows, counts, bad = [], np.zeros(len(values), dtype=np.int64), []
        for i, v in enumerate(values):
            reason = self._check_json(v)
            if reason is None:
                try:
                    table = self._read_json(v)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    reason = f"does not fit the schema: {exc}"
            if reason is not None:
                bad.append((i, reason))
                continue
            if self.schema is None:
                table = self._adopt(table)
            rows.append(table)
            counts[i] = 1
        if not rows:
            return self._empty(), counts, bad
        return _one_batch(pa.concat_tables(rows)), counts, bad

    def _adopt(self, table: pa.Table) -> pa.Table:
        """Take the schema of the first decoded rows, integers widened to float64."""
        fields = [f.with_type(pa.float64()) if pa.types.is_integer(f.type) and f.name not in self.exact else f
                  for f in table.schema]
        self.schema = pa.schema(fields)
        return table.cast(self.schema)

    def _read_json(self, data: bytes) -> pa.Table:
        opts = pajson.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="error") \
            if self.schema is not None else pajson.ParseOptions()
        # one thread: the runtime already reads and processes in parallel
        read = pajson.ReadOptions(use_threads=False, block_size=max(1 << 20, len(data) + 1))
        return pajson.read_json(io.BytesIO(data), read_options=read, parse_options=opts)

    def _fits(self, schema: pa.Schema) -> bool:
        return self.schema is None or schema.equals(self.schema)

    def _check_json(self, value: bytes | None) -> str | None:
        """Why one message is not a row of this stream, in words; ``None`` when it is."""
        if not value:
            return _TOMBSTONE
        try:
            obj = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            return f"not JSON: {exc}"
        if not isinstance(obj, dict):
            return f"not a JSON object but {_JSON_KINDS.get(type(obj), type(obj).__name__)}"
        if self.schema is None:
            return None
        extra = [k for k in obj if self.schema.get_field_index(k) < 0]
        if extra:
            return f"unexpected field(s) {extra}; the stream's schema has {self.schema.names}"
        missing = [f.name for f in self.schema if f.name not in obj]
        if missing:
            return f"field(s) {missing} are missing"
        for f in self.schema:
            v = obj[f.name]
            ok = v is None or _json_fits(v, f.type)
            if not ok:
                return (f"field {f.name!r} is {_JSON_KINDS.get(type(v), type(v).__name__)}, "
                        f"the stream's schema says {f.type}")
        return None

    def _decode_arrow(self, values: Sequence[bytes | None]):
        parts, counts, bad = [], np.zeros(len(values), dtype=np.int64), []
        for i, v in enumerate(values):
            if not v:
                bad.append((i, _TOMBSTONE))
                continue
            try:
                table = pa.ipc.open_stream(v).read_all()
            except (pa.ArrowInvalid, OSError) as exc:
                bad.append((i, f"not an Arrow IPC stream: {exc}"))
                continue
            if self.schema is None:
                self.schema = table.schema
            elif not table.schema.equals(self.schema):
                from ..file_source import schema_difference

                bad.append((i, f"wrong schema: {schema_difference(self.schema, table.schema)}"))
                continue
            parts.append(table)
            counts[i] = table.num_rows
        if not parts:
            return self._empty(), counts, bad
        return _one_batch(pa.concat_tables(parts)), counts, bad

    def _empty(self) -> pa.RecordBatch:
        schema = self.schema or pa.schema([])
        return pa.record_batch([pa.array([], f.type) for f in schema], schema=schema)

    # -- encoding ------------------------------------------------------------------
    def encode(self, rb: pa.RecordBatch) -> list[bytes]:
        """One payload per row (an Arrow IPC stream of one row for ``arrow``)."""
        if self.format == "raw":
            if "value" not in rb.schema.names:
                raise ConfigError("raw Kafka payloads need a 'value' column; "
                                  f"the stream has {rb.schema.names}")
            col = rb.column(rb.schema.get_field_index("value"))
            if (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)) and not col.null_count:
                return py_bytes(col)  # bytes through, no per-value check
            return [v if isinstance(v, bytes) else str(v).encode() for v in col.to_pylist()]
        if self.format == "arrow":
            return [self.encode_ipc(rb.slice(i, 1)) for i in range(rb.num_rows)]
        if rb.num_rows == 0:
            return []
        # JSON text built column-wise by Arrow compute kernels: ~1 µs per row
        # one join over all pieces: '{"a":', a, ',"b":', b, '}' (one pass, not one per field)
        if rb.num_columns == 0:
            return [b"{}"] * rb.num_rows
        # literals carry the quotes of string values (one piece less per string column)
        pieces: list[Any] = []
        literal = "{"
        for i, f in enumerate(rb.schema):
            text, quoted = _json_text(rb.column(i))
            literal += ("," if i else "") + json.dumps(f.name) + ":" + ('"' if quoted else "")
            pieces += [literal, text]
            literal = '"' if quoted else ""
        return py_bytes(pc.binary_join_element_wise(*pieces, literal + "}", "").cast(pa.binary()))

    @staticmethod
    def encode_ipc(rb: pa.RecordBatch) -> bytes:
        """Rows as one Arrow IPC stream (schema + one record batch)."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, rb.schema) as w:
            w.write_batch(rb)
        return sink.getvalue().to_pybytes()


def py_bytes(arr: pa.Array) -> list[bytes | None]:
    """A binary column as a list of ``bytes`` (``None`` for null): through NumPy, which
    builds the objects in one C++ pass (about half the cost of ``to_pylist``).

    >>> py_bytes(pa.array([b"a", None], pa.binary()))
    [b'a', None]
    """
    return arr.to_numpy(zero_copy_only=False).tolist()


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if batches:
        return batches[0]
    return pa.record_batch([pa.array([], f.type) for f in table.schema], schema=table.schema)


def _json_fits(v: Any, typ: pa.DataType) -> bool:
    if pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if pa.types.is_integer(typ):
        return isinstance(v, int) and not isinstance(v, bool)
    if pa.types.is_boolean(typ):
        return isinstance(v, bool)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return isinstance(v, str)
    if pa.types.is_timestamp(typ):
        return isinstance(v, (str, int))
    if pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ):
        return isinstance(v, list)
    return True


def _json_text(arr: pa.Array) -> tuple[pa.Array, bool]:
    """The JSON text of each value of a column, as a string array (null → ``null``), and
    whether it still needs quotes around it (strings without nulls: the caller adds them)."""
    typ = arr.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        if _plain_text(arr):  # nothing to escape: the values are their JSON text
            if not arr.null_count:
                return arr, True
            return pc.fill_null(pc.binary_join_element_wise('"', arr, '"', ""), "null"), False
        if pc.any(pc.match_substring_regex(arr, "[\\x00-\\x1f]")).as_py():
            return pa.array(_json_values(arr), pa.string()), False  # control characters: json.dumps escapes them
        text = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
        text = pc.binary_join_element_wise('"', text, '"', "")
    elif pa.types.is_floating(typ):
        text = pc.cast(arr, pa.string())
        values = arr.to_numpy(zero_copy_only=False)  # NaN for nulls
        with np.errstate(invalid="ignore"):
            whole = values == np.trunc(values)
        if whole.any():
            # keep floats floats for the reader's type inference (3.0 is "3.0", not "3")
            text = pc.if_else(pc.match_substring_regex(text, "^-?[0-9]+$"),
                              pc.binary_join_element_wise(text, ".0", ""), text)
        if not np.isfinite(values).all():
            text = pc.if_else(pc.is_finite(arr), text, pa.scalar(None, pa.string()))
    elif pa.types.is_integer(typ) or pa.types.is_boolean(typ):
        text = pc.cast(arr, pa.string())
    elif pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        text = rfc3339_array(arr)
        if not arr.null_count:
            return text, True
        text = pc.binary_join_element_wise('"', text, '"', "")
    else:
        return pa.array(_json_values(arr), pa.string()), False
    return pc.fill_null(text, "null"), False


#: bytes that JSON strings escape: control characters, '"' and '\\' (UTF-8 never has
#: them inside a multi-byte character, so a byte scan finds exactly these characters)
_ESCAPED = np.zeros(256, dtype=bool)
_ESCAPED[:0x20] = _ESCAPED[ord('"')] = _ESCAPED[ord("\\")] = True


def _plain_text(arr: pa.Array) -> bool:
    """Whether no value of a string column holds a character JSON escapes (a scan of the
    column's bytes; a null slot's stray bytes can only make it say no, never wrongly yes).

    >>> _plain_text(pa.array(["a b", "ü"])), _plain_text(pa.array(['say "hi"'])), _plain_text(pa.array(["a\\n"]))
    (True, False, False)
    """
    if len(arr) == 0:
        return True
    _, offsets, data = arr.buffers()
    if data is None:
        return True
    width = np.dtype(np.int64 if pa.types.is_large_string(arr.type) else np.int32)
    bounds = np.frombuffer(offsets, width, count=len(arr) + 1, offset=arr.offset * width.itemsize)
    return not _ESCAPED[np.frombuffer(data, np.uint8)[bounds[0]:bounds[-1]]].any()


def _json_values(arr: pa.Array) -> list[str]:
    """JSON text of each value of a column (timestamps as ISO 8601, NaN/inf as null)."""
    typ = arr.type
    if isinstance(typ, pa.FixedShapeTensorType):
        arr = arr.storage
    if pa.types.is_floating(typ) and arr.null_count == 0:
        values = arr.to_numpy(zero_copy_only=False)
        out = [repr(float(v)) for v in values.tolist()]
        if not np.isfinite(values).all():
            out = [s if np.isfinite(x) else "null" for s, x in zip(out, values, strict=True)]
        return out
    return [json.dumps(v, default=_json_default) for v in arr.to_pylist()]


def _json_default(v: Any) -> Any:
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, float):
        return None
    raise TypeError(f"cannot write a {type(v).__name__} as JSON")
