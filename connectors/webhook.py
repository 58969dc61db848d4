"""``type = "webhook"``: POST each row (an alert) as a JSON object to an HTTP endpoint.

Each row becomes one ``POST`` with a strict JSON body (RFC 8259: NaN and infinities as
``null``; timestamps as RFC 3339 text, as Kafka payloads are written; see
:mod:`connectors.kafka.codec`), ``Content-Type: application/json`` and an
``Idempotency-Key`` header (``<source>:<row offset>``, the same for the same event when a
resumed run sends it again), so a receiver can drop duplicates.

Delivery runs in one background thread, in order, from a bounded queue (``queue_size``
rows: a slow endpoint back-pressures the run instead of filling memory). A request that
fails with a connection error, a timeout, HTTP 408, 429 or 5xx is retried after
``backoff`` seconds, doubling each time up to ``max_backoff``, ``retries`` times; other
4xx answers are not retried (the request itself is wrong). A row still not delivered is
dead-lettered: written to the run's ``[dead_letter]`` sink with the reason (the
runtime hands it over, see :func:`stream.outputs.connect_dead_letter`), or, without one,
the run stops with an error naming the endpoint, the row and the last failure.

Guarantee: at-least-once, which is what HTTP gives. :meth:`WebhookSink.flush` (every
checkpoint) waits until each queued row was delivered or dead-lettered, so a checkpoint
never covers an alert still in flight; a crash after a POST and before the next
checkpoint sends that alert again on resume (same ``Idempotency-Key``).

Only the standard library (``urllib.request``): one POST per alert needs no connection
pool or async client, and a sink meant for closed networks should not pull in a
dependency for it.

Example (a pipeline file; ``where`` sends only the rows that open an alert)::

    [[outputs]]
    type = "webhook"
    url = "http://127.0.0.1:9000/alerts"
    where = "alert"
    columns = ["key", "timestamp", "value", "anomaly_likelihood", "alert_episode"]
    headers = { Authorization = "Bearer ..." }

    >>> WebhookSink("http://user:secret@example.org/hook").name
    'webhook:http://example.org/hook'
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from stream.batch import Batch
from stream.connector import Sink
from stream.dead_letter import DeadLetter
from stream.errors import ConfigError, SinkError
from stream.options import above, at_least

from .kafka.codec import Codec

log = logging.getLogger("hebbstream.webhook")

_RETRY_STATUS = {408, 425, 429}


@dataclass
class _Item:
    body: bytes
    row: Batch          # the row itself, for its dead-letter record
    key: str


class _Failed(Exception):
    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


class WebhookSink(Sink):
    """POST every row to ``url`` as JSON (see the module docstring).

    Args:
        url: ``http://`` or ``https://`` endpoint.
        headers: extra request headers (e.g. ``Authorization``); never logged.
        timeout: seconds one request may take.
        retries: further attempts after the first.
        backoff: seconds before the first retry; doubles each retry.
        max_backoff: the longest wait between two attempts.
        queue_size: rows waiting for delivery before :meth:`write` blocks.
    """

    option_checks = {"timeout": above(0), "retries": at_least(0), "backoff": at_least(0),
                     "max_backoff": at_least(0), "queue_size": at_least(1)}

    def __init__(self, url: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0,
                 retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0, queue_size: int = 1000):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"url {url!r}: expected an http:// or https:// address with a host")
        self.url = url
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.name = f"webhook:{urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ''))}"
        self.headers = {"Content-Type": "application/json", "User-Agent": "hebbstream", **(headers or {})}
        self.timeout, self.retries = float(timeout), int(retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.queue_size = int(queue_size)
        self.codec = Codec("json")
        self.delivered = self.dead_lettered = 0
        self._dead: DeadLetter | None = None
        self._queue: queue.Queue[_Item | None] | None = None
        self._failed: list[tuple[_Item, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def use_dead_letter(self, sink: Sink | None) -> None:
        """Rows not delivered go to ``sink`` (the run's dead-letter sink); ``None``: they stop the run."""
        self._dead = DeadLetter(sink) if sink is not None else None

    # -- Sink ----------------------------------------------------------------------
    def open(self, flush_point: dict[str, Any] | None = None) -> None:
        """Start the delivery thread (nothing to cut on resume: what was sent was sent)."""
        self._queue = queue.Queue(maxsize=self.queue_size)
        self._stop.clear()
        self._thread = threading.Thread(target=self._deliver_all, name="hebbstream-webhook", daemon=True)
        self._thread.start()

    def write(self, batch: Batch) -> None:
        if self._queue is None:
            self.open(None)
        self._settle_failures()
        bodies = self.codec.encode(batch.data)
        positions = batch.positions()
        for i, body in enumerate(bodies):
            item = _Item(body, batch.slice(i, 1), f"{batch.source}:{int(positions[i])}")
            while True:  # a full queue waits for the endpoint, noticing a failed delivery meanwhile
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    self._settle_failures()

    def flush(self) -> dict[str, Any]:
        """Wait until every queued row was delivered or failed, then dead-letter the failures."""
        if self._queue is not None:
            self._queue.join()
        self._settle_failures()
        return {"delivered": self.delivered, "dead_lettered": self.dead_lettered}

    def close(self) -> None:
        if self._queue is None:
            return
        try:
            self.flush()
        finally:
            self._stop.set()
            self._queue.put(None)
            if self._thread is not None:
                self._thread.join(timeout=self.timeout + 1)
            self._queue = self._thread = None

    # -- delivery (background thread) -------------------------------------------------
    def _deliver_all(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                reason = self._deliver(item)
                if reason is None:
                    self.delivered += 1
                else:
                    with self._lock:
                        self._failed.append((item, reason))
            finally:
                q.task_done()

    def _deliver(self, item: _Item) -> str | None:
        """POST with retries; ``None`` when delivered, else why not."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                self._post(item)
                return None
            except _Failed as exc:
                if not exc.retry or attempt == self.retries:
                    tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                    return f"{self.name}: not delivered after {tries}: {exc.reason}"
                log.info("%s: %s; retrying in %.1f s", self.name, exc.reason, delay)
                if self._stop.wait(delay):
                    return f"{self.name}: not delivered (the run stopped while retrying): {exc.reason}"
                delay = min(self.max_backoff, delay * 2)
        raise AssertionError("unreachable")

    def _post(self, item: _Item) -> None:
        request = urllib.request.Request(self.url, data=item.body, method="POST",
                                         headers={**self.headers, "Idempotency-Key": item.key})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - http(s) checked
                answer.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            retry = exc.code in _RETRY_STATUS or exc.code >= 500
            raise _Failed(f"HTTP {exc.code} {exc.reason}", retry) from None
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out, reset
            reason = getattr(exc, "reason", exc)
            raise _Failed(f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason,
                          True) from None

    # -- failures (run thread) ----------------------------------------------------------
    def _settle_failures(self) -> None:
        """Dead-letter the rows that failed so far, or stop the run without a dead-letter sink."""
        with self._lock:
            failed, self._failed = self._failed, []
        if not failed:
            return
        if self._dead is None:
            item, reason = failed[0]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise SinkError(f"{reason}; the row from {item.row.where(0)}{more} is lost unless the run has a "
                            "[dead_letter] sink to keep it")
        for item, reason in failed:
            self._dead(item.row, [reason])
            self.dead_lettered += 1
