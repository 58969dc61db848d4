"""The one loop: read → micro-batch → operators → sink, with checkpoints and metrics.

:func:`run` composes a :class:`~stream.batcher.MicroBatcher` (a reader thread and a
bounded queue, cut into micro-batches by size and by delay, paced by event time when
asked) and a :class:`~stream.checkpointer.Checkpointer` (restore on resume, checkpoints
at batch boundaries): it runs the pipeline on each micro-batch, writes the sink and
dead-letters rejected rows.

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
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from .batch import Batch
from .batcher import MicroBatcher
from .checkpoint import CheckpointStore
from .checkpointer import Checkpointer
from .checks import EventTimeOrder
from .claim import holding_outputs
from .connector import RunContext, Sink, Source
from .dead_letter import DeadLetter
from .errors import BadEventError
from .observer import RunObserver
from .operator import Operator, Pipeline
from .options import above, at_least, check_values

log = logging.getLogger("hebbstream")

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
        stop_requested: threading.Event | None = None, observer: RunObserver | None = None) -> dict[str, Any]:
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
        observer: told of each batch, dead letter and checkpoint (metrics, health, the
            dashboard); see :mod:`stream.observer` and :mod:`stream.serve`.

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
    batcher = MicroBatcher(batch_size, max_delay, speed, read_ahead, stop_requested=stop_requested)
    bound = source.bind(RunContext(pipe, sink, store, batcher.checkpoint_now, dead_letter=dead_letter))
    pipe, store = bound.pipeline, bound.store
    ckpt = Checkpointer(store, pipe, source, sink, dead_letter, every_batches=checkpoint_every_batches,
                        every_seconds=checkpoint_every_seconds)
    observer = observer if observer is not None else RunObserver()
    ckpt.on_saved = observer.checkpointed

    position = ckpt.restore(force) if resume else None
    done_before = ckpt.done_before
    if max_events is not None:
        batcher.limit = max_events - done_before
    if sink is not None:
        sink.open(ckpt.sink_point)
    if dead_letter is not None:
        dead_letter.open(ckpt.dead_letter_point)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.length(), initial=done_before, unit="ev", unit_scale=True,
                   dynamic_ncols=True)

    latency = _LatencyRecorder()
    events = batches = 0
    last_position = position
    t_start = time.perf_counter()

    def dead_letters() -> int:  # rows the pipeline rejected, and messages the source itself dead-lettered
        return (dl.count if dl is not None else 0) + getattr(source, "dead_lettered", 0)

    def process(micro: Batch) -> None:
        nonlocal events, batches, last_position
        out = pipe(micro, dl)
        if sink is not None and out.num_rows:
            sink.write(out)
        last_position = source.position_after(micro)
        waited = time.monotonic() - micro.arrival
        latency.add(waited, micro.num_rows)
        observer.batch(micro, out, waited, dead_letters())
        events += micro.num_rows
        batches += 1
        if bar is not None:
            bar.update(micro.num_rows)
        if ckpt.due(batches):
            ckpt.take(last_position, events)

    observer.started(source, pipe, speed)
    batcher.start(source, position)
    try:
        for item in batcher.items():
            if isinstance(item, Batch):
                process(item)
            elif isinstance(item, BadEventError):
                if dl is None:
                    raise item
                dl.source_row(item)
                observer.dead_lettered(dead_letters())
                last_position = item.position or last_position
            else:  # a checkpoint barrier the source asked for
                if store is not None:
                    ckpt.take(last_position, events)
                item.set()
        if store is not None:
            ckpt.take(last_position, events)
    finally:
        batcher.close()
        if bar is not None:
            bar.close()
        source.close()
        observer.finished()
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
        "dead_letter": dead_letters(),
        "checkpoints": ckpt.count,
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
