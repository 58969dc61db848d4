"""Dead letters are delivered before the offsets that cover them are committed, oversize
ones are cut to fit (the fact recorded), every one is counted in the run summary, and a
stream that is mostly rejected is reported loudly.

The mock cluster accepts any topic name and any message size, so a broker that refuses a
dead letter is simulated by a producer whose delivery reports fail."""

from __future__ import annotations

import json
import logging

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kafka.detector import ZScore
from kafka.topics import produce_json, read_topic
from streams import ListSink

from connectors.kafka import KafkaSource
from connectors.kafka.dead_letter import DeadLetterError
from stream import run


def committed(servers: str, group: str, topic: str) -> list[int]:
    c = Consumer({"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)]
    finally:
        c.close()


def test_oversize_dead_letter_is_truncated_delivered_and_counted(kafka, tmp_path):
    topic, dlq = kafka.topic("big"), kafka.topic("big-rejected")
    huge = b"{" + b"x" * 1_500_000  # not JSON, and over librdkafka's default message.max.bytes
    p = Producer({"bootstrap.servers": kafka.servers, "message.max.bytes": 2_000_000})
    p.produce(topic, json.dumps({"x": 1.0}).encode(), key=b"a", partition=0)
    p.produce(topic, huge, key=b"a", partition=0)
    p.produce(topic, json.dumps({"x": 2.0}).encode(), key=b"a", partition=0)
    p.flush(30)
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers,
                         dead_letter_topic=dlq, idle_timeout=1.5)
    out = ListSink()
    summary = run(source, ZScore(), out, checkpoint=str(tmp_path / "ckpt"), check_order=False)
    assert summary["events"] == 2 and summary["dead_letter"] == 1  # counted in the run summary
    [letter] = read_topic(kafka.servers, dlq)
    assert letter.headers["hebbstream-truncated"] == str(len(huge))
    assert huge.startswith(letter.value) and 900_000 < len(letter.value) < 1_000_000
    assert letter.headers["hebbstream-offset"] == "1" and letter.headers["hebbstream-time"].endswith("Z")
    assert "T" in letter.headers["hebbstream-time"]  # RFC 3339
    assert committed(kafka.servers, source.conf["group.id"], topic)[0] == 3


class RefusingProducer:
    """A dead-letter producer whose broker refuses every message (delivery report with an error)."""

    def __init__(self, conf):
        self.callbacks = []

    def produce(self, topic, value, key, headers, on_delivery):
        self.callbacks.append(on_delivery)

    def poll(self, timeout):
        return 0

    def flush(self, timeout):
        for cb in self.callbacks:
            cb(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
        self.callbacks = []
        return 0


def test_refused_dead_letter_stops_the_run_before_any_checkpoint_or_commit(kafka, tmp_path, monkeypatch):
    import confluent_kafka

    monkeypatch.setattr(confluent_kafka, "Producer", RefusingProducer)
    topic, group = kafka.topic("refused"), kafka.topic("g")
    rows = [{"key": "a", "x": 1.0}, {"key": "a", "x": "hot"}, {"key": "a", "x": 2.0}]
    produce_json(kafka.servers, topic, rows)
    source = KafkaSource(topic, group_id=group, bootstrap_servers=kafka.servers,
                         schema={"key": "string", "x": "float64"}, dead_letter_topic=kafka.topic("dlq"),
                         idle_timeout=1.5)
    with pytest.raises(DeadLetterError, match="refused .*offsets are not committed"):
        run(source, ZScore(), ListSink(), checkpoint=str(tmp_path / "ckpt"), checkpoint_every_batches=1,
            check_order=False)
    assert all(offset < 0 for offset in committed(kafka.servers, group, topic))  # nothing committed
    assert not list((tmp_path / "ckpt").rglob("MANIFEST.json"))  # no checkpoint skips the message


def test_integer_looking_first_poll_then_floats_is_not_dead_lettered(kafka, tmp_path):
    topic, dlq = kafka.topic("ints-first"), kafka.topic("ints-rejected")
    rows = [{"key": "a", "x": i} for i in range(20)] + [{"key": "a", "x": i + 0.5} for i in range(20)]
    produce_json(kafka.servers, topic, rows)
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers, batch_size=5,
                         dead_letter_topic=dlq, idle_timeout=1.5)
    out = ListSink()
    summary = run(source, ZScore(), out, checkpoint=str(tmp_path / "ckpt"), check_order=False)
    assert summary["dead_letter"] == 0 and source.dead_lettered == 0
    assert out.table()["x"].to_pylist() == [float(r["x"]) for r in rows]


def test_a_mostly_rejected_stream_is_reported_loudly_and_counted(kafka, tmp_path, caplog):
    topic, dlq = kafka.topic("wrong-format"), kafka.topic("wrong-rejected")
    rows = [{"key": "a", "x": 1.0}] * 5 + [{"key": "a", "x": "n/a"}] * 60
    produce_json(kafka.servers, topic, rows)
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers,
                         schema={"key": "string", "x": "float64"}, dead_letter_topic=dlq, idle_timeout=1.5)
    with caplog.at_level(logging.WARNING, logger="hebbstream"):
        summary = run(source, ZScore(), ListSink(), checkpoint=str(tmp_path / "ckpt"), check_order=False)
    assert summary["dead_letter"] == 60 and summary["events"] == 5
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR and "dead-letter topic" in r.getMessage()]
    assert loud and "of the" in loud[0].getMessage() and "check the format and schema" in loud[0].getMessage()
