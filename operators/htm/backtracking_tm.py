"""NuPIC's backtracking temporal memory (``BacktrackingTM`` / ``Cells4``), one model per key.

This is the temporal memory behind NuPIC 1.0.5's NAB "numenta" detector, written fresh
from the published algorithm (NuPIC ``backtracking_tm.py`` and nupic.core ``Cells4``).
It keeps two states side by side:

- **Inference** (``infActiveState`` / ``infPredictedState``): a column's predicted
  cells become active, an unpredicted column bursts. Predicted cells for the next step
  are cells with a segment of ``activation_threshold`` active *connected* synapses; a
  column has *confidence* when one of its segments has that many active synapses of any
  permanence. When fewer than half of the columns were predicted, or the new state
  predicts fewer than half as many columns as a typical input has, the model
  **backtracks**: it replays the last ``max_inf_backtrack`` inputs starting from the
  *start cells* (cell 0) of an earlier input and keeps the earliest start point from
  which every replayed step stays in sequence ("inferBacktrack").
- **Learning** (``lrnActiveState`` / ``lrnPredictedState``): one learning cell per
  active column: the predicted cell, else the cell with the best matching sequence
  segment (``min_threshold`` active synapses) which is reinforced, else a random
  non-start cell that grows a new segment to the previous learning cells. Each step
  also queues, for each column, the best segment that reaches ``activation_threshold``
  active synapses; the queued update is applied when that column becomes active next
  step (and dropped otherwise). When the learning state stays out of sequence for
  ``pam_length`` steps, or after ``max_seq_length`` learned steps, learning starts over
  on start cells, after first trying to lock on from up to ``max_lrn_backtrack``
  earlier inputs ("learnBacktrack", which also re-applies the updates along the path).

The raw anomaly score is NuPIC's: the fraction of active columns that had no column
confidence at the previous step (``TMRegion``: ``topDownCompute().nonzero()``).

Differences from NuPIC, all without effect on the NAB configuration: segment duty
cycles are not kept (confidence is only tested for being non-zero, and a column only
recycles a segment once all 31 non-start cells hold ``max_segments_per_cell``
segments; then the least recently active one goes); ``doPooling``, ``globalDecay`` and
resets are not implemented; random draws come from a counter-based hash.

Keys are independent models in one object (``add_slots``); a step runs each key's
model in turn (the algorithm branches per key at every phase), so a key gives the same
results alone or batched with others. Cost: about 3.5 CPU-minutes for the whole NAB
corpus (NuPIC's C++ took 20-30 minutes on a 4-8 core laptop), 3.2 times the plain TM's.
Batching the phases across keys was tried and measured no faster: the per-key work
(counting the synapses of bursting columns, adapting segments) dominates, not call
overhead.

Example:
    >>> import numpy as np
    >>> tm = BacktrackingTM(columns=64, cells_per_column=4, activation_threshold=3,
    ...                     min_threshold=2, new_synapse_count=4)
    >>> tm.add_slots(1)
    >>> seq = [np.array([[0, 1, 2, 3]]), np.array([[10, 11, 12, 13]]), np.array([[20, 21, 22, 23]])]
    >>> scores = [float(tm.compute(np.array([0]), s)[0]) for _ in range(20) for s in seq]
    >>> scores[:3], scores[-3:]
    ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from .bt_segments import PERM_SCALE, SegmentStore


def _host(a: Any) -> np.ndarray:
    """An int64 NumPy array of ``a`` (a torch tensor is copied off its device)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, np.int64)


def _units(p: float) -> int:
    return int(round(p * PERM_SCALE))


class _Active(NamedTuple):
    """A set of active cells both as a mask and as sorted cell numbers: synapse tests
    read the mask, index look-ups take the numbers, and building one from the other
    as the state is made costs less than a scan of the whole mask."""

    mask: np.ndarray
    cells: np.ndarray


@dataclass(frozen=True)
class BacktrackingParams:
    """Hyper-parameters (defaults: NuPIC's ``BacktrackingTMCPP`` as NAB configures it)."""

    columns: int = 2048
    cells_per_column: int = 32
    activation_threshold: int = 13
    min_threshold: int = 10
    new_synapse_count: int = 20
    initial_permanence: float = 0.21
    connected_permanence: float = 0.5
    permanence_increment: float = 0.1
    permanence_decrement: float = 0.1
    max_segments_per_cell: int = 128
    max_synapses_per_segment: int = 32
    pam_length: int = 3
    max_inf_backtrack: int = 10
    max_lrn_backtrack: int = 5
    max_seq_length: int = 32
    seed: int = 1960


class _KeyModel:
    """The backtracking temporal memory of one key.

    The four cell states between steps (``inf_active``, ``inf_pred``, ``lrn_active``,
    ``lrn_pred``) are kept as sorted cell numbers, not as masks over all cells: a step
    makes the masks it reads (a few dozen to a few hundred cells of 65,536 on NAB).
    """

    _SCALARS = ("avg_density", "pam", "seq_length", "lrn_iteration", "iteration")
    _CELL_SETS = ("inf_active", "inf_pred", "lrn_active", "lrn_pred")
    _ARRAYS = ("pred_cols", "pending", "inf_history", "lrn_history")

    def __init__(self, p: BacktrackingParams):
        self.p = p
        self.n = p.cells_per_column
        self.cells = p.columns * p.cells_per_column
        self.thr, self.min_thr = p.activation_threshold, p.min_threshold
        self.connected, self.initial = _units(p.connected_permanence), _units(p.initial_permanence)
        self.inc, self.dec = _units(p.permanence_increment), _units(p.permanence_decrement)
        self.store = SegmentStore(self.cells, self.n, p.max_synapses_per_segment, p.seed,
                                  max_segments_per_cell=p.max_segments_per_cell)
        none = np.zeros(0, np.int64)
        self.inf_active = self.inf_pred = self.lrn_active = self.lrn_pred = none    # sorted cells
        self.pred_cols = np.zeros(p.columns, bool)      # column confidence > 0 at t
        self.pending = np.zeros(0, np.int64)             # segments queued by learnPhase2
        self.inf_history = np.zeros((0, 0), np.int64)    # recent inputs, oldest first
        self.lrn_history = np.zeros((0, 0), np.int64)
        self.avg_density = 0.0
        self.pam = p.pam_length + 1                      # Cells4's initial value
        self.seq_length = 0
        self.lrn_iteration = self.iteration = 0

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name).copy() for name in self._ARRAYS}
        # cell sets as cell numbers in the segments' cell type
        out.update({name: getattr(self, name).astype(self.store.pre_dtype) for name in self._CELL_SETS})
        out.update({name: getattr(self, name) for name in self._SCALARS})
        out["segments"] = self.store.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._ARRAYS:
            ref = getattr(self, name)
            arr = np.asarray(state[name]).astype(ref.dtype, copy=True)
            if ref.ndim == 1 and name != "pending" and arr.shape != ref.shape:
                raise ValueError(f"backtracking TM state {name!r} has shape {arr.shape}, "
                                 f"expected {ref.shape}")
            setattr(self, name, arr)
        for name in self._CELL_SETS:
            arr = np.asarray(state[name])
            if arr.dtype == bool:          # written as a mask over all cells before
                if arr.shape != (self.cells,):
                    raise ValueError(f"backtracking TM state {name!r} has shape {arr.shape}, "
                                     f"expected ({self.cells},)")
                arr = arr.nonzero()[0]
            elif arr.ndim != 1 or arr.dtype.kind not in "iu" or (arr.size and (
                    arr.min() < 0 or arr.max() >= self.cells)):
                raise ValueError(f"backtracking TM state {name!r} must list cells in [0, {self.cells})")
            setattr(self, name, np.unique(arr).astype(np.int64))
        self.avg_density = float(state["avg_density"])
        for name in self._SCALARS[1:]:
            setattr(self, name, int(state[name]))
        self.store.load_state_dict(state["segments"])

    def nbytes(self) -> int:
        """Bytes held by this key's arrays: segments, index and step state."""
        return sum(self.nbytes_by_part().values())

    def nbytes_by_part(self) -> dict[str, int]:
        """:meth:`nbytes` by part: the segment store's parts and ``step_state``."""
        return {**self.store.nbytes_by_part(),
                "step_state": sum(getattr(self, n).nbytes for n in (*self._ARRAYS, *self._CELL_SETS))}

    # -- helpers -----------------------------------------------------------------------------
    def _active(self, cells: np.ndarray) -> _Active:
        state = np.zeros(self.cells, bool)
        state[cells] = True
        return _Active(state, cells)

    def _start_cells(self, cols: np.ndarray) -> _Active:
        return self._active(cols * self.n)

    @staticmethod
    def _push(history: np.ndarray, cols: np.ndarray, keep: int) -> np.ndarray:
        """Append ``cols``; at most ``keep + 1`` inputs stay (NuPIC pops before pushing)."""
        if history.shape[0] and history.shape[1] != cols.shape[0]:
            history = history[:0]
        if history.shape[0] > keep:
            history = history[1:]
        return np.concatenate([history.reshape(-1, cols.shape[0]), cols[None, :]])

    def _best_per_column(self, segs: np.ndarray, pot: np.ndarray) -> np.ndarray:
        """Of candidate segments, each column's best: most active synapses, then the
        highest cell index, then the earliest segment (Cells4's scan order)."""
        if segs.shape[0] == 0:
            return segs
        cell = self.store.cell[segs]
        order = np.lexsort((segs, -cell, -pot[segs], cell // self.n))
        segs = segs[order]
        col = cell[order] // self.n
        first = np.ones(segs.shape[0], bool)
        first[1:] = col[1:] != col[:-1]
        return segs[first]

    # -- inference ---------------------------------------------------------------------------
    def _infer_phase1(self, cols: np.ndarray, prev_pred: np.ndarray | None) -> tuple[_Active, bool]:
        """Active cells from the previous prediction (``None``: start cells)."""
        if prev_pred is None:
            return self._start_cells(cols), True
        block = prev_pred.reshape(-1, self.n)[cols]
        hit = block.any(1)
        block[~hit] = True
        state = np.zeros(self.cells, bool)
        state.reshape(-1, self.n)[cols] = block
        col, cell = block.nonzero()
        return _Active(state, cols[col] * self.n + cell), int(hit.sum()) >= 0.5 * cols.shape[0]

    def _infer_phase2(self, active: _Active) -> tuple[_Active, np.ndarray, bool]:
        """Predicted cells, columns with confidence, and whether enough columns are
        predicted to stay in sequence."""
        hit = (self.store.activity(active.cells, active.mask) >= self.thr).nonzero()[0]
        cells = self.store.cell[hit]
        conf = np.zeros(self.p.columns, bool)
        conf[cells // self.n] = True
        pred = np.zeros(self.cells, bool)
        on = cells[self.store.active_synapses(hit, active.mask, self.connected) >= self.thr]
        pred[on] = True
        cols = np.zeros(self.p.columns, bool)
        cols[on // self.n] = True
        return _Active(pred, np.unique(on)), conf, int(cols.sum()) >= 0.5 * self.avg_density

    def _infer_backtrack(self, active: _Active) -> tuple[_Active, _Active, np.ndarray]:
        hist = self.inf_history
        n = hist.shape[0]
        for start in range(n):
            pred = None
            ok = False
            for off in range(start, n):
                state, ok = self._infer_phase1(hist[off], None if off == start else pred.mask)
                if not ok:
                    break
                pred, conf, ok = self._infer_phase2(state)
                if not ok:
                    break
            if ok:
                # earlier inputs (and this start) are never useful start points again
                self.inf_history = hist[start + 1:]
                return state, pred, conf
        self.inf_history = hist[:0]
        pred, conf, _ = self._infer_phase2(active)
        return active, pred, conf

    def _infer(self, cols: np.ndarray) -> None:
        if self.p.max_inf_backtrack > 0:
            self.inf_history = self._push(self.inf_history, cols, self.p.max_inf_backtrack)
        active, ok = self._infer_phase1(cols, self._active(self.inf_pred).mask)
        if ok:
            pred, conf, ok = self._infer_phase2(active)
        if not ok:
            active, pred, conf = self._infer_backtrack(active)
        self.inf_active, self.inf_pred, self.pred_cols = active.cells, pred.cells, conf

    # -- learning ----------------------------------------------------------------------------
    def _apply_pending(self, cols: np.ndarray, prev: _Active, pending: np.ndarray) -> None:
        """Queued updates of segments whose column is active now (the others lapse)."""
        st = self.store
        if pending.shape[0] == 0:
            return
        cell = st.cell[pending]
        live = cell >= 0
        on = np.zeros(self.p.columns, bool)
        on[cols] = True
        segs = pending[live & on[np.where(live, cell, 0) // self.n]]
        st.adapt(segs, prev.mask, prev.cells, self.p.new_synapse_count,
                 self.inc, self.dec, self.initial, self.lrn_iteration)

    def _learn_phase1(self, cols: np.ndarray, prev: _Active, prev_pred: np.ndarray,
                      read_only: bool) -> tuple[_Active, bool]:
        block = prev_pred.reshape(-1, self.n)[cols]
        hit = block.any(1)
        cells = cols[hit] * self.n + block[hit].argmax(1)
        miss = cols[~hit]
        in_seq = miss.shape[0] < cols.shape[0] // 2
        if read_only or miss.shape[0] == 0:
            return self._active(cells), in_seq
        st = self.store
        best = np.zeros(0, np.int64)
        if prev.cells.shape[0]:
            pot = st.activity(prev.cells, prev.mask)
            cand = (pot >= self.min_thr).nonzero()[0]
            wanted = np.zeros(self.p.columns, bool)
            wanted[miss] = True
            cand = cand[wanted[st.cell[cand] // self.n]]
            best = self._best_per_column(cand, pot)
            best = best[st.seq[best]]
        matched = np.zeros(self.p.columns, bool)
        matched[st.cell[best] // self.n] = True
        fresh = miss[~matched[miss]]
        new_cells = st.cell_for_new_segment(fresh, self.p.max_segments_per_cell, self.lrn_iteration)
        # one cell per column: the union needs sorting, not deduplicating
        state = self._active(np.sort(np.concatenate([cells, st.cell[best], new_cells])))
        st.adapt(best, prev.mask, prev.cells, self.p.new_synapse_count, self.inc, self.dec,
                 self.initial, self.lrn_iteration)
        st.create(new_cells, prev.cells, self.p.new_synapse_count, self.initial, self.lrn_iteration)
        return state, in_seq

    def _learn_phase2(self, active: _Active) -> tuple[_Active, np.ndarray]:
        """Learn-predicted cells (one per column at most) and the segments to queue."""
        if active.cells.shape[0] == 0:
            return self._active(active.cells), np.zeros(0, np.int64)
        pot = self.store.activity(active.cells, active.mask)
        best = self._best_per_column((pot >= self.thr).nonzero()[0], pot)
        return self._active(np.sort(self.store.cell[best])), best

    def _learn_backtrack_from(self, start: int, read_only: bool) -> tuple[bool, _Active | None]:
        hist = self.lrn_history
        n = hist.shape[0]
        active = pred = pending = None
        ok = True
        for off in range(start, n):
            prev_active, prev_pred = active, pred
            if not read_only and pending is not None:
                self._apply_pending(hist[off], prev_active, pending)
            if off == start:
                active, ok = self._start_cells(hist[off]), True
            else:
                active, ok = self._learn_phase1(hist[off], prev_active, prev_pred.mask, read_only)
            if not ok or off == n - 1:
                break
            pred, pending = self._learn_phase2(active)
        return ok, active

    def _learn_backtrack(self) -> tuple[int, _Active | None]:
        """Lock the learning state on from an earlier input: ``(steps back, state)``."""
        n_prev = self.lrn_history.shape[0] - 1
        for start in range(max(n_prev, 0)):
            if self._learn_backtrack_from(start, True)[0]:
                _, active = self._learn_backtrack_from(start, False)
                self.lrn_history = self.lrn_history[start + 1:]
                return n_prev - start, active
        self.lrn_history = self.lrn_history[:0]
        return 0, None

    def _learn(self, cols: np.ndarray) -> None:
        p = self.p
        prev_pred = self._active(self.lrn_pred).mask
        prev_active = self._active(self.lrn_active)
        if p.max_lrn_backtrack > 0:
            self.lrn_history = self._push(self.lrn_history, cols, p.max_lrn_backtrack)
        self._apply_pending(cols, prev_active, self.pending)
        if self.pam > 0:
            self.pam -= 1
        self.seq_length += 1
        active, in_seq = self._learn_phase1(cols, prev_active, prev_pred, False)
        if in_seq:
            self.pam = p.pam_length
        if self.pam == 0 or (p.max_seq_length and self.seq_length >= p.max_seq_length):
            back, replayed = self._learn_backtrack()
            if back == 0:
                active = self._start_cells(cols)
                self.lrn_history = self.lrn_history[:0]
            else:
                active = replayed
            self.pam, self.seq_length = p.pam_length, back
        pred, self.pending = self._learn_phase2(active)
        self.lrn_active, self.lrn_pred = active.cells, pred.cells

    # -- one step ----------------------------------------------------------------------------
    def score(self, cols: np.ndarray) -> float:
        return 1.0 - float(self.pred_cols[cols].sum()) / cols.shape[0]

    def compute(self, cols: np.ndarray, learn: bool) -> float:
        cols = np.sort(np.asarray(cols, np.int64))
        raw = self.score(cols)
        self.iteration += 1
        if learn:
            self.lrn_iteration += 1
        a = float(cols.shape[0])
        self.avg_density = a if self.avg_density == 0.0 else 0.99 * self.avg_density + 0.01 * a
        self._infer(cols)
        if learn:
            self._learn(cols)
        return raw


class BacktrackingTM:
    """Backtracking temporal memory for many keys; slot ``i`` is one key's model.

    Args: see :class:`BacktrackingParams` (NuPIC's names in snake case).
    """

    def __init__(self, **params: Any):
        self.params = BacktrackingParams(**params)
        self.models: list[_KeyModel] = []

    @property
    def slots(self) -> int:
        return len(self.models)

    @property
    def segments_per_column(self) -> int:
        """Largest number of segments on one column of any key (a size summary)."""
        best = 0
        for m in self.models:
            st = m.store
            live = st.cell[:st.used]
            live = live[live >= 0]
            if live.shape[0]:
                best = max(best, int(np.bincount(live // m.n).max()))
        return best

    def add_slots(self, n: int) -> None:
        """Append ``n`` fresh models (new keys)."""
        self.models.extend(_KeyModel(self.params) for _ in range(n))

    def compute(self, slots: Any, cols: Any, learn: bool = True) -> np.ndarray:
        """One record per slot: active columns ``cols`` (B, A) → raw anomaly scores (B,).
        ``slots`` and ``cols`` may be NumPy arrays or torch tensors (on any device)."""
        slots, cols = _host(slots), _host(cols)
        return np.array([self.models[s].compute(c, learn) for s, c in zip(slots.tolist(), cols)],
                        dtype=np.float64)

    def compute_sequence(self, slot: int, cols: Any, learn: bool = True) -> np.ndarray:
        """Several records of one key in a row: active columns ``cols`` (T, A) → raw
        anomaly scores (T,), as T calls of :meth:`compute` would give. Running a key's
        records together keeps its model's arrays in the cache (~8% faster than stepping
        the keys in turn)."""
        model = self.models[slot]
        return np.array([model.compute(c, learn) for c in _host(cols)], dtype=np.float64)

    def peek(self, slots: Any, cols: Any) -> np.ndarray:
        """Raw anomaly scores for active columns ``cols`` without changing any state."""
        slots, cols = _host(slots), _host(cols)
        return np.array([self.models[s].score(c) for s, c in zip(slots.tolist(), cols)],
                        dtype=np.float64)

    # -- one slot at a time (a key spilled to disk and restored, see stream.spill) ------
    def slot_state(self, slot: int) -> dict[str, Any]:
        return self.models[slot].state_dict()

    def clear_slot(self, slot: int) -> None:
        """A new key's model in slot ``slot`` (the old one's memory is freed)."""
        self.models[slot] = _KeyModel(self.params)

    def load_slot(self, slot: int, state: dict[str, Any]) -> None:
        model = _KeyModel(self.params)
        model.load_state_dict(state)
        self.models[slot] = model

    def state_dict(self) -> dict[str, Any]:
        return {"params": asdict(self.params), "models": [m.state_dict() for m in self.models]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if BacktrackingParams(**state["params"]) != self.params:
            raise ValueError("the checkpoint's backtracking TM parameters differ from this model's")
        self.models = []
        self.add_slots(len(state["models"]))
        for m, s in zip(self.models, state["models"]):
            m.load_state_dict(s)

    def memory_bytes(self) -> int:
        return sum(m.nbytes() for m in self.models)
