"""State per partition: one pipeline copy per partition, checkpointed per partition.

A source whose partitions move between workers (the Kafka source: the partitions of a
consumer group) has to move operator state with them. Rather than asking every operator
to split its state by key, a worker runs one copy of the pipeline per assigned partition
(a *task*, as in Kafka Streams): the state of a partition is exactly the ``state_dict()``
of its copy, whatever the operators are. A partitioner that keeps every key in one
partition (Kafka's does) makes per-key operators give the same outputs as one pipeline
over the whole stream.

:class:`PartitionedPipeline` routes the rows of a micro-batch to the copies by the
hidden task column the source adds (and removes it from the output).
:class:`PartitionStore` writes each task's state to its own checkpoint folder
``<store>/<task name>/ckpt-N`` (``<topic>-<partition>`` for Kafka) on the shared
``pyarrow.fs`` store, so a new owner loads just the partitions it was given.

Example:
    >>> import pyarrow as pa
    >>> from stream import Batch, Operator, Pipeline
    >>> from stream.tasks import PartitionedPipeline, TASK_COLUMN
    >>> class Count(Operator):
    ...     def __init__(self):
    ...         self.n = 0
    ...     def process(self, batch):
    ...         self.n += batch.num_rows
    ...         return batch.with_columns({"n": [self.n] * batch.num_rows})
    ...     def state_dict(self):
    ...         return {"n": self.n}
    ...     def load_state_dict(self, state):
    ...         self.n = state["n"]
    >>> pipe = PartitionedPipeline(Pipeline([Count()]))
    >>> pipe.add(0, "in[0]")
    >>> pipe.add(1, "in[1]", {"0.Count": {"n": 10}})
    >>> out = pipe(Batch(pa.record_batch({"x": [1, 2, 3], TASK_COLUMN: [0, 1, 0]})))
    >>> out.column_names, out.numpy("x").tolist(), out.numpy("n").tolist()
    (['x', 'n'], [1, 3, 2], [2, 2, 11])
    >>> pipe.remove(1)
    {'0.Count': {'n': 11}}
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from .batch import Batch
from .checkpoint import CheckpointStore
from .operator import Operator, Pipeline, RejectHandler
from .testing import UnitTest

log = logging.getLogger("hebbstream")

#: Hidden int64 column a partitioned source adds: the task (for Kafka: topic, partition) of each row.
TASK_COLUMN = "__hs_task"


class PartitionedPipeline(Pipeline):
    """One copy of ``template`` per task id; rows go to the copy of their task.

    Thread-safe for :meth:`add` / :meth:`remove` from the source's reader thread while
    the runtime processes batches.
    """

    def __init__(self, template: Pipeline, column: str = TASK_COLUMN):
        self.operators = template.operators  # labels for the run summary
        self.template = copy.deepcopy(template)
        self.column = column
        self.tasks: dict[int, Pipeline] = {}
        self.names: dict[int, str] = {}
        self._released: dict[str, float] = {label: 0.0 for label in template.timings}
        self._lock = threading.RLock()

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        from stream.checks import EventTimeOrder

        def partitions(pipe: Operator) -> None:
            for task in (0, 1):
                pipe.add(task, f"contract[{task}]")

        return [UnitTest({"template": Pipeline([EventTimeOrder()])}, _unit_test_stream, setup=partitions)]

    # -- tasks ---------------------------------------------------------------------
    def add(self, task: int, name: str, state: dict[str, Any] | None = None) -> None:
        """Start a copy for ``task`` (shown as ``name`` in errors), from ``state`` if given."""
        pipe = copy.deepcopy(self.template)
        if state is not None:
            pipe.load_state_dict(state)
        with self._lock:
            self.tasks[task] = pipe
            self.names[task] = name

    def remove(self, task: int) -> dict[str, Any] | None:
        """Drop the copy of ``task``; returns its last state (``None`` if it had none)."""
        with self._lock:
            pipe = self.tasks.pop(task, None)
            self.names.pop(task, None)
            if pipe is None:
                return None
            for label, t in pipe.timings.items():
                self._released[label] += t
        pipe.close()
        return pipe.state_dict()

    @property
    def timings(self) -> dict[str, float]:  # type: ignore[override]
        with self._lock:
            total = dict(self._released)
            for pipe in self.tasks.values():
                for label, t in pipe.timings.items():
                    total[label] += t
        return total

    # -- running -------------------------------------------------------------------
    def __call__(self, batch: Batch, on_reject: RejectHandler | None = None) -> Batch:
        ids = batch.numpy(self.column)
        data = batch.data.remove_column(batch.data.schema.get_field_index(self.column))
        plain = replace(batch, data=data)
        outs = []
        with self._lock:
            for task, rows in _groups(ids):
                pipe = self.tasks.get(task)
                if pipe is None:
                    raise RuntimeError(f"rows of task {task} arrived but its partition is "
                                       "not assigned")
                part = plain if rows is None else plain.slice(rows.start, rows.stop - rows.start) \
                    if isinstance(rows, slice) else plain.take(rows)
                out = pipe(replace(part, source=self.names[task]), on_reject)
                if out.num_rows:
                    outs.append(out)
        if not outs:
            return plain.slice(0, 0)
        if len(outs) > 1 and any(not o.schema.equals(outs[0].schema) for o in outs[1:]):
            from stream.errors import SchemaError

            raise SchemaError(f"partitions produced different output columns: "
                              f"{[o.column_names for o in outs]}")
        return Batch.concat(outs)

    def process(self, batch: Batch) -> Batch:
        return self(batch)

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {str(task): pipe.state_dict() for task, pipe in self.tasks.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for task, sub in state.items():
            self.add(int(task), self.names.get(int(task), str(task)), sub)

    def to(self, device: Any) -> PartitionedPipeline:
        self.template.to(device)
        with self._lock:
            for pipe in self.tasks.values():
                pipe.to(device)
        return self

    def close(self) -> None:
        with self._lock:
            for pipe in self.tasks.values():
                pipe.close()

    def __repr__(self) -> str:
        return repr(self.template)


def _groups(ids: np.ndarray) -> list[tuple[int, np.ndarray | slice | None]]:
    """(task, rows) in order of first appearance: ``None`` = the whole batch, a slice
    when every task's rows are one contiguous run (the usual case: a poll returns each
    partition's messages in runs), else row indices.

    >>> _groups(np.array([3, 3, 1, 1, 1]))
    [(3, slice(0, 2, None)), (1, slice(2, 5, None))]
    >>> [(t, r.tolist()) for t, r in _groups(np.array([0, 1, 0]))]
    [(0, [0, 2]), (1, [1])]
    """
    n = len(ids)
    if n == 0:
        return []
    if ids[0] == ids[-1] and (ids == ids[0]).all():
        return [(int(ids[0]), None)]
    starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    run_ids = ids[np.concatenate(([0], starts))].tolist()
    if len(set(run_ids)) == len(run_ids):
        bounds = [0, *starts.tolist(), n]
        return [(task, slice(bounds[i], bounds[i + 1])) for i, task in enumerate(run_ids)]
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    return [(int(uniq[i]), order[bounds[i]:bounds[i + 1]]) for i in np.argsort(first)]


class PartitionStore(CheckpointStore):
    """The run's checkpoint store, split into one checkpoint folder per task.

    The runtime hands :meth:`save` its usual checkpoint (``operators`` from a
    :class:`PartitionedPipeline`, ``source`` positions keyed by task name); each task
    whose position moved since its last checkpoint gets a new checkpoint of its own.
    :meth:`save` returns the sequence number written for each task (for the offset
    commit's metadata); a whole-run resume does not exist (``load_latest`` is ``None``):
    partitions are restored one by one as the source is assigned them (:meth:`restore`).
    """

    def __init__(self, parent: CheckpointStore, names: dict[int, str]):
        self.parent = parent
        self.uri = parent.uri
        self.fingerprint = parent.fingerprint
        self.keep = max(parent.keep, 3)
        self.names = names  # task id -> "topic-partition" (owned by the source)
        self._stores: dict[str, CheckpointStore] = {}
        self._saved: dict[str, Any] = {}
        self.last_seqs: dict[str, int] = {}
        #: called before anything is saved (the source delivers its dead letters there:
        #: no checkpoint may skip a message whose dead letter is not acknowledged)
        self.before_save: Any = None

    def child(self, name: str) -> CheckpointStore:
        if name not in self._stores:
            uri = self.uri.rstrip("/") + "/" + name
            self._stores[name] = CheckpointStore(uri, keep=self.keep, fingerprint=self.fingerprint)
        return self._stores[name]

    def save(self, state: dict[str, Any]) -> int:
        if self.before_save is not None:
            self.before_save()
        positions = state.get("source") or {}
        todo = {}
        for task, sub in (state.get("operators") or {}).items():
            name = self.names.get(int(task))
            if name is None or name not in positions or self._saved.get(name) == positions[name]:
                continue
            todo[name] = (self.child(name), {"operators": sub, "position": positions[name],
                                             "sink": state.get("sink"), "events": state.get("events")})
        if len(todo) > 1:
            # one thread per partition: each checkpoint waits on its own fsyncs (7 on a local
            # disk), which overlap when run together (~100 ms -> ~10 ms for 4 partitions
            # here); save still returns only once every partition's checkpoint is complete
            with ThreadPoolExecutor(max_workers=min(len(todo), 16)) as pool:
                futures = {name: pool.submit(store.save, sub) for name, (store, sub) in todo.items()}
                seqs = {name: f.result() for name, f in futures.items()}
        else:
            seqs = {name: store.save(sub) for name, (store, sub) in todo.items()}
        for name, seq in seqs.items():
            self._saved[name] = positions[name]
            self.last_seqs[name] = seq
        return len(seqs)

    def restore(self, name: str, seq: int | None) -> dict[str, Any] | None:
        """The checkpoint of partition ``name``: number ``seq``, or the newest when ``None``."""
        store = self.child(name)
        if seq is None:
            seq = store.latest()
            if seq is None:
                return None
        saved = store.load(seq)
        self._saved[name] = saved["position"]
        self.last_seqs[name] = seq
        return saved

    def mark_committed(self, name: str, seq: int) -> None:
        """Record that checkpoint ``seq`` of ``name`` is covered by a committed transaction.

        The source's own commits (Kafka's committed offsets) are the record of that; this
        copy is the fallback for brokers that do not keep them (the librdkafka mock).
        """
        store = self.child(name)
        path = f"{store.root}/COMMITTED"
        with store.fs.open_output_stream(path + ".tmp") as f:
            f.write(json.dumps({"seq": seq}).encode())
        store.fs.move(path + ".tmp", path)

    def committed_seq(self, name: str) -> int | None:
        """The checkpoint :meth:`mark_committed` recorded last for ``name``, if any."""
        store = self.child(name)
        try:
            with store.fs.open_input_stream(f"{store.root}/COMMITTED") as f:
                return int(json.loads(f.read())["seq"])
        except (FileNotFoundError, OSError):
            return None

    def forget(self, name: str) -> None:
        self._saved.pop(name, None)
        self.last_seqs.pop(name, None)

    def latest(self) -> int | None:
        return None

    def load_latest(self) -> dict[str, Any] | None:
        return None


def _unit_test_stream(n: int = 40) -> Batch:
    """Rows of partition 0, then of partition 1, each in time order: input for the contract checks (outputs
    come partition by partition within a batch, so any cut of this stream gives them in input order)."""
    import pyarrow as pa

    task = (np.arange(n) >= n // 2).astype(np.int64)
    return Batch(pa.record_batch({"key": np.where(task == 0, "a", "b"), "ts": np.arange(n, dtype=np.int64),
                                  TASK_COLUMN: task}), source="contract")
