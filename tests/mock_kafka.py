"""A librdkafka mock cluster in a child process (``tests/kafka/broker.py``), as a context manager.

Example (needs confluent-kafka)::

    with mock_cluster(brokers=1) as servers:
        ...  # "127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

BROKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kafka", "broker.py")


@contextlib.contextmanager
def mock_cluster(brokers: int = 3) -> Iterator[str]:
    """Start the cluster, yield its bootstrap servers, stop it when the block ends."""
    proc = subprocess.Popen([sys.executable, BROKER_SCRIPT, str(brokers)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        servers = proc.stdout.readline().strip()
        if not servers:
            pytest.fail("the mock Kafka cluster did not start (tests/kafka/broker.py printed nothing)")
        yield servers
    finally:
        proc.stdin.close()  # the broker process exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
