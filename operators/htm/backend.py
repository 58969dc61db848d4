"""One array API over NumPy (CPU) and torch (CPU or GPU) for the batched HTM kernels.

The spatial pooler and temporal memory are written once against :class:`Backend`; the
few calls whose spelling differs between NumPy and torch live here. Randomness is a
counter-based integer hash (:meth:`Backend.hash32`), not a stateful generator: a random
draw is a pure function of (seed, key's step, column, slot, ...), so a key gives the
same draws alone or batched with others, on either backend, and the model's state needs
no generator state to resume bit-exactly.

Example:
    >>> import numpy as np
    >>> be = Backend("numpy")
    >>> h = be.hash32(be.asarray(np.arange(4), be.i64))
    >>> be.to_numpy(h).tolist() == be.to_numpy(Backend("torch").hash32(
    ...     Backend("torch").asarray(np.arange(4), Backend("torch").i64))).tolist()
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.device import cuda_available

_M32 = 0xFFFFFFFF


class Backend:
    """Array operations on ``"numpy"`` or ``"torch"`` (with a torch ``device``)."""

    def __init__(self, kind: str = "numpy", device: Any = None):
        if kind not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch', got {kind!r}")
        self.kind = kind
        if kind == "numpy":
            self.xp = np
            self.device = "cpu"
            self.i16, self.i32, self.i64 = np.int16, np.int32, np.int64
            self.f32, self.f64, self.b = np.float32, np.float64, np.bool_
        else:
            import torch

            self.xp = torch
            self.device = torch.device(device or "cpu")
            self.i16, self.i32, self.i64 = torch.int16, torch.int32, torch.int64
            self.f32, self.f64, self.b = torch.float32, torch.float64, torch.bool

    def __reduce__(self) -> tuple:
        # rebuilt from its kind and device: an array module cannot be pickled
        return Backend, (self.kind, None if self.kind == "numpy" else str(self.device))

    def __deepcopy__(self, memo: dict) -> Backend:
        # immutable after construction (an array module, a device, dtypes): copies of a
        # detector (one per Kafka partition) share it; modules cannot be deep-copied anyway
        return self

    # -- creation -----------------------------------------------------------------
    def zeros(self, shape, dtype) -> Any:
        if self.kind == "numpy":
            return np.zeros(shape, dtype=dtype)
        return self.xp.zeros(shape, dtype=dtype, device=self.device)

    def full(self, shape, value, dtype) -> Any:
        if self.kind == "numpy":
            return np.full(shape, value, dtype=dtype)
        return self.xp.full(shape, value, dtype=dtype, device=self.device)

    def arange(self, n: int, dtype=None) -> Any:
        dtype = dtype or self.i64
        if self.kind == "numpy":
            return np.arange(n, dtype=dtype)
        return self.xp.arange(n, dtype=dtype, device=self.device)

    def asarray(self, a: Any, dtype=None) -> Any:
        if self.kind == "numpy":
            return np.asarray(a, dtype=dtype)
        if isinstance(a, np.ndarray):
            t = self.xp.from_numpy(np.ascontiguousarray(a))
        else:
            t = self.xp.as_tensor(a)
        return t.to(device=self.device, dtype=dtype) if dtype is not None else t.to(self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.kind == "numpy":
            return np.asarray(a)
        return a.detach().cpu().numpy()

    def nbytes(self, a: Any) -> int:
        """Bytes held by array ``a`` (without copying it off a GPU)."""
        return int(a.nbytes) if self.kind == "numpy" else int(a.numel() * a.element_size())

    def astype(self, a: Any, dtype) -> Any:
        return a.astype(dtype) if self.kind == "numpy" else a.to(dtype)

    def copy(self, a: Any) -> Any:
        return a.copy() if self.kind == "numpy" else a.clone()

    # -- reshaping and selection --------------------------------------------------------
    def cat(self, arrays, axis: int = 0) -> Any:
        return np.concatenate(arrays, axis) if self.kind == "numpy" else self.xp.cat(arrays, axis)

    def pad_axis2(self, a: Any, extra: int, fill: Any) -> Any:
        """``a`` with ``extra`` entries of ``fill`` appended along axis 2 (one pass over
        the old data: no separate fill array to concatenate)."""
        shape = list(a.shape)
        old = shape[2]
        shape[2] += extra
        if self.kind == "numpy" and fill == 0:
            # calloc'ed pages: the new entries cost nothing until written
            out = np.zeros(shape, dtype=a.dtype)
            out[:, :, :old] = a
            return out
        if self.kind == "numpy":
            out = np.empty(shape, dtype=a.dtype)
        else:
            out = self.xp.empty(shape, dtype=a.dtype, device=a.device)
        out[:, :, :old] = a
        out[:, :, old:] = fill
        return out

    def stack(self, arrays, axis: int = 0) -> Any:
        return np.stack(arrays, axis) if self.kind == "numpy" else self.xp.stack(arrays, axis)

    def nonzero(self, a: Any) -> tuple:
        if self.kind == "numpy":
            if a.ndim < 2:
                return np.nonzero(a)
            # flat indices then unravel: same order, much faster than N-d np.nonzero
            return np.unravel_index(np.flatnonzero(a), a.shape)
        return self.xp.nonzero(a, as_tuple=True)

    def take(self, a: Any, idx: Any) -> Any:
        """``a[idx]`` for a 1-D ``a`` (np.take: faster than fancy indexing on NumPy)."""
        return np.take(a, idx) if self.kind == "numpy" else a[idx]

    def take_along(self, a: Any, idx: Any, axis: int) -> Any:
        if self.kind == "numpy":
            return np.take_along_axis(a, idx, axis)
        return self.xp.gather(a, axis, idx)

    def argsort(self, a: Any, axis: int = -1) -> Any:
        """Sort order; callers make keys unique, so stability never matters."""
        if self.kind == "numpy":
            return np.argsort(a, axis=axis)
        return self.xp.argsort(a, dim=axis)

    def amax(self, a: Any, axis: int) -> Any:
        return a.max(axis) if self.kind == "numpy" else a.amax(axis)

    def amin(self, a: Any, axis: int) -> Any:
        return a.min(axis) if self.kind == "numpy" else a.amin(axis)

    def minimum(self, a: Any, b: Any) -> Any:
        return np.minimum(a, b) if self.kind == "numpy" else self.xp.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return np.maximum(a, b) if self.kind == "numpy" else self.xp.maximum(a, b)

    def index(self, base: Any, offset: Any, bound: int | None = None) -> Any:
        """``base + offset`` as an index array for :meth:`take`. On NumPy it is built in
        intp directly (one cast, one in-place add): np.take would convert any narrower
        index array to intp anyway. ``bound`` (an upper limit of every sum) is accepted
        for callers that know one; intp holds any sum."""
        if self.kind == "numpy":
            out = offset.astype(np.intp)
            out += base
            return out
        return self.astype(base, self.i64) + self.astype(offset, self.i64)

    def put(self, a: Any, idx: Any, values: Any) -> None:
        """``a.flat[idx] = values`` (broadcast to ``idx``'s shape) in place, for a
        contiguous ``a``: np.put is faster than N-d fancy indexing."""
        if self.kind == "numpy":
            np.put(a, idx, np.broadcast_to(values, idx.shape))
        else:
            v = self.xp.as_tensor(values, dtype=a.dtype, device=a.device)
            a.view(-1)[idx.reshape(-1)] = v.expand(idx.shape).reshape(-1)

    def repeat(self, a: Any, counts: Any) -> Any:
        """Each element of the 1-D ``a`` repeated ``counts`` times (``np.repeat``)."""
        if self.kind == "numpy":
            return np.repeat(a, counts)
        return self.xp.repeat_interleave(a, counts)

    def cumsum(self, a: Any) -> Any:
        """Running sum of a 1-D array (int64)."""
        return np.cumsum(a, dtype=np.int64) if self.kind == "numpy" else a.cumsum(0)

    def take_rows(self, a: Any, rows: Any) -> Any:
        """``a[rows]`` along the first axis (np.take: faster than fancy indexing)."""
        return np.take(a, rows, axis=0) if self.kind == "numpy" else a[rows]

    def count_true(self, a: Any) -> Any:
        """Number of True values along the last axis (int64 on NumPy when the axis is
        short, else the platform's sum)."""
        n = a.shape[-1]
        if self.kind == "numpy" and n % 8 == 0 and 0 < n < 256 and a.flags.c_contiguous:
            # SWAR: eight booleans (0/1 bytes) are one uint64; adding the words adds each
            # byte lane separately (lane sums <= n/8), and one multiply adds the 8 lanes
            # into the top byte (total <= n < 256): no per-row reduction loop
            words = a.view(np.uint64)
            total = words[..., 0].copy()
            for j in range(1, n // 8):
                total += words[..., j]
            return ((total * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.int64)
        return a.sum(-1)

    def where_scalar(self, cond: Any, a: Any, value: int) -> Any:
        """``where(cond, a, value)`` for an integer array ``a`` and an integer ``value``
        such that ``a - value`` does not overflow: ``(a - value) * cond + value`` on
        NumPy, three branch-free passes (np.where and masked copies are several times
        slower on mixed masks)."""
        if self.kind == "numpy":
            out = a - value
            out *= cond
            out += value
            return out
        return self.xp.where(cond, a, value)

    def bincount(self, x: Any, minlength: int) -> Any:
        if self.kind == "numpy":
            return np.bincount(x.reshape(-1), minlength=minlength)
        return self.xp.bincount(x.reshape(-1), minlength=minlength)

    # -- randomness ------------------------------------------------------------------------
    def hash32(self, x: Any) -> Any:
        """A 32-bit integer hash (lowbias32) of int64 values, identical on both backends.

        Products of two 32-bit numbers wrap in int64 on both NumPy and torch; masking
        keeps the low 32 bits, which is all the hash needs.
        """
        x = x & _M32
        x = x ^ (x >> 16)
        x = (x * 0x7FEB352D) & _M32
        x = x ^ (x >> 15)
        x = (x * 0x846CA68B) & _M32
        return x ^ (x >> 16)

    def mix(self, *parts: Any) -> Any:
        """Hash several integer arrays (or ints) together into one 32-bit value each."""
        h = self.hash32(parts[0])
        for p in parts[1:]:
            h = self.hash32(((h * 0x9E3779B1) & _M32) + p)
        return h


def resolve_device(device: Any) -> Any:
    """``"auto"`` (or ``None``) made concrete: ``"cuda"`` when torch sees a GPU, else
    ``"numpy"``; any other device as given. A parent that starts worker processes
    passes them the concrete name, so that each need not import torch to look for a GPU
    (about a second per process).

    >>> resolve_device("numpy"), resolve_device("cuda:1")
    ('numpy', 'cuda:1')
    """
    if device in (None, "auto"):
        return "cuda" if cuda_available() else "numpy"
    return device


def resolve_backend(device: Any) -> Backend:
    """``"auto"``: torch on CUDA when available, else NumPy. ``"numpy"`` / ``"cpu"``:
    NumPy. ``"torch"``: torch on CPU. Anything else is a torch device (``"cuda:0"``)."""
    device = resolve_device(device)
    if device in ("numpy", "cpu"):
        return Backend("numpy")
    if device == "torch":
        return Backend("torch", "cpu")
    return Backend("torch", device)
