"""Bad Kafka settings, an unreachable broker, bad messages: what ``hebbstream run`` tells the user.

Settings are refused before any connection, naming the source or sink and the key; an
unreachable broker stops the run within ``broker_timeout``; bad messages go to the
dead-letter topic, are counted, and the run goes on. Cases with messages use a librdkafka
mock cluster of their own (``tests/kafka/broker.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_input import assert_kept, assert_refused, run_cli, snapshot, write_pipeline
from mock_kafka import mock_cluster

pytest.importorskip("confluent_kafka", reason="the Kafka cases need confluent-kafka (pip install '.[kafka]')")

NOWHERE = "127.0.0.1:1"  # nothing listens there: connections are refused at once


def source(body: str = "", servers: str = NOWHERE) -> str:
    return (f'[source]\ntype = "kafka"\ntopic = "metrics"\ngroup_id = "detectors"\n'
            f'bootstrap_servers = "{servers}"\n{body}\n')


CKPT = '[checkpoint]\npath = "ckpt"\n'

# (id, pipeline text, what the message must name)
CASES = [
    ("on-error-unknown", source('on_error = "skip"'), ["kafka:metrics", "on_error", "'skip'"]),
    ("dead-letter-without-topic", source('on_error = "dead_letter"'), ["kafka:metrics", "dead_letter_topic"]),
    ("batch-size-zero", source("batch_size = 0"), ["kafka:metrics", "batch_size", "got 0"]),
    ("idle-timeout-negative", source("idle_timeout = -1"), ["kafka:metrics", "idle_timeout", "got -1"]),
    ("broker-timeout-text", source('broker_timeout = "soon"'), ["[source] (kafka) key 'broker_timeout'", '"soon"']),
    ("group-id-empty", source().replace('group_id = "detectors"', 'group_id = ""'), ["kafka:metrics", "group_id"]),
    ("schema-unknown-type", source('schema = { x = "float65" }'), ["column 'x'", "float65"]),
    ("format-unknown", source('format = "xml"'), ["format", "'xml'"]),
    ("sink-flush-timeout-zero",
     source() + f'[sink]\ntype = "kafka"\ntopic = "scores"\nbootstrap_servers = "{NOWHERE}"\nflush_timeout = 0\n',
     ["Kafka sink 'scores'", "flush_timeout", "got 0"]),
    ("no-checkpoint-store", source(), ["kafka:metrics", "checkpoint store", "[checkpoint]"]),
    ("unreachable-broker", source("broker_timeout = 0.5") + CKPT,
     ["kafka:metrics", "no Kafka broker answered", "unreachable since the start", "broker_timeout"]),
]


@pytest.mark.parametrize("text, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_kafka_settings_are_refused_naming_the_key(tmp_path, monkeypatch, text, names):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    toml = write_pipeline(tmp_path, text)
    before = snapshot(tmp_path)
    result = run_cli(["run", str(toml)], cwd=tmp_path)
    assert_refused(result, *names, rc=1)
    assert_kept(before)


def test_no_brokers_named_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    toml = write_pipeline(tmp_path, '[source]\ntype = "kafka"\ntopic = "metrics"\ngroup_id = "g"\n' + CKPT)
    assert_refused(run_cli(["run", str(toml)], cwd=tmp_path), "no Kafka brokers", "bootstrap.servers",
                   "KAFKA_BOOTSTRAP_SERVERS", rc=1)


@pytest.fixture(scope="module")
def broker():
    with mock_cluster(brokers=1) as servers:
        yield servers


@pytest.mark.kafka
def test_bad_messages_go_to_the_dead_letter_topic_and_are_counted(tmp_path: Path, broker):
    from confluent_kafka import Producer

    bad = [b"{not json", b'{"x": "hot"}', b"[1, 2]", b'{"x": 1.0, "y": 2}', b""]
    p = Producer({"bootstrap.servers": broker})
    for i in range(4):
        p.produce("readings", json.dumps({"x": i * 1.5}).encode(), key=b"a", partition=0)
    for value in bad:
        p.produce("readings", value, key=b"a", partition=0)
    p.produce("readings", b'{"x": 1.0}', partition=0)  # no key: the stream key is missing
    p.flush(30)
    text = ('[source]\ntype = "kafka"\ntopic = "readings"\ngroup_id = "bad-messages"\n'
            f'bootstrap_servers = "{broker}"\ndead_letter_topic = "readings-rejected"\nidle_timeout = 1.0\n'
            '[sink]\ntype = "csv"\npath = "out"\n' + CKPT)
    toml = write_pipeline(tmp_path, text)
    result = run_cli(["run", str(toml), "--summary", "summary.json"], cwd=tmp_path)
    assert result.rc == 0 and result.escaped is None, result.err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["events"] == 4 and summary["dead_letter"] == len(bad) + 1
    assert f"dead-letter {len(bad) + 1}" in result.err
