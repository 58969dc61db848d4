"""Encoders: a scalar and a timestamp into the sparse bits the spatial pooler reads.

- :class:`RandomDistributedScalarEncoder` (RDSE): the value falls in bucket
  ``round(x / resolution)``; bucket ``b`` sets the ``w`` bits ``h(b), h(b+1), ...,
  h(b+w-1)`` of ``n``, where ``h`` is a seeded hash. Neighbouring buckets share ``w-1``
  bits, far-apart buckets share almost none, and the range is unbounded (no min/max
  needed once a resolution is chosen). Hash collisions can merge two bits of one
  bucket; the duplicate is marked invalid so it is counted once.
- :class:`TimeOfDayEncoder`: NuPIC's periodic scalar encoder over 24 hours, ``w=21``
  bits, radius 9.49 h, which makes ``n = ceil(24 / (9.49 / 21)) = 54`` bits.
- :func:`nab_resolution`: NuPIC's NAB rule, ``max(0.001, (max-min) / 130)`` after
  widening the range by 20 % on each side.

Both encoders work on arrays (one entry per key) and return active bit *indices*,
``(rows, w)`` with a validity mask, which is what the batched spatial pooler gathers.

Example:
    >>> import numpy as np
    >>> from operators.htm.backend import Backend
    >>> be = Backend("numpy")
    >>> rdse = RandomDistributedScalarEncoder(n=400, w=21, seed=1)
    >>> bits, ok = rdse.encode(be, np.array([10.0, 10.4, 50.0]), np.array([1.0, 1.0, 1.0]))
    >>> bits.shape
    (3, 21)
    >>> a, b, c = (set(bits[i][ok[i]].tolist()) for i in range(3))
    >>> len(a & b) >= 19, len(a & c) <= 3
    (True, True)
    >>> tod = TimeOfDayEncoder()
    >>> tod.n, tod.encode(be, np.array([0, 12 * 3600 * 10**9]))[0][:, :3].tolist()
    (54, [[44, 45, 46], [17, 18, 19]])
    >>> round(nab_resolution(0.0, 130.0), 3)
    1.4
"""

from __future__ import annotations

import math
from typing import Any

from .backend import Backend

NS_PER_DAY = 86400 * 10**9


def nab_resolution(lo: float, hi: float, buckets: int = 130, margin: float = 0.2,
                   floor: float = 0.001) -> float:
    """NuPIC's NAB resolution from the file's min and max value."""
    span = float(hi) - float(lo)
    lo, hi = lo - margin * span, hi + margin * span
    return max(floor, (hi - lo) / buckets)


class RandomDistributedScalarEncoder:
    """Random distributed scalar encoder: ``n`` bits, ``w`` active, hashed buckets."""

    def __init__(self, n: int = 400, w: int = 21, seed: int = 42):
        if not 0 < w <= n:
            raise ValueError(f"RDSE needs 0 < w <= n, got w={w}, n={n}")
        self.n, self.w, self.seed = n, w, seed

    def encode(self, be: Backend, values: Any, resolution: Any) -> tuple[Any, Any]:
        """Bits ``(rows, w)`` (int64) and a mask of the ones that are not duplicates."""
        values = be.asarray(values, be.f64)
        resolution = be.asarray(resolution, be.f64)
        bucket = be.astype((values / resolution).round(), be.i64)
        pos = bucket[:, None] + be.arange(self.w)[None, :]
        bits = be.mix(self.seed, pos & 0xFFFFFFFF, pos >> 32) % self.n
        return bits, _first_occurrence(be, bits)


def _first_occurrence(be: Backend, bits: Any) -> Any:
    """Mask that is False where a bit already appeared earlier in its row."""
    w = bits.shape[1]
    same = bits[:, :, None] == bits[:, None, :]
    earlier = be.arange(w)[None, :] < be.arange(w)[:, None]  # [i, j]: j before i
    return ~(same & earlier[None]).any(-1)


class TimeOfDayEncoder:
    """Periodic scalar encoder of the hour of the day (NuPIC's ``timeOfDay=(21, 9.49)``)."""

    def __init__(self, w: int = 21, radius_hours: float = 9.49):
        self.w = w
        self.resolution = radius_hours / w
        self.n = int(math.ceil(24.0 / self.resolution))

    def encode(self, be: Backend, times_ns: Any) -> tuple[Any, Any]:
        """Bits ``(rows, w)`` for event times in nanoseconds (time of day in UTC/naive)."""
        t = be.asarray(times_ns, be.i64)
        hours = be.astype(t % NS_PER_DAY, be.f64) / 3.6e12
        centre = be.astype(be.xp.floor((hours + self.resolution / 2) / self.resolution), be.i64)
        bits = (centre[:, None] + be.arange(self.w)[None, :] - self.w // 2) % self.n
        return bits, be.full(bits.shape, True, be.b)


def encode_record(be: Backend, rdse: RandomDistributedScalarEncoder, tod: TimeOfDayEncoder | None,
                  values: Any, resolution: Any, times_ns: Any) -> tuple[Any, Any]:
    """The concatenated input: value bits, then time-of-day bits offset by ``rdse.n``."""
    bits, ok = rdse.encode(be, values, resolution)
    if tod is None:
        return bits, ok
    tbits, tok = tod.encode(be, times_ns)
    return be.cat([bits, tbits + rdse.n], 1), be.cat([ok, tok], 1)


def input_width(rdse: RandomDistributedScalarEncoder, tod: TimeOfDayEncoder | None) -> int:
    return rdse.n + (tod.n if tod is not None else 0)


__all__ = ["RandomDistributedScalarEncoder", "TimeOfDayEncoder", "nab_resolution", "encode_record",
           "input_width"]
