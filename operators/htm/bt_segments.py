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
(32 bits). Row 0 is a sentinel that no segment uses. Rows grow by a quarter when full
(capacity in proportion to the segments in use, not reserved). The index gives each
presynaptic cell a block of entries (flat synapse ids, int32) in one array: a look-up
gathers the blocks of the active cells, with no search and no merging. A full block
moves behind the others with room to grow; when the array has no space left, or dead
entries pile up, every block is laid out afresh. Removing a synapse finds its entry in
its presynaptic cell's block (a few entries) and turns it into a dead one (pointing at
the sentinel row, whose count is discarded); moves and re-layouts drop the dead
entries. The index is derived state: it is rebuilt from ``pre`` on load.

After NAB's longest stream (machine_temperature_system_failure) one key's temporal
memory holds about 6 MB (15 MB with int32 cells, 64-bit bookkeeping, doubling growth and
a synapse-to-entry map); ``benchmarks/htm_keys.py --measure`` reports it by part.

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
#: Flat synapse id of dead index entries: slot 0 of the sentinel row 0.
DEAD = 0


class SegmentStore:
    """Segments, synapses and the presynaptic index of one key."""

    _STATE = ("pre", "perm", "cell", "seq", "last")

    def __init__(self, cells: int, cells_per_column: int, max_synapses: int = 32,
                 seed: int = 0, capacity: int = 64, max_segments_per_cell: int = 128):
        self.cells, self.n = cells, cells_per_column
        self.max_syn, self.seed = max_synapses, seed
        pow2 = max_synapses & (max_synapses - 1) == 0
        self._shift = max_synapses.bit_length() - 1 if pow2 else None
        # the smallest exact types: 65,536 cells (NAB's 2048 x 32) fit uint16
        self.pre_dtype = np.uint16 if cells <= 1 << 16 else np.uint32
        self.pre = np.zeros((capacity, max_synapses), self.pre_dtype)
        self.perm = np.zeros((capacity, max_synapses), np.int16)
        self.cell = np.full(capacity, -1, np.int32)
        self.seq = np.zeros(capacity, bool)
        self.last = np.zeros(capacity, np.uint32)
        self.used = 1                          # rows 1..used-1 have been handed out
        self.cell_segments = np.zeros(cells, np.uint16 if max_segments_per_cell < 1 << 16 else np.int64)
        self._reset_index()

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name)[1:self.used].copy() for name in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load :meth:`state_dict`'s arrays; raises ``ValueError`` naming the array when
        one is missing, has another shape, or holds cells or permanences out of range
        (a corrupt or foreign checkpoint must not become a silently wrong index)."""
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
        self._grow(used)
        for name in self._STATE:
            arr = getattr(self, name)
            arr[:] = -1 if name == "cell" else 0
            arr[1:used] = arrays[name]
        self.used = used
        live = self.cell[:used] >= 0
        self.cell_segments = np.bincount(self.cell[:used][live], minlength=self.cells).astype(
            self.cell_segments.dtype)
        self._reset_index()
        s, k = np.nonzero(self.perm[:used] > 0)
        self._append_index(self.pre[s, k].astype(np.int64), s * self.max_syn + k)

    def nbytes(self) -> int:
        """Bytes held by this key's arrays (the state and the derived index)."""
        return sum(getattr(self, n).nbytes for n in (*self._STATE, "cell_segments", "idx_syn", "blk_start",
                                                      "blk_len", "blk_cap"))

    # -- the presynaptic index ---------------------------------------------------------------
    _INDEX_MIN = 1024   # spare entries of a fresh entry array

    def _reset_index(self) -> None:
        self.idx_syn = np.zeros(self._INDEX_MIN, np.int32)   # flat synapse id (DEAD: removed)
        # cell c's block: entries idx_syn[blk_start[c]:][:blk_len[c]], room for blk_cap[c]
        self.blk_start = np.zeros(self.cells, np.int32)
        self.blk_len = np.zeros(self.cells, np.int32)
        self.blk_cap = np.zeros(self.cells, np.int32)
        self.n_idx = 0          # idx_syn[:n_idx] is handed out (blocks, abandoned blocks)
        self.n_live = self.n_stale = 0     # live and dead entries in the blocks

    @staticmethod
    def _room(n: np.ndarray) -> np.ndarray:
        """Block size for ``n`` entries: half as many again, so that a growing cell's
        entries move a bounded number of times on average (none for no entries)."""
        return n + (n + 1) // 2

    @staticmethod
    def _runs(lo: np.ndarray, n: np.ndarray) -> np.ndarray:
        """The positions ``lo[i], ..., lo[i] + n[i] - 1`` of every run, run after run."""
        ends = n.cumsum()
        pos = np.arange(int(ends[-1]) if ends.shape[0] else 0, dtype=np.int64)
        pos += np.repeat(lo - (ends - n), n)
        return pos

    def _append_index(self, pre: np.ndarray, syn: np.ndarray) -> None:
        """Index new synapses ``syn`` (flat ids) from presynaptic cells ``pre``."""
        m = pre.shape[0]
        if m == 0:
            return
        order = pre.argsort(kind="stable")
        pre, syn = pre[order], syn[order]
        # runs of equal cells (np.diff's Python overhead is most of a small append)
        head = np.empty(m, bool)
        head[0] = True
        np.not_equal(pre[1:], pre[:-1], out=head[1:])
        first = head.nonzero()[0]
        k = np.empty_like(first)
        np.subtract(first[1:], first[:-1], out=k[:-1])
        k[-1] = m - first[-1]
        cells = pre[first]
        self._make_room(cells, k)
        at = np.arange(m, dtype=np.int64)
        at += (self.blk_start[cells] + self.blk_len[cells] - first).repeat(k)
        self.idx_syn[at] = syn
        self.blk_len[cells] += k
        self.n_live += m
        if 4 * self.n_stale > self.n_live:       # look-ups would read too many dead entries
            self._repack()

    def _unindex(self, syn: np.ndarray, pre: np.ndarray) -> None:
        """Turn the index entries of live synapses ``syn`` (flat ids) from cells ``pre``
        into dead ones: each is in its cell's block, which holds a synapse id once."""
        if syn.shape[0] == 0:
            return
        cells = np.unique(pre)
        pos = self._runs(self.blk_start[cells], self.blk_len[cells])
        self.idx_syn[pos[np.isin(self.idx_syn[pos], syn)]] = DEAD
        self.n_live -= syn.shape[0]
        self.n_stale += syn.shape[0]

    def _move(self, cells: np.ndarray, start: np.ndarray, cap: np.ndarray, dst: np.ndarray) -> None:
        """Give ``cells`` new blocks (``start``, ``cap``, in ``dst``) holding their live
        entries; the dead ones are dropped."""
        n = self.blk_len[cells]
        syn = self.idx_syn[self._runs(self.blk_start[cells], n)]
        ok = syn != DEAD
        done = np.zeros(ok.shape[0] + 1, np.int64)       # live entries before each entry
        np.cumsum(ok, out=done[1:])
        ends = n.cumsum()
        live = done[ends] - done[ends - n]
        syn = syn[ok]
        at = self._runs(start, live)
        dst[at] = syn
        self.n_stale -= ok.shape[0] - syn.shape[0]
        self.blk_start[cells], self.blk_len[cells], self.blk_cap[cells] = start, live, cap

    def _make_room(self, cells: np.ndarray, k: np.ndarray) -> None:
        """Room for ``k`` more entries in the blocks of ``cells``: full blocks move behind
        all others; when the entry array has no space for them, everything is repacked."""
        full = self.blk_len[cells] + k > self.blk_cap[cells]
        if not full.any():
            return
        cap = self._room(self.blk_len[cells[full]] + k[full])
        need = int(cap.sum())
        if self.n_idx + need > self.idx_syn.shape[0]:
            self._repack(cells, k)
        else:
            self._move(cells[full], self.n_idx + cap.cumsum() - cap, cap, self.idx_syn)
            self.n_idx += need

    def _repack(self, cells: np.ndarray | None = None, k: np.ndarray | None = None) -> None:
        """Lay all blocks out afresh in a new entry array, without dead entries or
        abandoned blocks, with room for ``k`` more entries on ``cells``."""
        everyone = np.arange(self.cells)
        dead = self.idx_syn[self._runs(self.blk_start, self.blk_len)] == DEAD
        want = self.blk_len - np.bincount(np.repeat(everyone, self.blk_len)[dead], minlength=self.cells)
        if cells is not None:
            want[cells] += k
        cap = self._room(want)
        self.n_idx = int(cap.sum())
        total = int(cap.sum())
        dst = np.zeros(total + total // 4 + self._INDEX_MIN, np.int32)    # a quarter to grow into
        self._move(everyone, cap.cumsum() - cap, cap, dst)
        self.idx_syn = dst

    def _indexed_synapses(self, cells: np.ndarray) -> np.ndarray:
        """Flat ids (``segment * max_synapses + slot``) of the synapses from ``cells``;
        dead entries come back as ``DEAD``."""
        return self.idx_syn.take(self._runs(self.blk_start.take(cells), self.blk_len.take(cells)))

    def activity(self, cells: np.ndarray) -> np.ndarray:
        """Active synapses per segment, as an array over segment rows ``0..used-1``, for
        active cells ``cells``."""
        syn = self._indexed_synapses(cells)
        seg = syn >> self._shift if self._shift is not None else syn // self.max_syn
        pot = np.bincount(seg, minlength=self.used)
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
        new = max(need, cap + cap // 4)        # geometric: a quarter more

        def pad(a: np.ndarray, fill: int) -> np.ndarray:
            out = np.full((new, *a.shape[1:]), fill, a.dtype)
            out[:cap] = a
            return out

        self.pre, self.perm = pad(self.pre, 0), pad(self.perm, 0)
        self.cell, self.seq, self.last = pad(self.cell, -1), pad(self.seq, 0), pad(self.last, 0)

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
        self._unindex(segs[r] * self.max_syn + k, self.pre[segs[r], k])
        self.pre[segs] = 0
        self.perm[segs] = 0
        self.cell[segs] = -1

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
        self._append_index(chosen.reshape(-1), (segs[:, None] * self.max_syn + np.arange(k)).reshape(-1))

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
        syn = segs[cr] * self.max_syn + cs
        was = exist[cr, cs]
        self._unindex(syn[was], old_pre[cr, cs][was])
        new = perm[cr, cs] > 0
        self._append_index(pre[cr, cs][new].astype(np.int64), syn[new])
        empty = ~(perm > 0).any(1)
        if empty.any():
            self.release(segs[empty])

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
