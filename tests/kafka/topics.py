"""Read and write whole topics in tests (no consumer group, so no join delay)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


@dataclass
class Message:
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]

    def json(self) -> dict:
        return json.loads(self.value)


def read_topic(servers: str, topic: str, partitions: int = 4, timeout: float = 30.0) -> list[Message]:
    """Every message of ``topic`` up to its current end, partition by partition."""
    c = Consumer({"bootstrap.servers": servers, "group.id": "test-reader",
                  "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in range(partitions)}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions) if ends[p] > 0])
        out: list[Message] = []
        seen = {p: -1 for p in ends}
        import time

        deadline = time.monotonic() + timeout
        # transaction markers take offsets too: stop at the last data message before the end
        while any(seen[p] < ends[p] - 1 for p in ends if ends[p] > 0) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                if m.error():
                    continue
                seen[m.partition()] = m.offset()
                out.append(Message(m.partition(), m.offset(),
                                   m.key().decode() if m.key() is not None else None, m.value(),
                                   {k: v.decode() for k, v in (m.headers() or [])}))
            if all(seen[p] >= ends[p] - 1 or _only_markers_left(c, topic, p, seen[p], ends[p])
                   for p in ends if ends[p] > 0):
                break
        return out
    finally:
        c.close()


def _only_markers_left(c: Consumer, topic: str, p: int, seen: int, end: int) -> bool:
    # at most two control records (a commit/abort marker per transaction) may trail
    return end - 1 - seen <= 2 and c.position([TopicPartition(topic, p)])[0].offset >= end


def produce_json(servers: str, topic: str, rows: list[dict], key: str = "key") -> None:
    """Produce rows as JSON messages keyed by ``row[key]``."""
    p = Producer({"bootstrap.servers": servers, "linger.ms": 5})
    for row in rows:
        p.produce(topic, json.dumps(row).encode(), key=str(row[key]).encode())
    p.flush(30)


def end_offsets(servers: str, topic: str, partitions: int = 4) -> dict[int, int]:
    """The high watermark of each partition (markers included)."""
    c = Consumer({"bootstrap.servers": servers, "group.id": "test-reader"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)}
    finally:
        c.close()
