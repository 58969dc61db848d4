"""Kafka sources and sinks (confluent-kafka / librdkafka), and scale-out by consumer group.

- :class:`~connectors.kafka.source.KafkaSource`: one worker of a consumer group; state
  per partition, restored on assignment and checkpointed on revocation.
- :class:`~connectors.kafka.sink.KafkaSink`: idempotent producer by default, or
  transactions that commit outputs and consumed offsets together (``exactly_once``).
- Payloads: JSON, Arrow IPC or raw bytes (:mod:`connectors.kafka.codec`).
- ``hebbstream produce FILE --topic T --rate R`` (:mod:`connectors.kafka.cli`) replays a
  recorded file into a topic.

Modules: ``source`` (the consumer), ``sink`` (the producer), ``codec`` (payloads),
``tasks`` (one pipeline copy and checkpoint folder per partition), ``fencing`` (one owner
per partition's checkpoints), ``commit`` (offset commits), ``health`` (broker reachability),
``dead_letter`` (rejected messages to a topic), ``cli`` (``hebbstream produce``).

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

from stream.tasks import PartitionedPipeline, PartitionStore

from .codec import Codec
from .sink import KafkaSink
from .source import KafkaSource

__all__ = ["KafkaSource", "KafkaSink", "Codec", "PartitionedPipeline", "PartitionStore"]
