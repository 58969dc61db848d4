"""Counter-based random numbers: SplitMix64 of integer counters.

An operator that draws its randomness as a hash of ``(seed, counter, ...)`` gets the
same draws whether a key runs alone or batched with others, on any worker, and keeps
no generator state in its checkpoint. :func:`mix64` is SplitMix64's finaliser,
:func:`hash64` chains it over several integer parts, and :func:`unit_interval` turns
64-bit hashes into floats in ``[0, 1)``.

Example:
    >>> import numpy as np
    >>> h = hash64(7, np.arange(3))                    # seed 7, counters 0, 1, 2
    >>> h.dtype, len(set(h.tolist()))
    (dtype('uint64'), 3)
    >>> bool(np.all(hash64(7, np.arange(3)) == h))     # a function of its inputs only
    True
    >>> u = unit_interval(h)
    >>> bool(np.all((0 <= u) & (u < 1)))
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MASK = 0xFFFFFFFFFFFFFFFF
GOLDEN = 0x9E3779B97F4A7C15
_U11, _U27, _U30, _U31 = np.uint64(11), np.uint64(27), np.uint64(30), np.uint64(31)
_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix64(x: Any) -> Any:
    """SplitMix64's finaliser, for a Python int (masked to 64 bits) or a uint64 array.

    An array is mixed in place (uint64 arithmetic wraps, no temporaries kept): pass a
    fresh one.

    >>> mix64(1) == int(mix64(np.array([1], dtype=np.uint64))[0])
    True
    """
    if isinstance(x, int):
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        return x ^ (x >> 31)
    if not isinstance(x, np.ndarray):   # a NumPy scalar: as a 0-d array, whose arithmetic wraps quietly
        x = np.array(x, dtype=np.uint64)
    x ^= x >> _U30
    x *= _C1
    x ^= x >> _U27
    x *= _C2
    x ^= x >> _U31
    return x


def hash64(*parts: Any) -> np.ndarray:
    """SplitMix64 of several broadcastable integer arrays (uint64 result).

    Leading scalar parts are mixed with Python ints (the same arithmetic modulo 2**64),
    which is much cheaper than NumPy calls on 0-d arrays.

    >>> int(hash64(1, 2, np.array([3]))[0]) == int(hash64(np.array([1]), 2, 3)[0])
    True
    """
    h: Any = 0
    for p in parts:
        if isinstance(h, int) and np.ndim(p) == 0:
            h = mix64((h + int(p) + GOLDEN) & _MASK)
        elif isinstance(h, int):
            h = mix64(np.asarray(p).astype(np.uint64) + np.uint64((h + GOLDEN) & _MASK))
        else:
            h = mix64(h + (np.asarray(p).astype(np.uint64) + np.uint64(GOLDEN)))
    return np.asarray(np.uint64(h)) if isinstance(h, int) else h


def unit_interval(h: np.ndarray) -> np.ndarray:
    """64-bit hashes as float64 in ``[0, 1)`` (their top 53 bits).

    >>> unit_interval(np.array([0, 2**64 - 1], dtype=np.uint64)).tolist()
    [0.0, 0.9999999999999999]
    """
    return (np.asarray(h, dtype=np.uint64) >> _U11).astype(np.float64) / float(1 << 53)
