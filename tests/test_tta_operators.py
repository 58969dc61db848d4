"""TTA operators: micro-batch cut invariance, batch size 1, resume
in the middle of a mini-batch, reset policies, bad input, loading from a file."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from operators.tta import NHL, NormAdapt, Source, Tent
from operators.tta.models import build_model
from operators.tta.reset import make_policy
from stream import Batch, state
from stream.batch import to_arrow
from stream.errors import BadEventError, ConfigError, SchemaError
from stream.testing import assert_same_outputs

METHODS = [Source, NormAdapt, Tent, NHL]


pytestmark = pytest.mark.usefixtures("torch_one_thread")

FAST = {"Tent": {"lr": 1e-2}, "NHL": {"lr": 1e-2, "hebbian_lr": 0.05}}


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("small_cnn", width=4)
    # non-trivial BatchNorm statistics, as after training
    for bn in (model.bn1, model.bn2, model.bn3):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def images(n: int = 40, seed: int = 0, shape=(8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def stream(n: int = 40, seed: int = 0) -> Batch:
    return Batch(pa.record_batch({"image": to_arrow(images(n, seed))}), source="digits")


def make(cls, model=None, **kw):
    model = model or tiny_model()
    return lambda: cls(model, device="cpu", **{**FAST.get(cls.__name__, {}), **kw})


def run_cut(op, data: Batch, cuts: list[int]) -> Batch:
    """Feed ``data`` to ``op`` in micro-batches of the given sizes (cycled)."""
    outs, lo, i = [], 0, 0
    while lo < data.num_rows:
        size = cuts[i % len(cuts)]
        outs.append(op(data.slice(lo, min(size, data.num_rows - lo))))
        lo += size
        i += 1
    return Batch.concat(outs)


@pytest.mark.parametrize("cls", [NormAdapt, Tent, NHL], ids=lambda c: c.__name__)
def test_micro_batch_cut_does_not_change_outputs(cls):
    data = stream(45)
    ref = run_cut(make(cls, batch_size=8)(), data, [45])
    for cuts in ([1], [3, 7], [8], [13, 2, 9]):
        assert_same_outputs(ref, run_cut(make(cls, batch_size=8)(), data, cuts), f"cuts {cuts}",
                            rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [NormAdapt, Tent, NHL], ids=lambda c: c.__name__)
def test_adaptation_changes_the_model(cls):
    """Not a no-op: after some mini-batches the predictions differ from Source's."""
    data = Batch(pa.record_batch({"image": to_arrow(images(64) * 0.2 + 0.6)}))  # shifted domain
    src = make(Source)()(data)
    out = make(cls, batch_size=8)()(data)
    assert np.array_equal(src.numpy("entropy")[:8], out.numpy("entropy")[:8])  # first mini-batch
    assert not np.allclose(src.numpy("entropy")[8:], out.numpy("entropy")[8:])


@pytest.mark.parametrize("cls", [Tent, NHL], ids=lambda c: c.__name__)
def test_resume_in_the_middle_of_a_mini_batch(cls):
    data = stream(40)
    ref = make(cls, batch_size=8)()(data)
    first = make(cls, batch_size=8)()
    head = first(data.slice(0, 13))                     # 5 rows wait in the buffer
    tree, blob = state.dumps(first.state_dict())
    second = make(cls, batch_size=8)()
    second.load_state_dict(state.loads(tree, blob))
    tail = second(data.slice(13))
    assert_same_outputs(ref, Batch.concat([head, tail]), "resume mid mini-batch", rtol=1e-5, atol=1e-6)
    assert second.optimizer.state_dict()["state"], "optimizer state was not restored"


@pytest.mark.parametrize("cls", [NormAdapt, Tent, NHL], ids=lambda c: c.__name__)
def test_batch_size_one_does_not_collapse(cls):
    model = tiny_model()
    data = stream(200, seed=3)
    out = make(cls, model, batch_size=1)()(data)
    src = make(Source, model)()(data)
    assert np.isfinite(out.numpy("entropy")).all()
    # the predicted classes stay about as diverse as the source model's
    n_src = len(np.unique(src.numpy("prediction")[-100:]))
    assert len(np.unique(out.numpy("prediction")[-100:])) >= max(1, n_src - 2)


@pytest.mark.parametrize("cls", [Tent, NHL], ids=lambda c: c.__name__)
def test_loss_stats_batch_follows_the_mini_batch_statistics(cls):
    """``loss_stats="batch"`` takes the gradient with the mini-batch's own statistics
    (BatchNorm in train mode): a different step from ``"running"``, and running
    statistics and predictions of the rows themselves are the same either way."""
    data = stream(16)
    ops = {ls: make(cls, batch_size=8, loss_stats=ls)() for ls in ("batch", "running")}
    outs = {ls: op(data) for ls, op in ops.items()}
    first = {ls: out.numpy("entropy")[:8] for ls, out in outs.items()}
    np.testing.assert_array_equal(first["batch"], first["running"])    # before any step
    norms = {ls: op.norms[0] for ls, op in ops.items()}   # trained by both (NHL: layer1)
    assert not torch.allclose(norms["batch"].weight, norms["running"].weight)
    assert not any(n.use_batch_stats for op in ops.values() for n in op.norms)
    with pytest.raises(ConfigError, match="loss_stats"):
        cls(tiny_model(), loss_stats="train")


def test_nhl_tunes_only_first_conv_and_modulator():
    model = tiny_model()
    op = make(NHL, model, batch_size=8)()
    op(stream(32))
    after = op.net.state_dict()
    before = model.state_dict()
    assert not torch.equal(after["conv1.weight"], before["conv1.weight"])
    for name in ("conv2.weight", "conv3.weight", "head.weight", "head.bias", "bn2.weight"):
        assert torch.equal(after[name], before[name]), f"{name} changed"
    assert not torch.equal(after["bn1.weight"], before["bn1.weight"])   # the layer-1 modulator
    # the Hebbian rule keeps each filter's norm (its gain)
    torch.testing.assert_close(after["conv1.weight"].flatten(1).norm(dim=1),
                               before["conv1.weight"].flatten(1).norm(dim=1))


def test_nhl_inserts_a_modulator_when_no_norm_follows_conv1():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    op = NHL(model, batch_size=4, adapt_norm=False, lr=1e-2, device="cpu")
    op(stream(12))
    assert isinstance(op.net[0], nn.Sequential) and op.adapted == 3


def test_reset_policies():
    data = stream(48)
    op = make(Tent, batch_size=8, reset="every:16")()
    op(data)
    assert op.resets == 3
    episodic = make(Tent, batch_size=8, reset="episodic")()
    out = episodic(data)
    assert episodic.resets == 6
    assert np.isfinite(out.numpy("confidence")).all()
    op = make(Tent, batch_size=8)()
    op(data)
    op.reset()
    torch.testing.assert_close(op.net.state_dict()["bn1.weight"], tiny_model().bn1.weight)
    with pytest.raises(ConfigError, match="unknown reset policy"):
        make(Tent, reset="sometimes")()


def test_collapse_policy_compares_with_the_source_model():
    """A reset when the adapted predictions are much less diverse than the source's on
    the same rows; a source model that itself predicts one class (a stream ordered by
    class) is not a collapse. Its windows survive a checkpoint."""
    diverse = np.arange(32) % 10
    policy = make_policy("collapse:32:0.1")
    assert not policy.after_batch(np.zeros(32, dtype=int), 10, reference=np.zeros(32, dtype=int))
    policy.clear()
    assert not policy.after_batch(diverse[:16] * 0, 10, reference=diverse[:16])     # window not full
    restored = make_policy("collapse:32:0.1")
    restored.load_state_dict(state.loads(*state.dumps(policy.state_dict())))
    assert restored.after_batch(diverse[16:] * 0, 10, reference=diverse[16:])
    with pytest.raises(ConfigError, match="collapse"):
        make_policy("collapse:32:1.5")


def test_lr_scales_with_batch_size_and_defaults():
    """``lr`` is the rate at batch 64; Tent and NHL reset on collapse by default."""
    for bs in (1, 16, 64):
        assert Tent(tiny_model(), batch_size=bs, lr=1e-3).optimizer.param_groups[0]["lr"] == pytest.approx(
            1e-3 * bs / 64)
    nhl = NHL(tiny_model(), batch_size=2, hebbian_lr=0.64)
    assert nhl.scaled(nhl.hebbian_lr) == pytest.approx(0.02)
    for cls in (Tent, NHL):
        assert cls(tiny_model()).policy.spec.startswith("collapse")
    assert NormAdapt(tiny_model()).policy.spec == "none"
    assert Tent(tiny_model(), reset="none").policy.spec == "none"


def test_outputs_and_repr():
    op = make(NHL, batch_size=4)()
    out = op(stream(10))
    assert out.column_names == ["image", "prediction", "confidence", "entropy"]
    assert out.schema.field("prediction").type == pa.int64()
    conf = out.numpy("confidence")
    assert ((conf > 0) & (conf <= 1)).all()
    assert repr(op).startswith("NHL(model='SmallCNN', ") and "batch_size=4" in repr(op)


# -- bad input ----------------------------------------------------------------------------------
def test_model_without_the_layers_a_method_needs():
    no_bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 10))
    with pytest.raises(ConfigError, match="no normalisation layer with affine"):
        Tent(no_bn)
    with pytest.raises(ConfigError, match="no BatchNorm"):
        NormAdapt(no_bn)
    no_affine = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2, affine=False), nn.Flatten(), nn.Linear(72, 10))
    with pytest.raises(ConfigError, match=r"found only '1' \(GroupNorm\)"):
        Tent(no_affine)
    no_conv = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10))
    with pytest.raises(ConfigError, match="first Conv1d or Conv2d layer, and it has no convolution"):
        NHL(no_conv)
    with pytest.raises(ConfigError, match="'0' is a Conv3d"):
        NHL(nn.Sequential(nn.Conv3d(1, 2, 3), nn.Flatten(), nn.LazyLinear(10)))
    with pytest.raises(ConfigError, match="must be a torch nn.Module"):
        Tent("model.pt")
    with pytest.raises(ConfigError, match="needs a model"):
        NHL()
    with pytest.raises(ConfigError, match="batch_size"):
        Tent(tiny_model(), batch_size=0)


def test_wrong_image_shape_dtype_and_column():
    op = make(Tent, batch_size=4)()
    rgb = Batch(pa.record_batch({"image": to_arrow(images(4, shape=(3, 8, 8)))}), source="cam")
    with pytest.raises(SchemaError, match="3 channel.*takes 1"):
        op(rgb)
    ints = Batch(pa.record_batch({"image": to_arrow((images(4) * 255).astype(np.uint8))}))
    with pytest.raises(SchemaError, match="floating point.*uint8"):
        make(Tent)()(ints)
    flat = Batch(pa.record_batch({"image": pa.array([[0.5] * 64] * 4)}))
    with pytest.raises(SchemaError, match="fixed-shape tensor"):
        make(Tent)()(flat)
    with pytest.raises(SchemaError, match="expects"):
        make(Tent, image_shape=(28, 28))()(stream(4))
    with pytest.raises(SchemaError, match="'pixels'"):
        make(Tent, column="pixels")()(stream(4))
    tiny = Batch(pa.record_batch({"image": to_arrow(images(4, shape=(1, 1)))}))
    with pytest.raises(SchemaError, match="cannot take samples"):
        make(Tent)()(tiny)
    op = make(Tent)()
    op(stream(4))
    with pytest.raises(SchemaError, match="changed mid-stream"):
        op(Batch(pa.record_batch({"image": to_arrow(images(4, shape=(10, 10)))})))


def test_image_layouts_read_as_written():
    """``to_arrow(x[:, None])`` (a view with a stride-0 channel axis) once came out as a
    permuted (8, 8, 1) tensor type read as "images have 8 channel(s)"; a column from
    elsewhere whose physical layout is HWC with a permutation to CHW is read as CHW."""
    x = images(12)
    ref = make(Source)()(Batch(pa.record_batch({"image": to_arrow(x)}))).numpy("entropy")
    view = Batch(pa.record_batch({"image": to_arrow(x[:, None])}))
    np.testing.assert_array_equal(make(Source)()(view).numpy("entropy"), ref)
    hwc = np.ascontiguousarray(x[..., None])                         # (N, 8, 8, 1) in memory
    typ = pa.fixed_shape_tensor(pa.float32(), [8, 8, 1], permutation=[2, 0, 1])
    permuted = pa.ExtensionArray.from_storage(typ, pa.FixedSizeListArray.from_arrays(pa.array(hwc.ravel()), 64))
    np.testing.assert_array_equal(make(Source)()(Batch(pa.record_batch({"image": permuted}))).numpy("entropy"), ref)
    transposed = make(Source)()(Batch(pa.record_batch({"image": to_arrow(x.transpose(0, 2, 1))})))
    direct = make(Source)()(Batch(pa.record_batch({"image": to_arrow(np.ascontiguousarray(x.transpose(0, 2, 1)))})))
    np.testing.assert_array_equal(transposed.numpy("entropy"), direct.numpy("entropy"))


def test_nan_pixels_name_the_row():
    x = images(10)
    x[6, 3, 2] = np.nan
    bad = Batch(pa.record_batch({"image": to_arrow(x)}), source="cam.arrow", offset=100)
    with pytest.raises(BadEventError, match=r"cam.arrow, row 106.*'image' has 1 NaN/inf pixel"):
        make(NHL, batch_size=4)()(bad)


def test_empty_batch_is_an_error():
    empty = stream(4).slice(0, 0)
    with pytest.raises(BadEventError, match="empty batch"):
        make(Tent)()(empty)


def test_model_path_and_arch(tmp_path):
    model = tiny_model()
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    a = Tent(model, batch_size=4, device="cpu")(stream(12))
    b = Tent(model_path=str(path), arch="small_cnn", arch_params={"width": 4}, batch_size=4,
             device="cpu")(stream(12))
    assert_same_outputs(a, b, "model from file")
    with pytest.raises(ConfigError, match="unknown model architecture"):
        Tent(model_path=str(path), arch="resnet9000")
    with pytest.raises(ConfigError, match="do not fit"):
        Tent(model_path=str(path), arch="small_cnn", arch_params={"width": 8})
    with pytest.raises(ConfigError, match="no such file"):
        Tent(model_path=str(tmp_path / "missing.pt"), arch="small_cnn")
