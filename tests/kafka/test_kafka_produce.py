"""``hebbstream produce``: a recorded file into a topic, keyed and paced, with or without a broker."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from kafka.topics import read_topic

from connectors.kafka.cli import produce_file, start_mock_cluster
from stream.cli import main as cli
from stream.errors import ConfigError

CSV = "timestamp,value\n" + "".join(f"2020-01-01 00:{m:02d}:00,{m}.5\n" for m in range(30))


def test_a_file_without_a_key_column_is_keyed_by_its_name(kafka, tmp_path):
    path = tmp_path / "machine_7.csv"
    path.write_text(CSV)
    topic = kafka.topic("produce")
    assert produce_file(str(path), topic, bootstrap_servers=kafka.servers, time_column="timestamp", limit=20) == 20
    got = read_topic(kafka.servers, topic)
    assert len(got) == 20 and {m.key for m in got} == {"machine_7"}
    assert sorted(m.json()["value"] for m in got) == [m + 0.5 for m in range(20)]


def test_speed_paces_by_event_time(kafka, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(CSV)  # 29 minutes of event time
    start = time.monotonic()
    produce_file(str(path), kafka.topic("paced"), bootstrap_servers=kafka.servers, time_column="timestamp",
                 speed=29 * 60 / 1.0)  # the 29 minutes in about a second
    assert time.monotonic() - start >= 0.9
    with pytest.raises(ConfigError, match="--time"):
        produce_file(str(path), "t", bootstrap_servers=kafka.servers, speed=60.0)


def test_the_mock_cluster_serves_other_clients(tmp_path):
    owner, servers = start_mock_cluster()
    path = tmp_path / "m.csv"
    path.write_text(CSV)
    assert produce_file(str(path), "readings", bootstrap_servers=servers, limit=5) == 5
    assert len(read_topic(servers, "readings", partitions=1)) == 5
    owner.flush(1)


def test_the_kafka_live_example_reads_scores_and_writes_two_topics(kafka, tmp_path, monkeypatch):
    """examples/live_anomaly_kafka.toml as its comments run it: produce, then the pipeline."""
    repo = Path(__file__).resolve().parents[2]
    nab = repo / "examples/data/nab/data/realKnownCause/machine_temperature_system_failure.csv"
    assert produce_file(str(nab), "readings", bootstrap_servers=kafka.servers, time_column="timestamp",
                        limit=400) == 400
    text = (repo / "examples/live_anomaly_kafka.toml").read_text().replace('"out/', f'"{tmp_path}/out/')
    text = re.sub(r"\[serve\]\n(?:[^\[].*\n)*", "", text)  # no dashboard in a test: no port to take
    pipeline = tmp_path / "live.toml"
    pipeline.write_text(text)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.servers)
    assert cli(["run", str(pipeline), "--max-events", "300"]) == 0
    scores = read_topic(kafka.servers, "scores")
    assert len(scores) == 300 and {m.key for m in scores} == {"machine_temperature_system_failure"}
    assert {"anomaly_likelihood", "alert", "alert_episode"} <= set(scores[0].json())
