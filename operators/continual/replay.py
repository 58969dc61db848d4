"""A seeded reservoir replay buffer of past samples, and packing of 1-D arrays for state.

Reservoir sampling keeps a uniform sample of everything seen so far in a fixed capacity;
replay draws with replacement. All randomness comes from the ``torch.Generator`` passed
in, so a run is reproducible and a resumed run draws what an uninterrupted one would.

Example:
    >>> import numpy as np, torch
    >>> from operators.continual.replay import ReplayBuffer
    >>> g = torch.Generator().manual_seed(0)
    >>> buf = ReplayBuffer(capacity=3)
    >>> buf.add([np.array([i], np.uint8) for i in range(10)], g)
    >>> len(buf), buf.seen
    (3, 10)
    >>> len(buf.sample(5, g))
    5
    >>> clone = ReplayBuffer(3); clone.load_state_dict(buf.state_dict())
    >>> [s.tolist() for s in clone.samples] == [s.tolist() for s in buf.samples]
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stream.errors import ConfigError


def pack_arrays(arrays: Sequence[np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    """Pack 1-D arrays of varying length into one flat array and their lengths.

    >>> p = pack_arrays([np.array([1, 2]), np.array([3])], np.int64)
    >>> p["data"].tolist(), p["lengths"].tolist()
    ([1, 2, 3], [2, 1])
    """
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    data = np.concatenate(arrays).astype(dtype) if len(arrays) else np.zeros(0, dtype)
    return {"data": data, "lengths": lengths}


def unpack_arrays(packed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Inverse of :func:`pack_arrays`."""
    data = np.asarray(packed["data"])
    bounds = np.concatenate([[0], np.cumsum(np.asarray(packed["lengths"], dtype=np.int64))])
    return [data[bounds[i] : bounds[i + 1]].copy() for i in range(len(bounds) - 1)]


class ReplayBuffer:
    """Reservoir of up to ``capacity`` past samples (1-D NumPy arrays of one dtype)."""

    def __init__(self, capacity: int):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ConfigError(f"ReplayBuffer: capacity must be a whole number ≥ 0, got {capacity!r}")
        self.capacity = capacity
        self.samples: list[np.ndarray] = []
        self.seen = 0

    def __len__(self) -> int:
        return len(self.samples)

    def add(self, samples: Sequence[np.ndarray], generator: torch.Generator) -> None:
        """Offer each sample to the reservoir, in order."""
        for s in samples:
            if self.capacity == 0:
                break
            self.seen += 1
            if len(self.samples) < self.capacity:
                self.samples.append(s)
                continue
            j = int(torch.randint(self.seen, (1,), generator=generator))
            if j < self.capacity:
                self.samples[j] = s

    def sample(self, k: int, generator: torch.Generator) -> list[np.ndarray]:
        """``k`` samples drawn uniformly with replacement (none while empty)."""
        if k <= 0 or not self.samples:
            return []
        idx = torch.randint(len(self.samples), (k,), generator=generator).tolist()
        return [self.samples[i] for i in idx]

    def state_dict(self) -> dict[str, Any]:
        dtype = self.samples[0].dtype if self.samples else np.uint8
        return {
            "capacity": self.capacity,
            "seen": self.seen,
            "dtype": np.dtype(dtype).str,
            **pack_arrays(self.samples, dtype),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay buffer: checkpoint capacity {state['capacity']} != {self.capacity}")
        self.seen = int(state["seen"])
        self.samples = [a.astype(np.dtype(state["dtype"])) for a in unpack_arrays(state)]
