"""The fast NumPy kernels of the HTM agree with their plain definitions (ties, edge sizes)."""

import numpy as np
import pytest

from operators.htm.backend import Backend
from operators.htm.spatial_pooler import SpatialPooler
from operators.htm.temporal_memory import TemporalMemory


@pytest.mark.parametrize("p", [0.02, 0.2, 0.6, 1.0])
def test_inhibition_matches_argpartition_with_ties(p):
    rng = np.random.default_rng(int(p * 100))
    sp = SpatialPooler(Backend("numpy"), input_size=64, columns=256, num_active=12, seed=3)
    w = 21
    overlap = rng.binomial(w, p, size=(7, 256)).astype(np.uint8)   # many equal overlaps
    score = overlap.astype(np.int64) * 256 + sp._rank[None, :]
    want = np.sort(np.argsort(-score, axis=1)[:, :12], axis=1)
    got = np.sort(sp._top_numpy(overlap, w + 1), axis=1)
    assert (got == want).all()


def test_spatial_pooler_overlap_paths_agree():
    """The SWAR (uint64 lane) overlap and the plain boolean sum pick the same columns."""
    be = Backend("numpy")
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 100, size=(5, 9))
    ok = np.ones_like(bits, dtype=bool)
    a = SpatialPooler(be, input_size=100, columns=128, num_active=6, seed=1)
    b = SpatialPooler(be, input_size=100, columns=120, num_active=6, seed=1)   # not % 8: plain sum
    slots = np.arange(5)
    gather = np.where(ok, bits, 100)
    for sp, c in ((a, 128), (b, 120)):
        sp.add_slots(5)
        cols = sp.compute(slots, bits, ok, learn=False)
        conn = np.stack([sp.connections(k) for k in range(5)])
        overlap = conn[slots[:, None], gather].sum(1)
        score = overlap.astype(np.int64) * c + sp._rank[None, :]
        assert (cols == np.sort(np.argsort(-score, axis=1)[:, :6], axis=1)).all()


@pytest.mark.parametrize("m", [8, 32, 248])
def test_count_true_swar(m):
    rng = np.random.default_rng(m)
    a = rng.random((37, m)) < 0.5
    a[0] = True
    a[1] = False
    got = Backend("numpy").count_true(a)
    assert got.dtype == np.int64 and (got == a.sum(-1)).all()


def test_where_scalar_mixed_mask():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 70000, size=(50, 32)).astype(np.int32)
    cond = rng.random((50, 32)) < 0.4
    for be in (Backend("numpy"), Backend("torch")):
        got = be.to_numpy(be.where_scalar(be.asarray(cond), be.asarray(a), 65536))
        assert (got == np.where(cond, a, 65536)).all()


def test_checkpoint_shows_unused_synapse_slots_as_dummy():
    """Unused segment slots hold 0 in memory, ``dummy`` in the state dict, and a model
    restored from it continues bit-identically."""
    be = Backend("numpy")
    kw = dict(columns=64, cells_per_column=4, activation_threshold=3, min_threshold=2,
              new_synapse_count=4, initial_segments_per_column=2, max_segments_per_column=8)
    tm = TemporalMemory(be, **kw)
    tm.add_slots(2)
    rng = np.random.default_rng(2)
    seqs = [np.sort(rng.choice(64, 4, replace=False)) for _ in range(5)]
    for i in range(30):
        tm.compute(np.array([0, 1]), np.stack([seqs[i % 5], seqs[(i + 1) % 5]]))
    state = tm.state_dict()
    unused = state["seg_cell"] < 0
    assert unused.any() and (state["pre"][unused] == tm.dummy).all()
    assert state["active"].shape[1] == tm.dummy + 1
    other = TemporalMemory(be, **kw)
    other.load_state_dict(state)
    for i in range(30, 45):
        cols = np.stack([seqs[i % 5], seqs[(i + 2) % 5]])
        assert (tm.compute(np.array([0, 1]), cols) == other.compute(np.array([0, 1]), cols)).all()
    a, b = tm.state_dict(), other.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_spatial_pooler_learning_update_matches_definition():
    """The int16 learning update equals :meth:`SpatialPooler._update` on every
    permanence -1..PERM_SCALE, for on and off bits, and keeps the bitmap in step."""
    from operators.htm.spatial_pooler import PERM_SCALE

    be = Backend("numpy")
    sp = SpatialPooler(be, input_size=64, columns=512, num_active=8, seed=4)
    sp.add_slots(1)
    values = np.arange(-1, PERM_SCALE + 1, dtype=np.int16)
    half = np.zeros(512 * 32, dtype=np.int16)
    half[:values.size] = values
    # every value once under an on bit (inputs 0..31) and once under an off bit (32..63)
    perm = np.concatenate([half.reshape(512, 32), half[::-1].reshape(512, 32)], 1)[None]
    sp.load_state_dict({"perm": perm})
    bits = np.arange(32)[None, :]
    cols = np.arange(512)[None, :]
    sp._learn(np.array([0]), bits, cols)
    on = np.zeros(64, bool)
    on[bits[0]] = True
    delta = np.where(on, sp.active_inc, -sp.inactive_dec).astype(np.int16)
    want = sp._update(np, perm[0], delta[None, :])
    assert (sp.permanences(0) == want).all()
    assert (sp.connections(0)[:64] == (want >= sp.connected).T).all()
