"""ContinualPretrainer: cut independence, the annealed branch leaves the main run
untouched (RNG included), annealed checkpoints, state round-trip, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from streams import ListSink, ListSource

from operators.continual import ContinualPretrainer, load_annealed
from stream import Batch, run
from stream import state as codec
from stream.errors import BadEventError, CheckpointError, ConfigError, SchemaError

TEXTS = [
    "the cat sat on the mat.",
    "def f(x):\n    return x + 1",
    "#include <stdio.h>",
    "Return a new list.",
    "static int n = 0;",
    "import os",
    "a",
    "ünïcödé text",
]

TINY = dict(
    dim=16,
    layers=1,
    max_tokens=24,
    batch_size=4,
    lr=1e-2,
    warmup_steps=2,
    cooldown_steps=3,
    anneal_steps=3,
    seed=3,
)


def text_batch(n: int = 40, offset: int = 0, source: str = "texts") -> Batch:
    rows = [TEXTS[i % len(TEXTS)] + str(i) for i in range(n)]
    return Batch(pa.record_batch({"text": rows}), source=source, offset=offset)


def vector_batch(n: int = 40, dim: int = 6, seed: int = 0) -> Batch:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    # a fixed-shape tensor column: check_operator compares it as a 2-D array
    return Batch(pa.record_batch({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(x)}), source="vectors")


def masked(**kw) -> ContinualPretrainer:
    return ContinualPretrainer("x", "masked", input_dim=6, **{**TINY, "max_tokens": 8, **kw})


def feed(op: ContinualPretrainer, data: Batch, size: int, between=None) -> Batch:
    outs = []
    for k, lo in enumerate(range(0, data.num_rows, size)):
        if between is not None:
            between(op, k)
        outs.append(op(data.slice(lo, min(size, data.num_rows - lo))))
    return Batch.concat(outs)


def same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize(
    "make,data",
    [
        (lambda: ContinualPretrainer("text", **TINY), text_batch()),
        (lambda: masked(replay_capacity=8, replay_per_batch=2), vector_batch()),
    ],
)
def test_runtime_cut_does_not_change_results(make, data):
    ref_op = make()
    ref = feed(ref_op, data, data.num_rows)
    for size in (1, 3, 7):
        op = make()
        out = feed(op, data, size)
        np.testing.assert_allclose(out.numpy("loss"), ref.numpy("loss"), rtol=1e-5)
        assert np.array_equal(out.numpy("lr"), ref.numpy("lr"))
        for k, v in ref_op.model.state_dict().items():
            torch.testing.assert_close(op.model.state_dict()[k], v, rtol=1e-4, atol=1e-6)
    assert ref_op.steps == data.num_rows // 4
    # prequential: the first micro-batch is scored by the untrained model, at lr 0 (warmup)
    assert ref.numpy("lr")[0] == 0.0 and ref.numpy("lr")[4] > 0


@pytest.mark.parametrize(
    "make,data",
    [
        (
            lambda **kw: ContinualPretrainer("text", replay_capacity=6, replay_per_batch=2, **TINY, **kw),
            text_batch(60),
        ),
        (lambda **kw: masked(replay_capacity=6, replay_per_batch=2, **kw), vector_batch(60)),
    ],
)
def test_annealed_branch_leaves_the_main_run_bit_identical(make, data, tmp_path):
    plain = make()
    ref = feed(plain, data, 5)

    def ask(op, k):
        if k in (3, 6):
            op.request_annealed_checkpoint()

    branched = make(anneal_every_steps=4, checkpoint_dir=str(tmp_path))
    out = feed(branched, data, 5, between=ask)
    assert branched.branch_count >= 3 and branched.annealed_paths
    for name in ("loss", "lr"):
        assert np.array_equal(out.numpy(name), ref.numpy(name)), name
    assert same_tensors(branched.main.state_dict()["model"], plain.main.state_dict()["model"])
    assert same_tensors(branched.main.optimizer.state_dict(), plain.main.optimizer.state_dict())
    assert torch.equal(branched._rng.get_state(), plain._rng.get_state())
    assert [s.tolist() for s in branched.replay.samples] == [s.tolist() for s in plain.replay.samples]
    # and the branch really trained at a lower rate: its weights differ from the main run's
    model, record = load_annealed(branched.annealed_paths[-1])
    assert record["kind"] == "branch" and record["lr"] < branched.main.lr
    assert not same_tensors(model.state_dict(), plain.model.state_dict())


def test_annealed_checkpoint_file_matches_memory_and_refuses_other_files(tmp_path):
    op = ContinualPretrainer("text", checkpoint_dir=str(tmp_path), **TINY)
    op(text_batch(20))
    op.request_annealed_checkpoint()
    op(text_batch(12))
    path = op.annealed_paths[0]
    assert path.endswith(f"annealed-branch-step{op.steps:09d}.pt")
    model, record = load_annealed(path)
    assert record["branched_at"] == 5 and record["anneal_steps"] == 3
    assert same_tensors(model.state_dict(), op.annealed_model().state_dict())
    texts = ["held out text", "int main(void);"]
    assert op.evaluate(texts, model) == pytest.approx(op.evaluate(texts, op.annealed_model()))
    bad = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not an annealed checkpoint"):
        load_annealed(str(bad))


def test_anneal_main_at_a_task_boundary_then_constant_again():
    op = ContinualPretrainer("text", **TINY)
    op(text_batch(40))  # 10 steps: past warmup + cooldown
    const = op.main.lr
    op.anneal_main(steps=4)
    out = op(text_batch(24))
    lrs = out.numpy("lr")[::4]
    assert lrs[0] == pytest.approx(const) and all(np.diff(lrs[:4]) < 0)
    assert lrs[4] == pytest.approx(const) and lrs[5] == pytest.approx(const)  # no re-warm above it
    assert op.annealed["kind"] == "main" and op.annealed["lr"] == pytest.approx(const)
    with pytest.raises(ConfigError, match="schedule='infinite'"):
        ContinualPretrainer("text", schedule="constant", **TINY).anneal_main()
    annealing = ContinualPretrainer("text", **TINY)
    annealing.anneal_main()
    with pytest.raises(ConfigError, match="main run is annealing"):
        annealing.request_annealed_checkpoint()


def test_state_round_trip_mid_micro_batch_with_branch_in_flight(tmp_path):
    def make():
        return ContinualPretrainer("text", replay_capacity=5, replay_per_batch=1, anneal_every_steps=3, **TINY)

    data = text_batch(50)
    full = make()
    ref = feed(full, data, 50)
    first = make()
    head = feed(first, data.slice(0, 27), 27)  # 6 steps + 3 pending, a branch running
    assert first._pending and first.branches
    tree, blob = codec.dumps(first.state_dict())
    second = make()
    second.load_state_dict(codec.loads(tree, blob))
    tail = feed(second, data.slice(27), 23)
    out = Batch.concat([head, tail])
    assert np.array_equal(out.numpy("lr"), ref.numpy("lr"))
    np.testing.assert_allclose(out.numpy("loss"), ref.numpy("loss"), rtol=1e-6)
    assert same_tensors(second.annealed["model"], full.annealed["model"])
    assert same_tensors(second.main.state_dict()["model"], full.main.state_dict()["model"])


def test_checkpoint_from_another_model_is_refused():
    op = ContinualPretrainer("text", **TINY)
    op(text_batch(8))
    other = ContinualPretrainer("text", **{**TINY, "dim": 32})
    with pytest.raises(CheckpointError, match=r"another model.*\['dim'\]"):
        other.load_state_dict(op.state_dict())
    with pytest.raises(CheckpointError, match="objective"):
        masked().load_state_dict(op.state_dict())


def test_init_from_an_annealed_file_of_the_same_model_only(tmp_path):
    op = ContinualPretrainer("text", checkpoint_dir=str(tmp_path), **TINY)
    op(text_batch(8))
    op.anneal_main(2)
    op(text_batch(8))
    fresh = ContinualPretrainer("text", **TINY)
    fresh.init_from(op.annealed_paths[-1])
    assert same_tensors(fresh.model.state_dict(), op.model.state_dict())
    with pytest.raises(CheckpointError, match=r"another model.*\['layers'\]"):
        ContinualPretrainer("text", **{**TINY, "layers": 2}).init_from(op.annealed_paths[-1])


def test_bad_input_is_named():
    op = ContinualPretrainer("text", **TINY)
    with pytest.raises(BadEventError, match=r"texts, row 12.*empty"):
        op(Batch(pa.record_batch({"text": ["ok", "", "x"]}), source="texts", offset=11))
    with pytest.raises(BadEventError, match=r"row 1\b.*null"):
        ContinualPretrainer("text", **TINY)(Batch(pa.record_batch({"text": ["ok", None]})))
    with pytest.raises(SchemaError, match="text.*string or binary"):
        ContinualPretrainer("text", **TINY)(Batch(pa.record_batch({"text": [1.0, 2.0]})))
    with pytest.raises(SchemaError, match="holds vectors of 5 values.*input_dim=6"):
        x = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(10, np.float32)), 5)
        masked()(Batch(pa.record_batch({"x": x})))
    with pytest.raises(BadEventError, match=r"row 1\b.*has 5 values.*input_dim=6"):
        masked()(Batch(pa.record_batch({"x": [[0.0] * 6, [0.0] * 5]})))
    with pytest.raises(BadEventError, match=r"row 0\b.*not a finite number"):
        masked()(Batch(pa.record_batch({"x": [[np.nan] + [0.0] * 5, [0.0] * 6]})))
    with pytest.raises(SchemaError, match="numeric vectors"):
        masked()(Batch(pa.record_batch({"x": ["a", "b"]})))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(objective="masked"), "needs input_dim"),
        (dict(objective="clm"), "unknown objective"),
        (dict(batch_size=0), "batch_size"),
        (dict(replay_per_batch=2), "needs replay_capacity"),
        (dict(schedule="constant", anneal_every_steps=5), "schedule='infinite'"),
        (
            dict(schedule="wsd", schedule_args={"total_steps": 10, "decay_steps": 20}),
            "exceed total_steps",
        ),
        (dict(const_ratio=0.1, min_ratio=0.5), "min_ratio"),
        (dict(model="lstm"), "unknown kind"),
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ContinualPretrainer("text", **kwargs)


def test_binary_and_dictionary_text_columns_train_like_strings():
    rows = [t.encode() for t in TEXTS] * 2
    outs = []
    for arr in (
        pa.array([r.decode() for r in rows]),
        pa.array(rows, pa.binary()),
        pa.array([r.decode() for r in rows]).dictionary_encode(),
    ):
        op = ContinualPretrainer("text", **TINY)
        outs.append(op(Batch(pa.record_batch({"text": arr}))).numpy("loss"))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_runs_in_the_engine_with_tensor_images():
    images = np.random.default_rng(1).random((30, 2, 3)).astype(np.float32)
    table = pa.record_batch({"ts": np.arange(30), "img": pa.FixedShapeTensorArray.from_numpy_ndarray(images)})
    sink = ListSink()
    op = ContinualPretrainer("img", "masked", input_dim=6, **{**TINY, "max_tokens": 8})
    summary = run(ListSource([table], key="key"), op, sink, batch_size=7)
    assert summary["events"] == 30 and op.steps == 7
    assert sink.table().column_names == ["ts", "img", "loss", "lr"]
    assert summary["metrics"]["1.ContinualPretrainer"]["masked_values"] == 7 * 4 * 3
