"""HTM building blocks: encoders, spatial pooler, temporal memory, batched model."""

from __future__ import annotations

import os

import numpy as np
import pytest

from operators.htm.backend import Backend
from operators.htm.encoders import RandomDistributedScalarEncoder, TimeOfDayEncoder, nab_resolution
from operators.htm.model import HTMConfig, HTMModel
from operators.htm.spatial_pooler import SpatialPooler
from operators.htm.temporal_memory import TemporalMemory

NP = Backend("numpy")
HOUR = 3600 * 10**9


def _bitsets(bits, ok):
    return [set(b[o].tolist()) for b, o in zip(bits, ok)]


def test_rdse_overlap_falls_with_distance():
    enc = RandomDistributedScalarEncoder(n=400, w=21, seed=3)
    x = np.array([0.0, 1.0, 2.0, 5.0, 30.0, 1000.0])
    a = _bitsets(*enc.encode(NP, x, np.ones(len(x))))
    overlaps = [len(a[0] & s) for s in a]
    assert overlaps[0] == len(a[0]) and len(a[0]) >= 19     # collisions are rare
    assert overlaps[1] >= 18 and overlaps[2] >= 17           # neighbours share w - d bits
    assert overlaps[4] <= 3 and overlaps[5] <= 3             # far values: almost nothing


def test_rdse_marks_duplicate_bits_invalid():
    enc = RandomDistributedScalarEncoder(n=8, w=6, seed=0)   # tiny n forces collisions
    bits, ok = enc.encode(NP, np.arange(50.0), np.ones(50))
    for b, o in zip(bits, ok):
        assert len(set(b.tolist())) == int(o.sum())


def test_time_of_day_is_periodic_and_local():
    tod = TimeOfDayEncoder()
    t = np.array([0, 24 * HOUR, HOUR, 12 * HOUR])
    a = _bitsets(*tod.encode(NP, t))
    assert tod.n == 54 and all(len(s) == 21 for s in a)
    assert a[0] == a[1]
    assert len(a[0] & a[2]) >= 16 and len(a[0] & a[3]) == 0


def test_nab_resolution_rule():
    assert nab_resolution(0.0, 130.0) == pytest.approx(1.4)
    assert nab_resolution(5.0, 5.0) == 0.001                 # constant file: the floor


def test_spatial_pooler_picks_num_active_and_learns_only_winners():
    sp = SpatialPooler(NP, input_size=60, columns=100, num_active=5, seed=1)
    sp.add_slots(1)
    before = sp.permanences(0)
    cols = sp.compute(np.array([0]), np.array([[1, 2, 3, 4]]), np.ones((1, 4), bool))
    assert cols.shape == (1, 5) and np.all(np.diff(cols[0]) > 0)
    after = sp.permanences(0)
    changed = np.flatnonzero((after != before).any(1))
    assert set(changed.tolist()) <= set(cols[0].tolist())
    assert np.all(after[before < 0] == before[before < 0])     # outside the pool: untouched
    conn = after >= sp.connected
    assert np.array_equal(sp.connections(0)[:-1], conn.T)      # bitmap kept in step
    assert sp.n_rows == 5                                      # only the winners hold rows


def test_temporal_memory_learns_a_sequence_and_flags_a_surprise():
    tm = TemporalMemory(NP, columns=64, cells_per_column=4, activation_threshold=3,
                        min_threshold=2, new_synapse_count=4)
    tm.add_slots(1)
    seq = [np.array([[0, 1, 2, 3]]), np.array([[10, 11, 12, 13]]), np.array([[20, 21, 22, 23]])]
    scores = [float(tm.compute(np.array([0]), s)[0]) for _ in range(25) for s in seq]
    assert scores[:3] == [1.0, 1.0, 1.0] and np.mean(scores[-15:]) < 0.3
    assert float(tm.compute(np.array([0]), np.array([[40, 41, 42, 43]]))[0]) == 1.0


def _drive(model: HTMModel, slots, steps=150, offset=0.0):
    rng = np.random.default_rng(5)
    noise = rng.normal(size=steps)
    out = []
    for i in range(steps):
        v = np.sin(i / 4.0) * 10 + noise[i] + offset + np.arange(len(slots)) * 7.0
        out.append(model.step(np.asarray(slots), v, np.full(len(slots), 0.5),
                              np.full(len(slots), i * HOUR)))
    return np.array(out)


@pytest.mark.parametrize("extra", [{}, {"max_backtrack": 3, "predicted_segment_decrement": 0.01}])
def test_batched_keys_equal_each_key_alone(extra):
    cfg = HTMConfig.small(**extra)
    together = HTMModel(cfg, "numpy")
    together.add_slots(3)
    both = _drive(together, [0, 1, 2])
    for k in range(3):
        alone = HTMModel(cfg, "numpy")
        alone.add_slots(1)
        rng = np.random.default_rng(5)
        noise = rng.normal(size=150)
        single = [alone.step(np.array([0]), np.array([np.sin(i / 4.0) * 10 + noise[i] + 7.0 * k]),
                             np.array([0.5]), np.array([i * HOUR]))[0] for i in range(150)]
        np.testing.assert_array_equal(both[:, k], np.array(single))
    assert both[-30:].mean() < 0.9                       # it did learn something


@pytest.mark.parametrize("tm", ["plain", "backtracking"])
def test_run_over_many_records_equals_stepping_record_by_record(tm):
    """HTMModel.run takes key after key (the backtracking TM then runs each key's records
    in a row); keys with different numbers of records give what steps in turn give."""
    cfg = HTMConfig.small(tm=tm)
    rng = np.random.default_rng(2)
    lengths = np.array([60, 25, 0, 41])
    values = [np.sin(np.arange(n) / 3.0) * 5 + rng.normal(size=n) + 3 * k
              for k, n in enumerate(lengths)]
    times = [np.arange(n, dtype=np.int64) * HOUR for n in lengths]
    slots = np.array([2, 0, 3, 1])
    batch = HTMModel(cfg, "numpy")
    batch.add_slots(4)
    raw = batch.run(slots, lengths, np.concatenate(values), np.full(lengths.sum(), 0.5),
                    np.concatenate(times))
    step = HTMModel(cfg, "numpy")
    step.add_slots(4)
    want = [[] for _ in slots]
    for j in range(lengths.max()):        # record j of every key that has one, at once
        live = np.flatnonzero(lengths > j)
        out = step.step(slots[live], np.array([values[i][j] for i in live]), np.full(live.size, 0.5),
                        np.array([times[i][j] for i in live]))
        for i, r in zip(live, out):
            want[i].append(r)
    np.testing.assert_array_equal(raw, np.concatenate([np.array(w, float) for w in want]))
    _assert_same_state(batch.state_dict(), step.state_dict())


def test_run_rejects_lengths_that_do_not_describe_the_records():
    model = HTMModel(HTMConfig.small(tm="backtracking"), "numpy")
    model.add_slots(2)
    v, t = np.zeros(5), np.zeros(5, np.int64)
    for slots, lengths in (([0, 1], [2, 2]), ([0], [2, 3]), ([0, 1], [6, -1])):
        with pytest.raises(ValueError, match="must describe all 5 values"):
            model.run(np.array(slots), np.array(lengths), v, np.ones(5), t)
    assert model.state_dict()["tm"]["models"][0]["iteration"] == 0     # nothing ran


def _assert_same_state(a, b, where="state"):
    """Nested dicts / lists of arrays and scalars equal, element for element."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)


@pytest.mark.parametrize("extra", [{}, {"max_backtrack": 3, "predicted_segment_decrement": 0.01}])
def test_numpy_and_torch_backends_agree_exactly(extra):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = HTMConfig.small(**extra)
    # `make gpu-check` runs this on the card (benchmarks/gpu_check.py sets the variable)
    a, b = HTMModel(cfg, "numpy"), HTMModel(cfg, os.environ.get("HEBBSTREAM_TEST_DEVICE", "torch"))
    a.add_slots(2)
    b.add_slots(2)
    np.testing.assert_array_equal(_drive(a, [0, 1]), _drive(b, [0, 1]))
    sa, sb = a.state_dict(), b.state_dict()
    for part in ("sp", "tm"):
        for name in sa[part]:
            np.testing.assert_array_equal(np.asarray(sa[part][name]), np.asarray(sb[part][name]))


def test_model_state_round_trip_is_bit_exact():
    cfg = HTMConfig.small(max_backtrack=2)
    ref = HTMModel(cfg, "numpy")
    ref.add_slots(2)
    full = _drive(ref, [0, 1], steps=120)
    first = HTMModel(cfg, "numpy")
    first.add_slots(2)
    head = _drive(first, [0, 1], steps=60)
    second = HTMModel(cfg, "numpy")
    second.load_state_dict(first.state_dict())
    # continue the same input from step 60
    rng = np.random.default_rng(5)
    noise = rng.normal(size=120)
    tail = [second.step(np.array([0, 1]), np.sin(i / 4.0) * 10 + noise[i] + np.array([0.0, 7.0]),
                        np.full(2, 0.5), np.full(2, i * HOUR)) for i in range(60, 120)]
    np.testing.assert_array_equal(full, np.concatenate([head, np.array(tail)]))


def test_segment_capacity_grows_and_recycles():
    cfg = HTMConfig.small(max_segments_per_column=4)
    m = HTMModel(cfg, "numpy")
    m.add_slots(1)
    rng = np.random.default_rng(0)
    for i in range(200):                     # random input: lots of bursting, new segments
        m.step(np.array([0]), rng.normal(size=1) * 100, np.array([0.5]), np.array([i * HOUR]))
    assert m.tm.segments_per_column == 4     # capped at the maximum, old segments recycled
    assert (m.tm.seg_cell[0] >= 0).sum() > 0


def test_spatial_pooler_keeps_only_learned_columns_and_loads_a_full_permanence_checkpoint():
    """A key stores rows only for the columns that won; a checkpoint holding every
    column's permanences (the layout before the row pool) loads to the same state."""
    sp = SpatialPooler(NP, input_size=60, columns=128, num_active=5, seed=1)
    sp.add_slots(2)
    rng = np.random.default_rng(2)
    for _ in range(20):
        bits = rng.integers(0, 60, size=(2, 6))
        sp.compute(np.array([0, 1]), bits, np.ones((2, 6), bool))
    assert 5 <= sp.n_rows < 2 * 128                   # far fewer rows than keys x columns
    full = np.stack([sp.permanences(k) for k in range(2)])
    again = SpatialPooler(NP, input_size=60, columns=128, num_active=5, seed=1)
    again.load_state_dict({"perm": full})
    bits = rng.integers(0, 60, size=(2, 6))
    ok = np.ones((2, 6), bool)
    assert np.array_equal(sp.compute(np.array([0, 1]), bits, ok), again.compute(np.array([0, 1]), bits, ok))
    for k in range(2):
        assert np.array_equal(sp.permanences(k), again.permanences(k))
        assert np.array_equal(sp.connections(k), again.connections(k))


@pytest.mark.parametrize("row, message", [
    (lambda r: r[:, :-1], "shapes"),
    (lambda r: np.where(r >= 0, 10**6, r), "distinct rows"),
    (lambda r: np.where(r >= 0, r.max(), r), "distinct rows"),
])
def test_a_corrupt_spatial_pooler_checkpoint_is_refused(row, message):
    sp = SpatialPooler(NP, input_size=60, columns=128, num_active=5, seed=1)
    sp.add_slots(1)
    sp.compute(np.array([0]), np.array([[1, 2, 3]]), np.ones((1, 3), bool))
    state = sp.state_dict()
    with pytest.raises(ValueError, match=message):
        sp.load_state_dict({"row": row(state["row"]), "rows": state["rows"]})
