"""The one loop: read → micro-batch → operators → sink, with checkpoints and metrics.

A reader thread pulls batches from the source into a bounded queue (so a slow pipeline
back-pressures the source instead of filling memory); the main thread cuts micro-batches
by size and by delay, runs the pipeline, writes the sink and takes checkpoints at batch
boundaries. Replays run as fast as possible or paced by event time (``speed=1.0`` is as
it happened, ``speed=60`` a minute per second).

Example:
    >>> import numpy as np
    >>> import pyarrow as pa
    >>> from stream import Batch, Operator, Source, Sink, run
    >>> class Numbers(Source):
    ...     def batches(self, position=None):
    ...         start = (position or {}).get("row", 0)
    ...         for lo in range(start, 100, 30):
    ...             x = np.arange(lo, min(lo + 30, 100), dtype=float)
    ...             yield Batch(pa.record_batch({"x": x}), source="numbers", offset=lo)
    ...     def length(self):
    ...         return 100
    >>> class Total(Sink):
    ...     total = 0.0
    ...     def write(self, batch):
    ...         self.total += float(batch.numpy("x").sum())
    >>> class Identity(Operator):
    ...     def process(self, batch):
    ...         return batch
    >>> sink = Total()
    >>> summary = run(Numbers(), Identity(), sink, batch_size=16)
    >>> summary["events"], sink.total
    (100, 4950.0)
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from .batch import Batch
from .checkpoint import CheckpointStore
from .checks import EventTimeOrder
from .claim import holding_outputs
from .connector import RunContext, Sink, Source
from .dead_letter import DeadLetter
from .errors import BadEventError, CheckpointError, HebbstreamError
from .identity import check_resume
from .operator import Operator, Pipeline
from .options import above, at_least, check_values

log = logging.getLogger("hebbstream")

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _Barrier(threading.Event):
    """Put in the queue by :meth:`RunContext.checkpoint_now`; set once the checkpoint is taken."""


def _reader(source: Source, position: dict | None, out: queue.Queue, stop: threading.Event,
            speed: float | None) -> None:
    """Reader thread body: put source batches (paced when asked) into ``out``."""
    try:
        batches: Iterator[Batch] = source.batches(position)
        if speed:
            batches = _paced(batches, speed, stop)
        for batch in batches:
            if not isinstance(batch, BadEventError):  # a row the source could not read goes as is
                if batch.num_rows == 0:  # a live source with nothing new: a moment to notice a stop
                    if stop.is_set():
                        return
                    continue
                batch = replace(batch, arrival=time.monotonic())
            while not stop.is_set():
                try:
                    out.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put(_END)
    except BaseException as exc:  # handed to the main thread, which re-raises it
        out.put(_Failure(exc))


def _paced(batches: Iterator[Batch], speed: float, stop: threading.Event,
           tick: float = 0.01) -> Iterator[Batch]:
    """Release rows when their event time comes, scaled by ``speed``."""
    origin: tuple[float, float] | None = None  # (first event time in s, wall time)
    for batch in batches:
        if isinstance(batch, BadEventError):
            yield batch  # a row the source could not read has no time to wait for
            continue
        times = batch.times()
        if times is None:
            raise HebbstreamError(f"{batch.source}: paced replay needs a time column "
                                  f"{batch.time_column!r}; use speed=None to replay as fast as possible")
        seconds = np.asarray(times, dtype=np.float64)
        if np.issubdtype(np.asarray(times).dtype, np.integer) and batch.time_column in batch and \
                pa.types.is_timestamp(batch.column(batch.time_column).type):
            seconds = seconds / 1e9
        if origin is None:
            origin = (seconds[0], time.monotonic())
        due = origin[1] + (seconds - origin[0]) / speed
        start = 0
        while start < batch.num_rows and not stop.is_set():
            wait = due[start] - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.5))
                continue
            # everything due within the next tick goes out together
            end = int(np.searchsorted(due, time.monotonic() + tick, side="right"))
            end = max(end, start + 1)
            yield batch.slice(start, end - start)
            start = end


class _LatencyRecorder:
    def __init__(self) -> None:
        self.values: list[float] = []
        self.weights: list[int] = []

    def add(self, seconds: float, rows: int) -> None:
        self.values.append(seconds)
        self.weights.append(rows)

    def percentiles(self, qs=(50, 95, 99)) -> dict[str, float]:
        if not self.values:
            return {f"p{q}": float("nan") for q in qs}
        v = np.asarray(self.values)
        w = np.asarray(self.weights, dtype=np.float64)
        order = np.argsort(v)
        cum = np.cumsum(w[order]) / w.sum()
        return {f"p{q}": float(v[order][min(np.searchsorted(cum, q / 100), len(v) - 1)]) for q in qs}


def machine_info() -> dict[str, Any]:
    """CPU model, cores, GPU and library versions, for benchmark and run summaries."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                            "numpy": np.__version__, "pyarrow": pa.__version__, "gpu": None}
    # only when the run already uses torch: importing it costs seconds
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


#: limits of run()'s settings beyond their annotations (a pipeline file's [run] is checked against them too)
RUN_CHECKS = {"batch_size": at_least(1), "max_delay": at_least(0), "speed": above(0), "read_ahead": at_least(1),
              "checkpoint_every_batches": at_least(1), "checkpoint_every_seconds": above(0),
              "max_events": at_least(0)}


def _checking_settings(func: Callable[..., Any]) -> Callable[..., Any]:
    """Check run()'s settings first: a mistake is refused before any lock is taken or output touched."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        check_values(func, {k: bound.arguments[k] for k in RUN_CHECKS}, "run()", RUN_CHECKS)
        return func(*args, **kwargs)

    return wrapper


@_checking_settings
@holding_outputs
def run(source: Source, pipeline: Operator, sink: Sink | None = None, *,
        batch_size: int = 1024, max_delay: float = 0.05, speed: float | None = None,
        read_ahead: int = 8, checkpoint: CheckpointStore | str | None = None,
        checkpoint_every_batches: int | None = None, checkpoint_every_seconds: float | None = None,
        resume: bool = False, dead_letter: Sink | None = None, check_order: bool = True,
        device: Any = None, progress: bool = False, summary_path: str | None = None,
        max_events: int | None = None, overwrite: bool = False, force: bool = False,
        stop_requested: threading.Event | None = None) -> dict[str, Any]:
    """Run ``source | pipeline | sink`` and return the run summary (also written as JSON).

    Args:
        batch_size: largest micro-batch, in events.
        max_delay: longest time (s) an event waits for its micro-batch to fill.
        speed: ``None`` replays as fast as possible; a number paces by event time.
        read_ahead: source batches buffered ahead of the pipeline (back-pressure bound).
        checkpoint: a :class:`CheckpointStore` or a folder/URI for one.
        checkpoint_every_batches / checkpoint_every_seconds: when to checkpoint; a final
            checkpoint is always taken when a store is given.
        resume: continue from the latest checkpoint in the store.
        dead_letter: sink for rejected events; without one, a bad event stops the run
            with an error naming it.
        check_order: reject events whose time goes backwards within their key.
        device: moves the pipeline with ``pipeline.to(device)``.
        progress: show a progress bar (sources of known length).
        summary_path: also write the summary there as JSON.
        max_events: stop after this many events (for demos and tests).
        overwrite: a fresh run may replace the checkpoints and sink output an earlier
            run left at these paths (without it such a run is refused; see :mod:`stream.claim`).
        force: with ``resume``, resume even when the source is not the input the
            checkpoint was taken on (logged as a warning; see :mod:`stream.identity`).
        stop_requested: once set, the run ends as at the end of the stream, between
            micro-batches (final checkpoint, sink and source closed); see :mod:`stream.shutdown`.

    The run holds a lock on its checkpoint folder and file sinks from start to end: a
    second run on them is refused with an error naming this one.
    """
    pipe = pipeline if isinstance(pipeline, Pipeline) else Pipeline([pipeline])
    if check_order:
        pipe = Pipeline([EventTimeOrder(), *pipe.operators])
    if device is not None:
        pipe.to(device)
    store = CheckpointStore(checkpoint, fingerprint=repr(pipe)) if isinstance(checkpoint, str) else checkpoint
    dl = DeadLetter(dead_letter) if dead_letter is not None else None
    q: queue.Queue = queue.Queue(maxsize=max(1, read_ahead))
    stop = threading.Event()

    def checkpoint_now() -> None:
        if threading.current_thread() is not reader:
            raise HebbstreamError("checkpoint_now() is for the source's reader thread")
        barrier = _Barrier()
        while not stop.is_set():
            try:
                q.put(barrier, timeout=0.1)
                break
            except queue.Full:
                continue
        while not barrier.wait(0.1):
            if stop.is_set():
                raise HebbstreamError("the run stopped before the requested checkpoint")

    bound = source.bind(RunContext(pipe, sink, store, checkpoint_now, dead_letter=dead_letter))
    pipe, store = bound.pipeline, bound.store

    position = None
    sink_point = dl_point = None
    done_before = 0
    identity = source.identity() if store is not None else None
    if resume:
        if store is None:
            raise HebbstreamError("resume needs a checkpoint store")
        saved = store.load_latest()
        if saved is not None:
            try:
                pipe.load_state_dict(saved["operators"])
            except CheckpointError as exc:  # an operator refused its state: say which checkpoint
                raise CheckpointError(f"{store.uri} (checkpoint {store.latest()}): {exc}") from exc
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{store.uri}: checkpoint does not match the pipeline: {exc}") from exc
            position, sink_point, dl_point = saved["source"], saved["sink"], saved["dead_letter"]
            done_before = saved["events"]
            check_resume(source, saved.get("source_identity"), position, where=store.uri, force=force)
            log.info("resuming from checkpoint %s at %s", getattr(store, "loaded", None), position)
    if sink is not None:
        sink.open(sink_point)
    if dead_letter is not None:
        dead_letter.open(dl_point)

    reader = threading.Thread(target=_reader, args=(source, position, q, stop, speed),
                              name="hebbstream-reader", daemon=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.length(), initial=done_before, unit="ev", unit_scale=True,
                   dynamic_ncols=True)

    latency = _LatencyRecorder()
    events = batches = checkpoints = 0
    last_ckpt = time.monotonic()
    last_position = position
    t_start = time.perf_counter()

    def take_checkpoint() -> None:
        nonlocal checkpoints, last_ckpt
        state = {
            "operators": pipe.state_dict(),
            "source": last_position,
            "sink": sink.flush() if sink is not None else None,
            "dead_letter": dead_letter.flush() if dead_letter is not None else None,
            "events": done_before + events,
            "source_identity": identity,
        }
        store.save(state)
        source.checkpointed(last_position)
        checkpoints += 1
        last_ckpt = time.monotonic()

    def process(micro: Batch) -> None:
        nonlocal events, batches, last_position
        out = pipe(micro, dl)
        if sink is not None and out.num_rows:
            sink.write(out)
        last_position = source.position_after(micro)
        latency.add(time.monotonic() - micro.arrival, micro.num_rows)
        events += micro.num_rows
        batches += 1
        if bar is not None:
            bar.update(micro.num_rows)
        if store is not None and (
                (checkpoint_every_batches and batches % checkpoint_every_batches == 0)
                or (checkpoint_every_seconds and time.monotonic() - last_ckpt >= checkpoint_every_seconds)):
            take_checkpoint()

    reader.start()
    pending: list[Batch] = []
    pending_rows = 0
    try:
        while True:
            if stop_requested is not None and stop_requested.is_set():
                if pending:
                    process(Batch.concat(pending))
                break
            timeout = None
            if pending:
                # capped: a larger wait than the platform's longest raises OverflowError
                timeout = min(threading.TIMEOUT_MAX, max(0.0, pending[0].arrival + max_delay - time.monotonic()))
            if stop_requested is not None:  # wake up now and then to notice a stop request
                timeout = 0.1 if timeout is None else min(timeout, 0.1)
            try:
                item = q.get(timeout=timeout) if timeout is None or timeout > 0 else q.get_nowait()
            except queue.Empty:
                item = None  # the oldest pending event waited max_delay
            if isinstance(item, _Failure):
                raise item.exc
            if isinstance(item, BadEventError):  # rows before it first, so positions stay in order
                if pending:
                    process(Batch.concat(pending))
                    pending, pending_rows = [], 0
                if dl is None:
                    raise item
                dl.source_row(item)
                last_position = item.position or last_position
                continue
            if isinstance(item, _Barrier):
                if pending:
                    process(Batch.concat(pending))
                    pending, pending_rows = [], 0
                if store is not None:
                    take_checkpoint()
                item.set()
                continue
            if item is _END or item is None:
                if pending:
                    process(Batch.concat(pending))
                    pending, pending_rows = [], 0
                if item is _END:
                    break
                continue
            if max_events is not None and done_before + events + pending_rows + item.num_rows > max_events:
                item = item.slice(0, max(0, max_events - done_before - events - pending_rows))
            # cut into full micro-batches; slices are zero-copy
            while item.num_rows:
                take = min(batch_size - pending_rows, item.num_rows)
                pending.append(item.slice(0, take) if take < item.num_rows else item)
                pending_rows += take
                item = item.slice(take) if take < item.num_rows else item.slice(0, 0)
                if pending_rows >= batch_size:
                    process(Batch.concat(pending))
                    pending, pending_rows = [], 0
            if max_events is not None and done_before + events + pending_rows >= max_events:
                if pending:
                    process(Batch.concat(pending))
                break
        if store is not None:
            take_checkpoint()
    finally:
        stop.set()
        if bar is not None:
            bar.close()
        reader.join(timeout=5)
        source.close()
    if sink is not None:
        sink.close()
    if dead_letter is not None:
        dead_letter.close()
    pipe.close()

    elapsed = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "events": events,
        "events_total": done_before + events,
        "batches": batches,
        "seconds": elapsed,
        "events_per_s": events / elapsed if elapsed > 0 else float("nan"),
        "latency_s": latency.percentiles(),
        "operator_seconds": dict(pipe.timings),
        # rows the pipeline rejected, and messages the source itself dead-lettered
        "dead_letter": (dl.count if dl is not None else 0) + getattr(source, "dead_lettered", 0),
        "checkpoints": checkpoints,
        "resumed_from": position,
        "machine": machine_info(),
    }
    if stop_requested is not None and stop_requested.is_set():
        summary["stopped"] = getattr(stop_requested, "reason", None) or "requested"
    metrics = {label: op.summary() for label, op in zip(pipe.timings, pipe.operators)
               if hasattr(op, "summary")}
    if metrics:
        summary["metrics"] = metrics
    if summary_path:
        os.makedirs(os.path.dirname(os.path.abspath(summary_path)), exist_ok=True)
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=2, default=str)
    return summary
