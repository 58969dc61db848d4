"""Checkpoint store and the pickle-free state codec."""

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stream import CheckpointError, CheckpointStore
from stream import state as codec

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**62, 2**62), st.floats(allow_nan=False),
                    st.text(max_size=8))
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=4),
    ),
    max_leaves=20,
)


@given(trees)
def test_codec_round_trips_plain_trees(tree):
    assert codec.loads(*codec.dumps(tree)) == tree


def test_codec_round_trips_arrays_tensors_and_special_floats():
    state = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "t": torch.randn(3, 2),
        "bf": torch.ones(2, dtype=torch.bfloat16),
        "rng": torch.get_rng_state(),
        "s": np.int64(7),
        "inf": float("inf"),
        "nan": [float("nan")],
        "bytes": b"\x00\xff",
        "keys": {np.str_("a"): 1, 3: (1, 2)},
    }
    back = codec.loads(*codec.dumps(state))
    np.testing.assert_array_equal(back["w"], state["w"])
    assert torch.equal(back["t"], state["t"]) and back["bf"].dtype == torch.bfloat16
    assert torch.equal(back["rng"], state["rng"])
    assert back["s"] == 7 and back["inf"] == float("inf") and np.isnan(back["nan"][0])
    assert back["bytes"] == b"\x00\xff" and back["keys"] == {"a": 1, 3: (1, 2)}


def test_codec_refuses_arbitrary_objects():
    class Thing:
        pass

    with pytest.raises(TypeError, match="cannot checkpoint"):
        codec.dumps({"x": Thing()})


def test_object_arrays_are_never_unpickled(tmp_path):
    # np.load(allow_pickle=False) would refuse them; the codec stores their items as JSON
    arr = np.array(["a", None, 3], dtype=object)
    back = codec.loads(*codec.dumps({"o": arr}))
    assert back["o"].tolist() == ["a", None, 3]


def test_store_keeps_latest_and_prunes(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=2)
    for i in range(4):
        store.save({"i": i})
    assert store.latest() == 4
    assert sorted(os.listdir(tmp_path)) == ["ckpt-00000003", "ckpt-00000004"]
    assert store.load_latest() == {"i": 3}


def test_incomplete_checkpoint_is_ignored(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save({"i": 1})
    os.makedirs(tmp_path / "ckpt-00000002")  # a crash before the manifest was written
    (tmp_path / "ckpt-00000002" / "state.json.tmp").write_text("{")
    assert store.latest() == 1 and store.load_latest() == {"i": 1}
    assert store.save({"i": 2}) == 3


def test_pruning_and_cleaning_skip_folders_that_vanished(tmp_path, monkeypatch):
    store = CheckpointStore(str(tmp_path), keep=1)
    store.save({"i": 1})
    os.makedirs(tmp_path / "ckpt-00000002")  # half-written by a crash
    listed = store._sequences
    monkeypatch.setattr(store, "_sequences", lambda: [*listed(), 7])  # listed, then gone
    assert store.clean() == [2, 7]
    assert store.save({"i": 3}) == 8
    assert sorted(os.listdir(tmp_path)) == ["ckpt-00000008"]


def test_corrupt_checkpoint_names_the_file(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save({"w": np.ones(100)})
    path = tmp_path / "ckpt-00000001" / "arrays.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"ckpt-00000001/arrays.npz is corrupt"):
        store.load_latest()


def test_truncated_manifest_is_a_clear_error(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save({"a": 1})
    (tmp_path / "ckpt-00000001" / "MANIFEST.json").write_text('{"format": ')
    with pytest.raises(CheckpointError, match="MANIFEST.json is not valid JSON"):
        store.load_latest()


def test_checkpoint_of_another_pipeline_is_refused(tmp_path):
    CheckpointStore(str(tmp_path), fingerprint="A() | B()").save({"a": 1})
    with pytest.raises(CheckpointError, match="written by another pipeline"):
        CheckpointStore(str(tmp_path), fingerprint="A() | C()").load_latest()


def test_store_on_a_pyarrow_filesystem_uri(tmp_path):
    store = CheckpointStore(f"file://{tmp_path}/ck")
    store.save({"pos": {"row": 5}})
    manifest = json.loads((tmp_path / "ck" / "ckpt-00000001" / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"state.json", "arrays.npz"}
    assert CheckpointStore(f"file://{tmp_path}/ck").load_latest() == {"pos": {"row": 5}}
