"""What ``--serve`` costs a run: the same stream with and without the live server.

Two streams, each run alternately without and with ``--serve`` (metrics, readiness and
the dashboard's ring buffers updated after every micro-batch, and a client polling the
dashboard — its page, summary, key list, the top key's window and ``/metrics`` — once a
second, as an open browser tab and a Prometheus scrape would):

- ``passthrough``: 10 M rows (1 M with ``--quick``) of 1,000 keys, Arrow IPC → identity
  → Arrow IPC (the input of ``benchmarks/passthrough.py``), the dashboard charting ``x``;
- ``htm``: the NAB machine-temperature stream through the HTM detector with alerts
  (3,000 events; 600 with ``--quick``), as in ``examples/htm_anomaly.toml``.

The best time of ``--repeat`` runs counts (the machine is shared); the runs alternate,
each pair in the other order than the last. Figures per stream:
``plain_s``, ``served_s``, ``overhead`` (served / plain − 1; target ≤ 0.03) and
``polls`` (dashboard polls answered during the served runs) and ``observer_share`` (the
share of a served run's time spent inside the observer's per-batch hook, measured
directly: unlike ``overhead`` it does not drown in a shared machine's noise); the
top-level ``overhead`` is the larger of the two.

    python benchmarks/serve_overhead.py            # full size
    python benchmarks/serve_overhead.py --quick    # under a minute
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import urllib.request

import numpy as np
from common import finish, parse_args
from passthrough import CHUNK, Identity, make_input

from connectors.arrow_ipc import ArrowSink, ArrowSource
from connectors.csv import CSVSource
from connectors.memory import MemorySink
from stream import machine_info, run
from stream.serve import LiveObserver, ServeSettings, serving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAB = os.path.join(ROOT, "examples/data/nab/data/realKnownCause/machine_temperature_system_failure.csv")


class Poller(threading.Thread):
    """Polls the dashboard once a second, as an open browser tab does, plus a /metrics scrape."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.polls = url, threading.Event(), 0

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for path in ("/", "/api/summary", "/api/keys", "/api/series?key=", "/metrics"):
                try:
                    urllib.request.urlopen(self.url + path, timeout=5).read()
                except OSError:
                    pass  # a key that is not charted yet: 404
            self.polls += 1


class TimedObserver(LiveObserver):
    """Also adds up the seconds the run spends inside the observer's per-batch hook."""

    hook_s = 0.0

    def batch(self, *args) -> None:
        t0 = time.perf_counter()
        super().batch(*args)
        self.hook_s += time.perf_counter() - t0


def timed(job, settings: ServeSettings | None) -> tuple[float, int, float]:
    """Seconds ``job(observer)`` takes, with the server and a polling client when ``settings``."""
    if settings is None:
        t0 = time.perf_counter()
        job(None)
        return time.perf_counter() - t0, 0, 0.0
    with serving(settings, observer=TimedObserver(settings)) as (live, url):
        poller = Poller(url)
        poller.start()
        t0 = time.perf_counter()
        job(live)
        seconds = time.perf_counter() - t0
        poller.stop.set()
        poller.join()
    return seconds, poller.polls, live.hook_s


def passthrough_job(rows: int, seed: int, out: str):
    src = make_input(rows, seed)

    def job(observer):
        dst = os.path.join(out, "copy.arrow")
        summary = run(ArrowSource(src, key="key", batch_size=CHUNK), Identity(), ArrowSink(dst),
                      batch_size=CHUNK, observer=observer)
        assert summary["events"] == rows
        os.remove(dst)

    return job, ServeSettings(address="127.0.0.1:0", value="x")


def htm_job(events: int):
    from operators.htm import HTMDetector

    def job(observer):
        summary = run(CSVSource(NAB, time="timestamp"), HTMDetector(seed=0, alert_threshold=0.5), MemorySink(),
                      batch_size=256, max_events=events, observer=observer)
        assert summary["events"] == events

    return job, ServeSettings(address="127.0.0.1:0")


def measure(job, settings: ServeSettings, repeat: int) -> dict:
    plain = served = float("inf")
    polls, hook_share = 0, []
    for i in range(repeat):  # alternate, and swap which goes first: warm caches favour the second
        for served_run in ((False, True) if i % 2 == 0 else (True, False)):
            seconds, n, hook = timed(job, settings if served_run else None)
            if served_run:
                served, polls = min(served, seconds), polls + n
                hook_share.append(hook / seconds)
            else:
                plain = min(plain, seconds)
    return {"plain_s": plain, "served_s": served, "overhead": served / plain - 1, "polls": polls,
            "observer_share": float(np.median(hook_share))}


def main() -> None:
    args = parse_args("serve_overhead", __doc__.splitlines()[0],
                      lambda p: p.add_argument("--repeat", type=int, default=3))
    rows, events = (1_000_000, 600) if args.quick else (10_000_000, 3_000)
    machine_info()  # imports torch once, outside the timed runs
    out = tempfile.mkdtemp(prefix="hebbstream-serve-overhead-")
    try:
        figures = {"passthrough": {"rows": rows, **measure(*passthrough_job(rows, args.seed, out), args.repeat)},
                   "htm": {"events": events, **measure(*htm_job(events), args.repeat)}}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    figures["overhead"] = max(figures["passthrough"]["overhead"], figures["htm"]["overhead"])
    figures["target"] = 0.03
    figures["repeat"] = args.repeat
    finish("serve_overhead", figures, quick=args.quick)


if __name__ == "__main__":
    main()
