"""Pieces of benchmarks/tta.py: data, source training, streaming through the engine.

Kept apart so the experiments and the benchmark share one implementation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from connectors.memory import MemorySink, MemorySource
from operators.tta import NHL, NormAdapt, Source, Tent
from operators.tta.corruptions import corrupt
from operators.tta.models import build_model, train_classifier
from stream import Batch, run
from stream.batch import to_arrow

METHODS: dict[str, type] = {"Source": Source, "NormAdapt": NormAdapt, "Tent": Tent, "NHL": NHL}


def digits_splits(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """sklearn's 8×8 digits in [0, 1]: train 1000, validation 297, test 500 (by seed)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    parts = {"train": order[:1000], "val": order[1000:1297], "test": order[1297:]}
    return {k: (x[v], y[v]) for k, v in parts.items()}


def train_source(x: np.ndarray, y: np.ndarray, seed: int, epochs: int = 40, width: int = 16) -> nn.Module:
    """The source model: SmallCNN with BatchNorm, Adam, clean images only."""
    torch.manual_seed(seed)  # the weights' initialisation
    return train_classifier(build_model("small_cnn", width=width), x, y, epochs=epochs, seed=seed)


def corrupted_stream(x: np.ndarray, y: np.ndarray, names: list[str], severity: int, seed: int,
                     repeat: int = 1) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int, int]]]:
    """Concatenate the corrupted copies of (x, y), one domain after another.

    ``repeat`` > 1 cycles through the domains that many times with fresh corruption noise
    (the long-stream collapse check). Returns images, labels and (name, start, end)
    segments.
    """
    xs, ys, segments, start = [], [], [], 0
    for r in range(repeat):
        for name in names:
            xc = corrupt(x, name, severity, seed=seed * 1000 + r)
            xs.append(xc)
            ys.append(y)
            segments.append((name, start, start + len(xc)))
            start += len(xc)
    return np.concatenate(xs), np.concatenate(ys), segments


def stream_through(op, images: np.ndarray, micro_batch: int = 100) -> tuple[np.ndarray, float]:
    """Run ``MemorySource | op | MemorySink`` with stream.run; predictions and operator s/sample.

    The runtime's micro-batches (``micro_batch``, 100 by default) deliberately do not
    line up with the operator's mini-batches: the operator must not care.
    """
    sink = MemorySink()
    summary = run(MemorySource({"image": images}, batch_size=micro_batch, name="digits-c"), op, sink,
                  batch_size=micro_batch, max_delay=10.0, check_order=False)
    op_seconds = sum(v for k, v in summary["operator_seconds"].items() if k.endswith(op.name))
    return sink.to_table()["prediction"].to_numpy(), op_seconds / len(images)


def direct(op, images: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Same outputs as :func:`stream_through`, without the engine (for the hyper-parameter
    search, where only the predictions matter)."""
    out = []
    for lo in range(0, len(images), chunk):
        b = Batch(pa.record_batch({"image": to_arrow(images[lo:lo + chunk])}))
        out.append(op(b).numpy("prediction"))
    return np.concatenate(out)


def errors_by_segment(pred: np.ndarray, labels: np.ndarray,
                      segments: list[tuple[str, int, int]]) -> dict[str, float]:
    """Error % per domain (averaged over repeats of the same domain) and their mean."""
    per: dict[str, list[float]] = {}
    for name, lo, hi in segments:
        per.setdefault(name, []).append(100.0 * float((pred[lo:hi] != labels[lo:hi]).mean()))
    out = {k: float(np.mean(v)) for k, v in per.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def evaluate(make: Callable[[], Any], x: np.ndarray, y: np.ndarray,
             segments: list[tuple[str, int, int]], mode: str, engine: bool = True) -> dict[str, Any]:
    """Errors of a method on a stream: ``continual`` (one operator for everything) or
    ``reset`` (a fresh operator per domain)."""
    t0 = time.perf_counter()
    if mode == "continual":
        if engine:
            pred, per_sample = stream_through(make(), x)
        else:
            pred, per_sample = direct(make(), x), float("nan")
    else:
        parts, secs = [], []
        for _, lo, hi in segments:
            if engine:
                p, s = stream_through(make(), x[lo:hi])
            else:
                p, s = direct(make(), x[lo:hi]), float("nan")
            parts.append(p)
            secs.append(s)
        pred, per_sample = np.concatenate(parts), float(np.mean(secs))
    res = errors_by_segment(pred, y, segments)
    return {"errors": res, "s_per_sample": per_sample, "wall_s": time.perf_counter() - t0}
