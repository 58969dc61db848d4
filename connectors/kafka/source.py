"""Read a stream from Kafka topics as one worker of a consumer group.

Start the same pipeline N times with one ``group_id``: Kafka splits the partitions
between the workers, and each worker keeps the state of its partitions (one pipeline copy
per partition, see :mod:`stream.tasks`) in the shared checkpoint store.

- **Assignment**: for each new partition the worker reads the committed offset, whose
  commit metadata names the partition's checkpoint; it loads that state (at-least-once:
  the newest checkpoint) and resumes reading right after it.
- **Checkpoint**: the state of every partition that moved is saved, the sink's output
  is flushed, and only then are the offsets committed (inside the sink's transaction in
  exactly-once mode).
- **Revocation**: before giving partitions up the worker processes what it read,
  checkpoints and commits, then drops their pipeline copies.
- **Back-pressure**: when more than ``max_inflight`` rows are read but not processed, the
  assigned partitions are paused (the consumer keeps polling, so it stays in the group)
  and resumed once the pipeline has caught up to half of that.

Messages become rows (see :mod:`connectors.kafka.codec`); the message key becomes the
``key`` column and the message timestamp the ``ts`` column, unless the payload has them.
A message that cannot be decoded, lacks a key or does not fit the schema goes to
``dead_letter_topic`` (value and key as they were, the reason in the
``hebbstream-reason`` header; see :mod:`connectors.kafka.dead_letter`) or stops the run
with an error naming topic, partition, offset and key. Dead letters are acknowledged
before the checkpoint that covers them is saved and its offsets committed (a refused one
stops the run), are counted in the run summary's ``dead_letter``, and when they are most
of what was read an error-level line says so.

- **Broker**: without a reachable broker for ``broker_timeout`` seconds (at the start or
  mid-run) the run stops with a clear error; librdkafka's own log lines are rate-limited
  (:mod:`connectors.kafka.health`). :meth:`KafkaSource.health` is a health signal.
- **Stopping**: ``idle_timeout`` ends the run once every partition is read to its end and
  nothing new came for that long; a stop request (SIGTERM/SIGINT under ``hebbstream run``,
  :mod:`stream.shutdown`) ends it between micro-batches; either way the final checkpoint
  is committed and :meth:`close` leaves the group, so its partitions move on at once.

Example (not run: needs a broker)::

    [source]
    type = "kafka"
    topic = "metrics"
    group_id = "detectors"
    dead_letter_topic = "metrics-rejected"
    config = { "bootstrap.servers" = "broker:9092", "security.protocol" = "SASL_SSL" }

    [checkpoint]
    path = "s3://bucket/hebbstream/detectors"   # shared by every worker
    every_seconds = 5
"""

from __future__ import annotations

import logging
import operator
import threading
import time as _time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from stream.batch import DEFAULT_KEY, DEFAULT_TIME, Batch
from stream.connector import RunContext, Source
from stream.errors import BadEventError, CheckpointError, ConfigError, SourceError
from stream.outputs import members
from stream.tasks import TASK_COLUMN, PartitionedPipeline, PartitionStore, _groups

from .codec import Codec, parse_schema
from .commit import commit_offsets
from .dead_letter import DeadLetters
from .fencing import claim, owner, release
from .health import BrokerWatch, client_logger, probe
from .sink import KafkaSink, client_config

log = logging.getLogger("hebbstream.kafka")

_TASK_BITS = 20  # task id = topic index << 20 | partition
_META = "hebbstream:"  # offset commit metadata: "hebbstream:<checkpoint seq>"


class KafkaSource(Source):
    """Consume ``topic`` as a member of consumer group ``group_id``.

    Args:
        topic: a topic or a list of topics.
        group_id: the consumer group; workers sharing it share the partitions.
        bootstrap_servers: ``host:port,...`` (else from ``config`` or the environment).
        format: payload format, ``"json"`` (default), ``"arrow"`` or ``"raw"``.
        schema: expected payload columns ``{name: arrow type}``; default: the first messages'.
        key / time: stream key and event-time columns (message key and timestamp when the
            payload lacks them); ``""`` for none.
        dead_letter_topic: where bad messages go; without one they stop the run.
        on_error: ``"dead_letter"`` (default when a topic is given) or ``"stop"``.
        batch_size: most messages per poll (a poll returns sooner with fewer only when its
            ``poll_timeout`` runs out; large polls spread the per-poll work thinly).
        max_inflight: rows read ahead of the pipeline before partitions are paused.
        idle_timeout: stop after this many seconds without a message (``None``: never);
            time spent waiting for the pipeline to catch up (back-pressure) does not count.
        broker_timeout: stop with :class:`~connectors.kafka.health.BrokerUnreachable` after
            this many seconds without a reachable broker, at the start or mid-run
            (``None`` or 0: keep retrying quietly; :meth:`health` says so).
        config: further librdkafka settings, passed through unchanged.

    JSON payloads without a ``schema``: the first messages fix the columns, and numbers
    are read as ``float64`` (so a first poll of ``1, 2, 3`` does not reject a later
    ``2.5``), except the key and time columns; give ``schema`` for integer columns.
    """

    #: the group's workers share one checkpoint store, one folder per partition
    shares_checkpoint = True

    def __init__(self, topic: str | list[str], *, group_id: str, bootstrap_servers: str | None = None,
                 format: str = "json", schema: dict[str, str] | None = None, key: str = "key",
                 time: str = "ts", dead_letter_topic: str | None = None, on_error: str | None = None,
                 batch_size: int = 5000, poll_timeout: float = 0.1, max_inflight: int = 50_000,
                 idle_timeout: float | None = None, broker_timeout: float | None = 60.0,
                 config: dict[str, Any] | None = None):
        self.topics = [topic] if isinstance(topic, str) else list(topic)
        self.name = f"kafka:{','.join(map(str, self.topics))}"
        broker_timeout = broker_timeout or None  # 0 (a pipeline file has no null): no bound
        _check_options(self.name, self.topics, group_id, batch_size=batch_size, poll_timeout=poll_timeout,
                       max_inflight=max_inflight, idle_timeout=idle_timeout, broker_timeout=broker_timeout)
        self.codec = Codec(format, parse_schema(schema), exact=(key, time))
        self.key, self.time = key, time
        self.on_error = on_error or ("dead_letter" if dead_letter_topic else "stop")
        if self.on_error not in ("dead_letter", "stop"):
            raise ConfigError(f"{self.name}: on_error must be 'dead_letter' or 'stop', got {on_error!r}")
        if self.on_error == "dead_letter" and not dead_letter_topic:
            raise ConfigError(f"{self.name}: on_error = 'dead_letter' needs a dead_letter_topic")
        self.dead_letter_topic = dead_letter_topic
        self.batch_size, self.poll_timeout = batch_size, poll_timeout
        self.max_inflight, self.idle_timeout = max_inflight, idle_timeout
        self.conf = client_config(bootstrap_servers, config, {
            "group.id": group_id, "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed",
            "logger": client_logger(), "log.connection.close": False}, self.name)
        self.conf["group.id"] = group_id
        self.broker = BrokerWatch(self.name, broker_timeout)
        self.cooperative = "cooperative" in str(self.conf.get("partition.assignment.strategy", ""))
        # run state
        self.consumer: Any = None
        self._dlq: DeadLetters | None = None
        self._pipe: PartitionedPipeline | None = None
        self._store: PartitionStore | None = None
        self._checkpoint_now: Any = None
        self._txn_sink: KafkaSink | None = None
        self._names: dict[int, str] = {}          # task id -> "topic-partition"
        self._assigned: dict[str, Any] = {}        # name -> TopicPartition
        self._pos: dict[str, list[int]] = {}       # name -> [next offset, rows done of it]
        self._skip: dict[int, tuple[int, int]] = {}  # task -> (offset, rows already processed)
        self._msg_rows: dict[tuple[int, int], int] = {}  # multi-row messages: rows in each
        self._read = self._done = 0
        self._closing = False
        self._polling = False
        self._to_commit: list[Any] = []
        self._starts: dict[str, int] = {}  # name -> offset reading started at (-1: the reset policy's)
        self._group_metadata: Any = None
        self._lock = threading.Lock()
        self._ends: dict[str, int] = {}           # name -> high watermark last seen (for lag())
        self._ends_at = 0.0
        self.dead_lettered = 0
        self.messages = 0           # messages read, dead letters included
        self._warned_at = 0         # dead letters counted at the last "most are rejected" warning
        self.pauses = 0
        self.restored: dict[str, list[int]] = {}   # name -> position restored on assignment

    @property
    def assigned(self) -> list[str]:
        """The partitions this worker owns now, as ``topic-partition`` names."""
        with self._lock:
            return sorted(self._assigned)

    def identity(self) -> dict[str, Any]:
        """What a checkpoint of this source belongs to: its topics and consumer group."""
        return {"kind": "kafka", "topics": sorted(self.topics), "group": self.conf["group.id"]}

    def health(self) -> dict[str, Any]:
        """For a health check: broker reachability, partitions owned, counts."""
        return {**self.broker.health(), "assigned": self.assigned, "messages": self.messages,
                "dead_lettered": self.dead_lettered}

    # -- run hooks -----------------------------------------------------------------
    def bind(self, run: RunContext) -> RunContext:
        if run.store is None:
            raise ConfigError(f"{self.name}: a Kafka source needs a checkpoint store ([checkpoint] "
                              "path, a folder or pyarrow.fs URI shared by all workers)")
        self._pipe = PartitionedPipeline(run.pipeline)
        self._store = PartitionStore(run.store, self._names)
        self._store.before_save = self._deliver_dead_letters
        self._checkpoint_now = run.checkpoint_now
        txn = [s for s in members(run.sink) if isinstance(s, KafkaSink) and s.exactly_once]
        if len(txn) > 1:  # the consumed offsets go into one transaction
            raise ConfigError(f"{self.name}: {len(txn)} Kafka outputs have exactly_once = true; one transaction "
                              "commits the consumed offsets, so at most one output can be exactly-once")
        if txn:
            self._txn_sink = txn[0]
            txn[0].use_group(self.conf["group.id"])
        return replace(run, pipeline=self._pipe, store=self._store)

    def checkpointed(self, position: dict[str, Any] | None) -> None:
        """Commit the offsets the checkpoint covers (in the sink's transaction if exactly-once)."""
        from confluent_kafka import TopicPartition

        self._deliver_dead_letters()  # (PartitionStore.save did, unless no partition moved)
        with self._lock:
            offsets = [TopicPartition(tp.topic, tp.partition, int(position[name][0]),
                                      f"{_META}{self._store.last_seqs.get(name, 0)}")
                       for name, tp in self._assigned.items() if position and name in position]
        if self._txn_sink is not None:
            if not self._txn_sink.commit_transaction(offsets, self._group_metadata):
                return  # aborted: the partitions' next owner redoes them from the committed checkpoint
            for tp in offsets:
                self._store.mark_committed(f"{tp.topic}-{tp.partition}", int(tp.metadata[len(_META):]))
        elif not self._polling:
            if offsets:
                commit_offsets(self.consumer, offsets, self.name)
        else:
            # librdkafka blocks consumer calls from other threads while the reader thread
            # is inside poll or a rebalance callback: the reader commits them (_commit)
            with self._lock:
                self._to_commit = offsets

    # -- reading -------------------------------------------------------------------
    def batches(self, position: dict[str, Any] | None = None) -> Iterator[Batch]:
        from confluent_kafka import Consumer, KafkaException

        if self._pipe is None:
            raise ConfigError(f"{self.name}: run it with stream.run (the source needs the pipeline)")
        self.broker.start()
        self.consumer = Consumer({**self.conf, "error_cb": self._on_client_error})
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self._polling = True
        try:
            yield from self._poll_loop()
        except KafkaException as exc:  # a clear error, not a traceback from inside librdkafka
            err = exc.args[0] if exc.args else exc
            raise SourceError(f"{self.name}: {getattr(err, 'str', lambda: str(err))()}") from exc
        finally:
            self._polling = False

    def _poll_loop(self) -> Iterator[Batch]:
        idle_since = _time.monotonic()
        pending: list[Any] = []
        nothing = Batch(pa.record_batch([], names=[]), source=self.name)
        while not self._closing:
            self._commit(self.consumer, asynchronous=True)
            self.broker.check(lambda: probe(self.consumer, self.topics[0]))
            if self._read - self._done > self.max_inflight:
                pending = self._wait_for_pipeline()
                idle_since = _time.monotonic()  # waiting on the pipeline is not idling
            msgs = pending or self.consumer.consume(self.batch_size, self.poll_timeout)
            pending = []
            self._note_ends()
            if not msgs:
                if not self._assigned:
                    idle_since = _time.monotonic()  # idle counts from the first assignment
                elif self.idle_timeout is not None and \
                        _time.monotonic() - idle_since > self.idle_timeout:
                    if self._caught_up():
                        return
                    idle_since = _time.monotonic()  # messages wait on the broker: not idle
                yield nothing  # lets the runtime's reader notice a stop request
                continue
            yield from self._to_batches(msgs)
            # counted from here: the time the runtime held the batch (its queue full,
            # a slow pipeline) is back-pressure, not idling
            idle_since = _time.monotonic()

    def _caught_up(self) -> bool:
        """Whether every partition read so far is read up to its end (as last seen by a fetch).

        An empty poll alone does not say so: after partitions were paused for
        back-pressure, librdkafka needs a fetch round trip (up to ``fetch.wait.max.ms``)
        before messages flow again, while the broker holds plenty."""
        from confluent_kafka import KafkaException

        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                start, end = self.consumer.get_watermark_offsets(tp, cached=True)
                if end is None or end < 0:
                    continue  # no fetch answered yet: nothing known to wait for
                # nothing read from it yet: it starts where the assignment put it
                at = tp.offset if tp.offset >= 0 else self._starts.get(f"{tp.topic}-{tp.partition}", -1)
                if at < 0:  # no committed offset: the reset policy's end of the partition
                    at = end if str(self.conf.get("auto.offset.reset")) in ("latest", "largest", "end") else start
                if at < end:
                    return False
        except KafkaException:
            return True
        return True

    def _note_ends(self) -> None:
        """Remember each owned partition's end (librdkafka's cached high watermark), once a second.

        On the reader thread: the consumer is busy there; :meth:`lag` only reads the result."""
        now = _time.monotonic()
        if now - self._ends_at < 1.0:
            return
        self._ends_at = now
        with self._lock:
            owned = dict(self._assigned)
        ends = {}
        for name, tp in owned.items():
            try:
                _, end = self.consumer.get_watermark_offsets(tp, cached=True)
            except Exception:  # noqa: BLE001 - metrics only: an unknown end is left out
                continue
            if end is not None and end >= 0:
                ends[name] = int(end)
        with self._lock:
            self._ends = ends

    def lag(self) -> dict[str, int] | None:
        """Messages not yet processed, per owned partition (``topic-partition``), as of the last poll."""
        with self._lock:
            lags = {}
            for name, end in self._ends.items():
                at = self._pos[name][0] if name in self._pos else self._starts.get(name, -1)
                if at >= 0:
                    lags[name] = max(0, end - at)
            return lags

    def _commit(self, consumer: Any, asynchronous: bool) -> None:
        """Commit the offsets the last checkpoint left for the reader thread."""
        with self._lock:
            offsets, self._to_commit = self._to_commit, []
        if offsets:
            commit_offsets(consumer, offsets, self.name, asynchronous=asynchronous)

    def _wait_for_pipeline(self) -> list[Any]:
        """Pause the partitions until the pipeline has caught up; keep polling meanwhile."""
        parts = self.consumer.assignment()
        self.consumer.pause(parts)
        self.pauses += 1
        held: list[Any] = []
        while self._read - self._done > self.max_inflight // 2 and not self._closing:
            held.extend(self.consumer.consume(self.batch_size, 0.05))
        self.consumer.resume(self.consumer.assignment())
        return held

    def _to_batches(self, msgs: list[Any]) -> Iterator[Batch]:
        """One batch for a whole poll (rows of several partitions; the task column routes them).

        Message fields are read with C-level ``map`` over the unbound ``Message`` methods
        and turned into Arrow/NumPy arrays in bulk: no Python statement runs per message
        unless a message is bad or carries an error."""
        f = _fields()
        if any(map(f.error, msgs)):
            msgs = self._without_errors(msgs)
        if not msgs:
            return
        self.broker.broker_up()
        self.messages += len(msgs)
        tasks, runs = self._tasks_of(msgs)
        batch = self._decode(msgs, tasks, runs)
        if batch is not None:
            self._read += batch.num_rows
            yield batch

    def _without_errors(self, msgs: list[Any]) -> list[Any]:
        """The data messages of a poll; error events are logged, fatal ones raised."""
        good = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(m)
                continue
            if err.code() == -191:  # _PARTITION_EOF (enable.partition.eof)
                continue
            if err.fatal() or not err.retriable():
                raise SourceError(f"{self.name}: {m.topic()}[{m.partition()}]: {err}")
            log.warning("%s: %s", self.name, err)
        return good

    def _tasks_of(self, msgs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Task id of every message, and where runs of one task start (plus the end).

        A poll returns each partition's messages in runs (one per fetched message set),
        so per-run work (names, offsets) is per few hundred messages, not per message."""
        f = _fields()
        n = len(msgs)
        tasks = np.fromiter(map(f.partition, msgs), np.int64, n)
        if len(self.topics) > 1:
            index = {t: i for i, t in enumerate(self.topics)}
            tasks |= np.fromiter(map(index.__getitem__, map(f.topic, msgs)), np.int64, n) << _TASK_BITS
        runs = np.concatenate(([0], np.flatnonzero(tasks[1:] != tasks[:-1]) + 1, [n]))
        for task in set(tasks[runs[:-1]].tolist()):
            if task not in self._names:
                m = msgs[int(np.argmax(tasks == task))]
                self._task(m.topic(), m.partition())
        return tasks, runs

    def _decode(self, msgs: list[Any], tasks: np.ndarray, runs: np.ndarray) -> Batch | None:
        f = _fields()
        n = len(msgs)
        if self.codec.schema is None and runs.size > 2:
            # the first partition's messages alone fix the schema, as when partitions
            # were decoded one by one; the rest of the poll is then checked against it
            first = int(runs[1])
            head = self.codec.decode(list(map(f.value, msgs[:first])))
            rest = self.codec.decode(list(map(f.value, msgs[first:])))
            rb, counts, bad = _join_decoded(head, rest, first)
        else:
            rb, counts, bad = self.codec.decode(list(map(f.value, msgs)))
        one_row_each = rb.num_rows == n and bool((counts == 1).all())  # no per-row repeats
        keep: np.ndarray | None = None
        columns: dict[str, pa.Array] = {}
        if self.key and self.key not in rb.schema.names:
            keys = pa.array(list(map(f.key, msgs)), pa.binary())
            if keys.null_count:
                missing = np.flatnonzero(keys.is_null().to_numpy(zero_copy_only=False) & (counts > 0))
                bad = bad + [(int(i), f"the message has no key (the stream key {self.key!r})")
                             for i in missing]
                keep = _rows_of(~keys.is_null().to_numpy(zero_copy_only=False), counts)
            columns[self.key] = _utf8(keys) if one_row_each else _utf8(keys).take(_row_owner(counts))
        if self.time and self.time not in rb.schema.names:
            ms = np.fromiter(map(_second, map(f.timestamp, msgs)), np.int64, n)
            columns[self.time] = pa.array(ms if one_row_each else np.repeat(ms, counts),
                                          pa.timestamp("ms", tz="UTC"))
        if self._skip:
            keep = self._skip_restored(msgs, tasks, counts, keep)
        if bad:
            self._reject(msgs, sorted(bad))
        offsets = self._offsets(msgs, runs)
        row_tasks = tasks
        if not one_row_each:
            offsets, row_tasks = np.repeat(offsets, counts), np.repeat(tasks, counts)
            for i in np.flatnonzero(counts > 1):
                self._msg_rows[(int(tasks[i]), msgs[i].offset())] = int(counts[i])
        columns[TASK_COLUMN] = pa.array(row_tasks, pa.int64())
        for name_, values in columns.items():
            rb = rb.append_column(name_, values)
        if keep is not None and not keep.all():
            rb, offsets = rb.filter(pa.array(keep)), offsets[keep]
        if rb.num_rows == 0:
            return None
        source = self._names[int(tasks[0])] if runs.size == 2 else self.name
        return Batch(rb, source=source, row_offsets=offsets, key_column=self.key or DEFAULT_KEY,
                     time_column=self.time or DEFAULT_TIME)

    def _offsets(self, msgs: list[Any], runs: np.ndarray) -> np.ndarray:
        """Offset of every message: per run ``first + arange`` when the run has no gaps
        (the usual case), else read one by one."""
        parts = []
        for lo, hi in zip(runs[:-1].tolist(), runs[1:].tolist(), strict=True):
            first, last = msgs[lo].offset(), msgs[hi - 1].offset()
            if last - first == hi - lo - 1:
                parts.append(np.arange(first, last + 1, dtype=np.int64))
            else:  # gaps: transaction markers, compacted or aborted records
                parts.append(np.fromiter(map(_fields().offset, msgs[lo:hi]), np.int64, hi - lo))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _skip_restored(self, msgs: list[Any], tasks: np.ndarray, counts: np.ndarray,
                       keep: np.ndarray | None) -> np.ndarray | None:
        """Drop the rows of a multi-row message that were processed before a restore."""
        row_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
        for task in list(self._skip):
            hits = np.flatnonzero(tasks == task)
            if not hits.size:
                continue
            offset, rows = self._skip.pop(task)
            i = int(hits[0])
            if counts[i] > 0 and msgs[i].offset() == offset:
                if keep is None:
                    keep = np.ones(int(counts.sum()), dtype=bool)
                keep[row_start[i]:row_start[i] + rows] = False
        return keep

    def _reject(self, msgs: list[Any], bad: list[tuple[int, str]]) -> None:
        if self.on_error == "stop":
            i, reason = bad[0]
            m = msgs[i]
            key = m.key().decode("utf-8", "replace") if m.key() is not None else None
            raise BadEventError(f"{reason} (set dead_letter_topic to route bad messages there)",
                                source=f"{m.topic()}[{m.partition()}]", offset=m.offset(), key=key)
        if self._dlq is None:
            self._dlq = DeadLetters(self.conf, self.dead_letter_topic, self.name)
        for i, reason in bad:
            m = msgs[i]
            log.warning("dead-letter: %s-%d offset %d: %s", m.topic(), m.partition(), m.offset(), reason)
            self._dlq.send(m, reason)
            self.dead_lettered += 1
        self._warn_if_most_rejected(bad[0][1])

    def _warn_if_most_rejected(self, reason: str) -> None:
        """An error-level log line each time the dead letters double while they are most
        of what was read: a wrong schema or format rejects the whole stream quietly otherwise."""
        n = self.dead_lettered
        if n >= 20 and 2 * n > self.messages and n >= 2 * self._warned_at:
            self._warned_at = n
            log.error("%s: %d of the %d messages read so far went to the dead-letter topic %r "
                      "(e.g. %s); check the format and schema", self.name, n, self.messages,
                      self.dead_letter_topic, reason)

    def _deliver_dead_letters(self) -> None:
        """Before a checkpoint: every dead letter acknowledged, or the run stops here."""
        if self._dlq is not None:
            self._dlq.deliver()

    def position_after(self, batch: Batch) -> dict[str, Any]:
        """Per partition: the next offset, and how many rows of it were processed already
        (non-zero only inside a multi-row Arrow message)."""
        offsets = batch.positions()
        with self._lock:
            for task, rows in _groups(batch.numpy(TASK_COLUMN)):
                offs = offsets if rows is None else offsets[rows]
                name, last = self._names[task], int(offs[-1])
                total = self._msg_rows.get((task, last), 1)
                done = 1 if total == 1 else int((offs == last).sum())
                prev = self._pos.get(name)
                if total > 1 and prev is not None and prev[0] == last:
                    done += prev[1]
                if done >= total:
                    self._msg_rows.pop((task, last), None)
                    self._pos[name] = [last + 1, 0]
                else:
                    self._pos[name] = [last, done]
            self._done += batch.num_rows
            return {name: list(p) for name, p in self._pos.items()}

    # -- rebalancing ---------------------------------------------------------------
    def _task(self, topic: str, partition: int) -> int:
        task = (self.topics.index(topic) << _TASK_BITS) | partition
        self._names.setdefault(task, f"{topic}-{partition}")
        return task

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.broker.broker_up()
        if self._txn_sink is not None:
            # before reading committed offsets: a dead owner's pending offset commit holds them
            self._take_over(partitions)
        committed = consumer.committed(partitions, timeout=30) if partitions else []
        for tp, done in zip(partitions, committed, strict=True):
            task = self._task(tp.topic, tp.partition)
            name = self._names[task]
            saved = self._restore(name, done)
            self._starts[name] = int(saved["position"][0]) if saved else (done.offset if done is not None else -1)
            self._pipe.add(task, name, saved["operators"] if saved else None)
            with self._lock:
                self._assigned[name] = tp
                if saved:
                    offset, rows = saved["position"]
                    tp.offset = int(offset)
                    self._pos[name] = [int(offset), int(rows)]
                    if rows:
                        self._skip[task] = (int(offset), int(rows))
                    self.restored[name] = [int(offset), int(rows)]
            log.info("%s: assigned %s from %s", self.name, name,
                     f"offset {tp.offset}" if saved else "the committed/reset offset")
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._group_metadata = consumer.consumer_group_metadata()

    def _take_over(self, partitions: list[Any]) -> None:
        """Exactly-once: fence the owners that did not give these partitions up cleanly
        (see :mod:`connectors.kafka.fencing`), then record this worker as their owner."""
        me = self._txn_sink.transactional_id
        fenced: set[str] = set()
        for tp in partitions:
            store = self._store.child(f"{tp.topic}-{tp.partition}")
            prev = owner(store)
            if prev is not None and not prev["released"] and prev["id"] not in (me, *fenced):
                self._txn_sink.fence(prev["id"])
                fenced.add(prev["id"])
            claim(store, me)

    def _restore(self, name: str, committed: Any) -> dict[str, Any] | None:
        """The checkpoint a new owner of partition ``name`` resumes from."""
        offset = committed.offset if committed is not None else -1
        meta = (committed.metadata or "") if committed is not None else ""
        seq = int(meta[len(_META):]) if meta.startswith(_META) else None
        if self._txn_sink is not None:
            # exactly-once: exactly the state the committed transaction covered
            if offset < 0:
                seq = self._store.committed_seq(name)
                if seq is None:
                    return None
                log.warning("%s: Kafka holds no committed offset for %s although checkpoint %d was "
                            "committed (a broker that drops transactional offset commits, like the "
                            "librdkafka mock cluster); resuming from that checkpoint", self.name, name, seq)
                return self._store.restore(name, seq)
            if seq is None:
                raise CheckpointError(f"{self.name}: {name} has committed offset {offset} without a "
                                      "hebbstream checkpoint reference; use a new group id")
            saved = self._store.restore(name, seq)
        else:
            saved = self._store.restore(name, None)  # at-least-once: the newest state
        if saved is None:
            if offset >= 0:
                raise CheckpointError(f"{self.name}: {name} has committed offset {offset} but "
                                      f"{self._store.uri} holds no checkpoint for it (lost store?)")
            return None
        if offset >= 0 and int(saved["position"][0]) < offset:
            raise CheckpointError(f"{self.name}: {name}: the newest checkpoint ends at offset "
                                  f"{saved['position'][0]}, before the committed offset {offset}")
        return saved

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if not self._closing and self._assigned:
            self._checkpoint_now()  # process and checkpoint what was read
            try:
                # a commit the group refuses now (REBALANCE_IN_PROGRESS) is only logged: the
                # new owner resumes from the checkpoint just written, which is newer
                self._commit(consumer, asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - the checkpoint is what counts
                log.warning("%s: offsets not committed on revocation: %s", self.name, exc)
        self._release(partitions, clean=True)
        if self.cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        log.warning("%s: lost %s (another worker owns them now)", self.name,
                    [f"{tp.topic}-{tp.partition}" for tp in partitions])
        self._release(partitions)

    def _release(self, partitions: list[Any], clean: bool = False) -> None:
        for tp in partitions:
            task = self._task(tp.topic, tp.partition)
            name = self._names[task]
            if clean and self._txn_sink is not None:  # given up with its output committed
                release(self._store.child(name), self._txn_sink.transactional_id)
            self._pipe.remove(task)
            with self._lock:
                self._assigned.pop(name, None)
                self._pos.pop(name, None)
                self._skip.pop(task, None)
            self._store.forget(name)

    def _on_client_error(self, err: Any) -> None:
        if err.fatal():
            raise SourceError(f"{self.name}: fatal Kafka error: {err}")
        if not self.broker.on_error(err):  # reachability: the watch logs it, once
            log.info("%s: %s", self.name, err)

    def close(self) -> None:
        self._closing = True
        # the reader thread leaves its poll loop at the next poll; librdkafka would block
        # close() while another thread is inside poll
        deadline = _time.monotonic() + 10 * max(self.poll_timeout, 0.1)
        while self._polling and _time.monotonic() < deadline:
            _time.sleep(0.01)
        if self.consumer is not None:
            try:
                # the final checkpoint's offsets, if the reader left before committing them
                self._commit(self.consumer, asynchronous=False)
            finally:
                self.consumer.close()  # leaves the group: its partitions move on at once
                self.consumer = None
        if self._dlq is not None:
            self._dlq.close()
            self._dlq = None


def _check_options(name: str, topics: list[Any], group_id: Any, **numbers: float | None) -> None:
    """Refuse option values that would fail later, deep inside librdkafka, or never end."""
    if not topics or not all(isinstance(t, str) and t for t in topics):
        raise ConfigError(f"{name}: topic must be a topic name or a list of them, got {topics!r}")
    if not isinstance(group_id, str) or not group_id:
        raise ConfigError(f"{name}: group_id must be a non-empty string, got {group_id!r}")
    optional = ("idle_timeout", "broker_timeout")
    for key, value in numbers.items():
        if value is None and key in optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name}: {key} must be a number above 0"
                              f"{' or omitted' if key in optional else ''}, got {value!r}")


def _fields() -> Any:
    """confluent-kafka's ``Message`` class (imported on first use: the module loads without it)."""
    from confluent_kafka import Message

    return Message


_second = operator.itemgetter(1)  # (timestamp type, milliseconds) -> milliseconds


def _utf8(keys: pa.Array) -> pa.Array:
    """Message keys as text: a cast when they are valid UTF-8, else replacement characters."""
    try:
        return keys.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([None if k is None else k.decode("utf-8", "replace") for k in keys.to_pylist()],
                        pa.string())


def _rows_of(per_message: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """A per-message flag repeated for each row the message gave."""
    return per_message if (counts == 1).all() else np.repeat(per_message, counts)


def _join_decoded(head: tuple, rest: tuple, first: int) -> tuple:
    """Two ``Codec.decode`` results of consecutive message ranges as one."""
    (rb1, c1, bad1), (rb2, c2, bad2) = head, rest
    rb = pa.concat_batches([rb1, rb2]) if rb2.num_rows and rb1.num_rows else (rb1 if rb1.num_rows else rb2)
    return rb, np.concatenate([c1, c2]), list(bad1) + [(i + first, why) for i, why in bad2]


def _row_owner(counts: np.ndarray) -> pa.Array:
    """Index of the message each row came from."""
    return pa.array(np.repeat(np.arange(len(counts)), counts))
