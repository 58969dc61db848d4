"""A small stateful per-key operator for connector and reliability tests."""

from __future__ import annotations

import numpy as np

from stream import Operator


class RunningSum(Operator):
    """Per-key running sum of ``x`` (the state a resumed run must carry on exactly).

    Sums accumulate from the carried value, so batch boundaries change no bit of the
    output (``cumsum`` adds left to right).
    """

    requires = {"x": "number"}

    def __init__(self) -> None:
        self.sums: dict = {}

    def process(self, batch):
        out = np.empty(batch.num_rows)
        x = batch.numpy("x")
        for key, idx in batch.key_groups().items():
            running = np.cumsum(np.concatenate([[self.sums.get(key, 0.0)], x[idx]]))[1:]
            out[idx] = running
            self.sums[key] = float(running[-1])
        return batch.with_columns({"sum": out})

    def state_dict(self):
        return {"sums": dict(self.sums)}

    def load_state_dict(self, state):
        self.sums = dict(state["sums"])
