"""Segment storage for one key of the backtracking temporal memory.

NuPIC's ``BacktrackingTM`` (and its C++ twin ``Cells4``) keeps a list of segments per
cell; each segment holds up to ``max_synapses`` synapses ``(presynaptic cell,
permanence)``. Every step asks "how many synapses of each segment land on these
active cells" for *all* segments (the prediction for the next step can be in any
column), so, like ``Cells4``'s out-synapse lists, :class:`SegmentStore` keeps an index
from presynaptic cell to synapse: the cost of a look-up is the number of synapses that
leave the active cells, not the size of the model.

Layout: segment ``s`` owns row ``s`` of ``pre`` (presynaptic cell, -1 = empty slot) and
``perm`` (permanence in 1/10000, int16), belongs to cell ``cell[s]`` (-1 = free row)
and carries NuPIC's sequence-segment flag ``seq[s]``. The index is a list of
``(pre, segment, slot, version)`` entries, a sorted prefix plus an unsorted tail that
is merged in when it grows; an entry counts only while ``version`` equals the slot's
current version, so removing or re-using a synapse slot never needs an index search.
The index is derived state: it is rebuilt from ``pre`` on load.

Randomness is a counter-based hash of (seed, iteration, segment or column, cell), so
the draws are the same whether a key runs alone or batched with others and need no
generator state in a checkpoint.

Example:
    >>> import numpy as np
    >>> st = SegmentStore(cells=64, cells_per_column=4, max_synapses=8, seed=1)
    >>> st.create(np.array([21]), np.array([4, 9, 14]), n_new=3, initial=2100, iteration=1)
    >>> active = np.zeros(64, bool); active[[4, 9]] = True
    >>> seg, slot = st.lookup(np.flatnonzero(active), active)
    >>> np.bincount(seg, minlength=st.used).tolist()
    [2]
"""

from __future__ import annotations

from typing import Any

import numpy as np

PERM_SCALE = 10000
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_SYN_MASK = np.int64(0xFFFFFFFF)


def _mix(x: Any) -> Any:
    """SplitMix64's finaliser, for Python ints (masked to 64 bits) or uint64 arrays."""
    if isinstance(x, int):
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return x ^ (x >> 31)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash64(*parts: Any) -> np.ndarray:
    """SplitMix64 of several broadcastable integer arrays (uint64 result).

    Leading scalar parts are mixed with Python ints (the same arithmetic modulo 2**64),
    which is much cheaper than NumPy calls on 0-d arrays.

    >>> int(hash64(1, 2, np.array([3]))[0]) == int(hash64(np.array([1]), 2, 3)[0])
    True
    """
    h: Any = 0
    with np.errstate(over="ignore"):
        for p in parts:
            if isinstance(h, int) and np.ndim(p) == 0:
                h = _mix((h + int(p) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
            else:
                h = _mix(np.uint64(h) + np.asarray(p).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    return np.asarray(np.uint64(h)) if isinstance(h, int) else h


class SegmentStore:
    """Segments, synapses and the presynaptic index of one key."""

    _STATE = ("pre", "perm", "cell", "seq", "last")

    def __init__(self, cells: int, cells_per_column: int, max_synapses: int = 32,
                 seed: int = 0, capacity: int = 64):
        self.cells, self.n = cells, cells_per_column
        self.max_syn, self.seed = max_synapses, seed
        pow2 = max_synapses & (max_synapses - 1) == 0
        self._shift = max_synapses.bit_length() - 1 if pow2 else None
        self.pre = np.full((capacity, max_synapses), -1, np.int32)
        self.perm = np.zeros((capacity, max_synapses), np.int16)
        self.ver = np.zeros((capacity, max_synapses), np.int32)
        self.cell = np.full(capacity, -1, np.int32)
        self.seq = np.zeros(capacity, bool)
        self.last = np.zeros(capacity, np.int64)
        self.used = 0                          # rows 0..used-1 have been handed out
        self.cell_segments = np.zeros(cells, np.int32)
        self._reset_index()

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name)[:self.used].copy() for name in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        used = int(np.asarray(state["cell"]).shape[0])
        self._grow(max(used, 1))
        for name in self._STATE:
            arr = getattr(self, name)
            arr[:] = -1 if name in ("pre", "cell") else 0
            arr[:used] = np.asarray(state[name])
        self.used = used
        self.ver[:] = 0
        live = self.cell[:used] >= 0
        self.cell_segments = np.bincount(self.cell[:used][live], minlength=self.cells).astype(np.int32)
        self._reset_index()
        s, k = np.nonzero(self.pre[:used] >= 0)
        self._append_index(self.pre[s, k], s, k)

    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in (*self._STATE, "ver")) + self.idx_pre.nbytes + self.idx_sv.nbytes

    # -- the presynaptic index ---------------------------------------------------------------
    _TAIL = 4096        # unsorted entries tolerated before they are merged in

    def _reset_index(self) -> None:
        self.idx_pre = np.zeros(1024, np.int32)
        # (version << 32) | (segment * max_synapses + slot): one gather reads both
        self.idx_sv = np.zeros(1024, np.int64)
        self.n_idx = self.n_sorted = self.n_stale = 0
        self._index_sorted()

    def _index_sorted(self) -> None:
        """Offsets of each presynaptic cell's run in the sorted prefix (``idx_start[c]``
        to ``idx_start[c + 1]``), so a look-up needs no binary search."""
        counts = np.bincount(self.idx_pre[:self.n_sorted], minlength=self.cells)
        self.idx_start = np.zeros(self.cells + 1, np.int64)
        np.cumsum(counts, out=self.idx_start[1:])

    def _append_index(self, pre: np.ndarray, seg: np.ndarray, slot: np.ndarray) -> None:
        m = pre.shape[0]
        if m == 0:
            return
        if self.n_idx + m > self.idx_pre.shape[0]:
            self._resize_index(2 * (self.n_idx + m))
        lo, hi = self.n_idx, self.n_idx + m
        syn = seg * self.max_syn + slot
        self.idx_pre[lo:hi] = pre
        self.idx_sv[lo:hi] = (self.ver.reshape(-1)[syn].astype(np.int64) << 32) | syn
        self.n_idx = hi
        if self.n_idx - self.n_sorted > self._TAIL:
            if 4 * self.n_stale > self.n_idx:
                self._compact()
            else:
                self._merge_tail()

    def _resize_index(self, cap: int) -> None:
        for name in ("idx_pre", "idx_sv"):
            old = getattr(self, name)
            new = np.zeros(max(cap, 1024), old.dtype)
            new[:self.n_idx] = old[:self.n_idx]
            setattr(self, name, new)

    def _merge_tail(self) -> None:
        """Sort the unsorted tail and merge it into the sorted prefix (linear time)."""
        n, k = self.n_idx, self.n_sorted
        order = np.argsort(self.idx_pre[k:n], kind="stable")
        tails = [a[k:n][order] for a in (self.idx_pre, self.idx_sv)]
        at = np.searchsorted(self.idx_pre[:k], tails[0], "right") + np.arange(n - k)
        is_tail = np.zeros(n, bool)
        is_tail[at] = True
        for a, t in zip((self.idx_pre, self.idx_sv), tails):
            merged = np.empty(n, a.dtype)
            merged[at] = t
            merged[~is_tail] = a[:k]
            a[:n] = merged
        self.n_sorted = n
        self._index_sorted()

    def _compact(self) -> None:
        """Drop stale entries and sort the rest by presynaptic cell."""
        n = self.n_idx
        pre, sv = self.idx_pre[:n], self.idx_sv[:n]
        ok = self.ver.reshape(-1)[sv & _SYN_MASK] == (sv >> 32)
        order = np.argsort(pre[ok], kind="stable")
        keep = [a[ok][order] for a in (pre, sv)]
        m = keep[0].shape[0]
        for dst, src in zip((self.idx_pre, self.idx_sv), keep):
            dst[:m] = src
        self.n_idx = self.n_sorted = m
        self.n_stale = 0
        self._index_sorted()

    def lookup(self, cells: np.ndarray, bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(segment, slot)`` of every live synapse whose presynaptic cell is active
        (``cells``: the sorted active cells; ``bitmap``: the same set as a mask)."""
        return self._split(self._live_synapses(cells, bitmap))

    def _live_synapses(self, cells: np.ndarray, bitmap: np.ndarray) -> np.ndarray:
        """Flat ids (``segment * max_synapses + slot``) of the live synapses from active cells."""
        lo = self.idx_start.take(cells)
        hi = self.idx_start.take(cells + 1)
        cnt = hi - lo
        ends = cnt.cumsum()
        total = int(ends[-1]) if ends.shape[0] else 0
        # positions of the runs [lo, hi) of every active cell, then the unsorted tail's hits
        pos = np.arange(total, dtype=np.int64)
        pos += np.repeat(lo - (ends - cnt), cnt)
        tail = np.flatnonzero(bitmap[self.idx_pre[self.n_sorted:self.n_idx]])
        if tail.shape[0]:
            tail += self.n_sorted
            pos = np.concatenate([pos, tail])
        sv = self.idx_sv.take(pos)
        syn = sv & _SYN_MASK
        return syn[self.ver.reshape(-1).take(syn) == (sv >> 32)]

    def _split(self, syn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat synapse ids → (segment, slot)."""
        if self._shift is not None:
            return syn >> self._shift, syn & (self.max_syn - 1)
        return syn // self.max_syn, syn % self.max_syn

    def activity(self, cells: np.ndarray, bitmap: np.ndarray,
                 connected: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Active potential synapses per segment (and active connected ones when
        ``connected`` is given), as arrays over segment rows ``0..used-1``."""
        syn = self._live_synapses(cells, bitmap)
        seg = syn >> self._shift if self._shift is not None else syn // self.max_syn
        pot = np.bincount(seg, minlength=self.used)
        conn = None
        if connected is not None:
            strong = self.perm.reshape(-1).take(syn) >= connected
            conn = np.bincount(seg[strong], minlength=self.used)
        return pot, conn

    # -- growth and release ------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        cap = self.cell.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap)

        def pad(a: np.ndarray, fill: int) -> np.ndarray:
            out = np.full((new, *a.shape[1:]), fill, a.dtype)
            out[:cap] = a
            return out

        self.pre, self.perm, self.ver = pad(self.pre, -1), pad(self.perm, 0), pad(self.ver, 0)
        self.cell, self.seq, self.last = pad(self.cell, -1), pad(self.seq, 0), pad(self.last, 0)

    def _allocate(self, m: int) -> np.ndarray:
        """``m`` free segment rows: released rows first (lowest first), then new ones."""
        free = np.flatnonzero(self.cell[:self.used] < 0)[:m]
        fresh = m - free.shape[0]
        self._grow(self.used + fresh)
        rows = np.concatenate([free, np.arange(self.used, self.used + fresh)])
        self.used += fresh
        return rows.astype(np.int64)

    def release(self, segs: np.ndarray) -> None:
        """Free segments and their synapses (their index entries go stale)."""
        if segs.shape[0] == 0:
            return
        np.subtract.at(self.cell_segments, self.cell[segs], 1)
        self.n_stale += int((self.pre[segs] >= 0).sum())
        self.pre[segs] = -1
        self.perm[segs] = 0
        self.ver[segs] += 1
        self.cell[segs] = -1

    # -- learning ---------------------------------------------------------------------------
    def _choose(self, tag: int, rows: np.ndarray, candidates: np.ndarray, ok: np.ndarray,
                iteration: int) -> np.ndarray:
        """Each row's candidates in a random order, eligible (``ok``) ones first."""
        rnd = hash64(self.seed, tag, iteration, rows[:, None], candidates[None, :])
        key = np.where(ok, rnd >> np.uint64(1), np.uint64(1) << np.uint64(63))
        return np.take_along_axis(np.broadcast_to(candidates, ok.shape), np.argsort(key, 1), 1)

    def create(self, cells: np.ndarray, sources: np.ndarray, n_new: int, initial: int,
               iteration: int) -> None:
        """One new sequence segment on each of ``cells``, with synapses to ``n_new``
        randomly chosen ``sources`` (all of them when there are fewer)."""
        if cells.shape[0] == 0 or sources.shape[0] == 0:
            return
        segs = self._allocate(cells.shape[0])
        k = min(n_new, sources.shape[0], self.max_syn)
        ok = np.ones((segs.shape[0], sources.shape[0]), bool)
        chosen = self._choose(0, cells.astype(np.int64), sources, ok, iteration)[:, :k]
        self.pre[segs, :k] = chosen
        self.perm[segs, :k] = initial
        self.ver[segs, :k] += 1
        self.cell[segs], self.seq[segs], self.last[segs] = cells, True, iteration
        np.add.at(self.cell_segments, cells, 1)
        self._append_index(chosen.reshape(-1), np.repeat(segs, k), np.tile(np.arange(k), segs.shape[0]))

    def adapt(self, segs: np.ndarray, prev: np.ndarray, sources: np.ndarray, n_new: int,
              inc: int, dec: int, initial: int, iteration: int) -> None:
        """NuPIC's ``adaptSegment`` for distinct segments ``segs``: synapses onto cells of
        ``prev`` (a mask) gain ``inc``, the others lose ``dec`` (and go at 0); then new
        synapses to randomly chosen ``sources`` (active cells not yet on the segment)
        bring the active count up to ``n_new``, freeing the weakest inactive synapses
        (then the weakest active ones) when the segment is full."""
        if segs.shape[0] == 0:
            return
        pre, perm = self.pre[segs], self.perm[segs].astype(np.int32)
        exist = pre >= 0
        exist_before = exist.copy()
        act = exist & prev[np.where(exist, pre, 0)]
        want = np.maximum(n_new - act.sum(1), 0)
        perm = np.where(act, np.minimum(perm + inc, PERM_SCALE), perm - dec)
        gone = exist & (perm <= 0)
        exist &= ~gone
        perm = np.where(exist, perm, 0)
        pre = np.where(exist, pre, -1)
        changed = gone.copy()
        rows = np.flatnonzero(want > 0)
        if rows.shape[0] and sources.shape[0]:
            present = (pre[rows][:, :, None] == sources[None, None, :]).any(1)
            chosen = self._choose(1, segs[rows], sources, ~present, iteration)
            n_take = np.minimum(want[rows], (~present).sum(1))
            # empty slots first, then the weakest inactive synapses, then active ones
            score = np.where(~exist[rows], -1, np.where(act[rows], 2 * PERM_SCALE, 0) + perm[rows])
            slot_order = np.argsort(score, 1, kind="stable")
            r, j = np.nonzero(np.arange(self.max_syn)[None, :] < n_take[:, None])
            rr, slots = rows[r], slot_order[r, j]
            pre[rr, slots] = chosen[r, j]
            perm[rr, slots] = initial
            changed[rr, slots] = True
        self.pre[segs], self.perm[segs] = pre, perm.astype(np.int16)
        self.last[segs] = iteration
        cr, cs = np.nonzero(changed)
        self.n_stale += int(exist_before[cr, cs].sum())
        self.ver[segs[cr], cs] += 1
        new = pre[cr, cs] >= 0
        self._append_index(pre[cr, cs][new], segs[cr][new], cs[new])
        empty = ~(pre >= 0).any(1)
        if empty.any():
            self.release(segs[empty])

    def cell_for_new_segment(self, cols: np.ndarray, max_per_cell: int, iteration: int) -> np.ndarray:
        """NuPIC's ``getCellForNewSegment``: a random non-start cell of each column with
        fewer than ``max_per_cell`` segments; when all are full, the column's least
        recently active segment is freed and its cell is used."""
        n = self.n
        cand = cols[:, None] * n + np.arange(1, n)[None, :]
        ok = self.cell_segments[cand] < max_per_cell
        pick = self._choose(2, cols.astype(np.int64), np.arange(1, n), ok, iteration)[:, 0]
        cells = cols * n + pick
        for i in np.flatnonzero(~ok.any(1)):
            rows = np.flatnonzero((self.cell[:self.used] >= 0) & (self.cell[:self.used] // n == cols[i])
                                  & (self.cell[:self.used] % n != 0))
            victim = rows[np.argmin(self.last[rows])]
            cells[i] = self.cell[victim]
            self.release(np.array([victim]))
        return cells
