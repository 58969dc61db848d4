"""The HTM model for many keys: encoders → spatial pooler → temporal memory, in lockstep.

:class:`HTMModel` holds one slot per key in every state tensor and advances any subset
of slots by one record with one batched call per stage, so the cost of a step is shared
by all keys that have a record at that step. It knows nothing about Arrow batches or
the likelihood; :class:`operators.htm.detector.HTMDetector` feeds it.

Example:
    >>> import numpy as np
    >>> m = HTMModel(HTMConfig.small(), device="numpy")
    >>> m.add_slots(2)
    >>> ts = np.zeros(2, dtype=np.int64)
    >>> raw = [m.step(np.array([0, 1]), np.array([float(i % 4)] * 2), np.ones(2), ts)
    ...        for i in range(40)]
    >>> raw[0].tolist(), raw[-1].tolist()      # two keys, same input: same scores
    ([1.0, 1.0], [0.0, 0.0])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from .backend import Backend, resolve_backend
from .encoders import RandomDistributedScalarEncoder, TimeOfDayEncoder, encode_record, input_width
from .spatial_pooler import SpatialPooler
from .temporal_memory import TemporalMemory


@dataclass(frozen=True)
class HTMConfig:
    """Hyper-parameters; the defaults are NuPIC 1.0.5's NAB "numenta" detector."""

    rdse_n: int = 400
    rdse_w: int = 21
    time_of_day: bool = True
    tod_w: int = 21
    tod_radius_hours: float = 9.49
    columns: int = 2048
    num_active: int = 40
    potential_pct: float = 0.8
    syn_perm_connected: float = 0.2
    syn_perm_active_inc: float = 0.003
    syn_perm_inactive_dec: float = 0.0005
    cells_per_column: int = 32
    activation_threshold: int = 13
    min_threshold: int = 10
    new_synapse_count: int = 20
    initial_permanence: float = 0.21
    connected_permanence: float = 0.5
    permanence_increment: float = 0.1
    permanence_decrement: float = 0.1
    predicted_segment_decrement: float = 0.0
    max_synapses_per_segment: int = 32
    max_segments_per_column: int = 64
    max_backtrack: int = 0
    seed: int = 0

    @classmethod
    def small(cls, **overrides: Any) -> HTMConfig:
        """A tiny model for tests and doctests (256 columns, 8 active, 8 cells)."""
        base = dict(rdse_n=100, rdse_w=11, columns=256, num_active=8, cells_per_column=8,
                    activation_threshold=4, min_threshold=3, new_synapse_count=6,
                    max_segments_per_column=16)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HTMConfig:
        names = {f.name for f in fields(cls)}
        return replace(cls(), **{k: v for k, v in d.items() if k in names})


class HTMModel:
    """Encoders, spatial pooler and temporal memory over slots (one per key)."""

    def __init__(self, config: HTMConfig, device: Any = "auto"):
        self.config = c = config
        self.be: Backend = resolve_backend(device)
        self.rdse = RandomDistributedScalarEncoder(c.rdse_n, c.rdse_w, seed=c.seed + 42)
        self.tod = TimeOfDayEncoder(c.tod_w, c.tod_radius_hours) if c.time_of_day else None
        self.sp = SpatialPooler(self.be, input_width(self.rdse, self.tod), c.columns, c.num_active,
                                c.potential_pct, c.syn_perm_connected, c.syn_perm_active_inc,
                                c.syn_perm_inactive_dec, seed=c.seed + 1956)
        self.tm = TemporalMemory(
            self.be, c.columns, c.cells_per_column, c.activation_threshold, c.min_threshold,
            c.new_synapse_count, c.initial_permanence, c.connected_permanence,
            c.permanence_increment, c.permanence_decrement, c.predicted_segment_decrement,
            c.max_synapses_per_segment, c.max_segments_per_column,
            max_backtrack=c.max_backtrack, seed=c.seed + 1960)

    @property
    def slots(self) -> int:
        return self.tm.slots

    def add_slots(self, n: int) -> None:
        self.sp.add_slots(n)
        self.tm.add_slots(n)

    def step(self, slots: np.ndarray, values: np.ndarray, resolution: np.ndarray,
             times_ns: np.ndarray, learn: bool = True) -> np.ndarray:
        """One record for each of ``slots`` (distinct); returns raw anomaly scores."""
        be = self.be
        bits, ok = encode_record(be, self.rdse, self.tod, values, resolution, times_ns)
        cols = self.sp.compute(slots, bits, ok, learn=learn)
        return be.to_numpy(self.tm.compute(slots, cols, learn=learn)).astype(np.float64)

    def peek(self, slots: np.ndarray, values: np.ndarray, resolution: np.ndarray,
             times_ns: np.ndarray) -> np.ndarray:
        """Raw anomaly scores the next :meth:`step` would return, changing nothing."""
        be = self.be
        bits, ok = encode_record(be, self.rdse, self.tod, values, resolution, times_ns)
        cols = self.sp.compute(slots, bits, ok, learn=False)
        return be.to_numpy(self.tm.peek(slots, cols)).astype(np.float64)

    def state_dict(self) -> dict[str, Any]:
        return {"sp": self.sp.state_dict(), "tm": self.tm.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sp.load_state_dict(state["sp"])
        self.tm.load_state_dict(state["tm"])

    def memory_bytes(self) -> int:
        """Bytes held by the state tensors (all slots)."""
        total = 0
        for name in ("perm",):
            total += _nbytes(getattr(self.sp, name))
        for name in TemporalMemory._STATE:
            total += _nbytes(getattr(self.tm, name))
        return total


def _nbytes(a: Any) -> int:
    return int(a.nbytes) if hasattr(a, "nbytes") else int(a.numel() * a.element_size())
