"""Temporal memory for many keys at once: sequence learning on the active columns.

The algorithm is NuPIC's/htm.core's temporal memory with NAB's parameters (32 cells per
column, activation threshold 13, min threshold 10, 20 new synapses, initial permanence
0.21, increment and decrement 0.1, connected at 0.5):

1. A column whose cells had an *active* segment (≥ ``activation_threshold`` connected
   synapses onto cells active at t-1) is predicted: those cells become active and
   winners, and their active segments learn.
2. Any other active column bursts (all cells active). Its best *matching* segment
   (≥ ``min_threshold`` potential synapses onto active cells) learns; without one, the
   cell with the fewest segments (random tie-break) grows a new segment onto the
   previous winner cells.
3. Learning segments reinforce synapses onto previously active cells, weaken the
   others, and grow ``new_synapse_count - active potential synapses`` new synapses to
   randomly chosen previous winner cells (replacing the weakest when the segment is
   full at ``max_synapses_per_segment``).
4. With ``predicted_segment_decrement > 0``, matching segments in columns that were
   predicted but did not become active are punished (this needs every segment's
   activity each step, so it is the slow path).
5. Raw anomaly score = fraction of active columns that were not predicted.

Optional backtracking (NuPIC's ``BacktrackingTM`` inference, ``max_backtrack > 0``):
when fewer than half of the active columns were predicted, the model replays the last
few inputs (at most ``max_backtrack``) starting from each one in turn, with that first
input bursting (NuPIC starts from its "start cells"; our learning does not reserve
them), and adopts the first start point whose replay stays in sequence (at least half
the columns predicted) up to now. Its active cells then make the prediction for the
next step, so a
sequence entered at an unexpected point is picked up again after one input instead of
bursting until the model relearns the context.

Data layout (why it is fast across keys): segments live in fixed-capacity per-column
buckets, ``pre[key, column, segment, synapse]`` (presynaptic cell) and
``perm[key, column, segment, synapse]`` (permanence in units of 1/10000, int16, 0 =
no synapse). A step only needs the segments of the ~40 active columns, and only those
in use (a prefix of each bucket), so it gathers them as a ragged list of (segment, 32)
rows and looks their presynaptic cells up in the active-cell bitmap of t-1, which has
one row of cells per column (a column's cells are written as one row). When a column's
bucket is full its least recently used segment is replaced (NuPIC caps segments per
cell instead; here the cap is per column, ``max_segments_per_column``). Capacity grows
by doubling as needed, into zeroed memory: slots of unused segments hold 0 in memory
and ``dummy`` in checkpoints.

Example:
    >>> import numpy as np
    >>> from operators.htm.backend import Backend
    >>> tm = TemporalMemory(Backend("numpy"), columns=64, cells_per_column=4,
    ...                     activation_threshold=3, min_threshold=2, new_synapse_count=4)
    >>> tm.add_slots(1)
    >>> seq = [np.array([[0, 1, 2, 3]]), np.array([[10, 11, 12, 13]]), np.array([[20, 21, 22, 23]])]
    >>> scores = [float(tm.compute(np.array([0]), s)[0]) for _ in range(20) for s in seq]
    >>> scores[:3], scores[-3:]
    ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import Backend

PERM_SCALE = 10000  # permanences are stored as int16 multiples of 1/PERM_SCALE


def _units(p: float) -> int:
    return int(round(p * PERM_SCALE))


class TemporalMemory:
    """Batched temporal memory; slot ``i`` of every state tensor belongs to one key."""

    def __init__(self, be: Backend, columns: int = 2048, cells_per_column: int = 32,
                 activation_threshold: int = 13, min_threshold: int = 10,
                 new_synapse_count: int = 20, initial_permanence: float = 0.21,
                 connected_permanence: float = 0.5, permanence_increment: float = 0.1,
                 permanence_decrement: float = 0.1, predicted_segment_decrement: float = 0.0,
                 max_synapses_per_segment: int = 32, max_segments_per_column: int = 64,
                 initial_segments_per_column: int = 8, max_backtrack: int = 0, seed: int = 1960):
        self.be = be
        self.columns, self.cells = columns, cells_per_column
        self.activation_threshold, self.min_threshold = activation_threshold, min_threshold
        self.new_synapse_count = new_synapse_count
        self.init_perm = _units(initial_permanence)
        self.connected = _units(connected_permanence)
        self.inc, self.dec = _units(permanence_increment), _units(permanence_decrement)
        self.punish = _units(predicted_segment_decrement)
        self.max_syn = max_synapses_per_segment
        self.max_seg = max_segments_per_column
        self.max_backtrack = max_backtrack
        self.seed = seed
        # empty synapse slots point at this always-inactive cell, so one bitmap lookup
        # answers "exists and presynaptic cell active"
        self.dummy = columns * cells_per_column
        # active-cell bitmaps have one row of ``cells`` per column plus a padding row that
        # holds the dummy: (slots * (columns + 1), cells) rows, so a column's cells are
        # written as one row
        self.stride = (columns + 1) * cells_per_column
        s0 = min(initial_segments_per_column, max_segments_per_column)
        self.num_active: int | None = None
        self._alloc(0, s0, 0)

    # -- state ---------------------------------------------------------------------
    def _alloc(self, k: int, s: int, a: int) -> None:
        be, c, m = self.be, self.columns, self.max_syn
        self.seg_cell = be.full((k, c, s), -1, be.i16)
        self.seg_last = be.zeros((k, c, s), be.i64)
        # synapse slots of unused segments hold 0 in memory (zeroed pages cost nothing
        # until written): compute reads used segments only, and the padded readers mask
        # unused ones by ``seg_cell >= 0``; checkpoints show them as ``dummy``
        self.pre = be.zeros((k, c, s, m), be.i32)
        self.perm = be.zeros((k, c, s, m), be.i16)
        self.active = be.zeros((k, self.stride), be.b)
        self.prev_cols = be.zeros((k, a), be.i64)
        self.winners = be.full((k, a), -1, be.i64)
        self.step = be.zeros((k,), be.i64)
        # segments used per column (a prefix of its bucket); derived from seg_cell
        self.used = be.zeros((k, c), be.i32)
        # winner index (0..A-1) of each cell among its slot's winners of t-1, else -1;
        # derived from ``winners``: lets learning test "winner already on the segment"
        # with one gather per synapse instead of comparing every synapse with every winner
        self.winpos = be.full((k, self.dummy + 1), -1, be.i16)
        # backtracking: the last inputs (active columns) of each key, oldest first
        self.history = be.full((k, self.max_backtrack, a), -1, be.i64)

    @property
    def slots(self) -> int:
        return self.step.shape[0]

    @property
    def _index_bound(self) -> int:
        """Largest flat index into a (slots, stride) bitmap: every row is a slot or a
        row of a smaller private bitmap, every presynaptic cell is at most ``dummy``."""
        return self.slots * self.stride - 1

    @property
    def segments_per_column(self) -> int:
        return self.seg_cell.shape[2]

    def add_slots(self, n: int) -> None:
        """Append ``n`` empty slots (new keys)."""
        be = self.be
        a = self.num_active or 0
        fresh = TemporalMemory.__new__(TemporalMemory)
        fresh.__dict__.update(self.__dict__)
        fresh._alloc(n, self.segments_per_column, a)
        for name in (*self._STATE, "used", "winpos"):
            setattr(self, name, be.cat([getattr(self, name), getattr(fresh, name)], 0))

    _STATE = ("seg_cell", "seg_last", "pre", "perm", "active", "prev_cols", "winners", "step",
              "history")

    def _grow_segments(self) -> None:
        """Double the per-column segment capacity of every slot."""
        be, s = self.be, self.segments_per_column
        new = min(2 * s, self.max_seg)
        k, c = self.slots, self.columns

        def pad(x, fill, shape):
            return be.pad_axis2(x, shape[2], fill)

        self.seg_cell = pad(self.seg_cell, -1, (k, c, new - s))
        self.seg_last = pad(self.seg_last, 0, (k, c, new - s))
        self.pre = pad(self.pre, 0, (k, c, new - s, self.max_syn))
        self.perm = pad(self.perm, 0, (k, c, new - s, self.max_syn))

    def _set_num_active(self, a: int) -> None:
        if self.num_active is None:
            self.num_active = a
            k = self.slots
            self.prev_cols = self.be.zeros((k, a), self.be.i64)
            self.winners = self.be.full((k, a), -1, self.be.i64)
            self.history = self.be.full((k, self.max_backtrack, a), -1, self.be.i64)
        elif a != self.num_active:
            raise ValueError(f"temporal memory expects {self.num_active} active columns, got {a}")

    def state_dict(self) -> dict[str, Any]:
        out = {name: self.be.to_numpy(getattr(self, name)).copy() for name in self._STATE}
        # the checkpoint keeps the (slots, cells + 1) bitmap: the padding row is all off
        out["pre"] = np.where(out["seg_cell"][..., None] >= 0, out["pre"], self.dummy).astype(np.int32)
        out["active"] = out["active"][:, :self.dummy + 1].copy()
        out["num_active"] = -1 if self.num_active is None else int(self.num_active)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        a = int(state["num_active"])
        self.num_active = None if a < 0 else a
        for name in self._STATE:
            setattr(self, name, self.be.asarray(np.asarray(state[name]).copy()))
        active = np.zeros((self.active.shape[0], self.stride), dtype=bool)
        active[:, :self.dummy + 1] = np.asarray(state["active"])
        self.active = self.be.asarray(active)
        self.used = self.be.astype((self.seg_cell >= 0).sum(-1), self.be.i32)
        self._index_winners()

    # -- one slot at a time (a key spilled to disk and restored, see stream.spill) ------
    #: a fresh slot's value of each per-slot array
    _FRESH = {"seg_cell": -1, "seg_last": 0, "pre": 0, "perm": 0, "active": False, "prev_cols": 0,
              "winners": -1, "step": 0, "history": -1, "used": 0, "winpos": -1}

    def slot_state(self, slot: int) -> dict[str, Any]:
        """Slot ``slot``'s arrays (as :meth:`state_dict` has them for every slot)."""
        be = self.be
        out = {name: np.array(be.to_numpy(getattr(self, name)[slot])) for name in self._STATE}
        out["active"] = out["active"][:self.dummy + 1].copy()
        out["num_active"] = -1 if self.num_active is None else int(self.num_active)
        return out

    def clear_slot(self, slot: int) -> None:
        """Give slot ``slot`` the state of a new key."""
        for name, value in self._FRESH.items():
            getattr(self, name)[slot] = value

    def load_slot(self, slot: int, state: dict[str, Any]) -> None:
        """Load :meth:`slot_state` into cleared slot ``slot``; ``ValueError`` on a shape that does not fit."""
        a = int(state["num_active"])
        if a < 0:
            return   # the key never stepped: a cleared slot is its state
        self._set_num_active(a)
        s = np.asarray(state["seg_cell"]).shape[-1] if np.ndim(state["seg_cell"]) == 2 else -1
        if not 0 < s <= self.max_seg:
            raise ValueError(f"temporal memory slot state: 'seg_cell' must be (columns, 1..{self.max_seg})")
        while self.segments_per_column < s:
            self._grow_segments()
        cap, be = self.segments_per_column, self.be
        fill = {"seg_cell": -1, "seg_last": 0, "pre": 0, "perm": 0}
        for name in self._STATE:
            value = np.asarray(state[name])
            if name in fill:
                if value.ndim < 2 or value.shape[1] != s:
                    raise ValueError(f"temporal memory slot state: {name!r} has shape {value.shape}")
                pad = [(0, 0)] * value.ndim
                pad[1] = (0, cap - s)
                value = np.pad(value, pad, constant_values=fill[name])
            if name == "active":
                full = np.zeros(self.stride, dtype=bool)
                if value.shape != (self.dummy + 1,):
                    raise ValueError(f"temporal memory slot state: 'active' has shape {value.shape}")
                full[:self.dummy + 1] = value
                value = full
            target = getattr(self, name)
            if value.shape != tuple(target.shape[1:]):
                raise ValueError(f"temporal memory slot state: {name!r} has shape {value.shape}, "
                                 f"expected {tuple(target.shape[1:])}")
            target[slot] = be.asarray(value.astype(be.to_numpy(target[:0]).dtype))
        cells = be.to_numpy(self.seg_cell[slot])
        pre = be.to_numpy(self.pre[slot])
        if cells.min() < -1 or cells.max() >= self.cells or pre.min() < 0 or pre.max() > self.dummy:
            self.clear_slot(slot)
            raise ValueError("temporal memory slot state: cells out of range")
        self.used[slot] = be.astype((self.seg_cell[slot] >= 0).sum(-1), be.i32)
        winners = self.winners[slot]
        self.winpos[slot] = -1
        if winners.shape[0]:
            self.winpos[slot, winners] = be.astype(be.arange(winners.shape[0]), be.i16)
            self.winpos[slot, self.dummy] = -1

    def _index_winners(self) -> None:
        """Rebuild ``winpos`` from ``winners`` (-1 entries land on the dummy cell)."""
        be = self.be
        k = self.slots
        self.winpos = be.full((k, self.dummy + 1), -1, be.i16)
        if k and self.winners.shape[1]:
            pos = be.astype(be.arange(self.winners.shape[1]), be.i16)
            self.winpos[be.arange(k)[:, None], self.winners] = pos
            self.winpos[:, self.dummy] = -1

    # -- one step --------------------------------------------------------------------------
    def _segment_activity(self, ki: Any, cols: Any, active: Any, rows: Any = None,
                          width: int | None = None) -> tuple[Any, ...]:
        """For the segments of ``cols`` of slots ``ki``: counts of active connected and
        active potential synapses, given the flat active-cell bitmap ``active`` whose
        row ``rows`` (default: the slot) belongs to each slot. Only the first ``width``
        segment slots are read (used slots form a prefix of each column's bucket)."""
        be = self.be
        w = self.segments_per_column if width is None else width
        pre = self.pre[ki, cols, :w]                                    # (B, A, S, M)
        perm = self.perm[ki, cols, :w]
        base = ((ki if rows is None else rows) * self.stride)[:, :, None, None]
        act = be.take(active, be.index(base, pre, self._index_bound))
        npot = be.count_true(act)
        nconn = be.count_true(act & (perm >= self.connected))
        return pre, perm, act, npot, nconn

    def _step_activity(self, slots: Any, cols: Any, used: Any, active: Any,
                       width: int) -> tuple[Any, ...]:
        """:meth:`_segment_activity` for :meth:`compute`, reading only the segments in use.

        Used segments are a prefix of each column's bucket, so they form a ragged list of
        ``R = sum(used)`` rows of ``pre``; a padded (B, A, ``width``, M) gather would read
        ~3.5x as many on NAB (most columns use a few segments, some use dozens). Connected
        synapses are counted only for segments with at least ``activation_threshold``
        potential ones (only those can be active; ``nconn`` is 0 elsewhere, which changes
        no decision), so no (R, M) permanence gather either.

        Returns ``pre, act, start, npot, nconn``: ``pre`` and ``act`` (R, M) for the used
        segments, ``start`` (B, A) the row of each column's first segment (segment ``s``
        is row ``start + s``), ``npot`` and ``nconn`` (B, A, ``width``, int16), 0 where
        unused. ``used``: (B, A) segments in use in each column."""
        be = self.be
        b, a = cols.shape
        m = self.max_syn
        used = be.astype(used, be.i64).reshape(-1)                             # (B*A,)
        ends = be.cumsum(used)
        r = int(ends[-1]) if b * a else 0
        start = ends - used
        seg = be.arange(r) - be.repeat(start, used)                            # (R,)
        pos = be.repeat(be.arange(b * a) * width, used) + seg                  # in (B, A, width)
        col_row = (slots[:, None] * self.columns + cols).reshape(-1) * self.segments_per_column
        rows = be.repeat(col_row, used) + seg
        pre = be.take_rows(self.pre.reshape(-1, m), rows)                       # (R, M)
        base = be.repeat(be.repeat(slots * self.stride, be.full((b,), a, be.i64)), used)
        act = be.take(active, be.index(base[:, None], pre, self._index_bound))
        npot_r = be.count_true(act)
        npot = be.zeros((b * a * width,), be.i16)
        npot[pos] = be.astype(npot_r, be.i16)
        nconn = be.zeros((b * a * width,), be.i16)
        ci = be.nonzero(npot_r >= self.activation_threshold)[0]
        if ci.shape[0]:
            perm = be.take_rows(self.perm.reshape(-1, m), rows[ci])               # (P, M)
            nconn[pos[ci]] = be.astype(be.count_true(act[ci] & (perm >= self.connected)), be.i16)
        shape = (b, a, width)
        return pre, act, start.reshape(b, a), npot.reshape(shape), nconn.reshape(shape)

    def _predicted(self, ki: Any, cols: Any, active: Any, rows: Any) -> tuple[Any, Any]:
        """Active segments (B, A, S) and cell-in-column of each segment, for inference."""
        _, _, _, _, nconn = self._segment_activity(ki, cols, active, rows)
        scell = self.seg_cell[ki, cols]
        return (scell >= 0) & (nconn >= self.activation_threshold), scell

    # -- the interface HTMModel calls, shared with BacktrackingTM ---------------------------
    # compute / peek take slots (B,) and active columns cols (B, A) as NumPy arrays or
    # this backend's arrays and return float64 NumPy scores on the host; memory_bytes,
    # add_slots, slots and state_dict / load_state_dict complete it. A TM that keeps one
    # model per key may add compute_sequence (BacktrackingTM): HTMModel.run then gives it
    # each key's records in a row; this batched TM steps with the spatial pooler instead
    def peek(self, slots: Any, cols: Any) -> np.ndarray:
        """Raw anomaly scores (B,) for active columns ``cols`` without changing any state."""
        be = self.be
        slots = be.asarray(slots, be.i64)
        cols = be.asarray(cols, be.i64)
        active_seg, _ = self._predicted(slots[:, None], cols, self.active.reshape(-1), None)
        return be.to_numpy(1.0 - be.astype(active_seg.any(-1).sum(-1), be.f64) / cols.shape[1])

    def compute(self, slots: Any, cols: Any, learn: bool = True) -> np.ndarray:
        """One record per slot: active columns ``cols`` (B, A) → raw anomaly scores (B,)."""
        return self.be.to_numpy(self._compute(slots, cols, learn))

    def memory_bytes(self) -> int:
        """Bytes held by the state tensors (all slots; derived indexes not counted)."""
        return sum(self.be.nbytes(getattr(self, name)) for name in self._STATE)

    def _compute(self, slots: Any, cols: Any, learn: bool = True) -> Any:
        """:meth:`compute` on the backend: scores stay where the state is."""
        be = self.be
        slots = be.asarray(slots, be.i64)
        cols = be.asarray(cols, be.i64)
        b, a = cols.shape
        self._set_num_active(a)
        n, cap = self.cells, self.segments_per_column
        ki = slots[:, None]
        # read only as many segment slots as the fullest of these columns uses, plus one
        # free slot for a new segment; used segments are a prefix of each bucket
        used = self.used[ki, cols]                                      # (B, A)
        s_cap = min(cap, int(used.max()) + 1)
        flat_active = self.active.reshape(-1)
        pre, act, start, npot, nconn = self._step_activity(slots, cols, used, flat_active, s_cap)
        # npot / nconn are 0 on unused segment slots, so with thresholds >= 1 they need
        # no validity mask
        active_seg = nconn >= self.activation_threshold                 # (B, A, S)
        matching = npot >= self.min_threshold
        if min(self.activation_threshold, self.min_threshold) < 1:
            valid = be.arange(s_cap) < used[..., None]
            active_seg, matching = active_seg & valid, matching & valid
        predicted = active_seg.any(-1)                                  # (B, A)
        scores = 1.0 - be.astype(predicted.sum(-1), be.f64) / a
        step = self.step[slots]
        has_prev = (step > 0)[:, None]
        cell_ids = be.arange(n)
        # cell of a segment: one flat look-up in seg_cell, for the few segments that need it
        seg_cell = self.seg_cell.reshape(-1)
        col_first = (ki * self.columns + cols) * cap                    # (B, A) row of segment 0
        # cells with an active segment
        ak, aa, as_ = be.nonzero(active_seg)
        pred_cells = be.zeros((b * a * n,), be.b)
        pred_cells[(ak * a + aa) * n + be.astype(seg_cell[col_first[ak, aa] + as_], be.i64)] = True
        pred_cells = pred_cells.reshape(b, a, n)                         # (B, A, N)
        burst = ~predicted
        any_match = matching.any(-1)
        # best matching segment: most active potential synapses, lowest index on ties
        # (argmax returns the first maximum)
        # (npot + 1 on matching segments, 0 elsewhere: arithmetic beats np.where here)
        best = ((npot + 1) * matching).argmax(-1)                       # (B, A)
        best_cell = be.astype(seg_cell[col_first + best], be.i64)
        first_pred = (pred_cells if be.kind == "numpy" else be.astype(pred_cells, be.i64)).argmax(-1)
        winner_cell = be.xp.where(predicted, first_pred, best_cell)
        # least-used cell with a random tie-break, for bursting columns without a matching
        # segment (computed for those columns only: the hash is costly)
        uk, ua = be.nonzero(burst & ~any_match)
        if uk.shape[0]:
            u = uk.shape[0]
            scell_u = be.astype(self.seg_cell[slots[uk], cols[uk, ua], :s_cap], be.i64)
            slot_u = (be.arange(u) * n)[:, None] + scell_u
            counts = be.bincount(be.xp.where(scell_u >= 0, slot_u, u * n), u * n + 1)[:u * n]
            rnd = be.mix(self.seed, step[uk][:, None], cols[uk, ua][:, None], cell_ids[None, :])
            winner_cell[uk, ua] = (counts.reshape(u, n) * (1 << 32) + rnd).argmin(-1)
        new_seg = burst & ~any_match & has_prev
        if learn and s_cap == cap < self.max_seg and bool((new_seg & (used >= cap)).any()):
            self._grow_segments()
            return self._recompute(slots, cols, learn)

        # new active cells and winners
        new_active = pred_cells | burst[..., None]
        if self.max_backtrack > 0:
            new_active = self._backtrack(slots, cols, predicted, new_active)
        winners = cols * n + winner_cell
        if learn:
            self._learn(slots, cols, step, used, s_cap, pre, act, start, npot, active_seg,
                        predicted, any_match, best, new_seg, winner_cell)
            if self.punish > 0:
                self._punish(slots, cols, step, flat_active)
        # advance: clear the cells of last step's columns, set this step's
        # (a column's cells are one row of the bitmap; flat winner indices: faster than
        # 2-D fancy indexing)
        col_rows = self.active.reshape(-1, n)
        first = slots[:, None] * (self.columns + 1)
        col_rows[(first + self.prev_cols[slots]).reshape(-1)] = False
        col_rows[(first + cols).reshape(-1)] = new_active.reshape(-1, n)
        base = slots * (self.dummy + 1)
        self.prev_cols[slots] = cols
        # old winners of -1 (first step) clear the dummy cell, which is -1 anyway
        be.put(self.winpos, base[:, None] + self.winners[slots], -1)
        be.put(self.winpos, base[:, None] + winners, be.astype(be.arange(a), be.i16))
        self.winners[slots] = winners
        self.step[slots] = step + 1
        if self.max_backtrack > 0:
            hist = self.history[slots]
            self.history[slots] = be.cat([hist[:, 1:], cols[:, None, :]], 1)
        return scores

    def _recompute(self, slots: Any, cols: Any, learn: bool) -> Any:
        return self._compute(slots, cols, learn)

    def _learn(self, slots, cols, step, used, s_cap, pre, act, start, npot, active_seg,
               predicted, any_match, best, new_seg, winner_cell) -> None:
        """Adapt the learning segments: active segments of predicted columns, the best
        matching segment of bursting columns, and a new segment (no matching one)."""
        be = self.be
        cap, m = self.segments_per_column, self.max_syn
        # learning segments as (key, column, segment) rows: existing ones, then new ones
        ok_, oa, os_ = be.nonzero(predicted[..., None] & active_seg)
        bk, ba = be.nonzero(~predicted & any_match)
        nk, na = be.nonzero(new_seg)
        # a new segment goes to the first free slot (``used``), else replaces the least
        # recently used segment of its (full) bucket
        new_slot = be.astype(used[nk, na], be.i64)
        full = be.nonzero(new_slot >= s_cap)[0]
        if full.shape[0]:
            fk, fa = nk[full], na[full]
            slast = be.astype(self.seg_last[slots[fk], cols[fk, fa], :s_cap], be.i64)
            new_slot[full] = (slast * s_cap + be.arange(s_cap)).argmin(-1)
        lk_old, la_old = be.cat([ok_, bk]), be.cat([oa, ba])
        ls_old = be.cat([os_, best[bk, ba]])
        n_old, n_new = lk_old.shape[0], nk.shape[0]
        if n_old + n_new == 0:
            return
        lk, la, ls = be.cat([lk_old, nk]), be.cat([la_old, na]), be.cat([ls_old, new_slot])
        seg_row = (slots[lk] * self.columns + cols[lk, la]) * cap + ls
        # existing segments: reinforce synapses onto previously active cells, weaken the
        # others (int16 throughout: permanences <= PERM_SCALE, steps <= PERM_SCALE)
        ri = start[lk_old, la_old] + ls_old                              # rows of pre / act
        perm_o = be.take_rows(self.perm.reshape(-1, m), seg_row[:n_old])  # (L_old, M)
        live = perm_o > 0
        step_o = be.astype(be.take_rows(act, ri), be.i16) * (self.inc + self.dec) - self.dec
        perm_o = (perm_o + step_o).clip(0, PERM_SCALE) * live
        pre_o = be.where_scalar(perm_o > 0, be.take_rows(pre, ri), self.dummy)
        # new segments start empty
        perm_l = be.cat([perm_o, be.zeros((n_new, m), be.i16)])
        pre_l = be.cat([be.astype(pre_o, be.i32), be.full((n_new, m), self.dummy, be.i32)])
        # grow synapses onto previous winner cells not yet on the segment
        want = be.astype(self.new_synapse_count - npot[lk_old, la_old, ls_old], be.i64)
        n_grow = be.cat([want.clip(0, None), be.full((n_new,), self.new_synapse_count, be.i64)])
        # only segments that still want synapses pay for choosing them (in a trained
        # model most learning segments already have enough active synapses)
        gi = be.nonzero(n_grow > 0)[0]
        if gi.shape[0]:
            self._grow(slots, cols, step, lk[gi], la[gi], ls[gi], n_grow[gi], gi, pre_l, perm_l)
        # write back only the learning segments
        # (flat rows of the (slots * columns * segments) arrays: faster than 3-D indexing)
        self.pre.reshape(-1, m)[seg_row] = pre_l
        self.perm.reshape(-1, m)[seg_row] = perm_l
        be.put(self.seg_last, seg_row, step[lk])
        if n_new:
            # only new segments change their cell and their column's count
            be.put(self.seg_cell, seg_row[n_old:], be.astype(winner_cell[nk, na], be.i16))
            col_row = slots[nk] * self.columns + cols[nk, na]
            count = be.maximum(self.used.reshape(-1)[col_row], be.astype(new_slot + 1, self.used.dtype))
            be.put(self.used, col_row, count)

    def _grow(self, slots, cols, step, lk, la, ls, n_grow, gi, pre_l, perm_l) -> None:
        """Grow up to ``n_grow`` synapses on rows ``gi`` of the learning segments'
        ``pre_l`` / ``perm_l`` (in place), onto previous winner cells not yet on them,
        randomly chosen, replacing empty or weakest synapse slots first."""
        be = self.be
        pre_g, perm_g = pre_l[gi], perm_l[gi]
        cand = self.winners[slots[lk]]                                  # (L, W)
        w = cand.shape[1]
        # present[l, j]: winner j already has a synapse on segment l (see ``winpos``)
        wpos = be.take(self.winpos.reshape(-1),
                       be.index((slots[lk] * (self.dummy + 1))[:, None], pre_g, self._index_bound))
        present = be.zeros((lk.shape[0], w + 1), be.b)
        present[be.arange(lk.shape[0])[:, None],
                be.xp.where(wpos >= 0, be.astype(wpos, be.i64), w)] = True
        present = present[:, :w]
        ok = (cand >= 0) & ~present
        cidx = be.arange(w)
        rnd = be.mix(self.seed + 1, step[lk][:, None], cols[lk, la][:, None], ls[:, None],
                     cand)
        order = be.argsort(be.xp.where(ok, rnd * 1024 + cidx, (1 << 50) + cidx), 1)
        chosen = be.take_along(cand, order, 1)
        n_ok = ok.sum(-1)
        g = min(w, self.max_syn)
        n_take = be.minimum(n_grow, n_ok).clip(0, g)
        slot_order = be.argsort(be.astype(perm_g, be.i64) * self.max_syn + be.arange(self.max_syn), 1)
        take = be.arange(g)[None, :] < n_take[:, None]                   # (L, g)
        rows = be.xp.where(take, be.arange(lk.shape[0])[:, None], -1)
        sel_rows = gi[rows[take]]
        sel_slots = slot_order[:, :g][take]
        pre_l[sel_rows, sel_slots] = be.astype(chosen[:, :g][take], be.i32)
        perm_l[sel_rows, sel_slots] = self.init_perm

    def _punish(self, slots: Any, cols: Any, step: Any, flat_active: Any) -> None:
        """Weaken matching segments of columns that did not become active (slow path)."""
        be = self.be
        b = slots.shape[0]
        all_cols = be.arange(self.columns)[None, :].expand(b, -1) if be.kind == "torch" \
            else np.broadcast_to(np.arange(self.columns), (b, self.columns))
        ki = slots[:, None]
        _, perm, act, npot, _ = self._segment_activity(ki, all_cols, flat_active)
        valid = self.seg_cell[ki, all_cols] >= 0
        inactive = be.full((b, self.columns), True, be.b)
        inactive[be.arange(b)[:, None], cols] = False
        hit = valid & (npot >= self.min_threshold) & inactive[:, :, None]
        pk, pc, ps = be.nonzero(hit)
        if pk.shape[0] == 0:
            return
        p = perm[pk, pc, ps]
        q = be.astype((be.astype(p, be.i32) - self.punish).clip(0, PERM_SCALE), be.i16)
        q = be.xp.where(act[pk, pc, ps], q, p)
        self.perm[slots[pk], pc, ps] = q
        pre = self.pre[slots[pk], pc, ps]
        self.pre[slots[pk], pc, ps] = be.xp.where(q > 0, pre, self.dummy)

    def _backtrack(self, slots: Any, cols: Any, predicted: Any, new_active: Any) -> Any:
        """Replace the active cells of keys that lost the sequence (see module doc)."""
        be = self.be
        n = self.cells
        lost = be.astype(predicted, be.i64).sum(-1) * 2 < predicted.shape[1]
        lost = lost & (self.step[slots] > 0)
        idx = be.nonzero(lost)[0]
        if idx.shape[0] == 0:
            return new_active
        ks = slots[idx]
        hist = self.history[ks]                                          # (L, T, A)
        seq = be.cat([hist, cols[idx][:, None, :]], 1)
        t_len = seq.shape[1]
        found = be.full((idx.shape[0],), False, be.b)
        result = new_active[idx]
        cell_ids = be.arange(n)
        for start in range(t_len - 1):
            todo = ~found & (seq[:, start, 0] >= 0)
            if not bool(todo.any()):
                continue
            # a private bitmap for the replay: the first input bursts (every cell of its
            # columns); the inputs after it narrow the cells down to one context
            bitmap = be.zeros((idx.shape[0], self.stride), be.b)
            rows = be.arange(idx.shape[0])[:, None]
            bitmap[rows[:, :, None], seq[:, start][:, :, None] * n + cell_ids] = True
            ok = be.full((idx.shape[0],), True, be.b)
            cells = None
            for t in range(start + 1, t_len):
                act_seg, scell = self._predicted(ks[:, None], seq[:, t], bitmap.reshape(-1), rows)
                pred = act_seg.any(-1)
                ok = ok & (be.astype(pred, be.i64).sum(-1) * 2 >= pred.shape[1])
                onehot = be.astype(scell, be.i64)[..., None] == cell_ids
                cells = be.xp.where((~pred)[..., None], True, (onehot & act_seg[..., None]).any(2))
                bitmap = be.zeros((idx.shape[0], self.stride), be.b)
                bitmap[rows[:, :, None], seq[:, t][:, :, None] * n + cell_ids] = cells
            take = todo & ok
            result = be.xp.where(take[:, None, None], cells, result)
            found = found | take
        new_active = be.copy(new_active)
        new_active[idx] = result
        return new_active
