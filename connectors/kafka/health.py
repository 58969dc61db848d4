"""Is a Kafka broker reachable? A bounded wait, a health signal, and no log flood.

librdkafka retries an unreachable broker for ever and logs every failed connection
(tens of lines a second). The Kafka clients here instead:

- send librdkafka's log lines through Python logging (logger
  ``hebbstream.kafka.librdkafka``), each kind of line at most once every
  :data:`LOG_EVERY` seconds per client (:func:`client_logger`);
- keep a :class:`BrokerWatch` per client: it notes librdkafka's "all brokers are down"
  events, confirms them with a metadata request at most once a second, logs one warning
  when the outage is confirmed and one when it ends, and after ``broker_timeout``
  seconds without a broker stops the run with a :class:`BrokerUnreachable` error
  (``broker_timeout=None``: keep retrying quietly; :meth:`BrokerWatch.health` says so).

Example:
    >>> now = [0.0]
    >>> watch = BrokerWatch("kafka:metrics", timeout=4.0, clock=lambda: now[0])  # down until reached
    >>> watch.check(lambda: False)         # t=0: no answer yet, within the bound
    >>> now[0] = 1.5; watch.check(lambda: True)
    >>> watch.health()["broker"]
    'up'
    >>> watch.broker_down("1/1 brokers are down")  # t=1.5: lost
    >>> now[0] = 7.0
    >>> watch.check(lambda: False)
    Traceback (most recent call last):
    ...
    connectors.kafka.health.BrokerUnreachable: kafka:metrics: no Kafka broker answered for 5.5 s (lost mid-run; ...
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from stream.errors import HebbstreamError

log = logging.getLogger("hebbstream.kafka")

#: librdkafka error codes that mean "no broker answers" (not a problem with one request).
ALL_BROKERS_DOWN = -187
#: Seconds between two librdkafka log lines of the same kind from one client.
LOG_EVERY = 30.0
#: Seconds between two metadata requests that check whether a broker is back.
PROBE_EVERY = 1.0


class BrokerUnreachable(HebbstreamError):
    """No Kafka broker answered for longer than the configured ``broker_timeout``."""


class BrokerWatch:
    """Tracks whether a client reaches a broker; raises after ``timeout`` seconds without one.

    A client counts as down from its start until a broker first answers, and again from
    an "all brokers are down" event until a probe gets an answer.
    """

    def __init__(self, where: str, timeout: float | None, clock: Callable[[], float] = time.monotonic):
        self.where, self.timeout, self.clock = where, timeout, clock
        self.down_since: float | None = clock()
        self.reached = False      # a broker has answered at least once
        self.confirmed = False    # the current outage was confirmed (and logged)
        self.last_error = "no broker has answered yet"
        self._last_probe = float("-inf")
        self._lock = threading.Lock()

    def start(self) -> None:
        """The client starts now: down (not yet reached) from this moment."""
        with self._lock:
            self.down_since, self.confirmed, self._last_probe = self.clock(), False, float("-inf")

    def on_error(self, err: Any) -> bool:
        """For an ``error_cb``: note an outage; True when ``err`` was about reachability."""
        if err.code() == ALL_BROKERS_DOWN:
            self.broker_down(err.str())
            return True
        if err.code() in (-195, -193):  # _TRANSPORT, _RESOLVE: one connection; the watch decides
            self.last_error = err.str()
            return True
        return False

    def broker_down(self, reason: str) -> None:
        with self._lock:
            self.last_error = reason
            if self.down_since is None:
                self.down_since = self.clock()

    def broker_up(self) -> None:
        with self._lock:
            if self.down_since is not None and self.confirmed:
                log.warning("%s: a Kafka broker answers again after %.1f s", self.where,
                            self.clock() - self.down_since)
            self.down_since, self.confirmed, self.reached = None, False, True

    def check(self, probe: Callable[[], bool]) -> None:
        """While down: ``probe()`` (at most every :data:`PROBE_EVERY` s) and raise
        :class:`BrokerUnreachable` once down for longer than ``timeout``."""
        if self.down_since is None:
            return
        now = self.clock()
        if now - self._last_probe >= PROBE_EVERY:
            self._last_probe = now
            if probe():
                self.broker_up()
                return
            if not self.confirmed:
                self.confirmed = True
                bound = f"stopping after {self.timeout:g} s" if self.timeout is not None else "retrying"
                log.warning("%s: no Kafka broker answers (%s); %s", self.where, self.last_error, bound)
        down = now - self.down_since
        if self.timeout is not None and down > self.timeout:
            raise BrokerUnreachable(
                f"{self.where}: no Kafka broker answered for {down:.1f} s "
                f"({'lost mid-run' if self.reached else 'unreachable since the start'}; last error: "
                f"{self.last_error}); check bootstrap.servers and the network, or raise broker_timeout")

    def health(self) -> dict[str, Any]:
        """``{"broker": "up" | "down", "down_s": seconds, "last_error": ...}`` for a health check."""
        since = self.down_since
        if since is None:
            return {"broker": "up", "down_s": 0.0, "last_error": None}
        return {"broker": "down", "down_s": self.clock() - since, "last_error": self.last_error}


def probe(client: Any, topic: str | None = None, timeout: float = 1.0) -> bool:
    """Whether a broker answers a metadata request from ``client`` within ``timeout``."""
    from confluent_kafka import KafkaException

    try:
        client.list_topics(topic, timeout=timeout)
        return True
    except KafkaException:
        return False


class _OncePer(logging.Filter):
    """Lets a librdkafka line through only if its kind (facility, client) was quiet for ``every`` s."""

    def __init__(self, every: float):
        super().__init__()
        self.every = every
        self.last: dict[tuple, float] = {}
        self.dropped: dict[tuple, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = tuple(record.args[:2]) if isinstance(record.args, tuple) and len(record.args) >= 2 else (record.msg,)
        now = time.monotonic()
        if now - self.last.get(kind, float("-inf")) < self.every:
            self.dropped[kind] = self.dropped.get(kind, 0) + 1
            return False
        self.last[kind] = now
        skipped = self.dropped.pop(kind, 0)
        if skipped:
            record.msg = f"{record.msg} ({skipped} more like it in the last {self.every:g} s)"
        return True


def client_logger() -> logging.Logger:
    """The logger librdkafka's lines go to (``"logger"`` setting), rate-limited per kind."""
    logger = logging.getLogger("hebbstream.kafka.librdkafka")
    if not any(isinstance(f, _OncePer) for f in logger.filters):
        logger.addFilter(_OncePer(LOG_EVERY))
    return logger
