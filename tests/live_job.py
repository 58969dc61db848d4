"""A NAB replay served live, for the dashboard's browser test (run as a subprocess).

    python tests/live_job.py NAB.csv OUTPUT.csv --serve HOST:PORT [--speed S]

A recorded NAB stream → a small spike scorer with alert columns (standing in for the
HTM detector and the ``alerts`` operator: same columns, instant to compute) → a CSV
sink, served with ``--serve`` exactly as ``hebbstream run`` serves a pipeline. Once the
stream ends the server stays up (the dashboard shows the last window) until killed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from connectors.csv import CSVSink, CSVSource  # noqa: E402
from stream import Operator, run  # noqa: E402
from stream.serve import ServeSettings, serving_for  # noqa: E402


class SpikeAlerts(Operator):
    """``anomaly_likelihood`` from how far a value jumps from the previous one (in running
    standard deviations of the jumps), and the alert columns of the ``alerts`` operator:
    ``alert`` opens an episode when the score reaches ``enter``, which lasts until it falls
    below ``leave``."""

    def __init__(self, enter: float = 0.9, leave: float = 0.5):
        self.enter, self.leave = enter, leave
        self.n, self.mean, self.m2, self.prev = 0, 0.0, 0.0, None
        self.active, self.episodes = False, 0

    def process(self, batch):
        x = batch.numpy("value").astype(float)
        score = np.zeros(len(x))
        alert = np.zeros(len(x), dtype=bool)
        active = np.zeros(len(x), dtype=bool)
        episode = [None] * len(x)
        for i, v in enumerate(x):
            if self.prev is not None:
                jump = abs(v - self.prev)
                if self.n > 20:
                    std = (self.m2 / (self.n - 1)) ** 0.5 or 1.0
                    score[i] = 1 - np.exp(-max(0.0, (jump - self.mean) / std) / 4)
                self.n += 1
                delta = jump - self.mean
                self.mean += delta / self.n
                self.m2 += delta * (jump - self.mean)
            self.prev = v
            if not self.active and score[i] >= self.enter:
                self.active, alert[i] = True, True
                self.episodes += 1
            elif self.active and score[i] < self.leave:
                self.active = False
            active[i] = self.active
            episode[i] = self.episodes if self.active else None
        return batch.with_columns({"anomaly_likelihood": score, "alert": alert, "alert_active": active,
                                   "alert_episode": pa.array(episode, type=pa.int64())})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--serve", required=True)
    p.add_argument("--speed", type=float, default=None)
    p.add_argument("--window", type=int, default=5000)
    args = p.parse_args()
    settings = ServeSettings(window=args.window, max_keys=10, budget=1.0)  # every batch charted
    with serving_for(settings, args.serve) as live:
        run(CSVSource(args.input, time="timestamp"), SpikeAlerts(), CSVSink(args.output), observer=live,
            speed=args.speed, batch_size=64, max_delay=0.05)
        print("finished", flush=True)
        threading.Event().wait()  # keep serving the last window until killed


if __name__ == "__main__":
    main()
