"""A small stateful per-key detector for the Kafka tests (prequential z-score, Welford)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from stream import Operator


class ZScore(Operator):
    """Score each ``x`` by its distance to the key's running mean, in standard deviations.

    ``delay`` sleeps per batch (to slow a worker down in failover tests); ``progress``
    appends the number of rows of each batch to a file.

    >>> import pyarrow as pa
    >>> from stream import Batch
    >>> op = ZScore()
    >>> out = op(Batch(pa.record_batch({"key": ["a"] * 4, "x": [1.0, 2.0, 3.0, 10.0]})))
    >>> [round(v, 3) for v in out.numpy("score").tolist()]
    [0.0, 0.0, 2.121, 8.0]
    """

    requires = {"x": "number"}
    runtime_params = ("delay", "progress")  # pacing and instrumentation: workers of one job differ there

    def __init__(self, delay: float = 0.0, progress: str | None = None):
        self.delay, self.progress = delay, progress
        self.n: dict[Any, int] = {}
        self.mean: dict[Any, float] = {}
        self.m2: dict[Any, float] = {}

    def process(self, batch):
        xs, keys = batch.numpy("x"), batch.keys()
        score = np.zeros(len(xs))
        for i, (k, x) in enumerate(zip(keys.tolist(), xs.tolist(), strict=True)):
            n, mean, m2 = self.n.get(k, 0), self.mean.get(k, 0.0), self.m2.get(k, 0.0)
            std = math.sqrt(m2 / (n - 1)) if n > 1 else 0.0
            score[i] = abs(x - mean) / std if std > 0 else 0.0
            n += 1
            delta = x - mean
            mean += delta / n
            self.n[k], self.mean[k], self.m2[k] = n, mean, m2 + delta * (x - mean)
        if self.delay:
            time.sleep(self.delay)
        if self.progress:
            with open(self.progress, "a") as f:
                f.write(f"{len(xs)}\n")
        return batch.with_columns({"score": score})

    def state_dict(self):
        return {"n": dict(self.n), "mean": dict(self.mean), "m2": dict(self.m2)}

    def load_state_dict(self, state):
        self.n, self.mean, self.m2 = dict(state["n"]), dict(state["mean"]), dict(state["m2"])
