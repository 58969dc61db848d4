"""A Kafka worker (``hebbstream run``) that gets SIGTERM stops gracefully: it checkpoints what
it processed, commits the offsets, leaves the group and exits 143; a new worker continues
with no output missing and none doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from kafka.topics import end_offsets, produce_json, read_topic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PIPELINE = """\
[source]
type = "kafka"
topic = "{topic_in}"
group_id = "{group}"
bootstrap_servers = "{servers}"
idle_timeout = {idle}
config = {{ "session.timeout.ms" = 6000, "heartbeat.interval.ms" = 500 }}

[sink]
type = "kafka"
topic = "{topic_out}"
bootstrap_servers = "{servers}"

[checkpoint]
path = "store"
every_seconds = 600  # only the final checkpoint of the stopped worker covers its input

[run]
check_order = false
"""


def worker(folder, idle: float, **names) -> subprocess.Popen:
    path = os.path.join(folder, f"pipeline-{idle:g}.toml")
    with open(path, "w") as f:
        f.write(PIPELINE.format(idle=idle, **names))
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "run", path, "--summary",
                             os.path.join(folder, f"summary-{idle:g}.json")], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def written(servers: str, topic: str) -> int:
    try:
        return sum(end_offsets(servers, topic).values())
    except KafkaException:  # the topic does not exist yet
        return 0


def committed(servers: str, group: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(4)],
                                                              timeout=10)}
    finally:
        c.close()


def test_sigterm_checkpoints_commits_leaves_and_a_new_worker_continues(kafka, tmp_path):
    names = {"topic_in": kafka.topic("term-in"), "topic_out": kafka.topic("term-out"),
             "group": kafka.topic("term"), "servers": kafka.servers}
    produce_json(kafka.servers, names["topic_in"], [{"key": f"k{i % 8}", "seq": i} for i in range(300)])
    first = worker(tmp_path, 600, **names)
    deadline = time.monotonic() + 60
    while written(kafka.servers, names["topic_out"]) < 300:
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "the worker wrote no output"
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 143, err
    assert "Traceback" not in err and "stopped by SIGTERM" in err, err
    summary = json.loads((tmp_path / "summary-600.json").read_text())
    assert summary["stopped"] == "SIGTERM" and summary["events"] == 300 and summary["checkpoints"] == 1
    # its final checkpoint was committed: the group's offsets are the ends of the input
    ends = end_offsets(kafka.servers, names["topic_in"])
    assert committed(kafka.servers, names["group"], names["topic_in"]) == \
        {p: (end if end else -1001) for p, end in ends.items()}

    produce_json(kafka.servers, names["topic_in"], [{"key": f"k{i % 8}", "seq": i} for i in range(300, 500)])
    second = worker(tmp_path, 1.5, **names)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert json.loads((tmp_path / "summary-1.5.json").read_text())["events"] == 200
    seqs = sorted(m.json()["seq"] for m in read_topic(kafka.servers, names["topic_out"]))
    assert seqs == list(range(500))  # none missing, none doubled
