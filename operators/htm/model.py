"""The HTM model for many keys: encoders → spatial pooler → temporal memory, in lockstep.

:class:`HTMModel` holds one slot per key in every state tensor and advances any subset
of slots by one record with one batched call per stage, so the cost of a step is shared
by all keys that have a record at that step; :meth:`HTMModel.run` takes many records of
many keys at once. It knows nothing about Arrow batches or the likelihood;
:class:`operators.htm.detector.HTMDetector` feeds it.

Example:
    >>> import numpy as np
    >>> m = HTMModel(HTMConfig.small(), device="numpy")
    >>> m.add_slots(2)
    >>> ts = np.zeros(2, dtype=np.int64)
    >>> raw = [m.step(np.array([0, 1]), np.array([float(i % 4)] * 2), np.ones(2), ts)
    ...        for i in range(40)]
    >>> raw[0].tolist(), raw[-1].tolist()      # two keys, same input: same scores
    ([1.0, 1.0], [0.0, 0.0])
    >>> m2 = HTMModel(HTMConfig.small(), device="numpy"); m2.add_slots(2)
    >>> v = np.array([float(i % 4) for i in range(40)] * 2)     # key 0's 40, then key 1's
    >>> together = m2.run(np.array([0, 1]), np.array([40, 40]), v, np.ones(80), np.zeros(80, np.int64))
    >>> together.tolist() == [r[0] for r in raw] * 2               # same as step by step
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from stream.errors import ConfigError
from stream.options import above, at_least, between, one_of

from .backend import Backend, resolve_backend
from .backtracking_tm import BacktrackingParams, BacktrackingTM
from .encoders import RandomDistributedScalarEncoder, TimeOfDayEncoder, encode_record, input_width
from .spatial_pooler import SpatialPooler
from .temporal_memory import TemporalMemory

TM_KINDS = ("plain", "backtracking")
#: HTMConfig's temporal-memory defaults (NuPIC's NAB values) come from one place,
#: :class:`BacktrackingParams`; the plain TM gets the same values through HTMConfig.
_TM = BacktrackingParams()


@dataclass(frozen=True)
class HTMConfig:
    """Hyper-parameters; the defaults are NuPIC 1.0.5's NAB "numenta" detector.

    The temporal-memory defaults are :class:`BacktrackingParams`' (``seed`` 0 gives the
    TM its default seed):

    >>> HTMModel(HTMConfig(tm="backtracking"), device="numpy").tm.params == BacktrackingParams()
    True
    """

    rdse_n: int = 400
    rdse_w: int = 21
    time_of_day: bool = True
    tod_w: int = 21
    tod_radius_hours: float = 9.49
    columns: int = _TM.columns
    num_active: int = 40
    potential_pct: float = 0.8
    syn_perm_connected: float = 0.2
    syn_perm_active_inc: float = 0.003
    syn_perm_inactive_dec: float = 0.0005
    cells_per_column: int = _TM.cells_per_column
    activation_threshold: int = _TM.activation_threshold
    min_threshold: int = _TM.min_threshold
    new_synapse_count: int = _TM.new_synapse_count
    initial_permanence: float = _TM.initial_permanence
    connected_permanence: float = _TM.connected_permanence
    permanence_increment: float = _TM.permanence_increment
    permanence_decrement: float = _TM.permanence_decrement
    predicted_segment_decrement: float = 0.0
    max_synapses_per_segment: int = _TM.max_synapses_per_segment
    max_segments_per_column: int = 64
    max_backtrack: int = 0
    # "plain": htm.core-style temporal memory; "backtracking": NuPIC's BacktrackingTM
    # (operators.htm.backtracking_tm), which NuPIC's NAB detector used
    tm: str = "plain"
    max_segments_per_cell: int = _TM.max_segments_per_cell
    pam_length: int = _TM.pam_length
    max_inf_backtrack: int = _TM.max_inf_backtrack
    max_lrn_backtrack: int = _TM.max_lrn_backtrack
    max_seq_length: int = _TM.max_seq_length
    seed: int = 0

    #: checked when a pipeline file gives ``config = {...}`` (see :mod:`stream.options`)
    option_checks = {
        "tm": one_of(*TM_KINDS), "tod_radius_hours": above(0),
        **{name: at_least(1) for name in ("rdse_n", "rdse_w", "tod_w", "columns", "num_active", "cells_per_column",
                                          "new_synapse_count", "max_synapses_per_segment",
                                          "max_segments_per_column", "max_segments_per_cell")},
        **{name: at_least(0) for name in ("activation_threshold", "min_threshold", "max_backtrack", "pam_length",
                                          "max_inf_backtrack", "max_lrn_backtrack", "max_seq_length", "seed")},
        **{name: between(0, 1) for name in ("potential_pct", "syn_perm_connected", "syn_perm_active_inc",
                                            "syn_perm_inactive_dec", "initial_permanence", "connected_permanence",
                                            "permanence_increment", "permanence_decrement",
                                            "predicted_segment_decrement")},
    }

    def __post_init__(self) -> None:
        if self.tm not in TM_KINDS:
            raise ConfigError(f"HTMConfig.tm must be one of {TM_KINDS}, got {self.tm!r}")

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
        # either TM: compute / peek take slots and columns as NumPy or this backend's arrays
        # and return float64 NumPy scores, plus memory_bytes, add_slots, slots and
        # state_dict / load_state_dict
        self.tm: TemporalMemory | BacktrackingTM
        if c.tm == "backtracking":
            # every BacktrackingParams field has an HTMConfig field of the same name
            self.tm = BacktrackingTM(**{f.name: getattr(c, f.name) for f in fields(BacktrackingParams)
                                        if f.name != "seed"}, seed=c.seed + _TM.seed)
        else:
            self.tm = TemporalMemory(
                self.be, c.columns, c.cells_per_column, c.activation_threshold, c.min_threshold,
                c.new_synapse_count, c.initial_permanence, c.connected_permanence,
                c.permanence_increment, c.permanence_decrement, c.predicted_segment_decrement,
                c.max_synapses_per_segment, c.max_segments_per_column,
                max_backtrack=c.max_backtrack, seed=c.seed + _TM.seed)

    @property
    def slots(self) -> int:
        return self.tm.slots

    def add_slots(self, n: int) -> None:
        self.sp.add_slots(n)
        self.tm.add_slots(n)

    def encode(self, values: np.ndarray, resolution: np.ndarray, times_ns: np.ndarray) -> tuple[Any, Any]:
        """Input bits and their not-a-duplicate mask for any number of records (each
        record's encoding is its own: a batch is encoded once, then stepped through)."""
        return encode_record(self.be, self.rdse, self.tod, values, resolution, times_ns)

    def step(self, slots: np.ndarray, values: np.ndarray, resolution: np.ndarray,
             times_ns: np.ndarray, learn: bool = True) -> np.ndarray:
        """One record for each of ``slots`` (distinct); returns raw anomaly scores."""
        bits, ok = self.encode(values, resolution, times_ns)
        cols = self.sp.compute(slots, bits, ok, learn=learn)
        return self.tm.compute(slots, cols, learn=learn)

    def run(self, slots: np.ndarray, lengths: np.ndarray, values: np.ndarray,
            resolution: np.ndarray, times_ns: np.ndarray, learn: bool = True) -> np.ndarray:
        """Records of several keys (distinct ``slots``), key after key: key ``i``'s
        ``lengths[i]`` records in their order. Returns the raw anomaly scores in the same
        order, as :meth:`step` record by record would.

        All records are encoded at once; the spatial pooler steps every key together
        (the j-th record of each key that has one); a TM that keeps one model per key
        (``compute_sequence``: the backtracking TM) then runs each key's records in a
        row, keeping that model's arrays in the cache, while a batched TM steps with the
        spatial pooler. Keys are independent, so the order changes no result.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(values)
        if len(slots) != len(lengths) or (lengths < 0).any() or int(lengths.sum()) != n \
                or len(resolution) != n or len(times_ns) != n:
            raise ValueError(f"HTMModel.run: {len(slots)} slots with {len(lengths)} lengths "
                             f"(sum {int(lengths.sum())}, none negative) must describe all "
                             f"{n} values, {len(resolution)} resolutions and {len(times_ns)} "
                             "times")
        be = self.be
        bits, ok = self.encode(values, resolution, times_ns)
        start = np.cumsum(lengths) - lengths          # key i's records start there
        raw = np.empty(len(values), dtype=np.float64)
        per_key = hasattr(self.tm, "compute_sequence")
        cols_all: np.ndarray | None = None
        for j in range(int(lengths.max(initial=0))):
            live = lengths > j
            at = start[live] + j
            rows = be.asarray(at, be.i64)
            cols = self.sp.compute(slots[live], bits[rows], ok[rows], learn=learn)
            if not per_key:
                raw[at] = self.tm.compute(slots[live], cols, learn=learn)
                continue
            cols = be.to_numpy(cols)
            if cols_all is None:
                cols_all = np.empty((len(values), cols.shape[1]), dtype=cols.dtype)
            cols_all[at] = cols
        if per_key and cols_all is not None:
            for i, slot in enumerate(slots.tolist()):
                key = slice(start[i], start[i] + lengths[i])
                raw[key] = self.tm.compute_sequence(slot, cols_all[key], learn)
        return raw

    def peek(self, slots: np.ndarray, values: np.ndarray, resolution: np.ndarray,
             times_ns: np.ndarray) -> np.ndarray:
        """Raw anomaly scores the next :meth:`step` would return, changing nothing."""
        bits, ok = self.encode(values, resolution, times_ns)
        cols = self.sp.compute(slots, bits, ok, learn=False)
        return self.tm.peek(slots, cols)

    # -- one slot at a time (a key spilled to disk and restored, see stream.spill) ------
    def slot_state(self, slot: int) -> dict[str, Any]:
        """The state slot ``slot`` owns in the spatial pooler and the temporal memory."""
        return {"sp": self.sp.slot_state(slot), "tm": self.tm.slot_state(slot)}

    def clear_slot(self, slot: int) -> None:
        """Give slot ``slot`` a new key's state (its memory is free for reuse)."""
        self.sp.clear_slot(slot)
        self.tm.clear_slot(slot)

    def load_slot(self, slot: int, state: dict[str, Any]) -> None:
        """Load :meth:`slot_state` into cleared slot ``slot``; ``ValueError`` when it does not fit."""
        try:
            self.sp.load_slot(slot, state["sp"])
            self.tm.load_slot(slot, state["tm"])
        except BaseException:
            self.clear_slot(slot)
            raise

    def state_dict(self) -> dict[str, Any]:
        return {"sp": self.sp.state_dict(), "tm": self.tm.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sp.load_state_dict(state["sp"])
        self.tm.load_state_dict(state["tm"])

    def memory_bytes(self) -> int:
        """Bytes held by the state tensors (all slots)."""
        return self.sp.nbytes() + self.tm.memory_bytes()
