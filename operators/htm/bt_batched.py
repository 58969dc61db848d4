"""NuPIC's backtracking temporal memory with every phase batched over the keys of a call.

:class:`BatchedBacktrackingTM` computes exactly what
:class:`operators.htm.backtracking_tm.BacktrackingTM` (one model per key) computes —
the same raw scores and the same state, which it saves in the same layout, so
checkpoints are interchangeable — but a step runs each phase (score, inferPhase1/2,
queued updates, learnPhase1/2, segment adaptation and growth) as one set of array
operations for all keys of the call: segments live in one
:class:`operators.htm.bt_pool.SegmentPool`, per-key state in stacked arrays. The
per-key model spends most of its time on NumPy call overhead on small arrays; here that
overhead is shared by the keys of a call. Backtracks run in lockstep too: the keys that
backtrack in a step replay their recent inputs together, one input per round of
batched calls (a key tries its start points in order, as the per-key model does).

Speed (``benchmarks/bt_batched_check.py``, 2-core machine, NumPy): with NAB's 58 keys a
call, 0.86 ms per key-record against the per-key model's 0.91 (first 600 corpus steps:
the work of counting the synapses of bursting columns dominates both, not call
overhead); with 3 keys a call, 1.33 against 0.97 ms (slower).

Example:
    >>> import numpy as np
    >>> from operators.htm.backtracking_tm import BacktrackingTM
    >>> kw = dict(columns=64, cells_per_column=4, activation_threshold=3, min_threshold=2,
    ...           new_synapse_count=4)
    >>> a, b = BacktrackingTM(**kw), BatchedBacktrackingTM(**kw)
    >>> a.add_slots(2); b.add_slots(2)
    >>> rng = np.random.default_rng(0)
    >>> seq = [np.stack([rng.choice(64, 4, replace=False) for _ in range(2)]) for _ in range(3)]
    >>> same = [np.array_equal(a.compute([0, 1], s), b.compute([0, 1], s))
    ...         for _ in range(20) for s in seq]
    >>> all(same), float(b.compute([0, 1], seq[0])[0])
    (True, 0.0)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from .backtracking_tm import BacktrackingParams, _KeyModel, _units
from .bt_pool import SegmentPool

_STATES = ("inf_active", "inf_pred", "lrn_active", "lrn_pred")


class BatchedBacktrackingTM:
    """Backtracking temporal memory for many keys, batched; slot ``i`` is one key.

    Args: see :class:`BacktrackingParams` (NuPIC's names in snake case).
    """

    def __init__(self, **params: Any):
        self.params = p = BacktrackingParams(**params)
        self.n = p.cells_per_column
        self.cells = p.columns * p.cells_per_column
        self.thr, self.min_thr = p.activation_threshold, p.min_threshold
        self.connected, self.initial = _units(p.connected_permanence), _units(p.initial_permanence)
        self.inc, self.dec = _units(p.permanence_increment), _units(p.permanence_decrement)
        self._reset()

    def _reset(self) -> None:
        p = self.params
        self.pool = SegmentPool(self.cells, self.n, p.max_synapses_per_segment, p.seed)
        for name in _STATES:
            setattr(self, name, np.zeros((0, self.cells), bool))
        self.pred_cols = np.zeros((0, p.columns), bool)      # column confidence > 0 at t
        self.avg_density = np.zeros(0)
        self.pam = np.zeros(0, np.int64)
        self.seq_length = np.zeros(0, np.int64)
        self.lrn_iteration = np.zeros(0, np.int64)
        self.iteration = np.zeros(0, np.int64)
        self.pending: list[np.ndarray] = []                  # local rows queued by learnPhase2
        self.inf_history: list[np.ndarray] = []              # recent inputs, oldest first
        self.lrn_history: list[np.ndarray] = []

    # -- slots ---------------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return self.pool.keys

    def add_slots(self, n: int) -> None:
        """Append ``n`` fresh models (new keys)."""
        p = self.params
        self.pool.add_keys(n)
        for name in _STATES:
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros((n, self.cells), bool)]))
        self.pred_cols = np.concatenate([self.pred_cols, np.zeros((n, p.columns), bool)])
        self.avg_density = np.concatenate([self.avg_density, np.zeros(n)])
        self.pam = np.concatenate([self.pam, np.full(n, p.pam_length + 1, np.int64)])
        for name in ("seq_length", "lrn_iteration", "iteration"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(n, np.int64)]))
        self.pending.extend(np.zeros(0, np.int64) for _ in range(n))
        self.inf_history.extend(np.zeros((0, 0), np.int64) for _ in range(n))
        self.lrn_history.extend(np.zeros((0, 0), np.int64) for _ in range(n))

    @property
    def segments_per_column(self) -> int:
        """Largest number of segments on one column of any key (a size summary)."""
        best = 0
        for k in range(self.slots):
            live = self.pool.cell[self.pool.rows(k)]
            live = live[live >= 0]
            if live.shape[0]:
                best = max(best, int(np.bincount(live // self.n).max()))
        return best

    # -- helpers -------------------------------------------------------------------------------
    def _start_cells(self, cols: np.ndarray) -> np.ndarray:
        state = np.zeros((cols.shape[0], self.params.columns, self.n), bool)
        state[np.arange(cols.shape[0])[:, None], cols, 0] = True
        return state.reshape(cols.shape[0], self.cells)

    def _block(self, pred: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Cells of columns ``cols`` (B, A) in rows ``rows`` of ``pred``: (B, A, n)."""
        return pred.reshape(pred.shape[0], self.params.columns, self.n)[rows[:, None], cols]

    def _best_per_column(self, b: np.ndarray, local: np.ndarray, cell: np.ndarray,
                         pot: np.ndarray) -> np.ndarray:
        """Of candidate segments, each (key, column)'s best: most active synapses, then
        the highest cell index, then the earliest segment; positions into the inputs."""
        if b.shape[0] == 0:
            return b
        col = cell // self.n
        order = np.lexsort((local, -cell, -pot, col, b))
        first = np.ones(order.shape[0], bool)
        first[1:] = (col[order][1:] != col[order][:-1]) | (b[order][1:] != b[order][:-1])
        return order[first]

    def _sources(self, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Active cells of each row of ``prev`` (B, cells) as ``b * cells + cell``, and
        where each row's run starts."""
        src = np.flatnonzero(prev)
        return src, np.searchsorted(src, np.arange(prev.shape[0] + 1) * self.cells)

    # -- inference -----------------------------------------------------------------------------
    def _infer_phase1(self, cols: np.ndarray, block: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Active cells from the previous prediction's ``block`` (``None``: start cells)."""
        if block is None:
            return self._start_cells(cols), np.ones(cols.shape[0], bool)
        hit = block.any(2)
        state = np.zeros((cols.shape[0], self.params.columns, self.n), bool)
        state[np.arange(cols.shape[0])[:, None], cols] = np.where(hit[..., None], block, True)
        return state.reshape(cols.shape[0], self.cells), hit.sum(1) >= 0.5 * cols.shape[1]

    def _infer_phase2(self, keys: np.ndarray, active: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted cells, columns with confidence, and whether each key stays in sequence."""
        pool, B = self.pool, keys.shape[0]
        pot, off = pool.activity(keys, active)
        b, _, g = pool.locate(keys, off, np.flatnonzero(pot >= self.thr))
        cell = pool.cell[g]
        conf = np.zeros((B, self.params.columns), bool)
        conf[b, cell // self.n] = True
        on = pool.active_synapses(g, b, active, self.connected) >= self.thr
        pred = np.zeros((B, self.cells), bool)
        pred[b[on], cell[on]] = True
        cols = np.zeros((B, self.params.columns), bool)
        cols[b[on], cell[on] // self.n] = True
        return pred, conf, cols.sum(1) >= 0.5 * self.avg_density[keys]

    def _by_width(self, keys: np.ndarray, history: list[np.ndarray]) -> list[np.ndarray]:
        """Positions of ``keys`` grouped by the width of their history (one group as a rule)."""
        widths = np.array([history[k].shape[1] for k in keys.tolist()])
        return [np.flatnonzero(widths == w) for w in np.unique(widths)]

    #: start points of one key replayed at once by an inference backtrack (1: one after
    #: another, the fewest replay steps; more: fewer rounds of batched calls but wasted
    #: replays; on NAB data 1 measured fastest)
    window = 1

    def _infer_backtrack(self, keys: np.ndarray, active: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """NuPIC's inferBacktrack for ``keys`` (their current ``active`` cells): the
        earliest start point from which replaying a key's recent inputs (from the start
        cells of the first) stays in sequence. Inference changes no segment, so the
        replays of all keys, up to :attr:`window` start points each, run in lockstep,
        one input a round; start points are launched in order, and a success ends the
        key once no earlier start point is still replaying."""
        M, C = keys.shape[0], self.params.columns
        out_active, out_pred = active.copy(), np.zeros((M, self.cells), bool)
        out_conf = np.zeros((M, C), bool)
        hist = [self.inf_history[k] for k in keys.tolist()]
        n = np.array([h.shape[0] for h in hist], np.int64)
        width = np.array([h.shape[1] for h in hist], np.int64)
        # replay slots (a window's worth per key): key position, start point, next input,
        # predicted cells
        pk = np.repeat(np.arange(M), np.minimum(n, self.window))
        ps = np.full(pk.shape[0], -1, np.int64)
        off = np.zeros(pk.shape[0], np.int64)
        pred = np.zeros((pk.shape[0], self.cells), bool)
        live = np.zeros(pk.shape[0], bool)
        nxt = np.zeros(M, np.int64)                 # next start point to launch
        best = np.full(M, -1, np.int64)
        while True:
            # launch start points (in order) into free slots of keys without a success,
            # up to the window
            room = self.window - np.bincount(pk[live], minlength=M)
            free = ~live & (nxt[pk] < n[pk]) & (best[pk] < 0) & (room[pk] > 0)
            if free.any():
                f = np.flatnonzero(free)
                fk = pk[f]
                # the r-th free slot of a key takes start point nxt + r
                first_f = np.ones(f.shape[0], bool)
                first_f[1:] = fk[1:] != fk[:-1]
                r = np.arange(f.shape[0]) - np.maximum.accumulate(np.where(first_f, np.arange(f.shape[0]), 0))
                s0 = nxt[fk] + r
                go = (s0 < n[fk]) & (r < room[fk])
                f, s0 = f[go], s0[go]
                ps[f] = s0
                off[f] = s0
                live[f] = True
                np.maximum.at(nxt, pk[f], s0 + 1)
            if not live.any():
                break
            for w in np.unique(width[pk[live]]).tolist():
                i = np.flatnonzero(live & (width[pk] == w))
                cols = np.stack([hist[j][o] for j, o in zip(pk[i].tolist(), off[i].tolist())])
                state, ok = self._infer_phase1(cols, self._block(pred, i, cols))
                first = off[i] == ps[i]
                if first.any():
                    state[first] = self._start_cells(cols[first])
                    ok[first] = True
                p2 = np.zeros((i.shape[0], self.cells), bool)
                c2 = np.zeros((i.shape[0], C), bool)
                r = np.flatnonzero(ok)
                if r.shape[0]:
                    p2[r], c2[r], ok[r] = self._infer_phase2(keys[pk[i[r]]], state[r])
                last = ok & (off[i] == n[pk[i]] - 1)
                for x in np.flatnonzero(last).tolist():
                    j = int(pk[i[x]])
                    if best[j] < 0 or ps[i[x]] < best[j]:
                        best[j] = ps[i[x]]
                        out_active[j], out_pred[j], out_conf[j] = state[x], p2[x], c2[x]
                live[i[~ok | last]] = False
                more = ok & ~last
                pred[i[more]] = p2[more]
                off[i[more]] += 1
            # a key with a success is done once no earlier start point still replays
            found = best[pk] >= 0
            live &= ~(found & (ps > best[pk]))
        for j, k in enumerate(keys.tolist()):
            # earlier inputs (and the start used) are never useful start points again
            self.inf_history[k] = hist[j][best[j] + 1:] if best[j] >= 0 else hist[j][:0]
        lost = np.flatnonzero(best < 0)
        if lost.shape[0]:
            out_pred[lost], out_conf[lost], _ = self._infer_phase2(keys[lost], active[lost])
        return out_active, out_pred, out_conf

    def _infer(self, keys: np.ndarray, cols: np.ndarray) -> None:
        p = self.params
        if p.max_inf_backtrack > 0:
            for k, c in zip(keys.tolist(), cols):
                self.inf_history[k] = _KeyModel._push(self.inf_history[k], c, p.max_inf_backtrack)
        active, ok = self._infer_phase1(cols, self._block(self.inf_pred, keys, cols))
        B = keys.shape[0]
        if ok.all():
            pred, conf, ok = self._infer_phase2(keys, active)
        else:
            pred = np.zeros((B, self.cells), bool)
            conf = np.zeros((B, p.columns), bool)
            run = np.flatnonzero(ok)
            if run.shape[0]:
                pred[run], conf[run], ok[run] = self._infer_phase2(keys[run], active[run])
        back = np.flatnonzero(~ok)
        if back.shape[0]:
            active[back], pred[back], conf[back] = self._infer_backtrack(keys[back], active[back])
        self.inf_active[keys], self.inf_pred[keys], self.pred_cols[keys] = active, pred, conf

    # -- learning ------------------------------------------------------------------------------
    def _apply_pending(self, keys: np.ndarray, cols: np.ndarray, prev: np.ndarray,
                       pending: list[np.ndarray]) -> None:
        """Queued updates of segments whose column is active now (the others lapse)."""
        pool = self.pool
        lens = np.array([q.shape[0] for q in pending])
        if lens.sum() == 0:
            return
        b = np.repeat(np.arange(keys.shape[0]), lens)
        g = pool.base[keys[b]] + np.concatenate(pending)
        cell = pool.cell[g]
        live = cell >= 0
        on = np.zeros((keys.shape[0], self.params.columns), bool)
        on[np.arange(keys.shape[0])[:, None], cols] = True
        sel = live & on[b, np.where(live, cell, 0) // self.n]
        src, src_off = self._sources(prev)
        pool.adapt(b[sel], g[sel], keys, prev, src, src_off, self.params.new_synapse_count,
                   self.inc, self.dec, self.initial, self.lrn_iteration[keys])

    def _learn_phase1(self, keys: np.ndarray, cols: np.ndarray, prev: np.ndarray,
                      block: np.ndarray, read_only: bool) -> tuple[np.ndarray, np.ndarray]:
        p, pool, n = self.params, self.pool, self.n
        B, A = cols.shape
        hit = block.any(2)
        bi, ai = np.nonzero(hit)
        state = np.zeros((B, self.cells), bool)
        state[bi, cols[bi, ai] * n + block[bi, ai].argmax(1)] = True
        n_miss = A - hit.sum(1)
        in_seq = n_miss < A // 2
        if read_only or not n_miss.any():
            return state, in_seq
        J = np.flatnonzero(n_miss)
        if J.shape[0] < B:
            keys, cols, prev, hit = keys[J], cols[J], prev[J], hit[J]
        iters = self.lrn_iteration[keys]
        miss = np.zeros((J.shape[0], p.columns), bool)
        mb, ma = np.nonzero(~hit)
        miss[mb, cols[mb, ma]] = True
        src, src_off = self._sources(prev)
        b = g = cell = np.zeros(0, np.int64)
        if src.shape[0]:
            pot, off = pool.activity(keys, prev)
            ids = np.flatnonzero(pot >= self.min_thr)
            b, local, g = pool.locate(keys, off, ids)
            cell = pool.cell[g]
            want = miss[b, cell // n]
            b, local, g, cell, ids = b[want], local[want], g[want], cell[want], ids[want]
            best = self._best_per_column(b, local, cell, pot[ids])
            best = best[pool.seq[g[best]]]
            b, g, cell = b[best], g[best], cell[best]
        matched = np.zeros_like(miss)
        matched[b, cell // n] = True
        fb, fc = np.nonzero(miss & ~matched)
        new_cells = pool.cell_for_new_segment(fb, fc, keys, p.max_segments_per_cell, iters)
        state[J[b], cell] = True
        state[J[fb], new_cells] = True
        pool.adapt(b, g, keys, prev, src, src_off, p.new_synapse_count, self.inc, self.dec,
                   self.initial, iters)
        pool.create(fb, new_cells, keys, src, src_off, p.new_synapse_count, self.initial, iters)
        return state, in_seq

    def _learn_phase2(self, keys: np.ndarray, active: np.ndarray
                      ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Learn-predicted cells (one per column at most) and each key's segments to queue."""
        pool = self.pool
        pot, off = pool.activity(keys, active)
        ids = np.flatnonzero(pot >= self.thr)
        b, local, g = pool.locate(keys, off, ids)
        cell = pool.cell[g]
        best = self._best_per_column(b, local, cell, pot[ids])
        pred = np.zeros((keys.shape[0], self.cells), bool)
        pred[b[best], cell[best]] = True
        ends = np.cumsum(np.bincount(b[best], minlength=keys.shape[0]))[:-1]
        return pred, np.split(local[best], ends)

    def _learn_search(self, keys: np.ndarray, hist: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The read-only pass of learnBacktrack, in lockstep: each key's earliest start
        point (``-1``: none) from which its inputs replay in sequence from start cells."""
        M = keys.shape[0]
        n = np.array([h.shape[0] for h in hist], np.int64)
        start = np.zeros(M, np.int64)
        off = np.zeros(M, np.int64)
        active = np.zeros((M, self.cells), bool)
        pred = np.zeros((M, self.cells), bool)
        going = n > 1
        found = np.zeros(M, bool)
        while going.any():
            for idx in self._by_width(keys[going], self.lrn_history):
                i = np.flatnonzero(going)[idx]
                cols = np.stack([hist[j][off[j]] for j in i.tolist()])
                first = off[i] == start[i]
                state, ok = self._learn_phase1(keys[i], cols, active[i], self._block(pred, i, cols), True)
                if first.any():
                    state[first] = self._start_cells(cols[first])
                    ok[first] = True
                last = ok & (off[i] == n[i] - 1)
                found[i[last]] = True
                going[i[last]] = False
                more = ok & ~last
                if more.any():
                    pred[i[more]] = self._learn_phase2(keys[i[more]], state[more])[0]
                    active[i[more]] = state[more]
                    off[i[more]] += 1
                bad = i[~ok]
                start[bad] += 1
                off[bad] = start[bad]
                going[bad[start[bad] >= n[bad] - 1]] = False
        return np.where(found, start, -1), n

    def _learn_replay(self, keys: np.ndarray, hist: list[np.ndarray], start: np.ndarray,
                      n: np.ndarray) -> np.ndarray:
        """The applying pass of learnBacktrack, in lockstep: each key learns its inputs
        again from ``start`` (queued updates included); its final learning state."""
        M = keys.shape[0]
        off = start.copy()
        active = np.zeros((M, self.cells), bool)
        pred = np.zeros((M, self.cells), bool)
        pending: list[np.ndarray] = [np.zeros(0, np.int64)] * M
        out = np.zeros((M, self.cells), bool)
        going = np.ones(M, bool)
        while going.any():
            for idx in self._by_width(keys[going], self.lrn_history):
                i = np.flatnonzero(going)[idx]
                cols = np.stack([hist[j][off[j]] for j in i.tolist()])
                first = off[i] == start[i]
                self._apply_pending(keys[i], cols, active[i], [pending[j] for j in i.tolist()])
                state = self._start_cells(cols)
                ok = np.ones(i.shape[0], bool)
                r = np.flatnonzero(~first)
                if r.shape[0]:
                    state[r], ok[r] = self._learn_phase1(keys[i[r]], cols[r], active[i[r]],
                                                         self._block(pred, i[r], cols[r]), False)
                end = ~ok | (off[i] == n[i] - 1)
                out[i[end]] = state[end]
                going[i[end]] = False
                more = ~end
                if more.any():
                    j = i[more]
                    pred[j], queued = self._learn_phase2(keys[j], state[more])
                    for jj, q in zip(j.tolist(), queued):
                        pending[jj] = q
                    active[j] = state[more]
                    off[j] += 1
        return out

    def _learn_backtrack(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NuPIC's learnBacktrack for ``keys``: lock the learning state on from an earlier
        input; ``(steps back, state)`` per key (0 steps: no start point found)."""
        hist = [self.lrn_history[k] for k in keys.tolist()]
        start, n = self._learn_search(keys, hist)
        steps = np.where(start >= 0, n - 1 - start, 0)
        states = np.zeros((keys.shape[0], self.cells), bool)
        ok = np.flatnonzero(start >= 0)
        if ok.shape[0]:
            states[ok] = self._learn_replay(keys[ok], [hist[j] for j in ok.tolist()], start[ok], n[ok])
        for j, k in enumerate(keys.tolist()):
            self.lrn_history[k] = hist[j][start[j] + 1:] if start[j] >= 0 else hist[j][:0]
        return steps, states

    def _learn(self, keys: np.ndarray, cols: np.ndarray) -> None:
        p = self.params
        if p.max_lrn_backtrack > 0:
            for k, c in zip(keys.tolist(), cols):
                self.lrn_history[k] = _KeyModel._push(self.lrn_history[k], c, p.max_lrn_backtrack)
        prev = self.lrn_active[keys]
        self._apply_pending(keys, cols, prev, [self.pending[k] for k in keys.tolist()])
        pam = self.pam[keys]
        pam -= pam > 0
        seq_length = self.seq_length[keys] + 1
        active, in_seq = self._learn_phase1(keys, cols, prev, self._block(self.lrn_pred, keys, cols),
                                            False)
        pam[in_seq] = p.pam_length
        back = (pam == 0) | (seq_length >= p.max_seq_length if p.max_seq_length else False)
        back = np.flatnonzero(back)
        if back.shape[0]:
            steps, replayed = self._learn_backtrack(keys[back])
            none = steps == 0
            replayed[none] = self._start_cells(cols[back[none]])
            for k in keys[back[none]].tolist():
                self.lrn_history[k] = self.lrn_history[k][:0]
            active[back] = replayed
            pam[back], seq_length[back] = p.pam_length, steps
        self.pam[keys], self.seq_length[keys] = pam, seq_length
        self.lrn_active[keys] = active
        self.lrn_pred[keys], pending = self._learn_phase2(keys, active)
        for k, q in zip(keys.tolist(), pending):
            self.pending[k] = q

    # -- one step ------------------------------------------------------------------------------
    def _score(self, keys: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return 1.0 - self.pred_cols[keys[:, None], cols].sum(1) / cols.shape[1]

    def _check(self, slots: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        slots = np.asarray(slots, np.int64).reshape(-1)
        cols = np.asarray(cols, np.int64).reshape(slots.shape[0], -1)
        if slots.shape[0] and (slots.min() < 0 or slots.max() >= self.slots):
            raise ValueError(f"backtracking TM slots must lie in [0, {self.slots}), got "
                             f"{slots.min()}..{slots.max()}")
        return slots, cols

    def compute(self, slots: Any, cols: Any, learn: bool = True) -> np.ndarray:
        """One record per slot: active columns ``cols`` (B, A) → raw anomaly scores (B,)."""
        keys, cols = self._check(slots, cols)
        if keys.shape[0] == 0:
            return np.zeros(0)
        if np.unique(keys).shape[0] < keys.shape[0]:
            # a key twice in one call: its records in turn, as the per-key model does
            return np.concatenate([self.compute(keys[i:i + 1], cols[i:i + 1], learn)
                                   for i in range(keys.shape[0])])
        cols = np.sort(cols, 1)
        raw = self._score(keys, cols)
        self.iteration[keys] += 1
        if learn:
            self.lrn_iteration[keys] += 1
        a = float(cols.shape[1])
        avg = self.avg_density[keys]
        self.avg_density[keys] = np.where(avg == 0.0, a, 0.99 * avg + 0.01 * a)
        self._infer(keys, cols)
        if learn:
            self._learn(keys, cols)
        return raw

    def peek(self, slots: Any, cols: Any) -> np.ndarray:
        """Raw anomaly scores for active columns ``cols`` without changing any state."""
        keys, cols = self._check(slots, cols)
        return self._score(keys, cols)

    # -- state ---------------------------------------------------------------------------------
    def _key_state(self, k: int) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name)[k].copy()
                               for name in (*_STATES[:2], "pred_cols", *_STATES[2:])}
        out["pending"] = self.pending[k].copy()
        out["inf_history"] = self.inf_history[k].copy()
        out["lrn_history"] = self.lrn_history[k].copy()
        out["avg_density"] = float(self.avg_density[k])
        for name in ("pam", "seq_length", "lrn_iteration", "iteration"):
            out[name] = int(getattr(self, name)[k])
        out["segments"] = self.pool.key_state(k)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The same layout as :meth:`BacktrackingTM.state_dict` (interchangeable)."""
        return {"params": asdict(self.params), "models": [self._key_state(k) for k in range(self.slots)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if BacktrackingParams(**state["params"]) != self.params:
            raise ValueError("the checkpoint's backtracking TM parameters differ from this model's")
        self._reset()
        self.add_slots(len(state["models"]))
        for k, s in enumerate(state["models"]):
            for name in (*_STATES, "pred_cols"):
                ref = getattr(self, name)
                arr = np.asarray(s[name])
                if arr.shape != ref.shape[1:]:
                    raise ValueError(f"backtracking TM state {name!r} of slot {k} has shape "
                                     f"{arr.shape}, expected {ref.shape[1:]}")
                ref[k] = arr
            self.pending[k] = np.asarray(s["pending"]).astype(np.int64, copy=True)
            self.inf_history[k] = np.asarray(s["inf_history"]).astype(np.int64, copy=True)
            self.lrn_history[k] = np.asarray(s["lrn_history"]).astype(np.int64, copy=True)
            self.avg_density[k] = float(s["avg_density"])
            for name in ("pam", "seq_length", "lrn_iteration", "iteration"):
                getattr(self, name)[k] = int(s[name])
            self.pool.load_key(k, s["segments"])

    def memory_bytes(self) -> int:
        return self.pool.nbytes() + sum(getattr(self, name).nbytes for name in _STATES)
