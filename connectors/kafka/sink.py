"""Write a stream to a Kafka topic: idempotent by default, transactional for exactly-once.

Each row becomes one message (``json``, ``raw``, or a one-row Arrow IPC stream with
``format="arrow"``); the ``key`` column becomes the message key (so a key's outputs keep
their order in one partition) and a timestamp ``time`` column the message timestamp.

Delivery:

- default: an idempotent producer (``enable.idempotence``, ``acks=all``); each
  checkpoint waits until every message written so far is acknowledged (``flush``),
  and only then are the consumed offsets committed: at-least-once.
- ``exactly_once=True``: a transactional producer. Outputs go into a transaction that
  the checkpoint commits together with the consumed offsets
  (``send_offsets_to_transaction``), after the operator state is saved; read the topic
  with ``isolation.level=read_committed``. Needs a :class:`KafkaSource` in the same run.

Transactional ids (exactly-once) are derived, not random:
``hebbstream-<topic>-<group>-<instance>``, where ``instance`` names the worker
(the ``instance`` argument, else ``$HEBBSTREAM_INSTANCE``, else host name and process
id). Give each worker a stable instance name (a StatefulSet pod name, a systemd
instance ``%i``): a worker restarted under the same name calls ``init_transactions``
with the same id, which fences the dead process and aborts its open transaction at once,
so ``read_committed`` readers of the output do not wait for it to time out
(``transaction.timeout.ms``, 60 s by default). A worker that takes over partitions from a
worker that did not give them up cleanly (it died, or lost them as a zombie) fences that
worker's id too, whatever the instance names (:mod:`connectors.kafka.fencing`: each
partition's checkpoint folder records its owner). Zombies are also fenced by the consumer
group (KIP-447: offsets are sent with the consumer's group metadata, and a commit from an
old group generation is refused). Two live workers must never share an instance name:
they would fence each other.

Every librdkafka setting passes through ``config`` (``"security.protocol"``,
``"sasl.mechanism"``, ``"linger.ms"``, ...).

Example (not run: needs a broker)::

    [sink]
    type = "kafka"
    topic = "scores"
    exactly_once = true
    config = { "bootstrap.servers" = "broker:9092", "linger.ms" = 5 }
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from stream.batch import Batch
from stream.connector import Sink
from stream.errors import ConfigError, HebbstreamError

from .codec import Codec, py_bytes
from .health import BrokerWatch, client_logger, probe

log = logging.getLogger("hebbstream.kafka")

#: Header naming the transaction a message was written in (exactly-once mode).
TXN_HEADER = "hebbstream-txn"


def client_config(bootstrap_servers: str | None, config: dict[str, Any] | None,
                  defaults: dict[str, Any], where: str) -> dict[str, Any]:
    """librdkafka settings: ``defaults``, then the user's ``config``; servers from the
    argument, the config or ``$KAFKA_BOOTSTRAP_SERVERS``."""
    conf = {**defaults, **(config or {})}
    servers = bootstrap_servers or conf.get("bootstrap.servers") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers and "test.mock.num.brokers" not in conf:
        raise ConfigError(f"{where}: no Kafka brokers: set bootstrap_servers, config "
                          "'bootstrap.servers' or $KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        conf["bootstrap.servers"] = servers
    return conf


def transactional_id_for(topic: str, group_id: str | None, instance: str) -> str:
    """The derived ``transactional.id`` of a worker: the same for the same output topic,
    consumer group and instance name, whichever process computes it.

    >>> transactional_id_for("scores", "detectors", "worker-0")
    'hebbstream-scores-detectors-worker-0'
    """
    return "-".join(["hebbstream", topic, *([group_id] if group_id else []), instance])


class KafkaSink(Sink):
    """Produce every output row to ``topic``.

    Args:
        topic: the output topic.
        bootstrap_servers: ``host:port,...`` (else from ``config`` or the environment).
        format: ``"json"`` (default), ``"arrow"`` or ``"raw"`` (a ``value`` column).
        key / time: columns for the message key and timestamp (skipped when absent).
        columns: write only these columns.
        exactly_once: transactions committed with the consumed offsets.
        transactional_id: the producer's ``transactional.id`` (default: derived, see above).
        instance: this worker's stable name in the derived transactional id.
        broker_timeout: seconds :meth:`open` waits for a broker before failing.
        config: further librdkafka settings.
        flush_timeout: seconds a checkpoint waits for acknowledgements before failing.
    """

    def __init__(self, topic: str, *, bootstrap_servers: str | None = None, format: str = "json",
                 key: str | None = "key", time: str | None = "ts", columns: list[str] | None = None,
                 exactly_once: bool = False, transactional_id: str | None = None, instance: str | None = None,
                 config: dict[str, Any] | None = None, flush_timeout: float = 30.0,
                 broker_timeout: float = 60.0):
        self.topic = topic
        self.name = f"kafka:{topic}"
        self.codec = Codec(format)
        self.key, self.time, self.columns = key, time, columns
        self.exactly_once = exactly_once
        for opt, value in (("flush_timeout", flush_timeout), ("broker_timeout", broker_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"Kafka sink {topic!r}: {opt} must be a number above 0, got {value!r}")
        defaults: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                    "delivery.report.only.error": True, "logger": client_logger(),
                                    "log.connection.close": False}
        self.instance = instance or os.environ.get("HEBBSTREAM_INSTANCE") or f"{socket.gethostname()}-{os.getpid()}"
        self._own_id = transactional_id is None and "transactional.id" not in (config or {})
        if exactly_once:
            defaults["transactional.id"] = transactional_id or transactional_id_for(topic, None, self.instance)
        self.conf = client_config(bootstrap_servers, config, defaults, f"Kafka sink {topic!r}")
        self.flush_timeout, self.broker_timeout = flush_timeout, broker_timeout
        self.broker = BrokerWatch(self.name, broker_timeout)
        self._aborted: str | None = None  # why the last transaction was aborted (exactly-once)
        self.producer: Any = None
        self.produced = 0
        self.transactions = 0
        self._errors: list[str] = []
        self._in_txn = False

    @property
    def transactional_id(self) -> str | None:
        return self.conf.get("transactional.id")

    def fence(self, txn_id: str) -> bool:
        """Abort the open transaction of the (dead) producer ``txn_id`` and fence it."""
        from .fencing import fence

        return fence(self.conf, txn_id, self.flush_timeout, self.name)

    def use_group(self, group_id: str) -> None:
        """Called by the Kafka source of the run: the derived transactional id names its group."""
        if self.exactly_once and self._own_id:
            self.conf["transactional.id"] = transactional_id_for(self.topic, group_id, self.instance)

    # -- Sink ----------------------------------------------------------------------
    def open(self, flush_point: dict[str, Any] | None = None) -> None:
        from confluent_kafka import KafkaException, Producer

        self.broker.start()
        self.producer = Producer({**self.conf, "error_cb": self._on_error, "on_delivery": self._on_delivery})
        while not probe(self.producer, self.topic):  # a clear error, not a 30 s hang and a traceback
            self.broker.check(lambda: False)
            time.sleep(0.2)
        self.broker.broker_up()
        if self.exactly_once:
            try:
                self.producer.init_transactions(self.flush_timeout)
            except KafkaException as exc:
                raise HebbstreamError(f"{self.name}: cannot start transactions as "
                                      f"{self.conf['transactional.id']!r}: {exc.args[0].str()}") from exc
            self._begin()

    def write(self, batch: Batch) -> None:
        if self._aborted:
            raise HebbstreamError(f"{self.name}: {self._aborted}")
        rb = batch.data.select(self.columns) if self.columns else batch.data
        values = self.codec.encode(rb)
        keys = self._keys(rb)
        stamps = self._timestamps(rb)
        headers = [(TXN_HEADER, f"{self.conf['transactional.id']}:{self.transactions}")] \
            if self.exactly_once else None
        produce, topic = self.producer.produce, self.topic
        keys = keys if keys is not None else [None] * len(values)
        if stamps is None and not headers:
            # the common case, without per-message keyword arguments: produce called by a
            # C-level map, no Python statement per message
            self._produce_all(topic, values, keys)
        else:
            extra: dict[str, Any] = {"headers": headers} if headers else {}
            for i, value in enumerate(values):
                if stamps is not None:
                    extra["timestamp"] = stamps[i]
                try:
                    produce(topic, value, keys[i], **extra)
                except BufferError:
                    self._produce_when_room(topic, value, keys[i], extra)
        self.producer.poll(0)
        self.produced += len(values)
        if self._errors:
            self._raise()

    def flush(self) -> dict[str, Any]:
        """Wait until every message written so far is acknowledged."""
        left = self.producer.flush(self.flush_timeout)
        if left:
            down = self.broker.health()
            why = f" (no broker answers: {down['last_error']})" if down["broker"] == "down" else ""
            raise HebbstreamError(f"{self.name}: {left} message(s) not acknowledged after "
                                  f"{self.flush_timeout:g} s{why}")
        if self._errors:
            self._raise()
        return {"messages": self.produced}

    def commit_transaction(self, offsets: list[Any], group_metadata: Any) -> bool:
        """Commit the open transaction with the consumed ``offsets`` (exactly-once mode).

        Returns False when the broker refused it because the consumer group moved on
        (e.g. ``REBALANCE_IN_PROGRESS`` when workers stop together): the transaction is
        aborted, and the partitions' next owner redoes its input from the last committed
        checkpoint. That is a clean end for a run that stops here; a run that goes on
        would write output its committed state does not cover, so any further write or
        commit raises instead.
        """
        from confluent_kafka import KafkaException

        if self._aborted:
            raise HebbstreamError(f"{self.name}: {self._aborted}")
        try:
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, group_metadata, self.flush_timeout)
            self.producer.commit_transaction(self.flush_timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if not err.txn_requires_abort():
                raise HebbstreamError(f"{self.name}: transaction commit failed: {err.str()}") from exc
            self.producer.abort_transaction(self.flush_timeout)
            self._in_txn = False
            self._aborted = (f"the transaction was aborted ({err.str()}); this worker's state is past its "
                             "committed output: restart it to resume from the committed checkpoint")
            log.warning("%s: transaction refused (%s) and aborted; the next owner of its partitions redoes "
                        "them from the last committed checkpoint", self.name, err.str())
            return False
        self.transactions += 1
        self._in_txn = False
        self._begin()
        return True

    def close(self) -> None:
        if self.producer is None:
            return
        if self._in_txn:
            # whatever was written after the final checkpoint is not covered by one
            self.producer.abort_transaction(self.flush_timeout)
            self._in_txn = False
        else:
            self.producer.flush(self.flush_timeout)
        self.producer = None

    # -- helpers -------------------------------------------------------------------
    def _produce_all(self, topic: str, values: list[bytes], keys: list[bytes | None]) -> None:
        """``produce(topic, value, key)`` for each pair, in order; when the local queue is
        full, the message that did not fit is retried once there is room, then the rest."""
        left_values, left_keys = iter(values), iter(keys)
        while True:
            try:
                deque(map(self.producer.produce, repeat(topic), left_values, left_keys), maxlen=0)
                return
            except BufferError:
                # map had taken the failed pair from both iterators: it sits right before
                # what they have left
                failed = len(values) - left_values.__length_hint__() - 1
                self._produce_when_room(topic, values[failed], keys[failed], {})

    def _produce_when_room(self, topic: str, value: bytes, key: bytes | None, extra: dict[str, Any]) -> None:
        """Produce once the local queue has room (it was full: let librdkafka send first)."""
        while True:
            self.producer.poll(0.05)
            try:
                self.producer.produce(topic, value, key, **extra)
                return
            except BufferError:
                continue

    def _begin(self) -> None:
        self.producer.begin_transaction()
        self._in_txn = True

    def _keys(self, rb: pa.RecordBatch) -> list[bytes | None] | None:
        if not self.key or self.key not in rb.schema.names:
            return None
        col = rb.column(rb.schema.get_field_index(self.key))
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return py_bytes(col.cast(pa.binary()))  # UTF-8 bytes, None for null, without Python encode
        return [None if k is None else (k if isinstance(k, bytes) else str(k).encode())
                for k in col.to_pylist()]

    def _timestamps(self, rb: pa.RecordBatch) -> list[int] | None:
        if not self.time or self.time not in rb.schema.names:
            return None
        col = rb.column(rb.schema.get_field_index(self.time))
        if not pa.types.is_timestamp(col.type) or col.null_count:
            return None
        ms = col.cast(pa.timestamp("ms", col.type.tz)).to_numpy(zero_copy_only=False).view(np.int64)
        return ms.tolist()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"partition {msg.partition()}: {err}")

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._errors.append(f"fatal: {err}")
        elif not self.broker.on_error(err):  # reachability: the watch logs it, once
            log.warning("%s: %s", self.name, err)

    def _raise(self) -> None:
        errors, self._errors = self._errors, []
        raise HebbstreamError(f"{self.name}: {len(errors)} message(s) failed: {'; '.join(errors[:3])}")
