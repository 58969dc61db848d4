"""1-D CNNs through the pruning code as their exact 2-D equivalents."""

import pytest
import torch
from pruning_helpers import check_fast_path
from torch import nn

from operators.pruning.conv1d import as_conv2d
from operators.pruning.network import PrunableNetwork

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def model_1d(head="flatten"):
    torch.manual_seed(4)
    tail = [nn.Flatten(), nn.Linear(12 * 5, 3)] if head == "flatten" else \
        [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(12, 3)]
    m = nn.Sequential(nn.Conv1d(2, 6, 5, padding=2), nn.BatchNorm1d(6), nn.ReLU(), nn.MaxPool1d(2),
                      nn.Conv1d(6, 8, 3, padding=2, dilation=2), nn.ReLU(), nn.Dropout1d(0.1),
                      nn.Conv1d(8, 12, 3, stride=2, padding=1), nn.BatchNorm1d(12), nn.ReLU(), *tail)
    with torch.no_grad():                      # trained-looking batch-norm statistics
        for mod in m:
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("head", ["flatten", "gap"])
def test_conversion_is_exact(head):
    m1 = model_1d(head)
    m2 = as_conv2d(m1).eval()
    x = torch.randn(4, 2, 20)
    torch.testing.assert_close(m2(x.unsqueeze(2)), m1(x), atol=1e-6, rtol=1e-5)
    assert m1[0].weight.shape == (6, 2, 5)                  # the original is left alone


@pytest.mark.parametrize("bias", [0.0, 0.4])
def test_pruned_1d_network_runs_the_fast_path_and_counts_1d_flops(bias):
    net = PrunableNetwork(as_conv2d(model_1d()), (2, 1, 20), init_bias=bias, seed=3).eval()
    # conv MACs: out × in × k × L_out; then the 12 × 5 → 3 head
    assert net.flops.dense() == 6 * 2 * 5 * 20 + 8 * 6 * 3 * 10 + 12 * 8 * 3 * 5 + 12 * 5 * 3
    for a, _ in check_fast_path(net, (1, 2, 1, 20)):
        k = a.kept[0].tolist()
        assert net.flops.count([k])[0] == k[0] * 2 * 5 * 20 + k[1] * k[0] * 3 * 10 + k[2] * k[1] * 3 * 5 \
            + k[2] * 5 * 3


def test_unsupported_layers_are_named():
    with pytest.raises(ValueError, match="layer 1: cannot convert GRU"):
        as_conv2d(nn.Sequential(nn.Conv1d(1, 2, 3), nn.GRU(2, 2)))
    with pytest.raises(ValueError, match="layer 0: cannot convert Conv1d"):
        as_conv2d(nn.Sequential(nn.Conv1d(1, 2, 3, padding="same")))
    with pytest.raises(TypeError, match="nn.Sequential"):
        as_conv2d(nn.Conv1d(1, 2, 3))
