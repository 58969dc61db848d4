"""Wrapping a CNN, FLOPs counted by hand, and the sparse executor against the dense model."""

import pytest
import torch
from torch import nn

import operators.pruning.executor as executor_mod
from operators.pruning.executor import MODES, SparseExecutor
from operators.pruning.network import PrunableNetwork, binarize
from operators.pruning.spec import load_network, save_network

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def known_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),   # 8x8 -> 4x4
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(),         # 4x4 -> 2x2
        nn.Flatten(), nn.Linear(24, 5), nn.ReLU(), nn.Linear(5, 2))


def random_net(seed=0, bias=0.0):
    """A net with trained-looking BN statistics and predictors that keep about half."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=2, dilation=2), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.5),
        nn.Conv2d(12, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 7))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    net = PrunableNetwork(model, (2, 10, 10), init_bias=bias, seed=seed).eval()
    return net


def test_flops_counted_by_hand_on_a_known_network():
    net = PrunableNetwork(known_model(), (3, 8, 8))
    # conv1: 4 * 3 * 9 * 64; conv2: 6 * 4 * 9 * (2*2); linear 24*5; linear 5*2
    assert net.flops.dense() == 4 * 3 * 9 * 64 + 6 * 4 * 9 * 4 + 24 * 5 + 5 * 2 == 7906
    # 2 and 3 filters kept: the next layer's inputs and the first linear's columns shrink too
    assert net.flops.count([[2, 3]]) == [2 * 3 * 9 * 64 + 3 * 2 * 9 * 4 + 3 * 4 * 5 + 5 * 2]
    # predictors: 3 -> 4 on the image, then 2 kept inputs -> 6
    assert net.flops.count([[2, 3]], predictors=True) == [3742 + 3 * 4 + 2 * 6]
    assert net.flops.count([[4, 6], [1, 1]]) == [7906, 1 * 3 * 9 * 64 + 1 * 9 * 4 + 4 * 5 + 10]


def test_pruned_output_equals_dense_when_every_filter_is_kept():
    net = random_net(bias=50.0)            # every keep logit is hugely positive
    x = torch.randn(5, 2, 10, 10)
    with torch.no_grad():
        dense = net.backbone(x)
    for mode in MODES:
        for xb in (x[:1], x):
            out = SparseExecutor(net, mode)(xb)
            torch.testing.assert_close(out.logits, dense[:len(xb)], atol=1e-5, rtol=1e-5)
            assert out.kept.tolist() == [[8, 12, 16]] * len(xb)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "dense"])
def test_sparse_executor_matches_masked_dense(mode):
    net = random_net(seed=3)
    x = torch.randn(6, 2, 10, 10)
    with torch.no_grad():
        ref = net(x)
    kept = torch.stack([m.sum(1) for m in ref.masks], 1)
    assert 0 < kept.float().mean() < 12, "the test needs masks that drop some filters"
    for xb, kb, lo in ((x, kept, 0), (x[2:3], kept[2:3], 2)):
        out = SparseExecutor(net, mode)(xb, return_masks=True)
        torch.testing.assert_close(out.logits, ref.logits[lo:lo + len(xb)], atol=1e-5, rtol=1e-4)
        assert torch.equal(out.kept, kb)
        for got, want in zip(out.masks, ref.masks, strict=True):
            assert torch.equal(got, want[lo:lo + len(xb)])


def test_batch_one_runs_smaller_convolutions(monkeypatch):
    net = random_net(seed=3)
    x = torch.randn(1, 2, 10, 10)
    shapes = []
    real = executor_mod.F.conv2d

    def spy(inp, weight, *args, **kwargs):
        shapes.append(tuple(weight.shape[:2]))
        return real(inp, weight, *args, **kwargs)

    monkeypatch.setattr(executor_mod.F, "conv2d", spy)
    out = SparseExecutor(net, "union")(x)
    k = out.kept[0].tolist()
    assert shapes == [(k[0], 2), (k[1], k[0]), (k[2], k[1])]
    assert sum(out.kept[0].tolist()) < 8 + 12 + 16
    assert shapes[1][0] * shapes[1][1] < 12 * 8 or shapes[2][0] * shapes[2][1] < 16 * 12


def test_binarize_keeps_at_least_one_filter():
    logits = torch.tensor([[-3.0, -1.0, -2.0], [1.0, -1.0, 2.0]])
    assert binarize(logits).tolist() == [[False, True, False], [True, False, True]]


def test_training_forward_gives_targets_and_dense_mode():
    net = random_net()
    out = net(torch.randn(3, 2, 10, 10), r=0.9, masks="none")
    assert out.masks == [None, None, None]
    assert [t.shape for t in out.targets] == [(3, 8), (3, 12), (3, 16)]
    assert all(((t == 0) | (t == 1)).all() for t in out.targets)


def test_save_and_load_round_trip(tmp_path):
    net = random_net(seed=5)
    path = str(tmp_path / "net.pt")
    save_network(net, path)
    back = load_network(path).eval()
    x = torch.randn(2, 2, 10, 10)
    assert torch.equal(SparseExecutor(back)(x).logits, SparseExecutor(net)(x).logits)
    with pytest.raises(ValueError, match="cannot load a pruning network from"):
        load_network(str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("model, shape, match", [
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), (1, 8, 8), "no Conv2d layer"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.LayerNorm([4, 6, 6]), nn.Flatten(), nn.Linear(144, 2)),
     (1, 8, 8), "unsupported layer type LayerNorm"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Flatten(),
                   nn.Linear(576, 2)), (1, 8, 8), "unsupported layer type Upsample"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(144, 2)), (2, 8, 8), "groups=1"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(6, 2)), (1, 8, 8), "needs a Flatten"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), (1, 8, 8), "classifier head"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(10, 2)), (1, 8, 8), "takes 10 features"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2)), (1, 8, 8), "does not accept input"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 2)), (1, 8), "input_shape"),
    (nn.Sequential(nn.ReLU(), nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 2)), (1, 8, 8),
     "must start with a Conv2d"),
])
def test_bad_models_are_rejected_with_a_clear_error(model, shape, match):
    with pytest.raises(ValueError, match=match):
        PrunableNetwork(model, shape)


def test_non_sequential_model_is_rejected():
    class Net(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="nn.Sequential"):
        PrunableNetwork(Net(), (1, 8, 8))


def fast_net(bias, head="gap"):
    torch.manual_seed(1)
    tail = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)] if head == "gap" else \
        [nn.Flatten(), nn.Linear(16 * 4, 5), nn.ReLU(), nn.Linear(5, 3)]
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(12, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), *tail)
    return PrunableNetwork(model, (1, 8, 8), init_bias=bias, seed=1).eval()


@pytest.mark.parametrize("head", ["gap", "flatten"])
@pytest.mark.parametrize("bias", [-5.0, 0.0, 0.3, 50.0])
def test_torchscript_fast_path_matches_python_path_and_masked_dense(head, bias):
    net = fast_net(bias, head)
    fast, slow = SparseExecutor(net), SparseExecutor(net, fast=False)
    assert fast.fast is not None and slow.fast is None
    for seed in range(4):
        x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        a, b = fast(x), slow(x)
        with torch.no_grad():
            ref = net(x)
        assert torch.equal(a.kept, b.kept)
        assert a.kept.tolist() == [[int(m.sum()) for m in ref.masks]]
        torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a.logits, ref.logits, atol=1e-5, rtol=1e-4)


def test_fast_path_declines_what_it_does_not_cover():
    assert SparseExecutor(random_net()).fast is None      # dilation is fine; AdaptiveAvgPool2d(2) is not
