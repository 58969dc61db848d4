"""No broker at the start, or the broker lost mid-run: a clear error within ``broker_timeout``,
a handful of log lines, never a silent hang or a log flood.

The broker lost mid-run is a mock cluster of this test's own (a ``broker.py`` process that
the test kills); the mock cannot show a broker that comes back (a new mock process has
other ports) nor a network partition that leaves connections hanging rather than refused.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from kafka.detector import ZScore
from kafka.topics import produce_json
from streams import ListSink

from connectors.kafka import KafkaSink, KafkaSource
from connectors.kafka.health import BrokerUnreachable
from stream import HebbstreamError, run

HERE = os.path.dirname(os.path.abspath(__file__))
NOWHERE = "127.0.0.1:1"  # nothing listens on port 1: every connection is refused at once


def client_log_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("hebbstream.kafka")]


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_unreachable_broker_at_start_stops_within_the_bound_without_a_log_flood(tmp_path, caplog, exactly_once):
    caplog.set_level(logging.DEBUG, logger="hebbstream")
    source = KafkaSource("metrics", group_id="g", bootstrap_servers=NOWHERE, broker_timeout=2.0)
    sink = KafkaSink("scores", bootstrap_servers=NOWHERE, exactly_once=True, broker_timeout=2.0) \
        if exactly_once else ListSink()
    t0 = time.monotonic()
    with pytest.raises(BrokerUnreachable) as err:
        run(source, ZScore(), sink, checkpoint=str(tmp_path / "ckpt"))
    took = time.monotonic() - t0
    msg = str(err.value)
    assert "no Kafka broker answered" in msg and "unreachable since the start" in msg, msg
    assert ("kafka:scores" if exactly_once else "kafka:metrics") in msg, msg
    assert took < 20, f"stopped after {took:.1f} s with broker_timeout 2 s"
    # librdkafka tried to connect ~20 times a second; the user sees a few lines, not hundreds
    lines = client_log_lines(caplog)
    assert len(lines) <= 12, [r.getMessage() for r in lines]
    assert any("no Kafka broker answers" in r.getMessage() for r in lines)


def test_no_broker_and_no_bound_keeps_retrying_quietly_with_a_health_signal(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="hebbstream")
    source = KafkaSource("metrics", group_id="g", bootstrap_servers=NOWHERE, broker_timeout=None)
    stop = threading.Event()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        run(source, ZScore(), ListSink(), checkpoint=str(tmp_path / "ckpt"), stop_requested=stop)))
    worker.start()
    deadline = time.monotonic() + 20
    while source.health()["broker"] != "down" or source.health()["down_s"] < 2.5:
        assert time.monotonic() < deadline and worker.is_alive(), source.health()
        time.sleep(0.1)
    health = source.health()
    assert health["assigned"] == [] and "refused" in health["last_error"].lower(), health
    stop.set()
    worker.join(20)
    assert not worker.is_alive() and result["events"] == 0
    assert len(client_log_lines(caplog)) <= 12, [r.getMessage() for r in client_log_lines(caplog)]


def test_broker_lost_mid_run_stops_within_the_bound(tmp_path, kafka):
    if not kafka.mock:
        pytest.skip("needs a broker the test can kill: runs on the mock cluster only")
    broker = subprocess.Popen([sys.executable, os.path.join(HERE, "broker.py"), "1"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        servers = broker.stdout.readline().strip()
        topic = "lost-broker"
        produce_json(servers, topic, [{"key": f"k{i % 3}", "x": float(i)} for i in range(50)])
        source = KafkaSource(topic, group_id="g", bootstrap_servers=servers, broker_timeout=3.0,
                             config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        sink = ListSink()
        failure: list[BaseException] = []

        def work():
            try:
                run(source, ZScore(), sink, checkpoint=str(tmp_path / "ckpt"), check_order=False)
            except BaseException as exc:  # noqa: BLE001 - checked below
                failure.append(exc)

        worker = threading.Thread(target=work)
        worker.start()
        deadline = time.monotonic() + 30
        while sum(b.num_rows for b in sink.batches) < 50:
            assert time.monotonic() < deadline, "the worker did not read the topic"
            time.sleep(0.05)
        broker.kill()
        broker.wait()
        lost = time.monotonic()
        worker.join(40)
        assert not worker.is_alive(), "the worker hangs without its broker"
        assert failure and isinstance(failure[0], HebbstreamError), failure
        assert "lost mid-run" in str(failure[0]), failure[0]
        assert time.monotonic() - lost < 30
    finally:
        broker.kill()
        broker.wait()
