"""The checkpointer: restores a run from its latest checkpoint and takes checkpoints at batch boundaries.

A checkpoint holds the operators' state, the source position after the last processed
batch, the sink's and the dead-letter sink's flush points, the event count and the
source's identity (checked on resume, see :mod:`stream.identity`). Once it is saved the
source is told (:meth:`Source.checkpointed`: Kafka commits its offsets there).

Example:
    >>> import tempfile
    >>> from stream.checkpoint import CheckpointStore
    >>> from stream.checkpointer import Checkpointer
    >>> from stream.connector import Source
    >>> from stream.operator import Pipeline
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> ck = Checkpointer(store, Pipeline([]), Source(), every_batches=2)
    >>> ck.due(batches=1), ck.due(batches=2)
    (False, True)
    >>> ck.take({"row": 10}, events=10)
    >>> Checkpointer(store, Pipeline([]), Source()).restore(force=False)
    {'row': 10}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from . import spill
from .checkpoint import CheckpointStore
from .connector import Sink, Source
from .errors import CheckpointError, HebbstreamError
from .identity import check_resume
from .operator import Pipeline

log = logging.getLogger("hebbstream")


class Checkpointer:
    """Saves and restores one run's checkpoints in ``store`` (``None``: a run without checkpoints).

    Args:
        every_batches / every_seconds: when :meth:`due` says a checkpoint is due.
    """

    def __init__(self, store: CheckpointStore | None, pipeline: Pipeline, source: Source,
                 sink: Sink | None = None, dead_letter: Sink | None = None, *,
                 every_batches: int | None = None, every_seconds: float | None = None) -> None:
        self.store, self.pipeline, self.source, self.sink, self.dead_letter = \
            store, pipeline, source, sink, dead_letter
        self.every_batches, self.every_seconds = every_batches, every_seconds
        self.identity = source.identity() if store is not None else None
        spill.bind(pipeline.operators, store)   # per-key operators spill idle keys into the store's folder
        #: checkpoints taken by this run
        self.count = 0
        #: events processed by earlier runs (from the checkpoint resumed)
        self.done_before = 0
        #: flush points of the sink and dead-letter sink in the checkpoint resumed
        self.sink_point: dict[str, Any] | None = None
        self.dead_letter_point: dict[str, Any] | None = None
        #: seconds the last checkpoint took to save
        self.last_duration = 0.0
        self._last = time.monotonic()
        #: called with the seconds each checkpoint took, once it is saved
        self.on_saved: Callable[[float], None] = lambda duration: None

    def restore(self, force: bool) -> dict[str, Any] | None:
        """Load the latest checkpoint into the pipeline; return its source position (``None``: none yet)."""
        store = self.store
        if store is None:
            raise HebbstreamError("resume needs a checkpoint store")
        saved = store.load_latest()
        if saved is None:
            return None
        try:
            self.pipeline.load_state_dict(saved["operators"])
        except CheckpointError as exc:  # an operator refused its state: say which checkpoint
            raise CheckpointError(f"{store.uri} (checkpoint {store.latest()}): {exc}") from exc
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{store.uri}: checkpoint does not match the pipeline: {exc}") from exc
        position = saved["source"]
        self.sink_point, self.dead_letter_point = saved["sink"], saved["dead_letter"]
        self.done_before = saved["events"]
        check_resume(self.source, saved.get("source_identity"), position, where=store.uri, force=force)
        log.info("resuming from checkpoint %s at %s", getattr(store, "loaded", None), position)
        return position

    def due(self, batches: int) -> bool:
        """Whether a checkpoint is due after ``batches`` micro-batches of this run."""
        return self.store is not None and bool(
            (self.every_batches and batches % self.every_batches == 0)
            or (self.every_seconds and time.monotonic() - self._last >= self.every_seconds))

    def take(self, position: dict[str, Any] | None, events: int) -> None:
        """Checkpoint everything processed up to ``position`` (``events`` in this run)."""
        t0 = time.monotonic()
        state = {
            "operators": self.pipeline.state_dict(),
            "source": position,
            "sink": self.sink.flush() if self.sink is not None else None,
            "dead_letter": self.dead_letter.flush() if self.dead_letter is not None else None,
            "events": self.done_before + events,
            "source_identity": self.identity,
        }
        self.store.save(state)
        self.source.checkpointed(position)
        self.count += 1
        self._last = time.monotonic()
        self.last_duration = self._last - t0
        self.on_saved(self.last_duration)
