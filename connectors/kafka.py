"""Kafka sources and sinks (confluent-kafka / librdkafka), and scale-out by consumer group.

- :class:`~connectors.kafka_source.KafkaSource`: one worker of a consumer group; state
  per partition, restored on assignment and checkpointed on revocation.
- :class:`~connectors.kafka_sink.KafkaSink`: idempotent producer by default, or
  transactions that commit outputs and consumed offsets together (``exactly_once``).
- Payloads: JSON, Arrow IPC or raw bytes (:mod:`connectors.kafka_codec`).
- ``hebbstream produce FILE --topic T --rate R`` (:mod:`connectors.kafka_cli`) replays a
  recorded file into a topic.

Scale-out: run ``hebbstream run pipeline.toml`` N times with one ``group_id`` and a
``[checkpoint] path`` every worker can reach (a ``pyarrow.fs`` URI such as
``s3://bucket/prefix``). Delivery is at-least-once by default; ``exactly_once = true``
on a Kafka sink makes it exactly-once for readers with ``isolation.level=read_committed``.

Example:
    >>> from connectors.kafka import KafkaSource, KafkaSink
    >>> src = KafkaSource("metrics", group_id="g", bootstrap_servers="localhost:9092")
    >>> src.conf["enable.auto.commit"], src.on_error
    (False, 'stop')
    >>> KafkaSink("scores", bootstrap_servers="localhost:9092", exactly_once=True).conf["acks"]
    'all'
"""

from __future__ import annotations

from .kafka_codec import Codec
from .kafka_sink import KafkaSink
from .kafka_source import KafkaSource

__all__ = ["KafkaSource", "KafkaSink", "Codec"]
