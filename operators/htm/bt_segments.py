"""Segment storage for one key of the backtracking temporal memory.

NuPIC's ``BacktrackingTM`` (and its C++ twin ``Cells4``) keeps a list of segments per
cell; each segment holds up to ``max_synapses`` synapses ``(presynaptic cell,
permanence)``. Every step asks "how many synapses of each segment land on these
active cells" for *all* segments (the prediction for the next step can be in any
column), so, like ``Cells4``'s out-synapse lists, :class:`SegmentStore` keeps an index
from presynaptic cell to synapse: the cost of a look-up is the number of synapses that
leave the active cells, not the size of the model.

Layout: segment ``s`` owns row ``s`` of ``pre`` (presynaptic cell, ``uint16`` for up
to 65,536 cells) and ``perm`` (permanence in 1/10000, int16; 0 = empty slot, whose
``pre`` is 0), belongs to cell ``cell[s]`` (-1 = free row), carries NuPIC's
sequence-segment flag ``seq[s]`` and the iteration it was last active, ``last[s]``
(32 bits). Row 0 is a sentinel that no segment uses. Rows grow by an eighth when full
(capacity in proportion to the segments in use, not reserved). A segment has at most
one synapse from a cell, so an index entry is just a segment row (``uint16`` while the
rows fit, int32 after). The index has two parts: a *base* laid out by presynaptic cell
(``idx_off[c]:idx_off[c + 1]`` of ``idx_seg``, compressed-sparse-row) and a short *tail*
of the synapses made since. A look-up gathers the base runs of the
active cells and scans the tail. Removing a synapse turns its base entry into a dead one
(the sentinel row, whose count is discarded) or drops it from the tail. When dead
entries pass an eighth of the live synapses, or the tail a sixteenth, the base is laid
out afresh from ``pre`` (one pass; the index is derived state, rebuilt on load too).

After NAB's longest stream (machine_temperature_system_failure) one key's temporal
memory holds 3.4 MB: the segments 2.3 MB, the index 1.0 MB (15 MB with int32 cells,
64-bit bookkeeping and doubling growth; 6 MB with int32 synapse ids in per-cell index
blocks with room to grow and 64 KB cell masks);
``benchmarks/htm_keys.py --measure`` reports it by part.

Randomness is a counter-based hash of (seed, iteration, segment or column, cell), so
the draws are the same whether a key runs alone or batched with others and need no
generator state in a checkpoint.

Example:
    >>> import numpy as np
    >>> st = SegmentStore(cells=64, cells_per_column=4, max_synapses=8, seed=1)
    >>> st.create(np.array([21]), np.array([4, 9, 14]), n_new=3, initial=2100, iteration=1)
    >>> st.activity(np.array([4, 9])).tolist()     # row 0: the sentinel
    [0, 2]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.splitmix import hash64

PERM_SCALE = 10000
#: Segment row of dead index entries: the sentinel row 0.
DEAD = 0


class SegmentStore:
    """Segments, synapses and the presynaptic index of one key."""

    _STATE = ("pre", "perm", "cell", "seq", "last")
    _SPARSE = ("occupied", "syn_pre", "syn_perm", "cell", "seq", "last")   # checkpoint arrays

    def __init__(self, cells: int, cells_per_column: int, max_synapses: int = 32,
                 seed: int = 0, capacity: int = 64, max_segments_per_cell: int = 128):
        self.cells, self.n = cells, cells_per_column
        self.max_syn, self.seed = max_synapses, seed
        self.max_segments_per_cell = max_segments_per_cell
        # the smallest exact types: 65,536 cells (NAB's 2048 x 32) fit uint16
        self.pre_dtype = np.uint16 if cells <= 1 << 16 else np.uint32
        self.pre = np.zeros((capacity, max_synapses), self.pre_dtype)
        self.perm = np.zeros((capacity, max_synapses), np.int16)
        self.cell = np.full(capacity, -1, np.int32)
        self.seq = np.zeros(capacity, bool)
        self.last = np.zeros(capacity, np.uint32)
        self.used = 1                          # rows 1..used-1 have been handed out
        # segments per cell never pass max_segments_per_cell (128 for NAB: uint8)
        self.cell_segments = np.zeros(cells, np.min_scalar_type(max_segments_per_cell))
        self._reindex()

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The segments' rows without the empty slots: ``occupied`` (rows, bits of the
        slots holding a synapse, packed eight to a byte), the synapses' ``syn_pre`` and
        ``syn_perm`` in row-major slot order, and ``cell``, ``seq``, ``last`` per row."""
        rows = slice(1, self.used)
        on = self.perm[rows] > 0
        return {"occupied": np.packbits(on, axis=1, bitorder="little"), "syn_pre": self.pre[rows][on],
                "syn_perm": self.perm[rows][on], **{name: getattr(self, name)[rows].copy()
                                                    for name in ("cell", "seq", "last")}}

    def _dense(self, state: dict[str, Any]) -> dict[str, Any]:
        """Dense ``pre``/``perm`` rows of :meth:`state_dict`'s sparse arrays; a state with
        ``pre`` (written before the sparse form) passes as it is."""
        if "pre" in state or "occupied" not in state:
            return state
        missing = [name for name in self._SPARSE if name not in state]
        if missing:
            raise ValueError(f"backtracking TM segment state lacks {missing}")
        occupied, pre, perm = (np.asarray(state[n]) for n in ("occupied", "syn_pre", "syn_perm"))
        width = (self.max_syn + 7) // 8
        if occupied.ndim != 2 or occupied.shape[1] != width or occupied.dtype != np.uint8:
            raise ValueError(f"backtracking TM segment state 'occupied' has shape {occupied.shape} "
                             f"({occupied.dtype}), expected (rows, {width}) uint8")
        on = np.unpackbits(occupied, axis=1, count=self.max_syn, bitorder="little").astype(bool)
        n = int(on.sum())
        if pre.shape != (n,) or perm.shape != (n,):
            raise ValueError(f"backtracking TM segment state 'syn_pre' and 'syn_perm' have shapes "
                             f"{pre.shape} and {perm.shape}, expected ({n},) (the occupied slots)")
        for name, a, lo, hi in (("syn_pre", pre, 0, self.cells - 1), ("syn_perm", perm, 1, PERM_SCALE)):
            if a.dtype.kind not in "iu" or (n and (a.min() < lo or a.max() > hi)):
                raise ValueError(f"backtracking TM segment state {name!r} holds values outside [{lo}, {hi}]")
        dense_pre = np.zeros(on.shape, np.int64)
        dense_perm = np.zeros(on.shape, np.int64)
        dense_pre[on], dense_perm[on] = pre, perm
        return {**state, "pre": dense_pre, "perm": dense_perm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load :meth:`state_dict`'s arrays (or the dense ``pre``/``perm`` rows written
        before); raises ``ValueError`` naming the array when one is missing, has another
        shape, or holds cells or permanences out of range (a corrupt or foreign
        checkpoint must not become a silently wrong index)."""
        state = self._dense(state)
        arrays = {name: np.asarray(state[name]) if name in state else None for name in self._STATE}
        missing = [name for name, a in arrays.items() if a is None]
        if missing:
            raise ValueError(f"backtracking TM segment state lacks {missing}")
        used = arrays["pre"].shape[0] + 1
        for name, a in arrays.items():
            want = (used - 1, self.max_syn) if name in ("pre", "perm") else (used - 1,)
            if a.shape != want:
                raise ValueError(f"backtracking TM segment state {name!r} has shape {a.shape}, "
                                 f"expected {want}")
        for name, lo, hi in (("pre", -1, self.cells), ("cell", -1, self.cells),
                             ("perm", 0, PERM_SCALE), ("last", 0, 1 << 32)):
            a = arrays[name]
            if a.size and (a.min() < lo or a.max() >= hi + (name == "perm")):
                raise ValueError(f"backtracking TM segment state {name!r} holds values outside "
                                 f"[{lo}, {hi}{']' if name == 'perm' else ')'}")
        # a slot holds a synapse when its permanence is positive (checkpoints written
        # before pre became unsigned also mark empty slots with pre = -1)
        empty = (arrays["perm"] <= 0) | (arrays["pre"] < 0)
        arrays["pre"] = np.where(empty, 0, arrays["pre"])
        arrays["perm"] = np.where(empty, 0, arrays["perm"])
        pre, perm, cell = arrays["pre"], arrays["perm"], arrays["cell"]
        live = cell >= 0
        if (perm[~live] > 0).any():
            raise ValueError("backtracking TM segment state 'perm' holds synapses on free segment rows")
        counts = np.bincount(cell[live], minlength=self.cells)
        if counts.max(initial=0) > self.max_segments_per_cell:
            raise ValueError(f"backtracking TM segment state 'cell' gives a cell more than "
                             f"{self.max_segments_per_cell} segments")
        # the index finds a synapse by (segment, presynaptic cell): one synapse per pair
        cells = np.where(perm > 0, pre.astype(np.int64), -1 - np.arange(self.max_syn))
        cells.sort(1)
        if (cells[:, 1:] == cells[:, :-1]).any():
            raise ValueError("backtracking TM segment state 'pre' repeats a presynaptic cell on a segment")
        self._grow(used)
        for name in self._STATE:
            arr = getattr(self, name)
            arr[:] = -1 if name == "cell" else 0
            arr[1:used] = arrays[name]
        self.used = used
        self.cell_segments = counts.astype(self.cell_segments.dtype)
        self._reindex()

    def nbytes(self) -> int:
        """Bytes held by this key's arrays (the state and the derived index)."""
        return sum(self.nbytes_by_part().values())

    def nbytes_by_part(self) -> dict[str, int]:
        """:meth:`nbytes` by part: ``segments`` (rows, capacity included), ``index``,
        ``cell_segments``."""
        def size(*names: str) -> int:
            return sum(getattr(self, n).nbytes for n in names)
        return {"segments": size(*self._STATE), "index": size("idx_seg", "idx_off", "tail_pre", "tail_seg"),
                "cell_segments": size("cell_segments")}

    # -- the presynaptic index ---------------------------------------------------------------
    _TAIL_MIN = 8192    # a young key's index is laid out afresh every few thousand synapses

    def _seg_dtype(self) -> type:
        """Index entries are segment rows: ``uint16`` while the rows fit it."""
        return np.uint16 if self.cell.shape[0] <= 1 << 16 else np.int32

    def _reindex(self) -> None:
        """Lay the index out afresh from ``pre`` and ``perm``: every live synapse in the
        base, grouped by presynaptic cell; an empty tail, no dead entries."""
        s, k = np.nonzero(self.perm[:self.used] > 0)
        pre = self.pre[s, k]
        self.idx_seg = s[pre.argsort(kind="stable")].astype(self._seg_dtype())
        self.idx_off = np.zeros(self.cells + 1, np.int32)
        np.cumsum(np.bincount(pre, minlength=self.cells), out=self.idx_off[1:])
        self.tail_pre = np.zeros(0, self.pre_dtype)
        self.tail_seg = np.zeros(0, self.idx_seg.dtype)
        self.n_live, self.n_stale = int(s.shape[0]), 0

    def _reindex_if_due(self) -> None:
        """A new layout once dead entries pass an eighth of the live synapses (look-ups
        read them) or the tail a sixteenth (look-ups scan it whole); a new layout costs one
        pass over the synapses. Called at the end of an update, when ``pre`` and ``perm``
        agree with the index again."""
        limit = max(self.n_live // 8, self._TAIL_MIN)
        if self.n_stale > limit or 2 * self.tail_pre.shape[0] > limit:
            self._reindex()

    @staticmethod
    def _runs(lo: np.ndarray, n: np.ndarray) -> np.ndarray:
        """The positions ``lo[i], ..., lo[i] + n[i] - 1`` of every run, run after run."""
        ends = n.cumsum()
        pos = np.arange(int(ends[-1]) if ends.shape[0] else 0, dtype=np.int64)
        pos += np.repeat(lo - (ends - n), n)
        return pos

    def _base_runs(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = self.idx_off.take(cells)
        return lo, self.idx_off.take(cells + 1) - lo

    def _append_index(self, pre: np.ndarray, seg: np.ndarray) -> None:
        """Index new synapses on segment rows ``seg`` from presynaptic cells ``pre``: they
        join the tail."""
        if pre.shape[0] == 0:
            return
        self.tail_pre = np.concatenate([self.tail_pre, pre.astype(self.pre_dtype)])
        self.tail_seg = np.concatenate([self.tail_seg, seg.astype(self.tail_seg.dtype)])
        self.n_live += pre.shape[0]

    def _unindex(self, seg: np.ndarray, pre: np.ndarray) -> None:
        """Remove the index entries of live synapses on segment rows ``seg`` from cells
        ``pre`` (a segment has one synapse from a cell at most): base entries die, tail
        entries go."""
        m = seg.shape[0]
        if m == 0:
            return
        want = (pre.astype(np.int64) << 32) | seg.astype(np.int64)
        cells = np.unique(pre).astype(np.int64)
        lo, n = self._base_runs(cells)
        pos = self._runs(lo, n)
        hit = pos[np.isin((cells.repeat(n) << 32) | self.idx_seg.take(pos), want)]
        self.idx_seg[hit] = DEAD
        if hit.shape[0] < m:
            keep = ~np.isin((self.tail_pre.astype(np.int64) << 32) | self.tail_seg, want)
            self.tail_pre, self.tail_seg = self.tail_pre[keep], self.tail_seg[keep]
        self.n_live -= m
        self.n_stale += hit.shape[0]

    def _indexed_segments(self, cells: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Segment rows of the synapses from ``cells`` (``mask``: the same cells as a
        mask, when the caller has it), one per synapse; dead entries come back as the
        sentinel row ``DEAD``."""
        base = self.idx_seg.take(self._runs(*self._base_runs(cells)))
        if self.tail_pre.shape[0] == 0:
            return base
        if mask is None:
            mask = np.zeros(self.cells, bool)
            mask[cells] = True
        # the tail is short: one pass over it costs less than finding each cell's run
        return np.concatenate([base, self.tail_seg[mask.take(self.tail_pre)]])

    def activity(self, cells: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Active synapses per segment, as an array over segment rows ``0..used-1``, for
        active cells ``cells`` (``mask``: the same cells as a mask, optional)."""
        pot = np.bincount(self._indexed_segments(cells, mask), minlength=self.used)
        pot[0] = 0                            # the dead entries' sentinel row
        return pot

    def active_synapses(self, segs: np.ndarray, bitmap: np.ndarray,
                        min_perm: int = 0) -> np.ndarray:
        """Synapses of each of ``segs`` onto cells of ``bitmap`` with permanence at
        least ``min_perm`` (a direct count, for a few segments)."""
        pre = self.pre[segs]
        on = bitmap[pre]                   # empty slots read cell 0: masked next
        # empty slots have permanence 0
        on &= self.perm[segs] >= max(min_perm, 1)
        return on.sum(1)

    # -- growth and release ------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        cap = self.cell.shape[0]
        if need <= cap:
            return
        new = max(need, cap + cap // 8)        # geometric: an eighth more

        def pad(a: np.ndarray, fill: int) -> np.ndarray:
            out = np.full((new, *a.shape[1:]), fill, a.dtype)
            out[:cap] = a
            return out

        self.pre, self.perm = pad(self.pre, 0), pad(self.perm, 0)
        self.cell, self.seq, self.last = pad(self.cell, -1), pad(self.seq, 0), pad(self.last, 0)
        if self.idx_seg.dtype != self._seg_dtype():     # the rows outgrew uint16
            self.idx_seg, self.tail_seg = self.idx_seg.astype(np.int32), self.tail_seg.astype(np.int32)

    def _allocate(self, m: int) -> np.ndarray:
        """``m`` free segment rows: released rows first (lowest first), then new ones."""
        free = np.flatnonzero(self.cell[1:self.used] < 0)[:m] + 1
        fresh = m - free.shape[0]
        self._grow(self.used + fresh)
        rows = np.concatenate([free, np.arange(self.used, self.used + fresh)])
        self.used += fresh
        return rows.astype(np.int64)

    def release(self, segs: np.ndarray) -> None:
        """Free segments and their synapses (their index entries die)."""
        if segs.shape[0] == 0:
            return
        np.subtract.at(self.cell_segments, self.cell[segs], 1)
        r, k = np.nonzero(self.perm[segs] > 0)
        self._unindex(segs[r], self.pre[segs[r], k])
        self.pre[segs] = 0
        self.perm[segs] = 0
        self.cell[segs] = -1
        self._reindex_if_due()

    # -- learning ---------------------------------------------------------------------------
    def _choose(self, tag: int, rows: np.ndarray, candidates: np.ndarray, ok: np.ndarray,
                iteration: int, k: int | None = None) -> np.ndarray:
        """Each row's candidates in a random order, eligible (``ok``) ones first; only
        the first ``k`` columns when ``k`` is given (a partial sort: same order)."""
        rnd = hash64(self.seed, tag, iteration, rows[:, None], candidates[None, :])
        key = np.where(ok, rnd >> np.uint64(1), np.uint64(1) << np.uint64(63))
        if k is None or k >= key.shape[1] or key.size <= 4096:
            return candidates[np.argsort(key, 1)[:, :k]]
        part = np.argpartition(key, k - 1, 1)[:, :k]
        return candidates[np.take_along_axis(part, np.argsort(np.take_along_axis(key, part, 1), 1), 1)]

    def create(self, cells: np.ndarray, sources: np.ndarray, n_new: int, initial: int,
               iteration: int) -> None:
        """One new sequence segment on each of ``cells``, with synapses to ``n_new``
        randomly chosen ``sources`` (all of them when there are fewer)."""
        if cells.shape[0] == 0 or sources.shape[0] == 0:
            return
        segs = self._allocate(cells.shape[0])
        k = min(n_new, sources.shape[0], self.max_syn)
        ok = np.ones((segs.shape[0], sources.shape[0]), bool)
        chosen = self._choose(0, cells.astype(np.int64), sources, ok, iteration, k)
        self.pre[segs, :k] = chosen
        self.perm[segs, :k] = max(initial, 1)     # a synapse has a positive permanence
        self.cell[segs], self.seq[segs], self.last[segs] = cells, True, iteration
        np.add.at(self.cell_segments, cells, 1)
        self._append_index(chosen.reshape(-1), segs.repeat(k))
        self._reindex_if_due()

    def adapt(self, segs: np.ndarray, prev: np.ndarray, sources: np.ndarray, n_new: int,
              inc: int, dec: int, initial: int, iteration: int) -> None:
        """NuPIC's ``adaptSegment`` for distinct segments ``segs``: synapses onto cells of
        ``prev`` (a mask) gain ``inc``, the others lose ``dec`` (and go at 0); then new
        synapses to randomly chosen ``sources`` (the cells of ``prev``, sorted) not yet
        on the segment bring the active count up to ``n_new``, freeing the weakest
        inactive synapses (then the weakest active ones) when the segment is full."""
        if segs.shape[0] == 0:
            return
        pre, perm = self.pre[segs], self.perm[segs]
        old_pre = pre.copy()               # their index entries are found by cell
        exist = perm > 0
        act = prev[pre]                    # empty slots read cell 0: masked next
        act &= exist
        n_on = act.sum(1)
        want = n_new - n_on
        # int16 is wide enough: permanences stay within [-dec, PERM_SCALE + inc]
        perm += np.where(act, np.int16(inc), np.int16(-dec))
        np.minimum(perm, PERM_SCALE, out=perm)
        dead = perm <= 0                   # synapses that went, and empty slots
        changed = dead & exist
        pre[dead] = 0
        perm[dead] = 0
        rows = (want > 0).nonzero()[0]
        if rows.shape[0] and sources.shape[0]:
            # the sources on a segment are its active synapses, which all stay
            r, k = act[rows].nonzero()
            present = np.zeros((rows.shape[0], sources.shape[0]), bool)
            present[r, sources.searchsorted(pre[rows[r], k])] = True
            n_take = np.minimum(want[rows], sources.shape[0] - n_on[rows])
            # rows count from 1 (row 0: the sentinel); the draws use 0-based segment numbers
            chosen = self._choose(1, segs[rows] - 1, sources, ~present, iteration,
                                  max(int(n_take.max()), 1))
            # empty slots first, then the weakest inactive synapses, then active ones
            score = np.where(dead[rows], -1, np.where(act[rows], 2 * PERM_SCALE, 0) + perm[rows])
            slot_order = np.argsort(score, 1, kind="stable")
            r, j = np.nonzero(np.arange(chosen.shape[1])[None, :] < n_take[:, None])
            rr, slots = rows[r], slot_order[r, j]
            pre[rr, slots] = chosen[r, j]
            perm[rr, slots] = max(initial, 1)
            changed[rr, slots] = True
        self.pre[segs], self.perm[segs] = pre, perm
        self.last[segs] = iteration
        if not changed.any():
            return
        cr, cs = np.nonzero(changed)
        seg = segs[cr]
        was = exist[cr, cs]
        self._unindex(seg[was], old_pre[cr, cs][was])
        new = perm[cr, cs] > 0
        self._append_index(pre[cr, cs][new], seg[new])
        empty = ~(perm > 0).any(1)
        if empty.any():
            self.release(segs[empty])
        self._reindex_if_due()

    def cell_for_new_segment(self, cols: np.ndarray, max_per_cell: int, iteration: int) -> np.ndarray:
        """NuPIC's ``getCellForNewSegment``: a random non-start cell of each column with
        fewer than ``max_per_cell`` segments; when all are full, the column's least
        recently active segment is freed and its cell is used."""
        n = self.n
        cand = cols[:, None] * n + np.arange(1, n)[None, :]
        ok = self.cell_segments[cand] < max_per_cell
        pick = self._choose(2, cols.astype(np.int64), np.arange(1, n), ok, iteration, 1)[:, 0]
        cells = cols * n + pick
        for i in np.flatnonzero(~ok.any(1)):
            rows = np.flatnonzero((self.cell[:self.used] >= 0) & (self.cell[:self.used] // n == cols[i])
                                  & (self.cell[:self.used] % n != 0))
            victim = rows[np.argmin(self.last[rows])]
            cells[i] = self.cell[victim]
            self.release(np.array([victim]))
        return cells
