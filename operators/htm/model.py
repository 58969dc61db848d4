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
from .backtracking_tm import BacktrackingTM
from .encoders import RandomDistributedScalarEncoder, TimeOfDayEncoder, encode_record, input_width
from .spatial_pooler import SpatialPooler
from .temporal_memory import TemporalMemory

TM_KINDS = ("plain", "backtracking")


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
    # "plain": htm.core-style temporal memory; "backtracking": NuPIC's BacktrackingTM
    # (operators.htm.backtracking_tm), which NuPIC's NAB detector used
    tm: str = "plain"
    max_segments_per_cell: int = 128
    pam_length: int = 3
    max_inf_backtrack: int = 10
    max_lrn_backtrack: int = 5
    max_seq_length: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tm not in TM_KINDS:
            raise ValueError(f"HTMConfig.tm must be one of {TM_KINDS}, got {self.tm!r}")

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
        self.tm: Any
        if c.tm == "backtracking":
            self.tm = BacktrackingTM(
                columns=c.columns, cells_per_column=c.cells_per_column,
                activation_threshold=c.activation_threshold, min_threshold=c.min_threshold,
                new_synapse_count=c.new_synapse_count, initial_permanence=c.initial_permanence,
                connected_permanence=c.connected_permanence,
                permanence_increment=c.permanence_increment,
                permanence_decrement=c.permanence_decrement,
                max_segments_per_cell=c.max_segments_per_cell,
                max_synapses_per_segment=c.max_synapses_per_segment, pam_length=c.pam_length,
                max_inf_backtrack=c.max_inf_backtrack, max_lrn_backtrack=c.max_lrn_backtrack,
                max_seq_length=c.max_seq_length, seed=c.seed + 1960)
        else:
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
        if isinstance(self.tm, BacktrackingTM):   # NumPy-only, one model per key
            return self.tm.compute(np.asarray(slots), be.to_numpy(cols), learn=learn)
        return be.to_numpy(self.tm.compute(slots, cols, learn=learn)).astype(np.float64)

    def peek(self, slots: np.ndarray, values: np.ndarray, resolution: np.ndarray,
             times_ns: np.ndarray) -> np.ndarray:
        """Raw anomaly scores the next :meth:`step` would return, changing nothing."""
        be = self.be
        bits, ok = encode_record(be, self.rdse, self.tod, values, resolution, times_ns)
        cols = self.sp.compute(slots, bits, ok, learn=False)
        if isinstance(self.tm, BacktrackingTM):
            return self.tm.peek(np.asarray(slots), be.to_numpy(cols))
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
        if isinstance(self.tm, BacktrackingTM):
            return total + self.tm.memory_bytes()
        for name in TemporalMemory._STATE:
            total += _nbytes(getattr(self.tm, name))
        return total


def _nbytes(a: Any) -> int:
    return int(a.nbytes) if hasattr(a, "nbytes") else int(a.numel() * a.element_size())
