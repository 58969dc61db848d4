"""The batched backtracking TM computes exactly what the per-key BacktrackingTM computes.

Both models get the same inputs (keys added mid-run, calls over varying subsets of the
keys in varying orders, learning on and off) and must return identical raw scores and
identical state (``state_dict``, array by array, dtypes included).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from operators.htm.backtracking_tm import BacktrackingParams, BacktrackingTM
from operators.htm.bt_batched import BatchedBacktrackingTM
from operators.htm.bt_pool import SegmentPool
from operators.htm.bt_segments import SegmentStore

SMALL = dict(columns=128, cells_per_column=8, activation_threshold=4, min_threshold=3,
             new_synapse_count=6, max_segments_per_cell=4, max_synapses_per_segment=8)


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["params"] == b["params"]
    assert len(a["models"]) == len(b["models"])
    for k, (ma, mb) in enumerate(zip(a["models"], b["models"])):
        assert ma.keys() == mb.keys()
        for name, va in ma.items():
            vb = mb[name]
            pairs = ([(f"segments.{n}", va[n], vb[n]) for n in va] if name == "segments"
                     else [(name, va, vb)])
            for label, x, y in pairs:
                if isinstance(x, np.ndarray):
                    assert isinstance(y, np.ndarray), (k, label)
                    assert x.dtype == y.dtype and x.shape == y.shape, (k, label, x.shape, y.shape)
                    assert np.array_equal(x, y), (k, label)
                else:
                    assert type(x) is type(y) and x == y, (k, label, x, y)


def drive(models: list[Any], params: dict[str, Any], steps: int, width: int, seed: int,
          keys: int = 4, added: int = 2, check_every: int = 25) -> None:
    """Feed every model the same calls; compare scores each call and state regularly.
    Inputs: each key mostly cycles through a few patterns (so segments form and
    predictions come true), sometimes a random input (so the models backtrack)."""
    rng = np.random.default_rng(seed)
    for m in models:
        m.add_slots(keys)
    C = params["columns"]
    patterns = [rng.choice(C, width, replace=False) for _ in range(7)]
    for t in range(steps):
        if t == steps // 3:
            for m in models:
                m.add_slots(added)
        n = models[0].slots
        slots = rng.permutation(n)[:rng.integers(1, n + 1)]
        cols = np.stack([patterns[(t + s) % 7] if rng.random() < 0.85
                         else rng.choice(C, width, replace=False) for s in slots])
        learn = bool(rng.random() < 0.9)
        raw = [m.compute(slots, cols, learn) for m in models]
        for r in raw[1:]:
            np.testing.assert_array_equal(raw[0], r, err_msg=f"step {t}")
        if t % check_every == 0 or t == steps - 1:
            ref = models[0].state_dict()
            for m in models[1:]:
                assert_same_state(ref, m.state_dict())


@pytest.mark.parametrize("seed", [0, 1])
def test_small_config_identical(seed: int) -> None:
    """Full columns (the victim path), released and reused rows, both backtracks."""
    params = dict(SMALL, seed=seed + 7)
    a, b = BacktrackingTM(**params), BatchedBacktrackingTM(**params)
    drive([a, b], params, 300, 8, seed)
    assert a.segments_per_column == b.segments_per_column == 28   # 7 non-start cells x 4
    assert b.memory_bytes() > 0


def test_small_index_merges_and_region_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny index tails: the merge and compaction paths of both stores run often."""
    monkeypatch.setattr(SegmentStore, "_TAIL", 16)
    monkeypatch.setattr(SegmentPool, "_TAIL", 16)
    a, b = BacktrackingTM(**SMALL), BatchedBacktrackingTM(**SMALL)
    b.window = 3
    drive([a, b], SMALL, 200, 8, seed=5, keys=3, added=3)


def test_nab_config_identical() -> None:
    """NuPIC's NAB configuration (2048 columns, 32 cells, 40 active columns)."""
    params = BacktrackingParams().__dict__
    a, b = BacktrackingTM(), BatchedBacktrackingTM()
    drive([a, b], dict(params), 160, 40, seed=3, keys=3, added=1, check_every=40)


@pytest.mark.parametrize("window", [1, 4])
def test_key_alone_gives_the_same_scores(window: int) -> None:
    rng = np.random.default_rng(2)
    batched, alone = BatchedBacktrackingTM(**SMALL), BatchedBacktrackingTM(**SMALL)
    batched.window = window
    batched.add_slots(5)
    alone.add_slots(1)
    patterns = [rng.choice(128, 8, replace=False) for _ in range(5)]
    for t in range(150):
        cols = np.stack([patterns[(t + k) % 5] if rng.random() < 0.8 else rng.choice(128, 8, replace=False)
                         for k in range(5)])
        raw = batched.compute(np.arange(5), cols)
        assert raw[2] == alone.compute([0], cols[2:3])[0], t


def test_checkpoints_round_trip_and_interchange() -> None:
    rng = np.random.default_rng(4)
    a, b = BacktrackingTM(**SMALL), BatchedBacktrackingTM(**SMALL)
    drive([a, b], SMALL, 120, 8, seed=4, keys=3, added=1)
    # a batched checkpoint continues in a per-key model and vice versa, and in itself
    b2, a2, b3 = BatchedBacktrackingTM(**SMALL), BacktrackingTM(**SMALL), BatchedBacktrackingTM(**SMALL)
    b2.load_state_dict(a.state_dict())
    a2.load_state_dict(b.state_dict())
    b3.load_state_dict(b.state_dict())
    models = [a, b, b2, a2, b3]
    for t in range(80):
        slots = rng.permutation(4)[:rng.integers(1, 5)]
        cols = np.stack([rng.choice(128, 8, replace=False) if rng.random() < 0.3
                         else np.arange(8) * 3 + (t % 4) * 30 + s for s in slots])
        raw = [m.compute(slots, cols) for m in models]
        for r in raw[1:]:
            np.testing.assert_array_equal(raw[0], r)
    for m in models[1:]:
        assert_same_state(a.state_dict(), m.state_dict())


def test_a_key_twice_in_one_call_runs_its_records_in_turn() -> None:
    a, b = BacktrackingTM(**SMALL), BatchedBacktrackingTM(**SMALL)
    a.add_slots(2)
    b.add_slots(2)
    rng = np.random.default_rng(0)
    for _ in range(30):
        slots = np.array([0, 1, 0])
        cols = np.stack([rng.choice(16, 8, replace=False) for _ in range(3)])
        np.testing.assert_array_equal(a.compute(slots, cols), b.compute(slots, cols))
    assert_same_state(a.state_dict(), b.state_dict())


def test_peek_changes_nothing_and_bad_input_is_named() -> None:
    b = BatchedBacktrackingTM(**SMALL)
    b.add_slots(2)
    cols = np.stack([np.arange(8), np.arange(8) + 50])
    for _ in range(10):
        b.compute([0, 1], cols)
    before = b.state_dict()
    peeked = b.peek([1, 0], cols[::-1])
    assert_same_state(before, b.state_dict())
    np.testing.assert_array_equal(peeked, b.compute([1, 0], cols[::-1], learn=False))
    with pytest.raises(ValueError, match="slots"):
        b.compute([2], cols[:1])
    other = BatchedBacktrackingTM(**dict(SMALL, seed=3))
    with pytest.raises(ValueError, match="parameters differ"):
        other.load_state_dict(before)


def test_inputs_of_changing_width() -> None:
    """A call's width may change: histories of a key restart, backtracks group keys whose
    histories have different widths."""
    rng = np.random.default_rng(6)
    a, b = BacktrackingTM(**SMALL), BatchedBacktrackingTM(**SMALL)
    a.add_slots(4)
    b.add_slots(4)
    for t in range(160):
        width = 8 if (t // 20) % 2 == 0 else 6
        slots = rng.permutation(4)[:rng.integers(1, 5)]
        cols = np.stack([rng.choice(32, width, replace=False) + 32 * (s % 2) for s in slots])
        np.testing.assert_array_equal(a.compute(slots, cols), b.compute(slots, cols), err_msg=str(t))
    assert_same_state(a.state_dict(), b.state_dict())
