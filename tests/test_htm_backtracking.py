"""NuPIC's backtracking temporal memory: learning, backtracking, state, keys."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from operators.htm.backend import Backend
from operators.htm.backtracking_tm import BacktrackingTM
from operators.htm.bt_segments import SegmentStore
from operators.htm.temporal_memory import TemporalMemory
from stream import state as state_codec

COLS, ACTIVE, CELLS = 256, 8, 8
PARAMS = dict(columns=COLS, cells_per_column=CELLS, activation_threshold=4, min_threshold=3,
              new_synapse_count=6)


def _patterns(n, seed=0):
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(COLS, ACTIVE, replace=False)) for _ in range(n)]


def _step(tm, pattern, learn=True, slot=0):
    return float(tm.compute(np.array([slot]), pattern[None, :], learn)[0])


def _trained(seq, reps=40):
    tm = BacktrackingTM(**PARAMS)
    tm.add_slots(1)
    for _ in range(reps):
        for p in seq:
            _step(tm, p)
    return tm


def test_a_learned_sequence_becomes_predicted():
    seq = _patterns(8)
    tm = _trained(seq, reps=1)
    assert [_step(tm, p) for p in seq[:3]] != [0.0, 0.0, 0.0]   # not known yet
    tm = _trained(seq)
    assert [_step(tm, p) for p in seq] == [0.0] * len(seq)
    # an input that never followed the last one is fully unexpected
    assert _step(tm, _patterns(1, seed=7)[0], learn=False) == 1.0


def test_entering_a_sequence_midway_locks_onto_start_cells_where_the_plain_tm_bursts():
    seq, noise = _patterns(8), _patterns(2, seed=5)
    tm = _trained(seq)
    plain = TemporalMemory(Backend("numpy"), COLS, CELLS, 4, 3, 6)
    plain.add_slots(1)
    for _ in range(40):
        for p in seq:
            _step(plain, p)
    locked = 0
    for k in range(len(seq)):
        bt, pl = copy.deepcopy(tm), copy.deepcopy(plain)
        for p in (noise[1], seq[k]):
            _step(bt, p, learn=False)
            _step(pl, p, learn=False)
        state = np.zeros(COLS * CELLS, bool)
        state[bt.models[0].inf_active] = True
        state = state.reshape(COLS, CELLS)[seq[k]]
        if state[:, 1:].any():
            assert state.all()                      # no start point found: the input bursts
        else:
            locked += 1
            assert state[:, 0].all()                # replayed from this input's start cells
            plain_state = pl.active[0, :COLS * CELLS].reshape(COLS, CELLS)[seq[k]]
            assert plain_state.all()                # the plain TM can only burst here
        # either way the continuation is predicted
        assert _step(bt, seq[(k + 1) % len(seq)], learn=False) == 0.0
    assert locked >= 1


def test_state_round_trip_through_the_codec_is_bit_exact():
    seq, noise = _patterns(6), _patterns(4, seed=3)
    stream = (seq * 6 + noise + seq * 3) * 2
    tm = BacktrackingTM(**PARAMS)
    tm.add_slots(2)
    for i, p in enumerate(stream[:40]):
        _step(tm, p, slot=i % 2)
    tree, blob = state_codec.dumps(tm.state_dict())
    resumed = BacktrackingTM(**PARAMS)
    resumed.load_state_dict(state_codec.loads(tree, blob))
    for i, p in enumerate(stream[40:]):
        assert _step(tm, p, slot=i % 2) == _step(resumed, p, slot=i % 2)
    a, b = tm.state_dict(), resumed.state_dict()
    for ma, mb in zip(a["models"], b["models"]):
        for name, va in ma.items():
            vb = mb[name]
            if isinstance(va, dict):
                assert all(np.array_equal(va[k], vb[k]) for k in va), name
            else:
                assert np.array_equal(va, vb), name


def test_batched_keys_equal_each_key_alone():
    seqs = [_patterns(5, seed=s) for s in (1, 2, 3)]
    together = BacktrackingTM(**PARAMS)
    together.add_slots(3)
    alone = []
    for _ in range(3):
        tm = BacktrackingTM(**PARAMS)
        tm.add_slots(1)
        alone.append(tm)
    for _rep in range(12):
        for j in range(5):
            batch = np.stack([s[j] for s in seqs])
            got = together.compute(np.arange(3), batch)
            want = [_step(alone[k], seqs[k][j]) for k in range(3)]
            assert got.tolist() == want


def _check_index(st, rng=None):
    """The presynaptic index holds exactly the live synapses, each once, under its
    presynaptic cell (base grouped by cell, or in the tail), and a look-up counts
    what a brute-force scan of the segments counts."""
    off = st.idx_off
    assert off[0] == 0 and np.all(np.diff(off) >= 0) and off[-1] == st.idx_seg.shape[0]
    assert st.tail_pre.shape == st.tail_seg.shape
    pre = np.concatenate([np.repeat(np.arange(st.cells), np.diff(off)), st.tail_pre])
    seg = np.concatenate([st.idx_seg, st.tail_seg]).astype(np.int64)
    live = seg != 0
    assert np.all(st.tail_seg != 0)                      # removed tail entries leave the tail
    rows, slots = np.nonzero(st.perm[:st.used] > 0)
    want = sorted(zip(st.pre[rows, slots].tolist(), rows.tolist()))
    assert sorted(zip(pre[live].tolist(), seg[live].tolist())) == want
    assert (st.n_live, st.n_stale) == (int(live.sum()), int((~live).sum()))
    rng = rng or np.random.default_rng(0)
    active = np.zeros(st.cells, bool)
    active[rng.choice(st.cells, max(st.cells // 3, 1), replace=False)] = True
    brute = (active[st.pre[:st.used]] & (st.perm[:st.used] > 0)).sum(1)
    brute[0] = 0
    assert st.activity(np.flatnonzero(active)).tolist() == brute.tolist()


def test_presynaptic_index_stays_exact_through_tail_merges_and_removals(monkeypatch):
    monkeypatch.setattr(SegmentStore, "_TAIL_MIN", 4)   # merge the tail every few steps
    calls = {"_reindex": 0, "_unindex": 0}

    def counting(name):
        method = getattr(SegmentStore, name)

        def counted(self, *args):
            calls[name] += 1
            return method(self, *args)
        return counted

    for name in calls:
        monkeypatch.setattr(SegmentStore, name, counting(name))
    # one non-start cell per column holding one segment: new segments keep replacing old
    # ones, so many index entries die and new layouts drop them
    tm = BacktrackingTM(**{**PARAMS, "cells_per_column": 2}, max_segments_per_cell=1)
    tm.add_slots(1)
    seq, noise = _patterns(5), _patterns(40, seed=7)
    st = tm.models[0].store
    for i, p in enumerate((seq * 8 + noise) * 3):
        _step(tm, p)
        if i % 4 == 3:
            _check_index(st)
    assert all(calls.values()), calls   # every index path ran: removals, new layouts


def test_presynaptic_index_stays_exact_under_random_growth_and_removal(monkeypatch):
    monkeypatch.setattr(SegmentStore, "_TAIL_MIN", 8)    # the tail fills often
    rng = np.random.default_rng(3)
    st = SegmentStore(cells=64, cells_per_column=4, max_synapses=8, seed=1)
    for it in range(1, 400):
        live = np.flatnonzero(st.cell[:st.used] >= 0)
        sources = np.sort(rng.choice(64, rng.integers(1, 12), replace=False))
        op = rng.integers(3) if live.shape[0] > 4 else 0
        if op == 0:
            st.create(rng.choice(64, rng.integers(1, 4), replace=False), sources, 6, 2100, it)
        elif op == 1:
            prev = np.zeros(64, bool)
            prev[sources] = True
            segs = rng.choice(live, rng.integers(1, 5), replace=False)
            st.adapt(segs, prev, sources, 6, 1000, 1500, 2100, it)
        else:
            st.release(rng.choice(live, rng.integers(1, 3), replace=False))
        _check_index(st, rng)


def test_index_entries_widen_when_segment_rows_outgrow_uint16():
    """Index entries are uint16 segment rows while the rows fit, int32 past 65,535."""
    rows = (1 << 16) - 40
    cell = np.arange(rows, dtype=np.int32) % 64
    pre = np.zeros((rows, 4), np.uint16)
    perm = np.zeros((rows, 4), np.int16)
    pre[:, 0], perm[:, 0] = (cell + 1) % 64, 2100
    st = SegmentStore(cells=64, cells_per_column=4, max_synapses=4, seed=1, max_segments_per_cell=2000)
    st.load_state_dict({"pre": pre, "perm": perm, "cell": cell, "seq": np.ones(rows, bool),
                        "last": np.zeros(rows, np.uint32)})
    assert st.idx_seg.dtype == np.uint16
    for it in range(1, 5):                                 # 64 new rows: past 65,535
        st.create(np.arange(1, 64, 4), np.array([2, 7, 9]), 3, 2100, it)
    assert st.idx_seg.dtype == np.int32 and st.used > 1 << 16
    _check_index(st)


def _first_row_repeats_a_cell(a):
    a = a.copy()
    a[1] = a[0]                          # the first segment's first two synapses
    return a


@pytest.mark.parametrize("name, corrupt, message", [
    ("syn_pre", lambda a: a[:-1], "'syn_pre' and 'syn_perm' have shapes"),
    ("occupied", lambda a: a[:, :0], "'occupied' has shape"),
    ("cell", lambda a: a[:-1], "'cell' has shape"),
    ("syn_pre", lambda a: a.astype(np.int64) + COLS * CELLS, "'syn_pre' holds values outside"),
    ("syn_perm", lambda a: a * 0 - 5, "'syn_perm' holds values outside"),
    ("seq", None, "lacks \\['seq'\\]"),
    ("cell", lambda a: np.where(np.arange(a.shape[0]) == 0, -1, a), "synapses on free segment rows"),
    ("syn_pre", _first_row_repeats_a_cell, "repeats a presynaptic cell"),
])
def test_a_corrupt_segment_checkpoint_names_the_array(name, corrupt, message):
    tm = _trained(_patterns(4), reps=5)
    state = copy.deepcopy(tm.state_dict())
    segments = state["models"][0]["segments"]
    if corrupt is None:
        del segments[name]
    else:
        segments[name] = corrupt(segments[name])
    with pytest.raises(ValueError, match=message):
        BacktrackingTM(**PARAMS).load_state_dict(state)


def _dense_checkpoint(tm, signed):
    """``tm``'s state as checkpoints before the sparse form wrote it: dense ``pre``/``perm``
    rows and the cell sets as boolean masks over all cells; ``signed``: as written before
    cells became uint16 (pre = -1 on empty slots, int32 cells, int64 iterations)."""
    state = copy.deepcopy(tm.state_dict())
    m, st = tm.models[0], tm.models[0].store
    rows = slice(1, st.used)
    pre, perm = st.pre[rows].copy(), st.perm[rows].copy()
    seg = {"pre": pre, "perm": perm, "cell": st.cell[rows].copy(), "seq": st.seq[rows].copy(),
           "last": st.last[rows].copy()}
    if signed:
        seg["pre"] = np.where(perm > 0, pre.astype(np.int32), -1)
        seg["last"] = seg["last"].astype(np.int64)
    state["models"][0]["segments"] = seg
    for name in m._CELL_SETS:
        mask = np.zeros(m.cells, bool)
        mask[getattr(m, name)] = True
        state["models"][0][name] = mask
    return state


@pytest.mark.parametrize("signed", [False, True])
def test_a_checkpoint_with_dense_segments_and_cell_masks_resumes_identically(signed):
    """Checkpoints written before the sparse segment form (dense rows, cell masks; and,
    older still, signed cells with 64-bit bookkeeping) load into the same model and
    continue identically."""
    seq, noise = _patterns(6), _patterns(4, seed=3)
    stream = seq * 6 + noise + seq * 3
    tm = BacktrackingTM(**PARAMS)
    tm.add_slots(1)
    for p in stream[:40]:
        _step(tm, p)
    resumed = BacktrackingTM(**PARAMS)
    resumed.load_state_dict(state_codec.loads(*state_codec.dumps(_dense_checkpoint(tm, signed))))
    for p in stream[40:]:
        assert _step(tm, p) == _step(resumed, p)
    _check_index(resumed.models[0].store)


def test_the_checkpoint_keeps_only_the_synapses():
    tm = _trained(_patterns(6), reps=10)
    st = tm.models[0].store
    seg = tm.state_dict()["models"][0]["segments"]
    assert "pre" not in seg and seg["syn_pre"].shape == seg["syn_perm"].shape == ((st.perm > 0).sum(),)
    assert seg["syn_pre"].dtype == np.uint16 and seg["occupied"].shape == (st.used - 1, st.max_syn // 8)
