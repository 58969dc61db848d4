"""A librdkafka mock cluster in its own process, for tests and benchmarks.

Prints the bootstrap servers on the first stdout line and keeps the cluster up until
stdin closes (the parent exits) or it is killed:

    python tests/kafka/broker.py [BROKERS]
"""

from __future__ import annotations

import sys

from confluent_kafka import Producer


def main() -> None:
    brokers = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    # the creating client owns the in-process cluster; keep it alive
    owner = Producer({"test.mock.num.brokers": brokers, "log_level": 3})
    meta = owner.list_topics(timeout=10)
    print(",".join(f"{b.host}:{b.port}" for b in meta.brokers.values()), flush=True)
    sys.stdin.read()  # returns when the parent closes our stdin or exits
    owner.flush(1)


if __name__ == "__main__":
    main()
