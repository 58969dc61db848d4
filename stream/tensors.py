"""Fixed-shape tensor columns (Arrow's ``arrow.fixed_shape_tensor``): writing and reading.

**The layout, stated once.** A tensor column holds one n-d tensor per row. Its type's
``shape`` is the *physical* shape of each tensor (row-major in the storage) and the
optional ``permutation`` says how the *logical* tensor is laid out over it, as the
Arrow canonical extension defines it: logical dimension ``i`` is physical dimension
``permutation[i]``, so the logical shape is ``[shape[p] for p in permutation]`` and the
logical tensor is ``physical.transpose(permutation)``. Readers here always return the
logical tensor; :func:`tensor_array` always writes a row-major tensor with its logical
shape and no permutation.

Why not ``pa.FixedShapeTensorArray.from_numpy_ndarray``: it derives a permutation from
the NumPy strides, and a view whose strides are not the row-major ones (a transpose, or
``x[:, None]``, whose new axis of length 1 has stride 0 although NumPy calls the view
C-contiguous) comes out with a permuted physical shape that its own
``to_numpy_ndarray`` does not read back (pyarrow 26: a different shape, or an error).

Example:
    >>> import numpy as np, pyarrow as pa
    >>> from stream.tensors import logical_shape, tensor_array, tensor_numpy
    >>> x = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    >>> arr = tensor_array(x[:, None])            # a view with a stride-0 axis
    >>> arr.type.shape, arr.type.permutation, logical_shape(arr.type)
    ([1, 8, 8], None, (1, 8, 8))
    >>> bool((tensor_numpy(arr) == x[:, None]).all())
    True
    >>> # data from elsewhere: physical (C, H, W) = (3, 4, 5) presented as (W, C, H)
    >>> typ = pa.fixed_shape_tensor(pa.float32(), [3, 4, 5], permutation=[2, 0, 1])
    >>> phys = np.arange(60, dtype=np.float32).reshape(1, 3, 4, 5)
    >>> storage = pa.FixedSizeListArray.from_arrays(pa.array(phys.ravel()), 60)
    >>> permuted = pa.ExtensionArray.from_storage(typ, storage)
    >>> logical_shape(typ), tensor_numpy(permuted).shape
    ((5, 3, 4), (1, 5, 3, 4))
    >>> bool((tensor_numpy(permuted)[0] == phys[0].transpose(2, 0, 1)).all())
    True
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def logical_shape(typ: pa.FixedShapeTensorType) -> tuple[int, ...]:
    """Shape of one tensor of a column of type ``typ`` as its readers see it (the
    physical ``shape`` reordered by ``permutation``, see the module docstring)."""
    shape = [int(s) for s in typ.shape]
    perm = typ.permutation
    return tuple(shape[int(p)] for p in perm) if perm is not None else tuple(shape)


def tensor_array(values: np.ndarray) -> pa.Array:
    """A fixed-shape tensor array of the rows of ``values`` (shape ``(N, *tensor)``):
    row-major storage, ``shape`` = the logical tensor shape, no permutation, whatever
    the strides of ``values`` (copies only when they are not the row-major ones)."""
    values = np.asarray(values)
    if values.ndim < 2 or 0 in values.shape[1:]:
        raise ValueError(f"a tensor column needs an array of rank >= 2 (rows first) with non-empty tensors, "
                         f"got shape {values.shape}")
    shape = values.shape[1:]
    # reshape(-1) reads in logical row-major order: a view when the layout allows it,
    # else a copy; either way the flat values are the logical tensors one after another
    flat = np.ascontiguousarray(values).reshape(-1)
    typ = pa.fixed_shape_tensor(pa.from_numpy_dtype(values.dtype), list(shape))
    storage = pa.FixedSizeListArray.from_arrays(pa.array(flat), int(np.prod(shape)))
    return pa.ExtensionArray.from_storage(typ, storage)


def tensor_numpy(arr: pa.Array) -> np.ndarray:
    """The logical tensors of a fixed-shape tensor array as one ``(N, *shape)`` array.

    Zero-copy without a permutation (a read-only view on Arrow's buffer); a permuted
    column is returned as a strided view in its logical order. Rows that are null hold
    unspecified values: check ``arr.is_null()`` first.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ = arr.type
    physical = tuple(int(s) for s in typ.shape)
    size = int(np.prod(physical))
    storage = arr.storage
    values = storage.values.slice(storage.offset * size, len(arr) * size)
    flat = values.to_numpy(zero_copy_only=values.null_count == 0 and not pa.types.is_boolean(values.type))
    out = flat.reshape((len(arr), *physical))
    if typ.permutation is not None:
        out = out.transpose(0, *(1 + int(p) for p in typ.permutation))
    return out
