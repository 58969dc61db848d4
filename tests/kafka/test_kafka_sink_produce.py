"""The sink's produce loop: every row once, in order, also when the local queue is full."""

from __future__ import annotations

import pyarrow as pa

from connectors.kafka import KafkaSink
from stream import Batch


class FullQueue:
    """A producer stand-in whose queue is full on every third produce (until polled)."""

    def __init__(self):
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.calls = 0
        self.full = False

    def produce(self, topic, value, key=None, **extra):
        self.calls += 1
        if self.full or self.calls % 3 == 0:
            self.full = True
            raise BufferError("Local: Queue full")
        self.sent.append((topic, value, key))

    def poll(self, timeout):
        self.full = False
        return 0


def test_rows_are_produced_once_in_order_when_the_queue_fills_up():
    sink = KafkaSink("out", bootstrap_servers="localhost:1", format="raw", time=None)
    sink.producer = FullQueue()
    values = [b"v%d" % i for i in range(20)]
    sink.write(Batch(pa.record_batch({"value": pa.array(values, pa.binary()),
                                      "key": [f"k{i % 3}" for i in range(20)]})))
    assert sink.producer.sent == [("out", v, b"k%d" % (i % 3)) for i, v in enumerate(values)]
    assert sink.produced == 20
