"""No TTA method collapses at batch size 1 with its defaults: on a stream of shifted 8×8
digits, the error on the stream's last quarter never exceeds the source model's.

The shifts are ones the hyper-parameters were never chosen on (translation, 3×3
erasing, salt-and-pepper, per-image contrast and offset, inversion). With the former
defaults (a learning rate that did not scale with the batch size) Tent's last-quarter
error at batch 1 was 82 % against the source model's 56 % on the slow test's stream.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from operators.tta import EATA, NHL, SAR, NormAdapt, Source, Tent
from operators.tta.models import build_model, train_classifier
from stream import Batch
from stream.batch import to_arrow

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 8×8 digits in [0, 1]: 1,000 training and 500 test images."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order[:1000]], y[order[:1000]], x[order[1297:]], y[order[1297:]]


@functools.cache
def source_model(width: int, epochs: int, seed: int = 0) -> nn.Module:
    """SmallCNN trained on clean digits (once per module run; TTA operators copy it)."""
    x, y, _, _ = digits(seed)
    torch.manual_seed(seed)  # the weights' initialisation
    return train_classifier(build_model("small_cnn", width=width), x, y, epochs=epochs, seed=seed)


def shifted(x: np.ndarray, seed: int) -> list[np.ndarray]:
    """Five shifted copies of ``x``: translation, erasing, salt-and-pepper, per-image
    contrast and offset, inversion."""
    rng = np.random.default_rng(seed)
    moved = np.roll(x, shift=(int(rng.integers(1, 3)), int(rng.integers(-2, 3))), axis=(1, 2))
    erased = x.copy()
    for img, (r, c) in zip(erased, rng.integers(0, 6, (len(x), 2))):
        img[r:r + 3, c:c + 3] = 0
    noisy = x.copy()
    u = rng.random(x.shape)
    noisy[u < 0.05], noisy[u > 0.95] = 0, 1
    a, b = rng.uniform(0.4, 1.0, (len(x), 1, 1)), rng.uniform(-0.1, 0.4, (len(x), 1, 1))
    contrast = np.clip(x * a + b, 0, 1)
    return [v.astype(np.float32) for v in (moved, erased, noisy, contrast, 1 - x)]


def last_quarter_error(op, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.concatenate([op(Batch(pa.record_batch({"image": to_arrow(x[lo:lo + 500])}))).numpy("prediction")
                           for lo in range(0, len(x), 500)])
    q = len(x) * 3 // 4
    return 100.0 * float((pred[q:] != y[q:]).mean())


def shifted_stream(x: np.ndarray, y: np.ndarray, repeat: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [s for r in range(repeat) for s in shifted(x, 100 + r)]
    return np.concatenate(parts), np.tile(y, len(parts))


METHODS = {"NormAdapt": (NormAdapt, {}), "Tent": (Tent, {}), "NHL": (NHL, {}),
           "NHL all_norm": (NHL, {"modulator": "all_norm"}), "EATA": (EATA, {}), "SAR": (SAR, {}),
           # the former default step at batch 1 (1e-3 unscaled): the collapse reset must catch it
           "Tent, unscaled rate": (Tent, {"lr": 1e-3 * 64})}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_no_collapse_at_batch_one_over_5000_rows(method):
    _, _, xte, yte = digits()
    model = source_model(width=16, epochs=40)
    x, y = shifted_stream(xte, yte, repeat=2)                      # 5,000 rows
    assert len(x) >= 5000
    source = last_quarter_error(Source(model, device="cpu"), x, y)
    cls, kw = METHODS[method]
    err = last_quarter_error(cls(model, batch_size=1, device="cpu", **kw), x, y)
    assert err <= source, f"{method} at batch 1: last-quarter error {err:.1f} % > Source's {source:.1f} %"


@pytest.mark.parametrize("method", ["Tent", "NHL all_norm"])
def test_no_collapse_at_batch_one_short(method):
    """The default suite's variant: a smaller model and 600 rows (150 each of translation,
    inversion, salt-and-pepper, erasing). With the former default step and no reset
    (``lr=0.064, reset="none"``) Tent's last-quarter error here is 50 % against the
    source model's 31 %."""
    _, _, xte, yte = digits()
    model = source_model(width=8, epochs=20)
    parts = shifted(xte, 100)
    x = np.concatenate([parts[i][:150] for i in (0, 4, 2, 1)])
    y = np.tile(yte[:150], 4)
    source = last_quarter_error(Source(model, device="cpu"), x, y)
    cls, kw = METHODS[method]
    err = last_quarter_error(cls(model, batch_size=1, device="cpu", **kw), x, y)
    assert err <= source, f"{method} at batch 1: last-quarter error {err:.1f} % > Source's {source:.1f} %"


@pytest.mark.parametrize("method", ["NormAdapt", "Tent"])
def test_no_collapse_on_a_class_sorted_stream_at_batch_64(method):
    """The online label shift of the wild settings: each shift's rows sorted by class, so
    a mini-batch of 64 holds one or two digits. With the default statistics window the
    error on the last quarter stays at most the source model's (with a window of 64 it
    was 38 % against 33 % for NormAdapt, 38 % for Tent)."""
    _, _, xte, yte = digits()
    model = source_model(width=8, epochs=20)
    order = np.argsort(yte, kind="stable")
    parts = shifted(xte[order], 100)
    x, y = np.concatenate([parts[i] for i in (0, 2, 1)]), np.tile(yte[order], 3)
    source = last_quarter_error(Source(model, device="cpu"), x, y)
    cls, kw = METHODS[method]
    err = last_quarter_error(cls(model, batch_size=64, device="cpu", **kw), x, y)
    assert err <= source, f"{method} on a class-sorted stream: last-quarter error {err:.1f} % > Source's {source:.1f} %"


def test_collapse_reset_catches_a_collapse_and_not_a_class_ordered_stream():
    """A far too large step collapses Tent onto a few classes; the default reset sends it
    back to the source weights. A clean stream sorted by class makes the source model's
    predictions as one-sided as the adapted model's: no reset."""
    _, _, xte, yte = digits()
    model = source_model(width=8, epochs=20)
    x = np.concatenate(shifted(xte, 100)[:2])
    wild = Tent(model, batch_size=8, lr=64.0, reset="none", device="cpu")
    out = wild(Batch(pa.record_batch({"image": to_arrow(x)}))).numpy("prediction")
    assert len(np.unique(out[-256:])) <= 3                  # collapsed without a reset
    guarded = Tent(model, batch_size=8, lr=64.0, device="cpu")
    guarded(Batch(pa.record_batch({"image": to_arrow(x)})))
    assert guarded.resets >= 1
    order = np.argsort(yte, kind="stable")
    ordered = Tent(model, batch_size=8, device="cpu")
    ordered(Batch(pa.record_batch({"image": to_arrow(np.concatenate([xte[order]] * 2))})))
    assert ordered.resets == 0
