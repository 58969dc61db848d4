"""Side outputs: one run writing several sinks, each with its own rows and columns.

:class:`Outputs` is itself a :class:`~stream.connector.Sink`, so the run's loop does not
change: it fans every batch out to its members, each an :class:`Output` (a sink, an
optional ``where`` boolean column that selects the rows it gets, and optional
``columns``). At a checkpoint it flushes every member and returns their flush points as
one dict (``{"sink": ..., "outputs.1": ...}``); on resume it opens each member from its own
flush point, so each keeps its exactly-once part files or transactions as it has alone.
:meth:`Outputs.claim` claims every member (locks, refusal of earlier output).

In a pipeline file, ``[[outputs]]`` tables sit beside ``[sink]``: each is a sink table
(``type`` and the sink's keys) plus ``where`` and ``columns``:

.. code-block:: toml

    [sink]                        # the whole scored stream
    type = "parquet"
    path = "out/scores.parquet"

    [[outputs]]                   # only the rows that open an alert episode
    type = "csv"
    path = "out/alerts.csv"
    where = "alert"               # a boolean column (null counts as false)
    columns = ["key", "timestamp", "value", "anomaly_likelihood", "alert_episode"]

A member that writes no row of a micro-batch is not called for it. A resumed run needs
the same outputs as the checkpoint it resumes (an output added since has no flush point
and is refused: it would miss everything before the checkpoint).

Example:
    >>> import pyarrow as pa
    >>> from connectors.memory import MemorySink
    >>> from stream.batch import Batch
    >>> scores, alerts = MemorySink(), MemorySink()
    >>> out = Outputs([Output(scores), Output(alerts, where="alert", columns=["key"], label="outputs.1")])
    >>> out.open(None)
    >>> out.write(Batch(pa.record_batch({"key": ["a", "b"], "alert": [False, True]})))
    >>> out.flush()
    {'sink': {'batches': 1}, 'outputs.1': {'batches': 1}}
    >>> scores.to_table().num_rows, alerts.to_table().to_pydict()
    (2, {'key': ['b']})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from .batch import Batch
from .connector import Sink
from .errors import CheckpointError, ConfigError, SchemaError


@dataclass
class Output:
    """One member of :class:`Outputs`: a sink and the rows and columns it gets.

    ``label`` keys its flush point in checkpoints; ``title`` names it in errors (default:
    the label; a pipeline file's ``[[outputs]] #2``).
    """

    sink: Sink
    where: str | None = None
    columns: list[str] | None = None
    label: str = "sink"
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or self.label

    def select(self, batch: Batch) -> Batch:
        """The part of ``batch`` this output writes (maybe no rows)."""
        if self.where is not None:
            if self.where not in batch:
                raise SchemaError(f"{self.title} ({self.sink.name}): where = {self.where!r} names no column; "
                                  f"the stream has {batch.column_names}")
            col = batch.column(self.where)
            if not pa.types.is_boolean(col.type):
                raise SchemaError(f"{self.title} ({self.sink.name}): where = {self.where!r} is a {col.type} "
                                  "column; it must be boolean (true: the row is written)")
            mask = col.fill_null(False).to_numpy(zero_copy_only=False)
            batch = batch.filter(mask) if not mask.all() else batch
        if self.columns is not None and batch.num_rows:
            missing = [c for c in self.columns if c not in batch]
            if missing:
                raise SchemaError(f"{self.title} ({self.sink.name}): columns {missing} are not in the stream "
                                  f"({batch.column_names})")
            batch = replace(batch, data=batch.data.select(self.columns))
        return batch


class _Locks:
    """The locks of several sinks, released together."""

    def __init__(self, locks: list[Any]):
        self.locks = locks

    def release(self) -> None:
        while self.locks:
            self.locks.pop().release()


class Outputs(Sink):
    """Write each batch to several sinks (see the module docstring)."""

    name = "outputs"

    def __init__(self, outputs: Iterable[Output]):
        self.outputs = list(outputs)
        labels = [o.label for o in self.outputs]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"outputs: labels {labels} name one output twice")
        if not self.outputs:
            raise ConfigError("outputs: at least one output is needed")

    @property
    def sinks(self) -> list[Sink]:
        return [o.sink for o in self.outputs]

    def claim(self, *, fresh: bool, overwrite: bool) -> Any:
        locks: list[Any] = []
        try:
            for o in self.outputs:
                lock = o.sink.claim(fresh=fresh, overwrite=overwrite)
                if lock is not None:
                    locks.append(lock)
        except BaseException:
            _Locks(locks).release()
            raise
        return _Locks(locks)

    def open(self, flush_point: dict[str, Any] | None = None) -> None:
        if flush_point is not None:
            labels = [o.label for o in self.outputs]
            if not isinstance(flush_point, dict) or set(flush_point) != set(labels):
                got = sorted(flush_point) if isinstance(flush_point, dict) else flush_point
                raise CheckpointError(f"the checkpoint holds the flush points of outputs {got}, the pipeline "
                                      f"writes {labels}: resume with the outputs the checkpoint was taken with "
                                      "(an output added since would miss everything before it)")
        for o in self.outputs:
            o.sink.open(None if flush_point is None else flush_point[o.label])

    def write(self, batch: Batch) -> None:
        for o in self.outputs:
            part = o.select(batch)
            if part.num_rows:
                o.sink.write(part)

    def flush(self) -> dict[str, Any]:
        return {o.label: o.sink.flush() for o in self.outputs}

    def close(self) -> None:
        self._each(lambda s: s.close())

    def _each(self, call: Callable[[Sink], Any]) -> None:
        """``call`` on every member even when one fails; the first failure is raised after."""
        first: BaseException | None = None
        for o in self.outputs:
            try:
                call(o.sink)
            except Exception as exc:  # noqa: BLE001 - the others still close; re-raised below
                first = first or exc
        if first is not None:
            raise first


def members(sink: Sink | None) -> list[Sink]:
    """The sinks ``sink`` writes to: its members for :class:`Outputs`, else itself.

    >>> from connectors.memory import MemorySink
    >>> a = MemorySink()
    >>> members(a) == [a], members(None)
    (True, [])
    """
    if sink is None:
        return []
    return list(sink.sinks) if isinstance(sink, Outputs) else [sink]


def labelled(sink: Sink | None, label: str) -> dict[str, Sink | None]:
    """``{label + " path": sink}``, or one entry per member of an :class:`Outputs` (for
    :func:`stream.sink_paths.check_sink_paths`)."""
    if isinstance(sink, Outputs):
        return {f"{o.title} path": o.sink for o in sink.outputs}
    return {f"{label} path": sink}


def connect_dead_letter(sink: Sink | None, dead_letter: Sink | None) -> None:
    """Hand the run's dead-letter sink to the sinks that dead-letter rows they could not
    deliver (they have ``use_dead_letter``, e.g. the webhook sink)."""
    for s in members(sink):
        use = getattr(s, "use_dead_letter", None)
        if use is not None:
            use(dead_letter)


# -- pipeline files ------------------------------------------------------------------------
def output_options(where: str | None = None, columns: list[str] | None = None) -> None:
    """The keys an ``[[outputs]]`` table has beside its sink's (checked by :mod:`stream.options`)."""


def build_outputs(spec: dict[str, Any], where: str, build_sink: Callable[[dict[str, Any], str], Sink]) -> Sink | None:
    """The run's sink from a parsed pipeline file: ``[sink]`` alone as it is; with
    ``[[outputs]]``, an :class:`Outputs` of ``[sink]`` (label ``sink``) and each output
    (labels ``outputs.1``, ...)."""
    from .options import check_options

    outputs: list[Output] = []
    if "sink" in spec:
        outputs.append(Output(build_sink(spec["sink"], f"{where} [sink]"), label="sink", title="[sink]"))
    for i, table in enumerate(spec.get("outputs", [])):
        at = f"{where} [[outputs]] #{i + 1}"
        extra = {k: table[k] for k in ("where", "columns") if k in table}
        checked = check_options(output_options, extra, at)
        sink = build_sink({k: v for k, v in table.items() if k not in extra}, at)
        outputs.append(Output(sink, checked.get("where"), checked.get("columns"), label=f"outputs.{i + 1}",
                              title=f"[[outputs]] #{i + 1}"))
    if "outputs" not in spec:
        return outputs[0].sink if outputs else None
    return Outputs(outputs)
