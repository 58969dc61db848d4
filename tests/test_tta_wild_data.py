"""The wild TTA benchmark's data: rendered characters are deterministic, cached outside
the repository and labelled in balance; colour corruptions keep the three channels'
geometry aligned and draw pixel noise per channel; the ResNet-style model builds with
either normalisation and adapts; trained source models are cached outside the repository."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from operators.tta import SAR, NormAdapt
from operators.tta.models import build_model
from stream import Batch
from stream.batch import to_arrow
from stream.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

BENCH = Path(__file__).parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_module():
    sys.path.insert(0, str(BENCH))
    try:
        yield _load("tta_wild_data")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def models_module(data_module):
    sys.path.insert(0, str(BENCH))
    try:
        yield _load("tta_wild_models")
    finally:
        sys.path.remove(str(BENCH))


def test_rendering_is_deterministic_and_cached_outside_the_repo(data_module, tmp_path, monkeypatch):
    monkeypatch.setenv("HEBBSTREAM_CACHE", str(tmp_path))
    a = data_module.characters(64, seed=3)
    b = data_module.characters(64, seed=3)
    assert Path(a["cache"]).is_relative_to(tmp_path) and Path(a["cache"]).exists()
    assert a["images"].shape == (64, 3, 32, 32) and a["images"].dtype == np.float32
    np.testing.assert_array_equal(a["images"], b["images"])
    assert 0.0 <= a["images"].min() and a["images"].max() <= 1.0
    assert np.bincount(a["labels"], minlength=32).tolist() == [2] * 32
    assert a["fonts"] and any("DejaVu" in f for f in a["fonts"])
    fonts = data_module.usable_fonts()
    assert data_module.render(4, 0, fonts)[0].std() > 0      # not blank
    assert not np.array_equal(data_module.render(4, 1, fonts)[0], data_module.render(4, 0, fonts)[0])


def test_colour_corruptions(data_module):
    gray = np.random.default_rng(0).random((3, 1, 16, 16)).astype(np.float32).repeat(3, axis=1)
    for name in ("motion_blur", "elastic_transform", "snow", "fog"):
        out = data_module.corrupt_rgb(gray, name, 5, seed=2)
        np.testing.assert_allclose(out[:, 0], out[:, 1], atol=1e-6, err_msg=name)   # same geometry per channel
    noisy = data_module.corrupt_rgb(gray, "gaussian_noise", 5, seed=2)
    assert not np.allclose(noisy[:, 0], noisy[:, 1])                                  # noise per channel
    assert noisy.shape == gray.shape and noisy.dtype == np.float32


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_small_resnet_builds_and_adapts(norm):
    torch.manual_seed(0)
    net = build_model("small_resnet", num_classes=5, width=4, norm=norm).eval()
    x = np.random.default_rng(0).random((8, 3, 12, 12), dtype=np.float32)
    op = SAR(net, batch_size=4, lr=0.1, entropy_margin=1.0, device="cpu")
    out = op(Batch(pa.record_batch({"image": to_arrow(x)})))
    assert out.numpy("prediction").shape == (8,) and op.adapted == 2
    if norm == "group":
        with pytest.raises(ConfigError, match="no BatchNorm"):
            NormAdapt(net)
    with pytest.raises(ConfigError, match="norm must be"):
        build_model("small_resnet", norm="layer")


def test_source_model_is_trained_once_then_read_from_the_cache(models_module, tmp_path, monkeypatch):
    monkeypatch.setenv("HEBBSTREAM_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    data = {"images": rng.random((32, 3, 16, 16), dtype=np.float32), "labels": np.arange(32) % 32,
            "cache": str(tmp_path / "chars-32-0-x.npz")}
    first, info = models_module.source_model(data, "group", width=4, stem_stride=2, steps=2, seed=0)
    again, info2 = models_module.source_model(data, "group", width=4, stem_stride=2, steps=2, seed=0)
    assert not info["cached"] and info2["cached"] and Path(info2["file"]).is_relative_to(tmp_path)
    for (k, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    assert not again.training
    other, info3 = models_module.source_model(data, "group", width=4, stem_stride=2, steps=3, seed=0)
    assert not info3["cached"]       # another recipe is another file
