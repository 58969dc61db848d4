"""Kafka sources and sinks from a pipeline file: every librdkafka setting passes through."""

from __future__ import annotations

import pytest

from stream import ConfigError
from stream.config import build, parse

PIPELINE = """
[source]
type = "kafka"
topic = ["metrics", "more-metrics"]
group_id = "detectors"
format = "json"
schema = { x = "float64", seq = "int64", ts = "timestamp[ms, UTC]" }
dead_letter_topic = "metrics-rejected"

[source.config]                   # librdkafka settings, passed through unchanged
"bootstrap.servers" = "broker-1:9093,broker-2:9093"
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "u"
"sasl.password" = "p"
"partition.assignment.strategy" = "cooperative-sticky"

[sink]
type = "kafka"
topic = "scores"
exactly_once = true
config = { "bootstrap.servers" = "broker-1:9093", "security.protocol" = "SASL_SSL", "compression.type" = "zstd" }

[checkpoint]
path = "s3://bucket/hebbstream/detectors"
every_seconds = 5
"""


def test_pipeline_file_builds_kafka_source_and_sink_with_librdkafka_settings():
    spec = parse(PIPELINE)
    spec.pop("checkpoint")  # building an S3 store would need credentials; the source checks it at run time
    built = build(spec)
    src, sink = built.source, built.sink
    assert src.topics == ["metrics", "more-metrics"] and src.on_error == "dead_letter"
    assert src.conf["security.protocol"] == "SASL_SSL" and src.conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert src.conf["bootstrap.servers"] == "broker-1:9093,broker-2:9093"
    assert src.conf["group.id"] == "detectors" and src.conf["enable.auto.commit"] is False
    assert src.cooperative
    assert str(src.codec.schema.field("ts").type) == "timestamp[ms, tz=UTC]"
    assert sink.exactly_once and sink.conf["transactional.id"].startswith("hebbstream-scores-")
    assert sink.conf["compression.type"] == "zstd" and sink.conf["enable.idempotence"] is True


def test_bad_kafka_settings_are_named():
    from connectors.kafka import KafkaSource

    with pytest.raises(ConfigError, match="dead_letter_topic"):
        KafkaSource("t", group_id="g", bootstrap_servers="b:1", on_error="dead_letter")
    with pytest.raises(ConfigError, match="unknown type 'float65'"):
        KafkaSource("t", group_id="g", bootstrap_servers="b:1", schema={"x": "float65"})
    with pytest.raises(ConfigError, match="format"):
        KafkaSource("t", group_id="g", bootstrap_servers="b:1", format="xml")


def test_transactional_ids_are_derived_from_topic_group_and_instance(monkeypatch):
    from connectors.kafka import KafkaSink

    def derived(**kwargs):
        sink = KafkaSink("scores", bootstrap_servers="b:1", exactly_once=True, **kwargs)
        sink.use_group("detectors")  # what the run's Kafka source does when it binds
        return sink.conf["transactional.id"]

    # a replacement worker with the same instance name gets the same id: it fences the dead one
    assert derived(instance="worker-0") == derived(instance="worker-0") == "hebbstream-scores-detectors-worker-0"
    assert derived(instance="worker-0") != derived(instance="worker-1")
    monkeypatch.setenv("HEBBSTREAM_INSTANCE", "pod-3")
    assert derived() == "hebbstream-scores-detectors-pod-3"
    assert derived(transactional_id="mine") == "mine"  # an explicit id is kept as given


def test_kafka_source_identity_names_kind_topics_and_group():
    from connectors.kafka import KafkaSource

    src = KafkaSource(["b-topic", "a-topic"], group_id="detectors", bootstrap_servers="b:1")
    assert src.identity() == {"kind": "kafka", "topics": ["a-topic", "b-topic"], "group": "detectors"}
