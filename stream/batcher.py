"""The micro-batcher: a reader thread fills a bounded queue; the run takes micro-batches from it.

A reader thread pulls batches from the source into a bounded queue (so a slow pipeline
back-pressures the source instead of filling memory). :meth:`MicroBatcher.items` cuts the
queued rows into micro-batches by size (``batch_size``) and by delay (the oldest row waits
at most ``max_delay``) and yields them in order, together with the rows the source could
not read (:class:`~stream.errors.BadEventError`) and the checkpoint barriers a source asked
for (:class:`Barrier`), each after the rows read before it. Replays run as fast as possible
or paced by event time (``speed=1.0`` is as it happened, ``speed=60`` a minute per second).

Example:
    >>> import pyarrow as pa
    >>> from stream.batch import Batch
    >>> from stream.batcher import MicroBatcher
    >>> class Rows:
    ...     def batches(self, position=None):
    ...         for lo in range(0, 10, 4):
    ...             yield Batch(pa.record_batch({"x": list(range(lo, min(lo + 4, 10)))}), offset=lo)
    >>> mb = MicroBatcher(batch_size=3, max_delay=60)  # cut by size only
    >>> mb.start(Rows(), None)
    >>> [b.num_rows for b in mb.items()]
    [3, 3, 3, 1]
    >>> mb.close()
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from .batch import Batch
from .errors import BadEventError, HebbstreamError

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Barrier(threading.Event):
    """Put in the queue by :meth:`MicroBatcher.checkpoint_now`; set once the checkpoint is taken."""


def _reader(source: Any, position: dict | None, out: queue.Queue, stop: threading.Event,
            speed: float | None) -> None:
    """Reader thread body: put source batches (paced when asked) into ``out``."""
    try:
        batches: Iterator[Batch] = source.batches(position)
        if speed:
            batches = paced(batches, speed, stop)
        for batch in batches:
            if not isinstance(batch, BadEventError):  # a row the source could not read goes as is
                if batch.num_rows == 0:  # a live source with nothing new: a moment to notice a stop
                    if stop.is_set():
                        return
                    continue
                batch = replace(batch, arrival=time.monotonic())
            if not _put(out, batch, stop):
                return
        out.put(_END)
    except BaseException as exc:  # handed to the main thread, which re-raises it
        out.put(_Failure(exc))


def _put(out: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` into the bounded queue, waiting while it is full; False once ``stop`` is set."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def paced(batches: Iterator[Batch], speed: float, stop: threading.Event,
          tick: float = 0.01) -> Iterator[Batch]:
    """Release rows when their event time comes, scaled by ``speed``."""
    origin: tuple[float, float] | None = None  # (first event time in s, wall time)
    for batch in batches:
        if isinstance(batch, BadEventError):
            yield batch  # a row the source could not read has no time to wait for
            continue
        times = batch.times_ns()
        if times is None:
            raise HebbstreamError(f"{batch.source}: paced replay needs a time column "
                                  f"{batch.time_column!r}; use speed=None to replay as fast as possible")
        seconds = times / 1e9
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


class MicroBatcher:
    """Reads a source on a thread and hands out micro-batches (see the module docstring).

    Args:
        batch_size: largest micro-batch, in events.
        max_delay: longest time (s) an event waits for its micro-batch to fill.
        speed: ``None`` replays as fast as possible; a number paces by event time.
        read_ahead: source batches buffered ahead of the pipeline (back-pressure bound).
        limit: hand out at most this many events, then end (``None``: no limit).
        stop_requested: once set, :meth:`items` hands out what it holds and ends.
    """

    def __init__(self, batch_size: int = 1024, max_delay: float = 0.05, speed: float | None = None,
                 read_ahead: int = 8, limit: int | None = None,
                 stop_requested: threading.Event | None = None) -> None:
        self.batch_size, self.max_delay, self.speed, self.limit = batch_size, max_delay, speed, limit
        self.stop_requested = stop_requested
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, read_ahead))
        self.stop = threading.Event()
        self.reader: threading.Thread | None = None
        #: events handed out so far
        self.emitted = 0

    def checkpoint_now(self) -> None:
        """For the source's reader thread: return once a checkpoint covers every batch it yielded."""
        if threading.current_thread() is not self.reader:
            raise HebbstreamError("checkpoint_now() is for the source's reader thread")
        barrier = Barrier()
        _put(self.queue, barrier, self.stop)
        while not barrier.wait(0.1):
            if self.stop.is_set():
                raise HebbstreamError("the run stopped before the requested checkpoint")

    def start(self, source: Any, position: dict | None) -> None:
        """Start reading ``source`` from ``position`` on the reader thread."""
        self.reader = threading.Thread(target=_reader, args=(source, position, self.queue, self.stop, self.speed),
                                       name="hebbstream-reader", daemon=True)
        self.reader.start()

    def close(self) -> None:
        """Stop the reader thread (it ends at its next batch or queue wait)."""
        self.stop.set()
        if self.reader is not None:
            self.reader.join(timeout=5)

    def _flush(self, pending: list[Batch]) -> Batch:
        batch = Batch.concat(pending)
        self.emitted += batch.num_rows
        pending.clear()
        return batch

    def items(self) -> Iterator[Batch | BadEventError | Barrier]:
        """Micro-batches, unreadable rows and checkpoint barriers, in read order, until the end.

        A source failure is raised here. The caller processes each micro-batch before asking
        for the next item, so the delay bound counts its processing time too.
        """
        pending: list[Batch] = []
        pending_rows = 0
        limit, stop_requested = self.limit, self.stop_requested
        while True:
            if stop_requested is not None and stop_requested.is_set():
                if pending:
                    yield self._flush(pending)
                return
            timeout = None
            if pending:
                # capped: a larger wait than the platform's longest raises OverflowError
                timeout = min(threading.TIMEOUT_MAX,
                              max(0.0, pending[0].arrival + self.max_delay - time.monotonic()))
            if stop_requested is not None:  # wake up now and then to notice a stop request
                timeout = 0.1 if timeout is None else min(timeout, 0.1)
            try:
                item = self.queue.get(timeout=timeout) if timeout is None or timeout > 0 else self.queue.get_nowait()
            except queue.Empty:
                item = None  # the oldest pending event waited max_delay
            if isinstance(item, _Failure):
                raise item.exc
            if isinstance(item, (BadEventError, Barrier)) or item is _END or item is None:
                if pending:  # rows before it first, so positions stay in order
                    yield self._flush(pending)
                    pending_rows = 0
                if item is _END:
                    return
                if item is not None:
                    yield item
                continue
            if limit is not None and self.emitted + pending_rows + item.num_rows > limit:
                item = item.slice(0, max(0, limit - self.emitted - pending_rows))
            # cut into full micro-batches; slices are zero-copy
            while item.num_rows:
                take = min(self.batch_size - pending_rows, item.num_rows)
                pending.append(item.slice(0, take) if take < item.num_rows else item)
                pending_rows += take
                item = item.slice(take) if take < item.num_rows else item.slice(0, 0)
                if pending_rows >= self.batch_size:
                    yield self._flush(pending)
                    pending_rows = 0
            if limit is not None and self.emitted + pending_rows >= limit:
                if pending:
                    yield self._flush(pending)
                return
