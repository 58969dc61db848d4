"""Encode nested state dicts without pickle: a JSON tree plus an ``.npz`` of arrays.

State dicts hold dicts, lists, tuples, strings, numbers, booleans, ``None``, bytes,
NumPy arrays and scalars, and torch tensors. Arrays (and tensors, stored as NumPy) go
into an ``.npz`` archive read with ``allow_pickle=False``; everything else is JSON.
Loading therefore never executes code from the checkpoint.

Example:
    >>> import numpy as np
    >>> from stream.state import encode_state, decode_state
    >>> tree, arrays = encode_state({"w": np.ones(3), "n": 4, ("a", 1): [1.5, None]})
    >>> back = decode_state(tree, arrays)
    >>> back["w"].tolist(), back["n"], back[("a", 1)]
    ([1.0, 1.0, 1.0], 4, [1.5, None])
"""

from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

import numpy as np

_TAG = "__hs__"


def encode_state(state: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """Split ``state`` into a JSON-serialisable tree and a dict of named arrays."""
    arrays: dict[str, np.ndarray] = {}

    def enc(obj: Any) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and not isinstance(obj, bool):
            return obj
        if isinstance(obj, float):
            if math.isfinite(obj):
                return obj
            return {_TAG: "float", "v": repr(obj)}
        if isinstance(obj, np.generic):
            name = f"a{len(arrays)}"
            arrays[name] = np.asarray(obj)
            return {_TAG: "scalar", "ref": name}
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                return {_TAG: "objarray", "shape": list(obj.shape), "v": [enc(x) for x in obj.ravel()]}
            name = f"a{len(arrays)}"
            arrays[name] = obj
            return {_TAG: "array", "ref": name}
        if type(obj).__module__ == "torch" and type(obj).__name__ in ("Tensor", "Parameter"):
            return _encode_tensor(obj, arrays)
        if type(obj).__name__ in ("device", "dtype") and type(obj).__module__ == "torch":
            return {_TAG: "torch_" + type(obj).__name__, "v": str(obj)}
        if isinstance(obj, (bytes, bytearray)):
            return {_TAG: "bytes", "v": base64.b64encode(bytes(obj)).decode()}
        if isinstance(obj, tuple):
            return {_TAG: "tuple", "v": [enc(x) for x in obj]}
        if isinstance(obj, list):
            return [enc(x) for x in obj]
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj) and _TAG not in obj:
                return {k: enc(v) for k, v in obj.items()}
            return {_TAG: "dict", "v": [[enc(k), enc(v)] for k, v in obj.items()]}
        raise TypeError(f"cannot checkpoint a {type(obj).__module__}.{type(obj).__qualname__}; "
                        "state dicts hold numbers, strings, lists, dicts, arrays and tensors")

    return enc(state), arrays


def _encode_tensor(t: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    t = t.detach().cpu()
    dtype = str(t.dtype).removeprefix("torch.")
    if t.dtype == torch.bfloat16:
        data = t.view(torch.int16).numpy()
    else:
        data = t.numpy()
    name = f"a{len(arrays)}"
    arrays[name] = data
    return {_TAG: "tensor", "ref": name, "dtype": dtype}


def decode_state(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Rebuild the state encoded by :func:`encode_state`."""

    def dec(obj: Any) -> Any:
        if isinstance(obj, list):
            return [dec(x) for x in obj]
        if not isinstance(obj, dict):
            return obj
        tag = obj.get(_TAG)
        if tag is None:
            return {k: dec(v) for k, v in obj.items()}
        if tag == "array":
            return arrays[obj["ref"]]
        if tag == "scalar":
            return arrays[obj["ref"]][()]
        if tag == "objarray":
            out = np.empty(len(obj["v"]), dtype=object)
            out[:] = [dec(x) for x in obj["v"]]
            return out.reshape(obj["shape"])
        if tag == "tensor":
            import torch

            data = torch.from_numpy(np.array(arrays[obj["ref"]]))
            if obj["dtype"] == "bfloat16":
                return data.view(torch.bfloat16)
            return data
        if tag in ("torch_device", "torch_dtype"):
            import torch

            if tag == "torch_device":
                return torch.device(str(obj["v"]))
            # only a dtype: the name comes from the file, and getattr(torch, name) could be anything
            dtype = getattr(torch, str(obj["v"]).removeprefix("torch."), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"{obj['v']!r} is not a torch dtype")
            return dtype
        if tag == "float":
            return float(obj["v"])
        if tag == "bytes":
            return base64.b64decode(obj["v"])
        if tag == "tuple":
            return tuple(dec(x) for x in obj["v"])
        if tag == "dict":
            return {_hashable(dec(k)): dec(v) for k, v in obj["v"]}
        raise ValueError(f"unknown state tag {tag!r}")

    return dec(tree)


def _hashable(k: Any) -> Any:
    return k.item() if isinstance(k, np.generic) else k


def dumps(state: Any) -> tuple[bytes, bytes]:
    """Serialise ``state`` to (JSON bytes, NPZ bytes)."""
    tree, arrays = encode_state(state)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return json.dumps(tree, separators=(",", ":")).encode(), buf.getvalue()


def loads(tree_bytes: bytes, npz_bytes: bytes) -> Any:
    """Inverse of :func:`dumps`; never unpickles."""
    with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return decode_state(json.loads(tree_bytes), arrays)
