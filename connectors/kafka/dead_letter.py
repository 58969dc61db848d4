"""The dead-letter topic of a Kafka source: every bad message delivered, or the run stops.

A message the source cannot use is produced to the dead-letter topic with its key, its
value and headers saying why (``hebbstream-reason``), from where
(``hebbstream-topic``, ``-partition``, ``-offset``) and when (``hebbstream-time``, the
message timestamp in RFC 3339). Delivery is checked, not assumed:

- every dead letter has a delivery callback; :meth:`DeadLetters.deliver` waits until all
  are acknowledged and raises :class:`DeadLetterError` if any was refused or is still
  unacknowledged after ``timeout`` seconds. The source calls it before each checkpoint
  is saved, so the offsets that cover a dead letter are never committed (and no newer
  checkpoint skips it) before the broker has it: a refused dead letter stops the run and
  a restart reads the message again;
- a value too large for the producer (librdkafka's ``message.max.bytes``, 1,000,000 bytes
  by default) is cut to fit; ``hebbstream-truncated`` holds the original length in bytes.
  (Without this, a restart would meet the same message, crash again, and dead-letter
  the earlier ones once more: a crash loop.)

Example (not run: needs a broker)::

    dlq = DeadLetters({"bootstrap.servers": "broker:9092"}, "metrics-rejected", "kafka:metrics")
    dlq.send(message, "not JSON: ...")
    dlq.deliver()   # before the checkpoint that covers ``message`` is saved
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from stream.errors import SourceError
from stream.timefmt import rfc3339_ms

log = logging.getLogger("hebbstream.kafka")

#: librdkafka's default ``message.max.bytes``.
DEFAULT_MAX_BYTES = 1_000_000
#: Room kept for the record's own framing, key and headers inside ``message.max.bytes``.
_OVERHEAD = 1024

#: librdkafka settings of a consumer that a producer does not take.
_CONSUMER_ONLY = ("group.", "enable.auto", "auto.offset", "isolation", "partition.assignment", "session.",
                  "heartbeat.", "max.poll", "fetch.", "queued.", "enable.partition.eof", "check.crcs")


class DeadLetterError(SourceError):
    """A dead letter was refused or not acknowledged: its offset must not be committed."""


class DeadLetters:
    """An idempotent producer for the dead-letter topic of one source.

    Args:
        conf: the source's librdkafka settings (consumer-only ones are dropped).
        topic: the dead-letter topic.
        where: the source's name, for messages.
        timeout: seconds :meth:`deliver` waits for acknowledgements.
        max_bytes: largest value sent as is (default: ``message.max.bytes`` less room
            for key and headers).
    """

    def __init__(self, conf: dict[str, Any], topic: str, where: str, timeout: float = 30.0,
                 max_bytes: int | None = None):
        self.conf = {k: v for k, v in conf.items() if not k.startswith(_CONSUMER_ONLY)}
        self.conf["enable.idempotence"] = True
        self.topic, self.where, self.timeout = topic, where, timeout
        limit = int(self.conf.get("message.max.bytes", DEFAULT_MAX_BYTES))
        self.max_bytes = max_bytes if max_bytes is not None else limit - _OVERHEAD
        self.sent = self.delivered = self.truncated = 0
        self._failed: list[str] = []
        self._lock = threading.Lock()
        self._producer: Any = None

    def send(self, msg: Any, reason: str) -> None:
        """Queue ``msg`` (a confluent-kafka ``Message``) for the dead-letter topic."""
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(self.conf)
        value, key = msg.value(), msg.key()
        headers = [("hebbstream-reason", reason), ("hebbstream-topic", msg.topic()),
                   ("hebbstream-partition", str(msg.partition())), ("hebbstream-offset", str(msg.offset()))]
        stamp = msg.timestamp()
        if stamp and stamp[0]:  # (type, ms); type 0 = no timestamp
            headers.append(("hebbstream-time", rfc3339_ms(stamp[1])))
        room = self.max_bytes - len(key or b"") - sum(len(k) + len(v) for k, v in headers) - 64
        if value is not None and len(value) > room:
            headers.append(("hebbstream-truncated", str(len(value))))
            log.warning("%s: dead letter %s-%d offset %d: value of %d bytes cut to %d (the producer's "
                        "message.max.bytes)", self.where, msg.topic(), msg.partition(), msg.offset(),
                        len(value), max(room, 0))
            value = value[:max(room, 0)]
            self.truncated += 1
        where = f"{msg.topic()}-{msg.partition()} offset {msg.offset()}"
        self._produce(value, key, headers, where)
        self.sent += 1

    def _produce(self, value: bytes | None, key: bytes | None, headers: list, where: str) -> None:
        from confluent_kafka import KafkaException

        def delivered(err: Any, _msg: Any) -> None:
            with self._lock:
                if err is None:
                    self.delivered += 1
                else:
                    self._failed.append(f"{where}: {err.str()}")

        while True:
            try:
                self._producer.produce(self.topic, value, key, headers=headers, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let librdkafka send first
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise DeadLetterError(f"{self.where}: cannot send the dead letter of {where} to "
                                      f"{self.topic!r}: {exc.args[0].str()}") from exc
        self._producer.poll(0)

    def deliver(self) -> None:
        """Wait until every dead letter sent so far is acknowledged; raise if one is not."""
        if self._producer is None:
            return
        left = self._producer.flush(self.timeout)
        with self._lock:
            failed, self._failed = self._failed, []
        if failed:
            raise DeadLetterError(f"{self.where}: {len(failed)} dead letter(s) refused by topic {self.topic!r} "
                                  f"({'; '.join(failed[:3])}); their offsets are not committed")
        if left:
            raise DeadLetterError(f"{self.where}: {left} dead letter(s) to {self.topic!r} not acknowledged "
                                  f"after {self.timeout:g} s; their offsets are not committed")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout)
            self._producer = None
