"""Undecodable payloads, missing keys, wrong schemas: to a dead-letter topic, or a clear stop."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer
from kafka.detector import ZScore
from kafka.topics import read_topic
from streams import ListSink

from connectors.kafka import KafkaSource
from stream import BadEventError, run

GOOD = [(b"a", {"x": 1.0, "seq": 0}), (b"b", {"x": 2.0, "seq": 1}), (b"a", {"x": 3.0, "seq": 2})]
BAD = [
    (b"a", b"{not json", "not JSON"),
    (b"b", json.dumps({"x": "hot", "seq": 3}).encode(), "field 'x' is a string"),
    (None, json.dumps({"x": 4.0, "seq": 4}).encode(), "has no key"),
    (b"a", json.dumps({"x": 5.0, "seq": 5, "y": 1}).encode(), "unexpected field(s) ['y']"),
    (b"b", json.dumps({"seq": 6}).encode(), "field(s) ['x'] are missing"),
]


def fill(kafka) -> str:
    topic = kafka.topic("mixed")
    p = Producer({"bootstrap.servers": kafka.servers})
    for key, row in GOOD[:2]:
        p.produce(topic, json.dumps(row).encode(), key=key, partition=0)
    for key, value, _ in BAD:
        p.produce(topic, value, key=key, partition=0)
    p.produce(topic, json.dumps(GOOD[2][1]).encode(), key=GOOD[2][0], partition=0)
    p.flush(30)
    return topic


def test_bad_messages_go_to_the_dead_letter_topic_with_reasons(kafka, tmp_path):
    topic = fill(kafka)
    dlq = kafka.topic("rejected")
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers,
                         schema={"x": "float64", "seq": "int64"}, dead_letter_topic=dlq, idle_timeout=1.5)
    out = ListSink()
    summary = run(source, ZScore(), out, checkpoint=str(tmp_path / "ckpt"), check_order=False)
    assert summary["events"] == 3
    assert out.table()["seq"].to_pylist() == [0, 1, 2]
    rejected = read_topic(kafka.servers, dlq)
    assert len(rejected) == len(BAD) == source.dead_lettered
    for m, (key, value, reason) in zip(sorted(rejected, key=lambda m: int(m.headers["hebbstream-offset"])),
                                       BAD, strict=True):
        assert reason in m.headers["hebbstream-reason"], m.headers
        assert m.value == value and m.headers["hebbstream-topic"] == topic
        assert m.key == (key.decode() if key else None)
        assert m.headers["hebbstream-partition"] == "0"


def test_bad_message_stops_the_run_naming_where_it_is(kafka, tmp_path):
    topic = fill(kafka)
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers,
                         schema={"x": "float64", "seq": "int64"}, idle_timeout=1.5)
    with pytest.raises(BadEventError) as err:
        run(source, ZScore(), ListSink(), checkpoint=str(tmp_path / "ckpt"), check_order=False)
    msg = str(err.value)
    assert f"{topic}[0]" in msg and "row 2" in msg and "not JSON" in msg and "key 'a'" in msg, msg
    assert err.value.offset == 2


def test_a_source_without_a_checkpoint_store_is_refused(kafka):
    from stream import ConfigError

    source = KafkaSource("t", group_id="g", bootstrap_servers=kafka.servers)
    with pytest.raises(ConfigError, match="checkpoint store"):
        run(source, ZScore(), ListSink())
