"""What the runtime needs from sources and sinks.

A :class:`Source` yields micro-batches from a position and can say, for any batch it
produced, the position just after it; the runtime stores that position in a checkpoint
and hands it back to :meth:`Source.batches` on resume. A :class:`Sink` writes batches
and, at each checkpoint, makes what it wrote durable and returns a flush point; on
resume it is reopened at that flush point and discards anything written after it, so
output is neither lost nor doubled.

Example (a source and sink over Python lists):
    >>> import pyarrow as pa
    >>> from stream.batch import Batch
    >>> from stream.connector import Source, Sink
    >>> class Rows(Source):
    ...     def __init__(self, n):
    ...         self.n = n
    ...     def batches(self, position=None):
    ...         start = (position or {}).get("row", 0)
    ...         for lo in range(start, self.n, 4):
    ...             hi = min(lo + 4, self.n)
    ...             yield Batch(pa.record_batch({"x": list(range(lo, hi))}), source="rows", offset=lo)
    >>> src = Rows(10)
    >>> [b.num_rows for b in src.batches({"row": 2})]
    [4, 4]
    >>> src.position_after(next(src.batches()))
    {'row': 4}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .batch import Batch

if TYPE_CHECKING:
    from .checkpoint import CheckpointStore
    from .operator import Pipeline


@dataclass
class RunContext:
    """What a run hands its source before reading starts (see :meth:`Source.bind`).

    ``checkpoint_now`` may be called from inside :meth:`Source.batches` (the reader
    thread): it returns once every batch yielded before the call has been processed and
    a checkpoint covering them has been taken (and :meth:`Source.checkpointed` called).
    A partitioned source calls it before giving partitions up in a rebalance.
    """

    pipeline: Pipeline
    sink: Sink | None
    store: CheckpointStore | None
    checkpoint_now: Callable[[], None]
    #: the run's dead-letter sink: when set, a source may yield a
    #: :class:`~stream.errors.BadEventError` (with ``position`` and ``record``) for a row it
    #: cannot read, and the run writes it there and goes on; otherwise it raises.
    dead_letter: Sink | None = None


class Source:
    """Base class of sources. Subclasses implement :meth:`batches`."""

    #: Shown in error messages and summaries.
    name: str = "source"

    def batches(self, position: dict[str, Any] | None = None) -> Iterator[Batch]:
        """Yield batches starting at ``position`` (``None``: the beginning)."""
        raise NotImplementedError

    def position_after(self, batch: Batch) -> dict[str, Any]:
        """The position to resume from once ``batch`` (as read) has been processed.

        The default suits row-numbered sources: one past the batch's last row.
        """
        return {"row": int(batch.positions()[-1]) + 1} if batch.num_rows else {}

    def length(self) -> int | None:
        """Number of events, when known (for progress bars); ``None`` for live sources."""
        return None

    def bind(self, run: RunContext) -> RunContext:
        """Called once before reading; may return the run with another pipeline or store.

        The default changes nothing. A partitioned source (Kafka) wraps the pipeline to
        keep one copy per partition and splits the store into one folder per partition.
        """
        return run

    def identity(self) -> dict[str, Any] | None:
        """What this source reads, stored in every checkpoint and checked on resume.

        A JSON-able dict with a ``kind`` (file paths, sizes, modification times and a
        hash of the first block; a Kafka topic and group), or ``None`` (the default) for
        a source that cannot tell. Computed once per run.
        """
        return None

    def identity_mismatch(self, saved: dict[str, Any], position: dict[str, Any] | None) -> str | None:
        """Why the checkpoint identity ``saved`` is not this source's input, or ``None``.

        The default wants equal dicts (see :mod:`stream.identity`); a file source accepts
        a file that grew by appends.
        """
        from .identity import difference

        return difference(saved, self.identity())

    #: True when several runs share one checkpoint store by design (the workers of a
    #: Kafka consumer group, each owning its partitions' folders): the runtime then
    #: takes no lock on the store and does not refuse its earlier checkpoints.
    shares_checkpoint: bool = False

    def checkpointed(self, position: dict[str, Any] | None) -> None:
        """Called after a checkpoint covering everything up to ``position`` (operator
        state and the sink's output) is durable: the moment to acknowledge what was read
        (commit Kafka offsets). The default does nothing."""

    def lag(self) -> dict[str, int] | None:
        """How far reading is behind the input's end: events waiting, per partition name.

        For metrics (``hebbstream_source_lag``); called on the run's thread between
        micro-batches, so it must not block. ``None`` (the default): the source cannot tell.
        """
        return None

    def close(self) -> None:
        """Release files, connections."""


class Sink:
    """Base class of sinks. Subclasses implement :meth:`write` and usually :meth:`flush`."""

    name: str = "sink"

    def claim(self, *, fresh: bool, overwrite: bool) -> Any:
        """Make this run the destination's only writer, before anything is opened.

        Called by the runtime with ``fresh`` (the run starts over: :meth:`open` will get
        no flush point) and ``overwrite`` (the user allows replacing earlier output).
        Returns a held lock (an object with ``release()``) or ``None``; raises when the
        destination is in use, or holds earlier output and ``fresh and not overwrite``.
        The default claims nothing (sinks without a path, e.g. in memory or Kafka).
        """
        return None

    def open(self, flush_point: dict[str, Any] | None = None) -> None:
        """Prepare for writing; ``flush_point`` comes from the checkpoint being resumed."""

    def write(self, batch: Batch) -> None:
        raise NotImplementedError

    def flush(self) -> dict[str, Any]:
        """Make everything written so far durable; return the flush point to checkpoint."""
        return {}

    def close(self) -> None:
        """Flush and release. Called once at the end of a run."""
