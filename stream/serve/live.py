"""The live state of a run: Prometheus metrics, readiness and the dashboard's ring buffers.

:class:`LiveObserver` is the run's :class:`~stream.observer.RunObserver`: each call from
the run updates plain counters (under a lock) and the per-key rings; the HTTP threads
read them. Metrics are exported through a private ``prometheus_client`` registry (one per
run, so two runs in one process never share series), in Prometheus conventions:

==============================================  ==========  ======================================================
name                                            type        meaning
==============================================  ==========  ======================================================
hebbstream_events_read_total                    counter     events that went through the pipeline
hebbstream_events_written_total                 counter     rows written to the sink
hebbstream_dead_letter_total                    counter     rows sent to the dead-letter sink
hebbstream_batch_latency_seconds                histogram   a micro-batch's first arrival to its rows written
hebbstream_operator_seconds_total{operator}     counter     time spent in each operator (one series per operator)
hebbstream_checkpoints_total                    counter     checkpoints taken
hebbstream_checkpoint_duration_seconds          gauge       how long the last checkpoint took
hebbstream_last_checkpoint_timestamp_seconds    gauge       Unix time of the last successful checkpoint
hebbstream_source_lag{partition}                gauge       events waiting in the source (Kafka: per partition)
hebbstream_event_time_delay_seconds             gauge       paced replay: how far event time trails the pace
hebbstream_active_keys                          gauge       distinct keys seen by this run (see budget below)
hebbstream_alerts_total                         counter     rows with ``alert`` true (alert episodes opened)
hebbstream_last_batch_timestamp_seconds         gauge       Unix time the last micro-batch was written
hebbstream_ready                                gauge       1 when /readyz answers 200
hebbstream_dashboard_skipped_batches_total      counter     batches the dashboard left out (see budget below)
==============================================  ==========  ======================================================

The counters, the latency histogram and the lag are exact. The dashboard's bookkeeping
(distinct keys, ring buffers) takes at most ``budget`` (default 1 %) of the run's time:
a run fast enough to exceed it (a passthrough at millions of events a second) leaves
batches out of the dashboard and of ``hebbstream_active_keys`` and counts them; a model
such as the HTM detector never comes near it.

Labels stay bounded: operators are the pipeline's, partitions the source's; no key is
ever a label.

Example:
    >>> import numpy as np, pyarrow as pa
    >>> from prometheus_client import generate_latest
    >>> from stream import Operator, run
    >>> from connectors.memory import MemorySource
    >>> class Identity(Operator):
    ...     def process(self, batch):
    ...         return batch
    >>> live = LiveObserver()
    >>> _ = run(MemorySource(pa.table({"x": np.arange(10.0)})), Identity(), observer=live)
    >>> b"hebbstream_events_read_total 10.0" in generate_latest(live.registry)
    True
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..observer import RunObserver
from .rings import KeyRings
from .settings import ServeSettings

#: latency buckets (s): micro-batches take from well under a millisecond to seconds
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LiveObserver(RunObserver):
    """Counts what the run reports and keeps the dashboard's windows (see the module docstring)."""

    def __init__(self, settings: ServeSettings | None = None) -> None:
        self.settings = settings = settings or ServeSettings()
        self.rings = KeyRings(settings.max_keys, settings.window)
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("hebbstream_batch_latency_seconds",
                                 "Seconds from a micro-batch's first arrival to its rows written",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_Collector(self))
        self._lock = threading.Lock()
        self.read = self.written = self.dead_letter = self.alerts = self.checkpoints = 0
        self.operator_seconds: dict[str, float] = {}
        self.checkpoint_duration = self.last_checkpoint = self.last_batch = None
        self.lag: dict[str, int] | None = None
        self.event_delay: float | None = None
        self.keys: set[Any] = set()
        self.running = self.restored = False
        self.finished_at: float | None = None
        self.started_at = time.monotonic()
        self._progress = time.monotonic()  # the last batch, or the start
        self._rate: deque[tuple[float, int]] = deque(maxlen=16)  # (monotonic time, events read) samples
        self._source: Any = None
        self._pipeline: Any = None
        self._speed: float | None = None
        self._pace_origin: tuple[float, float] | None = None  # (first event time s, monotonic)
        self._lag_at = 0.0
        self._row = 0  # x position of rows without event time
        self._spent = 0.0  # seconds of dashboard bookkeeping so far
        self._per_row = 1e-6  # its cost per row, as last measured
        #: batches left out of the dashboard and the active-keys count to keep within ``budget``
        self.skipped = 0

    # -- hooks called by the run -------------------------------------------------------
    def started(self, source: Any, pipeline: Any, speed: float | None) -> None:
        with self._lock:
            self._source, self._pipeline, self._speed = source, pipeline, speed
            self.running = self.restored = True
            self._progress = self.started_at = time.monotonic()
            self._rate.append((self._progress, 0))

    def batch(self, micro: Any, out: Any, latency: float, dead_letter: int) -> None:
        now = time.monotonic()
        self.latency.observe(latency)
        alerts = 0
        if "alert" in out and out.num_rows:
            alerts = int(np.count_nonzero(out.column("alert").fill_null(False).to_numpy(zero_copy_only=False)))
        sample = bool(out.num_rows) and self._sampled(out.num_rows, now)
        seconds = _seconds(out) if out.num_rows and (self._speed or sample) else None
        with self._lock:
            self.read += micro.num_rows
            self.written += out.num_rows
            self.dead_letter = dead_letter
            self.alerts += alerts
            self.last_batch = time.time()
            self._progress = now
            if self._pipeline is not None:
                self.operator_seconds = dict(self._pipeline.timings)
            if not self._rate or now - self._rate[-1][0] >= 0.5:
                self._rate.append((now, self.read))
            if self._speed and seconds is not None:
                if self._pace_origin is None:
                    self._pace_origin = (float(seconds[0]), now)
                due = (now - self._pace_origin[1]) * self._speed + self._pace_origin[0]
                self.event_delay = max(0.0, due - float(seconds[-1]))
        # once a second, and at every batch until the source can say (its first reading may be empty)
        if self._source is not None and (not self.lag or now - self._lag_at >= 1.0):
            self._lag_at = now
            lag = self._source.lag() if hasattr(self._source, "lag") else None
            with self._lock:
                self.lag = lag
        if sample:
            t0 = time.perf_counter()
            self._count_and_keep(out, seconds, alerts)
            took = time.perf_counter() - t0
            self._spent += took
            self._per_row = 0.5 * self._per_row + 0.5 * took / out.num_rows
        elif out.num_rows:
            self.skipped += 1

    def _sampled(self, rows: int, now: float) -> bool:
        """Whether a batch of ``rows`` keeps the dashboard's bookkeeping within its share (``budget``)
        of the run's time (plus a few milliseconds of grace, so a slow model's batches all count)."""
        if self.settings.budget >= 1:
            return True
        cost = rows * self._per_row
        return self._spent + cost <= self.settings.budget * (now - self.started_at) + 0.005

    def _count_and_keep(self, out: Any, seconds: np.ndarray | None, alerts: int) -> None:
        """Count the batch's distinct keys and append what the dashboard charts to the rings."""
        charted = self.settings.score in out or self.settings.value in out
        keyed = out.key_column in out
        inverse = None
        if charted:
            uniq, inverse = out.key_codes() if keyed else (np.array([""], dtype=object),
                                                           np.zeros(out.num_rows, dtype=np.int64))
        else:  # distinct keys only (for the active-keys gauge): hashed in Arrow
            uniq = pc.unique(out.column(out.key_column)).to_numpy(zero_copy_only=False) if keyed else np.array([""])
        with self._lock:
            self.keys.update(uniq.tolist())
        if charted:
            self._keep(out, uniq, inverse, seconds, alerts)

    def _keep(self, out: Any, uniq: np.ndarray, inverse: np.ndarray, seconds: np.ndarray | None,
              alerts: int) -> None:
        """Append the batch's charted columns (the score, the value) to the rings."""
        score_col, value_col = self.settings.score, self.settings.value
        n = out.num_rows
        if seconds is None:
            seconds = np.arange(self._row, self._row + n, dtype=np.float64)
        self._row += n
        nan = np.full(n, np.nan)
        value = _floats(out, value_col, nan)
        score = _floats(out, score_col, nan)
        alert = (out.column("alert").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
                 if alerts else np.zeros(n, dtype=bool))
        self.rings.add(uniq, inverse, seconds, value, score, alert)

    def dead_lettered(self, total: int) -> None:
        with self._lock:
            self.dead_letter = total

    def checkpointed(self, duration: float) -> None:
        with self._lock:
            self.checkpoints += 1
            self.checkpoint_duration = duration
            self.last_checkpoint = time.time()

    def finished(self) -> None:
        with self._lock:
            self.running = False
            self.finished_at = time.time()

    # -- read by the server ----------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """Whether the run is ready, and why not: the source open, the state restored, a recent batch."""
        with self._lock:
            if not self.restored:
                return False, "starting: the state is not restored yet"
            if not self.running:
                return False, "the run has ended: the source is closed"
            idle = time.monotonic() - self._progress
            if idle > self.settings.ready_within:
                return False, (f"no batch processed for {idle:.0f} s "
                               f"(ready_within = {self.settings.ready_within:g} s)")
        return True, "ready"

    def summary(self) -> dict[str, Any]:
        """The figures at the top of the dashboard, as JSON-able values."""
        ready, why = self.ready()
        with self._lock:
            rate = None
            if self.running and len(self._rate) >= 2 and self._rate[-1][0] > self._rate[0][0]:
                (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
                rate = (n1 - n0) / (t1 - t0)
            return {"events_read": self.read, "events_written": self.written, "dead_letter": self.dead_letter,
                    "events_per_s": rate, "alerts": self.alerts, "active_keys": len(self.keys),
                    "lag": self.lag, "event_time_delay_s": self.event_delay,
                    "checkpoint_age_s": None if self.last_checkpoint is None else time.time() - self.last_checkpoint,
                    "checkpoints": self.checkpoints, "running": self.running, "ready": ready, "status": why,
                    "score": self.settings.score, "value": self.settings.value,
                    "source": getattr(self._source, "name", None)}


def _seconds(batch: Any) -> np.ndarray | None:
    """Event times in seconds (``None`` without a time column)."""
    times = batch.times_ns()
    return None if times is None else times / 1e9


def _floats(batch: Any, name: str, missing: np.ndarray) -> np.ndarray:
    if name not in batch:
        return missing
    try:
        return batch.column(name).fill_null(float("nan")).to_numpy(zero_copy_only=False).astype(np.float64)
    except (TypeError, ValueError, Exception):  # noqa: BLE001 - a column that is not numeric is not charted
        return missing


class _Collector:
    """Builds the metric families from the observer's counters at each scrape."""

    def __init__(self, live: LiveObserver) -> None:
        self.live = live

    def describe(self) -> list:
        return []

    def collect(self):
        live = self.live
        ready, _ = live.ready()
        with live._lock:
            yield CounterMetricFamily("hebbstream_events_read", "Events that went through the pipeline",
                                      value=live.read)
            yield CounterMetricFamily("hebbstream_events_written", "Rows written to the sink", value=live.written)
            yield CounterMetricFamily("hebbstream_dead_letter", "Rows sent to the dead-letter sink",
                                      value=live.dead_letter)
            ops = CounterMetricFamily("hebbstream_operator_seconds", "Seconds spent in each operator",
                                      labels=["operator"])
            for name, seconds in live.operator_seconds.items():
                ops.add_metric([name], seconds)
            yield ops
            yield CounterMetricFamily("hebbstream_checkpoints", "Checkpoints taken", value=live.checkpoints)
            if live.checkpoint_duration is not None:
                yield GaugeMetricFamily("hebbstream_checkpoint_duration_seconds",
                                        "Seconds the last checkpoint took", value=live.checkpoint_duration)
                yield GaugeMetricFamily("hebbstream_last_checkpoint_timestamp_seconds",
                                        "Unix time of the last successful checkpoint", value=live.last_checkpoint)
            if live.lag is not None:
                lag = GaugeMetricFamily("hebbstream_source_lag", "Events waiting in the source, per partition",
                                        labels=["partition"])
                for name, n in sorted(live.lag.items()):
                    lag.add_metric([name], n)
                yield lag
            if live.event_delay is not None:
                yield GaugeMetricFamily("hebbstream_event_time_delay_seconds",
                                        "Paced replay: seconds of event time the run trails the pace",
                                        value=live.event_delay)
            yield GaugeMetricFamily("hebbstream_active_keys", "Distinct keys seen by this run", value=len(live.keys))
            yield CounterMetricFamily("hebbstream_alerts", "Rows with alert true", value=live.alerts)
            if live.last_batch is not None:
                yield GaugeMetricFamily("hebbstream_last_batch_timestamp_seconds",
                                        "Unix time the last micro-batch was written", value=live.last_batch)
            yield CounterMetricFamily("hebbstream_dashboard_skipped_batches",
                                      "Batches left out of the dashboard and the active-keys count (budget)",
                                      value=live.skipped)
            yield GaugeMetricFamily("hebbstream_ready", "1 when /readyz answers 200", value=int(ready))
