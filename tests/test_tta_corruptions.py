"""The corruption library: every corruption at every severity, deterministic by seed,
stronger with severity, and clear errors for bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from operators.tta.corruptions import CORRUPTIONS, VALIDATION, corrupt
from stream.errors import ConfigError

ALL = [*CORRUPTIONS, *VALIDATION]


def digits(n=16, size=8, seed=0):
    """Blocky bright strokes on a dark background, like the 8×8 digits."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size), dtype=np.float32)
    for img in x:
        r, c = rng.integers(1, size - 3, 2)
        img[r:r + 3, c] = 1.0
        img[r, c:c + 3] = 0.7
    return x


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [8, 28])
def test_every_corruption_and_severity(name, size):
    x = digits(size=size)
    changes = []
    for s in range(1, 6):
        y = corrupt(x, name, s, seed=3)
        assert y.shape == x.shape and y.dtype == np.float32
        assert np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
        assert np.array_equal(y, corrupt(x, name, s, seed=3)), "not deterministic"
        changes.append(float(np.abs(y - x).mean()))
    assert changes[-1] > 0, f"{name} does not change the images"
    if name != "elastic_transform":  # CIFAR-10-C trades affine for elastic as severity grows
        assert changes[-1] >= changes[0] * 0.9, f"{name}: severity 5 changes less than severity 1"


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur", "fog", "elastic_transform"])
def test_seed_changes_random_corruptions(name):
    x = digits()
    assert not np.array_equal(corrupt(x, name, 3, seed=0), corrupt(x, name, 3, seed=1))


def test_cifar_scale_round_trip_is_exact_for_8x8():
    # a blur with zero radius at 32×32 must give back the 8×8 image exactly
    from operators.tta.corruptions import _at_cifar_scale

    x = digits()
    ident = _at_cifar_scale(lambda im, s, rng: im)
    np.testing.assert_allclose(ident(x, 1, None), x, atol=1e-6)


def test_frost_is_left_out_and_validation_is_disjoint():
    assert "frost" not in CORRUPTIONS and len(CORRUPTIONS) == 14
    assert not set(CORRUPTIONS) & set(VALIDATION)


def test_bad_arguments():
    x = digits()
    with pytest.raises(ConfigError, match="unknown corruption 'frost'"):
        corrupt(x, "frost", 1)
    with pytest.raises(ConfigError, match="severity must be 1..5"):
        corrupt(x, "fog", 6)
    with pytest.raises(ConfigError, match=r"\(N, H, W\)"):
        corrupt(x[0], "fog", 1)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        corrupt(bad, "fog", 1)
