"""Kafka fixtures: the librdkafka mock cluster in a broker subprocess, or a real cluster.

Set ``KAFKA_BOOTSTRAP_SERVERS=host:9092`` to run the same tests against a real cluster;
otherwise a mock cluster of 3 brokers (``test.mock.num.brokers``) is started once per
session in ``tests/kafka/broker.py``. The header of the pytest run and the ``kafka``
fixture's output say which one was used. Topics get unique names per test.
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest
from mock_kafka import mock_cluster

pytest.importorskip("confluent_kafka", reason="the Kafka tests need confluent-kafka (pip install '.[kafka]')")

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_report_header(config):
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        return f"kafka: real cluster at {servers} (KAFKA_BOOTSTRAP_SERVERS)"
    return "kafka: librdkafka mock cluster, 3 brokers, started by tests/kafka/conftest.py"


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.kafka)


class Broker:
    """Where the tests' Kafka is, and whether it is the mock cluster."""

    def __init__(self, servers: str, mock: bool):
        self.servers, self.mock = servers, mock

    def topic(self, stem: str) -> str:
        return f"{stem}-{uuid.uuid4().hex[:8]}"

    def __repr__(self) -> str:
        return f"{'mock cluster' if self.mock else 'real cluster'} at {self.servers}"


@pytest.fixture(scope="session")
def kafka():
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        broker = Broker(servers, mock=False)
        print(f"\nkafka tests use the {broker}", file=sys.stderr)
        yield broker
        return
    with mock_cluster() as servers:
        broker = Broker(servers, mock=True)
        print(f"\nkafka tests use the librdkafka {broker}", file=sys.stderr)
        yield broker
