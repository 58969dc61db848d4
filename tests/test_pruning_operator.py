"""The DynamicPruning operator: shadow learning, state, bad input."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from operators.pruning import DynamicPruning, PrunableNetwork, save_network
from operators.pruning.operator import shadow_draw
from stream import Batch
from stream import state as state_codec
from stream.errors import BadEventError, ConfigError, SchemaError
from stream.registry import lookup

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def small_net(bias=0.5):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4))
    return PrunableNetwork(model, (1, 8, 8), init_bias=bias, seed=0)


def images(n=40, seed=0, shape=(8, 8)):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def stream_of(x, source="images"):
    tensors = pa.FixedShapeTensorArray.from_numpy_ndarray(np.array(x, order="C", copy=True))
    return Batch(pa.record_batch({"image": tensors}), source=source)


def factory(**kw):
    net = small_net()
    return lambda: DynamicPruning(net, r=0.85, shadow_fraction=0.3, seed=7, device="cpu", **kw)


def test_outputs_flops_and_shadow_learning():
    op = factory()()
    out = op(stream_of(images(60)))
    flops = out.numpy("flops")
    dense = op.network.flops.count([[8, 12, 12]], predictors=True)[0]
    assert (flops > 0).all() and (flops <= dense).all() and (flops < dense).any()
    shadow = out.numpy("shadow")
    assert op.stats["shadow_events"] == shadow.sum() > 0
    assert op.stats["events"] == 60
    assert (out.numpy("missed_filters")[~shadow] == 0).all()
    assert op.stats["missed_filters"] == out.numpy("missed_filters").sum()
    assert 0.0 <= op.miss_rate <= 1.0
    conf = out.numpy("confidence")
    assert ((conf >= 0.25 - 1e-6) & (conf <= 1.0)).all()
    assert set(out.numpy("prediction").tolist()) <= set(range(4))


def test_online_updates_lower_the_mask_loss():
    op = DynamicPruning(small_net(bias=-1.0), r=0.9, shadow_fraction=1.0, lr=0.05, device="cpu")
    probe = torch.from_numpy(images(20, seed=1))[:, None]

    def loss():
        with torch.no_grad():
            out = op.network(probe, r=0.9, masks="none")
            from operators.pruning.masks import mask_loss
            return float(mask_loss(out.mask_logits, out.targets))

    before = loss()
    op(stream_of(images(60, seed=2)))
    assert loss() < 0.8 * before


def test_shadow_draw_is_counter_based_and_seeded():
    a = shadow_draw(3, np.arange(20000))
    assert np.array_equal(a[5:9], shadow_draw(3, np.arange(5, 9)))
    assert not np.array_equal(a[:100], shadow_draw(4, np.arange(100)))
    assert ((a >= 0) & (a < 1)).all() and abs((a < 0.1).mean() - 0.1) < 0.01


def test_state_round_trip_is_bit_exact_including_optimizer():
    make = factory()
    data = stream_of(images(40))
    whole = make()
    whole(data)
    first = make()
    first(data.slice(0, 17))
    tree, blob = state_codec.dumps(first.state_dict())
    second = make()
    second.load_state_dict(state_codec.loads(tree, blob))
    second(data.slice(17))
    a, b = whole.state_dict(), second.state_dict()
    for k in a["network"]:
        assert torch.equal(a["network"][k], b["network"][k]), k
    for pid, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][pid][k]), (pid, k)
    assert a["stats"] == b["stats"]


def test_list_column_and_channel_first_shape():
    op = factory()()
    x = images(5)
    flat = pa.array(list(x.reshape(5, -1)), type=pa.list_(pa.float32()))
    out_list = op(Batch(pa.record_batch({"image": flat})))
    op2 = factory()()
    out_t = op2(stream_of(x[:, None]))                 # [1, 8, 8] tensors also fit
    assert np.array_equal(out_list.numpy("prediction"), out_t.numpy("prediction"))


def test_built_from_a_saved_file_through_the_registry(tmp_path):
    path = str(tmp_path / "net.pt")
    save_network(small_net(), path)
    op = lookup("operators", "dynamic_pruning")(model=path, r=0.9, device="cpu")
    assert op(stream_of(images(3))).num_rows == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"r": 0.0}, r"r must be a number in \(0, 1\]"),
    ({"r": 1.5}, r"r must be a number in \(0, 1\]"),
    ({"shadow_fraction": 2.0}, "shadow_fraction"),
    ({"batch_mode": "dense"}, "batch_mode"),
    ({"input_shape": (1, 9, 9)}, "does not match"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DynamicPruning(small_net(), device="cpu", **kwargs)


def test_bad_models():
    with pytest.raises(ConfigError, match="no Conv2d"):
        DynamicPruning(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="input_shape"):
        DynamicPruning(small_net().backbone)
    with pytest.raises(TypeError, match="model must be"):
        DynamicPruning(42)


def test_wrong_image_shape_is_a_schema_error_naming_the_column():
    op = factory()()
    with pytest.raises(SchemaError, match=r"column 'image' holds tensors of shape \(9, 9\)"):
        op(stream_of(images(3, shape=(9, 9))))
    with pytest.raises(SchemaError, match="lists of 10 numbers"):
        op(Batch(pa.record_batch({"image": pa.array([[0.0] * 10], type=pa.list_(pa.float32(), 10))})))
    with pytest.raises(SchemaError, match="needs column 'pixels'"):
        DynamicPruning(small_net(), column="pixels", device="cpu")(stream_of(images(2)))


def test_bad_rows_name_the_row():
    op = factory()()
    x = images(6)
    x[4, 2, 3] = np.nan
    with pytest.raises(BadEventError, match=r"images, row 4.*NaN"):
        op(stream_of(x))
    ragged = pa.array([[0.0] * 64, [0.0] * 63], type=pa.list_(pa.float32()))
    with pytest.raises(BadEventError, match=r"images, row 1.*63 numbers"):
        op(Batch(pa.record_batch({"image": ragged}), source="images"))
