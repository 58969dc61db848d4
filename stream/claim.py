"""What a run must own before it touches anything: its checkpoint folder and its sinks.

:func:`claim_run` is called by :func:`stream.run` before it reads, opens a sink or loads
a checkpoint:

1. It locks the checkpoint folder (:meth:`CheckpointStore.lock`), then removes the
   folders a crashed run left half-written. A second run on the same folder is refused
   with an error naming the holder (pid, host, start time, command).
2. A fresh run (no ``resume``) over a folder that holds checkpoints is refused unless
   ``overwrite`` is given: they are another run's progress, and starting over would
   delete them.
3. It claims every sink (:meth:`Sink.claim`): a file sink locks its path and refuses a
   fresh run over earlier output unless ``overwrite``.
4. Only when every lock is held and every check passed does ``overwrite`` delete the
   old checkpoints (the sink replaces its output when opened).

Locks are released when the run ends, however it ends; a run killed with SIGKILL
leaves its lock files, which the next run takes over (:mod:`stream.lock`).

Sources that share their store by design (``Source.shares_checkpoint``: the workers of a
Kafka consumer group) take no store lock and keep their earlier checkpoints; their sinks
are still claimed.

Example:
    >>> import tempfile
    >>> from stream.checkpoint import CheckpointStore
    >>> from stream.claim import claim_run
    >>> from stream.connector import Source
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> store.save({"source": {"row": 3}})
    1
    >>> try:
    ...     claim_run(store, [], Source(), resume=False, overwrite=False)
    ... except Exception as exc:
    ...     print(type(exc).__name__)
    CheckpointError
    >>> with claim_run(store, [], Source(), resume=False, overwrite=True):
    ...     store.latest() is None
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .checkpoint import CheckpointStore
from .connector import Sink, Source
from .errors import CheckpointError, HebbstreamError
from .outputs import connect_dead_letter, labelled
from .sink_paths import check_sink_paths


class Claim:
    """The locks a run holds; :meth:`release` (or leaving the ``with`` block) frees them."""

    def __init__(self) -> None:
        self.locks: list[Any] = []

    def release(self) -> None:
        while self.locks:
            self.locks.pop().release()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_run(store: CheckpointStore | None, sinks: Iterable[Sink | None], source: Source, *,
              resume: bool, overwrite: bool) -> Claim:
    """Lock the store and sinks of a run and check that starting it loses nothing (see above)."""
    claim = Claim()
    try:
        own_store = store is not None and not source.shares_checkpoint
        earlier: list[int] = []
        if own_store:
            claim.locks.append(store.lock().acquire())
            store.clean()
            earlier = store.complete()
            if earlier and not resume and not overwrite:
                raise CheckpointError(
                    f"checkpoint folder {store.uri} holds the checkpoints of an earlier run "
                    f"(newest: ckpt-{earlier[-1]:08d}); --resume continues that run, --overwrite "
                    "(overwrite=True) starts over and deletes them")
        fresh = not (resume and earlier) if own_store else True
        for sink in sinks:
            if sink is not None:
                lock = sink.claim(fresh=fresh, overwrite=overwrite)
                if lock is not None:
                    claim.locks.append(lock)
        if earlier and not resume and overwrite:
            store.clear()
    except BaseException:
        claim.release()
        raise
    return claim


def claim_outputs(source: Source, sink: Sink | None, dead_letter: Sink | None,
                  checkpoint: CheckpointStore | str | None, *, resume: bool, overwrite: bool,
                  force: bool) -> Claim:
    """The first step of :func:`stream.run`: refuse settings and paths that would lose
    data, then take :func:`claim_run`'s locks (a :class:`Claim`, to release at the end).

    Paths that would overwrite the input are checked before any lock is taken or folder made.
    """
    if force and not resume:
        raise HebbstreamError("force (--force) only applies when resuming (--resume)")
    check_sink_paths({"source path": source, **labelled(sink, "sink"), "dead_letter path": dead_letter},
                     checkpoints=checkpoint is not None)
    connect_dead_letter(sink, dead_letter)  # sinks that dead-letter what they cannot deliver
    store = CheckpointStore(checkpoint) if isinstance(checkpoint, str) else checkpoint
    return claim_run(store, (sink, dead_letter), source, resume=resume, overwrite=overwrite)
