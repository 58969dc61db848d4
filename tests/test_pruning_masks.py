"""Heatmap-mass targets, ratio checks and the mask loss on hand-made activations."""

import math

import pytest
import torch

from operators.pruning.masks import MIN_SCORE, filter_scores, heatmap_mass_targets, mask_loss
from stream.errors import ConfigError


def _act(peaks, hw=3):
    """One sample whose channel c has a single pixel of value peaks[c] (rest small)."""
    act = torch.zeros(1, len(peaks), hw, hw)
    for c, p in enumerate(peaks):
        act[0, c, c % hw, (2 * c) % hw] = p
    return act


def test_scores_are_spatial_max_of_abs_normalised():
    act = torch.zeros(1, 2, 2, 2)
    act[0, 0] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])   # big mean, max 1
    act[0, 1, 0, 0] = -3.0                                # one pixel, |.| = 3
    assert filter_scores(act).tolist() == [[0.25, 0.75]]


def test_targets_follow_cumulative_mass_in_descending_order():
    act = _act([2.0, 5.0, 0.0, 3.0])          # masses .2 .5 0 .3; order 1, 3, 0
    assert heatmap_mass_targets(act, 0.8).tolist() == [[0.0, 1.0, 0.0, 1.0]]
    assert heatmap_mass_targets(act, 0.79).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert heatmap_mass_targets(act, 0.5).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert heatmap_mass_targets(act, 1.0).tolist() == [[1.0, 1.0, 0.0, 1.0]]
    # the top filter alone is above r: nothing is a target (k varies with the input)
    assert heatmap_mass_targets(act, 0.4).tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_near_silent_filters_are_never_targets():
    act = _act([1.0, 1.0, 1e-7 * 2])
    assert filter_scores(act)[0, 2] <= MIN_SCORE
    assert heatmap_mass_targets(act, 1.0).tolist() == [[1.0, 1.0, 0.0]]


def test_rows_are_independent_and_silent_sample_keeps_nothing():
    act = torch.cat([_act([1.0, 9.0]), torch.zeros(1, 2, 3, 3)])
    assert heatmap_mass_targets(act, 0.9).tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_ten_equal_filters_keep_by_mass():
    act = _act([1.0] * 10, hw=4)
    assert heatmap_mass_targets(act, 0.85).sum().item() == 8      # 0.1 each, 0.8 ≤ .85 < 0.9
    assert heatmap_mass_targets(act, 1.0).sum().item() == 10      # rounding does not drop one


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, 2, float("nan"), True, "0.9", None])
def test_ratio_outside_0_1_is_rejected(bad):
    with pytest.raises(ConfigError, match=r"r must be a number in \(0, 1\]"):
        heatmap_mass_targets(_act([1.0, 2.0]), bad)


def test_activations_must_be_4d():
    with pytest.raises(ValueError, match="N, C, H, W"):
        filter_scores(torch.ones(2, 3))


def test_mask_loss_by_hand():
    # layer 1: 2 samples x 1 filter, layer 2: 1 sample... all batch 2 here
    lg1, t1 = torch.zeros(2, 1), torch.tensor([[1.0], [0.0]])           # BCE ln2 each
    lg2, t2 = torch.tensor([[0.0, 100.0], [0.0, 100.0]]), torch.ones(2, 2)  # ln2 and 0
    # layer 1: mean over batch ln2, sum over 1 filter = ln2; layer 2: ln2 + 0; mean = ln2
    assert math.isclose(float(mask_loss([lg1, lg2], [t1, t2])), math.log(2), rel_tol=1e-6)
