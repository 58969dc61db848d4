"""What a run reports while it runs: the hooks :func:`stream.run` calls on its observer.

:func:`stream.run` calls these methods on the run's thread at a few points: once the
source is open and the state restored, after each micro-batch is written, when a row
goes to the dead-letter sink, after each checkpoint and at the end. The base class does
nothing; :class:`stream.serve.LiveObserver` turns the calls into Prometheus metrics, a
readiness check and the dashboard's ring buffers. An observer must be quick: it runs
between micro-batches.

Example:
    >>> import numpy as np, pyarrow as pa
    >>> from stream import Batch, Operator, run
    >>> from connectors.memory import MemorySource
    >>> class Count(RunObserver):
    ...     rows = 0
    ...     def batch(self, micro, out, latency, dead_letter):
    ...         self.rows += out.num_rows
    >>> class Identity(Operator):
    ...     def process(self, batch):
    ...         return batch
    >>> seen = Count()
    >>> _ = run(MemorySource(pa.table({"x": np.arange(10.0)})), Identity(), observer=seen, batch_size=4)
    >>> seen.rows
    10
"""

from __future__ import annotations

from typing import Any


class RunObserver:
    """Base class: every hook does nothing."""

    def started(self, source: Any, pipeline: Any, speed: float | None) -> None:
        """The source is about to be read, the state restored (on resume) and the sinks open."""

    def batch(self, micro: Any, out: Any, latency: float, dead_letter: int) -> None:
        """Micro-batch ``micro`` went through the pipeline; ``out`` was written.

        ``latency``: seconds from the first row's arrival to now; ``dead_letter``: rows
        dead-lettered so far in this run (by the pipeline and by the source).
        """

    def dead_lettered(self, total: int) -> None:
        """A row the source could not read went to the dead-letter sink (``total`` so far)."""

    def checkpointed(self, duration: float) -> None:
        """A checkpoint was saved; it took ``duration`` seconds."""

    def finished(self) -> None:
        """The run ended (normally or not); the source is closed."""
