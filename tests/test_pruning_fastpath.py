"""The TorchScript batch-1 path: strided max pooling and the no-gather (all kept) layers."""

import pytest
import torch
import torch.nn.functional as F
from pruning_helpers import check_fast_path
from torch import nn

from operators.pruning.executor import SparseExecutor
from operators.pruning.fastpath import _max_pool
from operators.pruning.network import PrunableNetwork


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (1, 5, 9, 7), (2, 4, 11, 10)])
@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 3), (1, 2)])
def test_strided_max_pool_equals_max_pool2d(shape, kernel):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    assert torch.equal(_max_pool(x, *kernel), F.max_pool2d(x, kernel, kernel))


def pattern_net(biases, pool=3):
    """Odd sizes, widths off the bucket, one predictor bias per layer (±50: keep all/one)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(10, 12, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(12, 9, 3, padding=1), nn.BatchNorm2d(9), nn.ReLU(), nn.MaxPool2d(pool),
                          nn.Conv2d(9, 14, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(14, 4))
    net = PrunableNetwork(model, (1, 7, 7), seed=2).eval()
    with torch.no_grad():
        for pred, bias in zip(net.predictors, biases, strict=True):
            pred.linear.bias.fill_(bias)
    return net


@pytest.mark.parametrize("biases", [(50, 0, 50, 0), (0, 50, 0, 50), (50, 50, 0, 50), (0, 0, 50, 50),
                                    (-50, 50, -50, 50), (0.2, 0.1, 0.0, -0.1)])
def test_fast_path_with_fully_kept_layers_matches_masked_dense(biases):
    net = pattern_net(biases)
    for a, b in check_fast_path(net, (1, 1, 7, 7)):
        torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=1e-5)


def test_dense_mode_is_the_same_fast_path_with_every_filter_kept():
    net = pattern_net((0.2, 0.1, 0.0, -0.1))
    dense = SparseExecutor(net, "dense")
    assert dense.fast is not None
    x = torch.randn(1, 1, 7, 7, generator=torch.Generator().manual_seed(7))
    out = dense(x)
    with torch.no_grad():
        ref = net(x, masks="none")
    assert out.kept.tolist() == [[10, 12, 9, 14]]
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dense.fast(x, True)[0], out.logits)


def test_fast_path_sees_online_predictor_updates_without_a_rebuild():
    net = pattern_net((50, 50, 50, 50))
    fast = SparseExecutor(net)
    x = torch.randn(1, 1, 7, 7, generator=torch.Generator().manual_seed(8))
    assert fast(x).kept.tolist() == [[10, 12, 9, 14]]
    with torch.no_grad():                      # as an optimizer step would: in place
        net.predictors[2].linear.bias.fill_(-50)
    out, ref = fast(x), SparseExecutor(net, fast=False)(x)
    assert out.kept.tolist() == ref.kept.tolist() == [[10, 12, 1, 14]]
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=1e-5)


def test_fast_path_records_no_autograd_graph_outside_no_grad():
    net = pattern_net((0.2, 0.1, 0.0, -0.1))
    x = torch.randn(1, 1, 7, 7, requires_grad=True)
    for mode in ("union", "dense"):
        out = SparseExecutor(net, mode)(x)
        assert not out.logits.requires_grad and out.logits.grad_fn is None
