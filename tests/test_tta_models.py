"""TTA operators on the models users deploy: Conv1d signal models, GroupNorm and
LayerNorm networks, samples of any rank, and errors naming the missing layer or layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from operators.tta import NHL, NormAdapt, Source, Tent
from stream import Batch
from stream.batch import to_arrow
from stream.errors import ConfigError, SchemaError
from stream.testing import check_operator

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def conv1d_model() -> nn.Module:
    """A 1-D sensor model (MNIST-1D style): Conv1d-BN-ReLU ×2, global pool, linear head."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.BatchNorm1d(4), nn.ReLU(),
                          nn.Conv1d(4, 8, 3, padding="same"), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 10))
    return model.eval()


def groupnorm_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()


def layernorm_model() -> nn.Module:
    """A transformer-like block on flattened 8×8 images: no convolution, LayerNorm only."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LayerNorm(16), nn.GELU(),
                         nn.Linear(16, 10)).eval()


def batch(x: np.ndarray) -> Batch:
    return Batch(pa.record_batch({"image": to_arrow(x)}), source="sensors")


def signals(n: int = 32, length: int = 40) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, length)).astype(np.float32)


def images(n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).random((n, 8, 8), dtype=np.float32)


@pytest.mark.parametrize("cls", [Source, NormAdapt, Tent, NHL], ids=lambda c: c.__name__)
def test_conv1d_model_takes_signals_with_or_without_the_channel_axis(cls):
    x = signals()
    kw = {"lr": 1.0} if cls in (Tent, NHL) else {}
    flat, with_axis = (cls(conv1d_model(), batch_size=4, device="cpu", **kw) for _ in range(2))
    a, b = flat(batch(x)), with_axis(batch(x[:, None]))
    np.testing.assert_allclose(a.numpy("entropy"), b.numpy("entropy"), rtol=1e-5, atol=1e-6)
    if cls is not Source:
        src = Source(conv1d_model(), device="cpu")(batch(x))
        assert not np.allclose(a.numpy("entropy")[4:], src.numpy("entropy")[4:])   # it adapted


def test_conv1d_contract_and_hebbian_rule_match_conv2d():
    """NHL's Hebbian step on a Conv1d is the step on the equivalent 1-high Conv2d."""
    check_operator(lambda: NHL(conv1d_model(), batch_size=4, hebbian_lr=5.0, device="cpu"),
                   batch(signals(20)), batch_size=4)
    m1 = conv1d_model()
    m2 = nn.Sequential(nn.Conv2d(1, 4, (1, 5), padding=(0, 2)), nn.BatchNorm2d(4), nn.ReLU(),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    with torch.no_grad():
        m2[0].weight.copy_(m1[0].weight.unsqueeze(2))
        m2[0].bias.copy_(m1[0].bias)
    x = signals(16)
    ops = [NHL(m, batch_size=8, hebbian_lr=5.0, lr=0, device="cpu") for m in (m1, m2)]
    ops[0](batch(x))
    ops[1](batch(x[:, None, None, :]))
    torch.testing.assert_close(ops[0].conv.weight, ops[1].conv.weight.squeeze(2))
    assert not torch.allclose(ops[0].conv.weight, m1[0].weight)


@pytest.mark.parametrize("model", [groupnorm_model, layernorm_model], ids=["GroupNorm", "LayerNorm"])
def test_tent_adapts_groupnorm_and_layernorm_affine(model):
    op = Tent(model(), batch_size=8, lr=1.0, device="cpu")
    op(batch(images()))
    norms = [(n, m) for n, m in op.net.named_modules() if isinstance(m, (nn.GroupNorm, nn.LayerNorm))]
    before = dict(model().named_modules())
    assert norms and all(not torch.equal(m.weight, before[n].weight) for n, m in norms)
    assert torch.equal(op.net[-1].weight, model()[-1].weight)          # the head is frozen


def test_nhl_modulates_groupnorm_after_conv1_and_inserts_one_before_layernorm():
    op = NHL(groupnorm_model(), batch_size=8, lr=1.0, device="cpu")
    op(batch(images()))
    assert not torch.equal(op.net[1].weight, groupnorm_model()[1].weight)   # GroupNorm's affine is the modulator
    assert torch.equal(op.net[4].weight, groupnorm_model()[4].weight)
    ln = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LayerNorm([4, 6, 6]), nn.Flatten(), nn.Linear(144, 10)).eval()
    op = NHL(ln, batch_size=8, lr=1.0, device="cpu")
    op(batch(images()))
    assert isinstance(op.net[0], nn.Sequential)       # a channel-wise modulator after conv1
    with pytest.raises(ConfigError, match=r"'1' \(LayerNorm\).*use Tent"):
        NormAdapt(ln)


def test_normadapt_refuses_models_without_batchnorm_naming_the_layers():
    with pytest.raises(ConfigError, match=r"no BatchNorm layer.*'1' \(GroupNorm\), '4' \(GroupNorm\).*Tent"):
        NormAdapt(groupnorm_model())
    with pytest.raises(ConfigError, match="first Conv1d or Conv2d layer, and it has no convolution"):
        NHL(layernorm_model())


def test_layouts_that_do_not_fit_name_the_layer_and_layout():
    op = Tent(conv1d_model(), device="cpu")
    with pytest.raises(SchemaError, match=r"sensors: Tent column 'image': samples of shape \(8, 8\) have 8 "
                                          r"channel\(s\), the model's first convolution '0' \(Conv1d\) takes 1 "
                                          r"\(layout \(C, L\)"):
        op(batch(images(4)))
    with pytest.raises(SchemaError, match=r"\(2, 3, 40\) do not fit .*'0' \(Conv1d, 1 input channel\(s\)\), "
                                          r"which takes samples \(C, L\) or \(L\) with one channel"):
        Tent(conv1d_model(), device="cpu")(batch(np.zeros((4, 2, 3, 40), np.float32)))
    with pytest.raises(SchemaError, match=r"takes samples \(C, H, W\) or \(H, W\)"):
        Tent(groupnorm_model(), device="cpu")(batch(signals(4)))
    with pytest.raises(SchemaError, match="cannot take samples of shape"):
        Tent(layernorm_model(), device="cpu")(batch(signals(4)))
