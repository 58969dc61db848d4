"""Segment storage of the batched backtracking temporal memory: all keys in shared arrays.

:class:`SegmentPool` holds what :class:`operators.htm.bt_segments.SegmentStore` holds for
one key, for many keys at once, so that a phase of a step (count the active synapses of
every segment, adapt segments, grow new ones) is one set of array operations for all
keys of a call instead of one per key.

Layout: key ``k`` owns a contiguous *region* of rows ``base[k] .. base[k] + cap[k] - 1``
of ``pre`` / ``perm`` / ``cell`` / ``seq`` / ``last``; its *local* row ``r`` (global row
``base[k] + r``) is the store's row ``r``: row 0 is a sentinel, rows are handed out as
the store hands them out (lowest released row first, then new ones). That numbering
decides ties (earliest segment) and random draws, so a key's results are the same as
with its own store. A full region moves to a bigger one at the end of the pool.

The presynaptic index keeps, per key, the store's list of ``(presynaptic cell, local
synapse id)`` entries in the key's own region of one arena: a sorted prefix (the start
of every cell's run in ``idx_start[key]``) plus an unsorted tail merged in when it
grows. Local synapse ids do not change when a segment region moves; a removed synapse's
entry becomes a dead one (local id 0: the key's sentinel row, whose count is dropped).
Counting the active synapses of the segments of a call's keys costs the synapses that
leave their active cells, those keys' tails, and their rows (a ``bincount`` over
call-compact ids: local row + offset of the key in the call), never other keys' rows.

Example:
    >>> pool = SegmentPool(cells=64, cells_per_column=4, max_synapses=8, seed=1)
    >>> pool.add_keys(2)
    >>> src = np.array([4, 9, 14])        # the call's only key (key 1): its active cells
    >>> pool.create(np.array([0]), np.array([21]), np.array([1]), src, np.array([0, 3]),
    ...             3, 2100, np.array([1]))
    >>> active = np.zeros((1, 64), bool); active[0, [4, 9]] = True
    >>> pot, off = pool.activity(np.array([1]), active)
    >>> pot.tolist()                                # key 1's rows (row 0: the sentinel)
    [0, 2]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bt_segments import PERM_SCALE, hash64

#: Local synapse id of dead index entries: slot 0 of the key's sentinel row 0.
DEAD = 0
_TOP = np.uint64(1) << np.uint64(63)
_ONE = np.uint64(1)


def _ragged(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of sizes ``counts``: each element's group and its rank in the group."""
    group = np.repeat(np.arange(counts.shape[0]), counts)
    starts = np.cumsum(counts) - counts
    return group, np.arange(group.shape[0]) - starts[group]


class SegmentPool:
    """Segments, synapses and presynaptic index of many keys (one region per key)."""

    STATE = ("pre", "perm", "cell", "seq", "last")
    _TAIL = 4096         # unsorted index entries of a key tolerated before a merge

    def __init__(self, cells: int, cells_per_column: int, max_synapses: int = 32, seed: int = 0):
        self.cells, self.n, self.max_syn, self.seed = cells, cells_per_column, max_synapses, seed
        pow2 = max_synapses & (max_synapses - 1) == 0
        self._shift = max_synapses.bit_length() - 1 if pow2 else None
        self.pre = np.full((256, max_synapses), -1, np.int32)
        self.perm = np.zeros((256, max_synapses), np.int16)
        self.ipos = np.full((256, max_synapses), -1, np.int64)    # index entry of a synapse
        self.cell = np.full(256, -1, np.int32)
        self.seq = np.zeros(256, bool)
        self.last = np.zeros(256, np.int64)
        self.top = 0                                   # pool rows handed to regions
        self.base = np.zeros(0, np.int64)
        self.cap = np.zeros(0, np.int64)
        self.used = np.zeros(0, np.int64)              # local rows 0..used-1 handed out
        self.n_free = np.zeros(0, np.int64)            # released rows among them
        self.cell_segments = np.zeros((0, cells), np.int32)
        # index arena: each key's entries in its own region (sorted prefix, then tail)
        self.idx_pre = np.zeros(4096, np.int32)        # presynaptic cell
        self.idx_syn = np.zeros(4096, np.int64)        # local synapse id (DEAD: removed)
        self.itop = 0
        self.ibase = np.zeros(0, np.int64)
        self.icap = np.zeros(0, np.int64)
        self.n_idx = np.zeros(0, np.int64)
        self.n_sorted = np.zeros(0, np.int64)
        self.n_stale = np.zeros(0, np.int64)
        self.idx_start = np.zeros((0, cells + 1), np.int64)   # absolute arena positions

    @property
    def keys(self) -> int:
        return self.base.shape[0]

    # -- regions -----------------------------------------------------------------------------
    _FILL = (("pre", -1), ("perm", 0), ("ipos", -1), ("cell", -1), ("seq", 0), ("last", 0))

    def _reserve(self, rows: int) -> int:
        """``rows`` fresh pool rows at the end (all empty); returns the first. A full pool
        is rebuilt with the regions packed (moved regions leave their old rows behind)."""
        if self.top + rows > self.cell.shape[0]:
            live = int(self.cap.sum())
            size = max(2 * (live + rows), 256)
            new_base = np.cumsum(self.cap) - self.cap
            for name, fill in self._FILL:
                old = getattr(self, name)
                arr = np.full((size, *old.shape[1:]), fill, old.dtype)
                for b, nb, u in zip(self.base.tolist(), new_base.tolist(), self.used.tolist()):
                    arr[nb:nb + u] = old[b:b + u]
                setattr(self, name, arr)
            self.base = new_base
            self.top = live
        start = self.top
        self.top += rows
        return start

    def add_keys(self, m: int, capacity: int = 64) -> None:
        """Append ``m`` keys with empty regions."""
        bases = self._reserve(m * capacity) + capacity * np.arange(m, dtype=np.int64)
        self.base = np.concatenate([self.base, bases])
        self.cap = np.concatenate([self.cap, np.full(m, capacity, np.int64)])
        self.used = np.concatenate([self.used, np.ones(m, np.int64)])
        self.n_free = np.concatenate([self.n_free, np.zeros(m, np.int64)])
        self.cell_segments = np.concatenate([self.cell_segments, np.zeros((m, self.cells), np.int32)])
        ibases = self._reserve_index(4 * m * capacity) + 4 * capacity * np.arange(m, dtype=np.int64)
        self.ibase = np.concatenate([self.ibase, ibases])
        self.icap = np.concatenate([self.icap, np.full(m, 4 * capacity, np.int64)])
        for name in ("n_idx", "n_sorted", "n_stale"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(m, np.int64)]))
        self.idx_start = np.concatenate([self.idx_start, np.repeat(ibases[:, None], self.cells + 1, 1)])

    def _relocate(self, key: int, need: int) -> None:
        """Move key ``key``'s region to a new one of at least ``need`` rows."""
        cap = max(need, 2 * int(self.cap[key]))
        start = self._reserve(cap)
        old, used = int(self.base[key]), int(self.used[key])
        for name in (*self.STATE, "ipos"):
            arr = getattr(self, name)
            arr[start:start + used] = arr[old:old + used]
        self.base[key], self.cap[key] = start, cap

    def rows(self, key: int) -> slice:
        """Key ``key``'s handed-out rows (global), the sentinel row included."""
        b = int(self.base[key])
        return slice(b, b + int(self.used[key]))

    # -- the presynaptic index ---------------------------------------------------------------
    def _reserve_index(self, m: int) -> int:
        """``m`` fresh entries at the end of the index arena; returns the first. A full
        arena is rebuilt with the keys' regions packed."""
        if self.itop + m > self.idx_pre.shape[0]:
            live = int(self.icap.sum())
            size = max(2 * (live + m), 4096)
            new_base = np.cumsum(self.icap) - self.icap
            for name in ("idx_pre", "idx_syn"):
                old = getattr(self, name)
                arr = np.zeros(size, old.dtype)
                for b, nb, n in zip(self.ibase.tolist(), new_base.tolist(), self.n_idx.tolist()):
                    arr[nb:nb + n] = old[b:b + n]
                setattr(self, name, arr)
            self.idx_start += (new_base - self.ibase)[:, None]
            self.ibase = new_base
            self.itop = live
            for k in range(self.ibase.shape[0]):
                self._reposition(k)
        start = self.itop
        self.itop += m
        return start

    def _relocate_index(self, key: int, need: int) -> None:
        """Move key ``key``'s index entries to a new region of at least ``need`` entries."""
        cap = max(need, 2 * int(self.icap[key]))
        start = self._reserve_index(cap)
        old, n = int(self.ibase[key]), int(self.n_idx[key])
        for a in (self.idx_pre, self.idx_syn):
            a[start:start + n] = a[old:old + n]
        self.idx_start[key] += start - old
        self.ibase[key], self.icap[key] = start, cap
        self._reposition(key)

    def _append_index(self, keys: np.ndarray, pre: np.ndarray, syn: np.ndarray,
                      gsyn: np.ndarray) -> None:
        """Entries for new synapses of ``keys`` (``syn`` local, ``gsyn`` global flat ids),
        at the end of each key's unsorted tail."""
        if pre.shape[0] == 0:
            return
        order = np.argsort(keys, kind="stable")
        keys, pre, syn, gsyn = keys[order], pre[order], syn[order], gsyn[order]
        us, first, inv, cnt = np.unique(keys, return_index=True, return_inverse=True,
                                        return_counts=True)
        need = self.n_idx[us] + cnt
        full = need > self.icap[us]
        for k, nd in zip(us[full].tolist(), need[full].tolist()):
            self._relocate_index(k, nd)
        pos = (self.ibase[us] + self.n_idx[us] - first)[inv] + np.arange(keys.shape[0])
        self.idx_pre[pos] = pre
        self.idx_syn[pos] = syn
        self.ipos.reshape(-1)[gsyn] = pos
        self.n_idx[us] = need
        grown = need - self.n_sorted[us] > self._TAIL
        for k in us[grown].tolist():
            if 4 * self.n_stale[k] > self.n_idx[k]:
                self._compact(k)
            else:
                self._merge_tail(k)

    def _unindex(self, gsyn: np.ndarray, keys: np.ndarray) -> None:
        """Turn the index entries of live synapses ``gsyn`` (global flat ids, of ``keys``)
        into dead ones."""
        flat = self.ipos.reshape(-1)
        self.idx_syn[flat[gsyn]] = DEAD
        flat[gsyn] = -1
        np.add.at(self.n_stale, keys, 1)

    def _index_sorted(self, key: int) -> None:
        """Where each presynaptic cell's run starts in key ``key``'s sorted entries."""
        ib = int(self.ibase[key])
        counts = np.bincount(self.idx_pre[ib:ib + int(self.n_sorted[key])], minlength=self.cells)
        self.idx_start[key, 0] = ib
        np.cumsum(counts, out=self.idx_start[key, 1:])
        self.idx_start[key, 1:] += ib

    def _reposition(self, key: int) -> None:
        """After key ``key``'s entries moved: point its live synapses at them again."""
        ib, n = int(self.ibase[key]), int(self.n_idx[key])
        self.ipos.reshape(-1)[self.base[key] * self.max_syn + self.idx_syn[ib:ib + n]] = np.arange(ib, ib + n)
        self.ipos[self.base[key], 0] = -1         # written by the dead entries

    def _merge_tail(self, key: int) -> None:
        """Sort key ``key``'s tail and merge it into its sorted entries (linear time)."""
        ib = int(self.ibase[key])
        n, k = int(self.n_idx[key]), int(self.n_sorted[key])
        pre, syn = self.idx_pre[ib:ib + n], self.idx_syn[ib:ib + n]
        order = np.argsort(pre[k:], kind="stable")
        tails = [pre[k:][order], syn[k:][order]]
        at = np.searchsorted(pre[:k], tails[0], "right") + np.arange(n - k)
        is_tail = np.zeros(n, bool)
        is_tail[at] = True
        for a, t in zip((pre, syn), tails):
            merged = np.empty(n, a.dtype)
            merged[at] = t
            merged[~is_tail] = a[:k]
            a[:] = merged
        self.n_sorted[key] = n
        self._reposition(key)
        self._index_sorted(key)

    def _compact(self, key: int) -> None:
        """Drop key ``key``'s dead entries and sort the rest by presynaptic cell."""
        ib, n = int(self.ibase[key]), int(self.n_idx[key])
        pre, syn = self.idx_pre[ib:ib + n], self.idx_syn[ib:ib + n]
        ok = syn != DEAD
        order = np.argsort(pre[ok], kind="stable")
        keep = [pre[ok][order], syn[ok][order]]
        m = keep[0].shape[0]
        pre[:m], syn[:m] = keep
        self.n_idx[key] = self.n_sorted[key] = m
        self.n_stale[key] = 0
        self._reposition(key)
        self._index_sorted(key)

    def rebuild_index(self, key: int) -> None:
        """Index every live synapse of key ``key`` again (after loading)."""
        rows = self.rows(key)
        self.ipos[rows] = -1
        r, s = np.nonzero(self.pre[rows] >= 0)
        m = r.shape[0]
        if m > self.icap[key]:
            self._relocate_index(key, m)
        ib = int(self.ibase[key])
        self.idx_pre[ib:ib + m] = self.pre[rows][r, s]
        self.idx_syn[ib:ib + m] = r * self.max_syn + s
        self.n_idx[key], self.n_sorted[key], self.n_stale[key] = m, 0, 0
        self._compact(key)

    # -- look-ups ---------------------------------------------------------------------------
    def activity(self, keys: np.ndarray, bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Active synapses per segment of distinct ``keys`` (B,) whose active cells are
        ``bitmap`` (B, cells): counts over call-compact ids ``off[b] + local row`` and
        ``off`` (B + 1,)."""
        if keys.shape[0] == 1:
            return self._activity_one(int(keys[0]), bitmap.reshape(-1))
        off = np.zeros(keys.shape[0] + 1, np.int64)
        np.cumsum(self.used[keys], out=off[1:])
        flat = np.flatnonzero(bitmap)
        b = flat // self.cells
        q = flat + (keys[b] * (self.cells + 1) - b * self.cells)     # [key, cell] of idx_start
        starts = self.idx_start.reshape(-1)
        lo = starts.take(q)
        cnt = starts.take(q + 1) - lo
        ends = cnt.cumsum()
        total = int(ends[-1]) if ends.shape[0] else 0
        pos = np.arange(total, dtype=np.int64)
        pos += np.repeat(lo - (ends - cnt), cnt)
        syn = self.idx_syn.take(pos)
        ids = np.repeat(off[b], cnt)
        ids += syn >> self._shift if self._shift is not None else syn // self.max_syn
        pot = np.bincount(ids, minlength=int(off[-1]))
        # the keys' unsorted tails: every entry, counted when its cell is active
        tails = (self.n_idx[keys] - self.n_sorted[keys]).nonzero()[0]
        if tails.shape[0]:
            hits = []
            rows = bitmap.reshape(bitmap.shape[0], -1)
            for i, lo_t, hi_t in zip(tails.tolist(), (self.ibase + self.n_sorted)[keys[tails]].tolist(),
                                     (self.ibase + self.n_idx)[keys[tails]].tolist()):
                h = rows[i][self.idx_pre[lo_t:hi_t]].nonzero()[0]
                if h.shape[0]:
                    syn = self.idx_syn[lo_t:hi_t][h]
                    seg = syn >> self._shift if self._shift is not None else syn // self.max_syn
                    hits.append(seg + off[i])
            if hits:
                np.add.at(pot, np.concatenate(hits), 1)
        pot[off[:-1]] = 0                      # the dead entries' sentinel rows
        return pot, off

    def _activity_one(self, key: int, bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`activity` for one key (the store's look-up: fewer array calls)."""
        used = int(self.used[key])
        cells = bitmap.nonzero()[0]
        starts = self.idx_start[key]
        lo = starts.take(cells)
        cnt = starts.take(cells + 1) - lo
        ends = cnt.cumsum()
        total = int(ends[-1]) if ends.shape[0] else 0
        pos = np.arange(total, dtype=np.int64)
        pos += np.repeat(lo - (ends - cnt), cnt)
        t0, t1 = int(self.ibase[key] + self.n_sorted[key]), int(self.ibase[key] + self.n_idx[key])
        tail = bitmap[self.idx_pre[t0:t1]].nonzero()[0]
        if tail.shape[0]:
            tail += t0
            pos = np.concatenate([pos, tail])
        syn = self.idx_syn.take(pos)
        seg = syn >> self._shift if self._shift is not None else syn // self.max_syn
        pot = np.bincount(seg, minlength=used)
        pot[0] = 0                            # the dead entries' sentinel row
        return pot, np.array([0, used])

    def locate(self, keys: np.ndarray, off: np.ndarray, ids: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Call-compact ids → (position in the call, local row, global row)."""
        b = np.searchsorted(off, ids, "right") - 1
        local = ids - off[b]
        return b, local, self.base[keys[b]] + local

    def active_synapses(self, g: np.ndarray, b: np.ndarray, bitmap: np.ndarray,
                        min_perm: int = 0) -> np.ndarray:
        """Synapses of global rows ``g`` (of call keys ``b``) onto active cells
        (``bitmap`` (B, cells)) with permanence at least ``min_perm``."""
        pre = self.pre[g]
        on = bitmap.reshape(-1)[b[:, None] * self.cells + pre] & (pre >= 0)
        if min_perm > 0:
            on &= self.perm[g] >= min_perm
        return on.sum(1)

    # -- growth and release ------------------------------------------------------------------
    def allocate(self, keys: np.ndarray) -> np.ndarray:
        """One free row per entry of ``keys`` (equal keys adjacent, in request order):
        each key's released rows first (lowest first), then new ones; global rows."""
        us, first, inv, cnt = np.unique(keys, return_index=True, return_inverse=True,
                                        return_counts=True)
        take = np.minimum(cnt, self.n_free[us])
        fresh = cnt - take
        need = self.used[us] + fresh
        for k, nd in zip(us[need > self.cap[us]].tolist(), need[need > self.cap[us]].tolist()):
            self._relocate(k, nd)
        local = (self.used[us] - take - first)[inv] + np.arange(keys.shape[0])
        for i in np.flatnonzero(take).tolist():
            k = int(us[i])
            rows = self.rows(k)
            free = np.flatnonzero(self.cell[rows.start + 1:rows.stop] < 0)[:take[i]] + 1
            local[first[i]:first[i] + take[i]] = free
        self.used[us] += fresh
        self.n_free[us] -= take
        return self.base[keys] + local

    def release(self, g: np.ndarray, keys: np.ndarray) -> None:
        """Free segments (global rows ``g`` of keys ``keys``) and their synapses."""
        if g.shape[0] == 0:
            return
        np.subtract.at(self.cell_segments.reshape(-1), keys * self.cells + self.cell[g], 1)
        np.add.at(self.n_free, keys, 1)
        r, s = np.nonzero(self.pre[g] >= 0)
        self._unindex(g[r] * self.max_syn + s, keys[r])
        self.pre[g] = -1
        self.perm[g] = 0
        self.cell[g] = -1

    # -- learning ---------------------------------------------------------------------------
    def _sources(self, b: np.ndarray, src_off: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs (item, candidate): for each item of call key ``b``, every active cell of
        its key in order; returns the pair's item, rank and position in the source list."""
        nsrc = src_off[b + 1] - src_off[b]
        item, j = _ragged(nsrc)
        return item, j, src_off[b][item] + j

    @staticmethod
    def _ranked(item: np.ndarray, j: np.ndarray, rnd: np.ndarray,
                ok: np.ndarray | None = None) -> np.ndarray:
        """Each pair's rank among its item's pairs ordered by ``rnd >> 1``, eligible
        (``ok``) pairs first: the order of :meth:`SegmentStore._choose` (one row per item,
        padded; ineligible and padding ranks come after all eligible ones)."""
        if item.shape[0] == 0:
            return item
        key = rnd >> _ONE
        if ok is not None:
            key[~ok] = _TOP
        table = np.full((int(item[-1]) + 1, int(j.max()) + 1), _TOP)
        table[item, j] = key
        order = np.argsort(table, 1)
        rank = np.empty(order.shape, np.int64)
        np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], 1)
        return rank[item, j]

    def create(self, b: np.ndarray, cells: np.ndarray, keys: np.ndarray, src: np.ndarray,
               src_off: np.ndarray, n_new: int, initial: int, iters: np.ndarray) -> None:
        """One new sequence segment on each of ``cells`` (of call keys ``b``, ascending),
        with synapses to ``n_new`` randomly chosen active cells of its key (``src``: the
        call's active cells as ``b * cells + cell``, key ``b``'s at ``src_off[b]..``)."""
        nsrc = src_off[b + 1] - src_off[b]
        keep = nsrc > 0
        b, cells, nsrc = b[keep], cells[keep], nsrc[keep]
        if b.shape[0] == 0:
            return
        g = self.allocate(keys[b])
        item, j, at = self._sources(b, src_off)
        cand = src[at] - b[item] * self.cells
        rnd = hash64(self.seed, 0, iters[b][item], cells[item].astype(np.int64), cand)
        rank = self._ranked(item, j, rnd)
        k = np.minimum(np.minimum(nsrc, n_new), self.max_syn)
        sel = rank < k[item]
        it = item[sel]
        rows, slots, pre = g[it], rank[sel], cand[sel]
        self.pre[rows, slots] = pre
        self.perm[rows, slots] = initial
        self.cell[g], self.seq[g], self.last[g] = cells, True, iters[b]
        np.add.at(self.cell_segments.reshape(-1), keys[b] * self.cells + cells, 1)
        kk = keys[b][it]
        self._append_index(kk, pre, (rows - self.base[kk]) * self.max_syn + slots,
                           rows * self.max_syn + slots)

    def adapt(self, b: np.ndarray, g: np.ndarray, keys: np.ndarray, prev: np.ndarray,
              src: np.ndarray, src_off: np.ndarray, n_new: int, inc: int, dec: int,
              initial: int, iters: np.ndarray) -> None:
        """NuPIC's ``adaptSegment`` for distinct global rows ``g`` (of call keys ``b``):
        synapses onto cells of ``prev`` (B, cells) gain ``inc``, the others lose ``dec``;
        new synapses to randomly chosen active cells of the key not yet on the segment
        (``src`` / ``src_off`` as in :meth:`create`: exactly the cells of ``prev``) bring
        the active count up to ``n_new``, replacing the weakest synapses when full."""
        if g.shape[0] == 0:
            return
        cells = self.cells
        pre, perm = self.pre[g], self.perm[g]
        exist = pre >= 0
        act = prev.reshape(-1)[b[:, None] * cells + pre]      # empty slots: masked next
        act &= exist
        n_act = act.sum(1)
        want = n_new - n_act
        perm += np.where(act, np.int16(inc), np.int16(-dec))
        np.minimum(perm, PERM_SCALE, out=perm)
        dead = perm <= 0
        changed = dead & exist
        pre[dead] = -1
        perm[dead] = 0
        rows = (want > 0).nonzero()[0]
        if rows.shape[0]:
            rb = b[rows]
            n_take = np.minimum(want[rows], src_off[rb + 1] - src_off[rb] - n_act[rows])
            go = n_take > 0
            rows, rb, n_take = rows[go], rb[go], n_take[go]
        if rows.shape[0]:
            item, j, at = self._sources(rb, src_off)
            # the sources already on a segment are exactly its active synapses' cells
            ar, asl = np.nonzero(act[rows])
            apos = np.searchsorted(src, rb[ar] * cells + pre[rows][ar, asl])
            nsrc = src_off[rb + 1] - src_off[rb]
            pstart = np.cumsum(nsrc) - nsrc
            eligible = np.ones(item.shape[0], bool)
            eligible[pstart[ar] + apos - src_off[rb][ar]] = False
            cand = src[at] - rb[item] * cells
            local = g[rows] - self.base[keys[rb]]
            # rows count from 1 (row 0: the sentinel); the draws use 0-based segment numbers
            rnd = hash64(self.seed, 1, iters[rb][item], (local - 1)[item], cand)
            rank = self._ranked(item, j, rnd, eligible)
            sel = rank < n_take[item]
            it, rank, chosen = item[sel], rank[sel], cand[sel]
            # empty slots first, then the weakest inactive synapses, then active ones
            score = np.where(dead[rows], -1, np.where(act[rows], 2 * PERM_SCALE, 0) + perm[rows])
            slot_order = np.argsort(score, 1, kind="stable")
            rr, slots = rows[it], slot_order[it, rank]
            pre[rr, slots] = chosen
            perm[rr, slots] = initial
            changed[rr, slots] = True
        self.pre[g], self.perm[g] = pre, perm
        self.last[g] = iters[b]
        if not changed.any():
            return
        cr, cs = np.nonzero(changed)
        gsyn = g[cr] * self.max_syn + cs
        ex = exist[cr, cs]
        self._unindex(gsyn[ex], keys[b[cr[ex]]])
        new = pre[cr, cs] >= 0
        kk = keys[b[cr[new]]]
        self._append_index(kk, pre[cr, cs][new].astype(np.int64),
                           gsyn[new] - self.base[kk] * self.max_syn, gsyn[new])
        empty = ~(pre >= 0).any(1)
        if empty.any():
            self.release(g[empty], keys[b[empty]])

    def cell_for_new_segment(self, b: np.ndarray, cols: np.ndarray, keys: np.ndarray,
                             max_per_cell: int, iters: np.ndarray) -> np.ndarray:
        """NuPIC's ``getCellForNewSegment`` for columns ``cols`` of call keys ``b``: a
        random non-start cell with fewer than ``max_per_cell`` segments; when all are
        full, the column's least recently active segment is freed and its cell used."""
        n = self.n
        if b.shape[0] == 0:
            return np.zeros(0, np.int64)
        cand = cols[:, None] * n + np.arange(1, n)[None, :]
        kb = keys[b]
        ok = self.cell_segments[kb[:, None], cand] < max_per_cell
        rnd = hash64(self.seed, 2, iters[b][:, None], cols[:, None].astype(np.int64),
                     np.arange(1, n)[None, :])
        pick = np.argmin(np.where(ok, rnd >> _ONE, _TOP), 1) + 1
        cells = cols * n + pick
        for i in np.flatnonzero(~ok.any(1)).tolist():
            k = int(kb[i])
            rs = self.rows(k)
            c = self.cell[rs]
            rows = np.flatnonzero((c >= 0) & (c // n == cols[i]) & (c % n != 0))
            victim = rows[np.argmin(self.last[rs][rows])] + rs.start
            cells[i] = self.cell[victim]
            self.release(np.array([victim]), np.array([k]))
        return cells

    # -- state ------------------------------------------------------------------------------
    def key_state(self, key: int) -> dict[str, Any]:
        """Key ``key``'s segments as :class:`SegmentStore` saves them."""
        rows = self.rows(key)
        return {name: getattr(self, name)[rows.start + 1:rows.stop].copy() for name in self.STATE}

    def load_key(self, key: int, state: dict[str, Any]) -> None:
        """Key ``key``'s segments from a :class:`SegmentStore` state."""
        used = int(np.asarray(state["cell"]).shape[0]) + 1
        if used > self.cap[key]:
            self._relocate(key, used)
        b = int(self.base[key])
        for name in self.STATE:
            arr = getattr(self, name)
            arr[b:b + int(self.cap[key])] = -1 if name in ("pre", "cell") else 0
            arr[b + 1:b + used] = np.asarray(state[name])
        self.used[key] = used
        c = self.cell[b + 1:b + used]
        self.n_free[key] = int((c < 0).sum())
        self.cell_segments[key] = np.bincount(c[c >= 0], minlength=self.cells)
        self.rebuild_index(key)

    def nbytes(self) -> int:
        rows = sum(getattr(self, n)[:self.top].nbytes for n in (*self.STATE, "ipos"))
        return (rows + self.idx_pre[:self.itop].nbytes + self.idx_syn[:self.itop].nbytes
                + self.idx_start.nbytes
                + self.cell_segments.nbytes)
