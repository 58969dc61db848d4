"""Reading the input column of the continual pretrainer: text bytes or numeric vectors.

Text columns (string, large string, binary, large binary, dictionary of strings) are read
as the UTF-8 bytes of each row straight from the Arrow buffers, without a Python string
per row; vector columns are lists, fixed-size lists or fixed-shape tensors of numbers.

Example:
    >>> import pyarrow as pa
    >>> from operators.continual.columns import is_text, text_bytes, text_lengths, vector_type
    >>> arr = pa.array(["héllo", "", "ab"]).slice(1)
    >>> is_text(arr.type), text_lengths(arr).tolist(), [b.tobytes() for b in text_bytes(arr)]
    (True, [0, 2], [b'', b'ab'])
    >>> vector_type(pa.list_(pa.float32(), 4))
    (DataType(float), 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


def is_text(typ: pa.DataType) -> bool:
    if pa.types.is_dictionary(typ):
        return is_text(typ.value_type)
    return (
        pa.types.is_string(typ)
        or pa.types.is_large_string(typ)
        or pa.types.is_binary(typ)
        or pa.types.is_large_binary(typ)
    )


def vector_type(typ: pa.DataType) -> tuple[pa.DataType | None, int | None]:
    """(value type, fixed size or None) of a vector column type, (None, None) otherwise."""
    if isinstance(typ, pa.FixedShapeTensorType):
        return typ.value_type, int(np.prod(typ.shape))
    if pa.types.is_fixed_size_list(typ):
        return typ.value_type, typ.list_size
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return typ.value_type, None
    return None, None


def _as_binary(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type):
        return arr.cast(pa.large_binary())
    if pa.types.is_string(arr.type):
        return arr.cast(pa.binary())
    return arr


def text_offsets(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    arr = _as_binary(arr)
    off_type = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def text_lengths(arr: pa.Array) -> np.ndarray:
    offsets, _ = text_offsets(arr)
    return np.diff(offsets)


def text_bytes(arr: pa.Array) -> list[np.ndarray]:
    """The bytes of each row of a string/binary column, as uint8 views (no copy)."""
    offsets, data = text_offsets(arr)
    return [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def as_sample(s: Any, objective: str) -> np.ndarray:
    if objective == "next_token":
        if isinstance(s, str):
            s = s.encode("utf-8")
        if isinstance(s, (bytes, bytearray)):
            return np.frombuffer(bytes(s), dtype=np.uint8)
    return np.asarray(s, dtype=np.uint8 if objective == "next_token" else np.float32).ravel()
