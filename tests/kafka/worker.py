"""One scale-out worker for the failover tests and the benchmark.

    python tests/kafka/worker.py SERVERS IN OUT GROUP STORE [--exactly-once] [--delay S]
        [--progress FILE] [--summary FILE] [--idle S] [--batch-size N] [--trivial] [--ready FILE --go FILE]

Runs ``KafkaSource(IN) | ZScore | KafkaSink(OUT)`` (``--trivial``: an identity operator)
with checkpoints in STORE, until no message came for ``--idle`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from kafka.detector import ZScore  # noqa: E402

from connectors.kafka import KafkaSink, KafkaSource  # noqa: E402
from stream import Operator, run  # noqa: E402


class Identity(Operator):
    def process(self, batch):
        return batch


def keep_assignment(source: KafkaSource, path: str) -> None:
    while True:
        with open(path + ".tmp", "w") as f:
            json.dump(source.assigned, f)
        os.replace(path + ".tmp", path)
        time.sleep(0.1)


def main() -> None:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)
    p = argparse.ArgumentParser()
    for name in ("servers", "topic_in", "topic_out", "group", "store"):
        p.add_argument(name)
    p.add_argument("--exactly-once", action="store_true")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--progress")
    p.add_argument("--summary")
    p.add_argument("--idle", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--trivial", action="store_true")
    p.add_argument("--every", type=float, default=0.5, help="checkpoint every S seconds")
    p.add_argument("--no-ts", action="store_true", help="output message time = produce time")
    p.add_argument("--assignment", help="keep the current assignment (JSON list) in this file")
    p.add_argument("--ready", help="create this file once imported and set up, then wait for --go")
    p.add_argument("--go", help="start consuming once this file exists (workers that start together)")
    a = p.parse_args()
    fast = {"session.timeout.ms": 4000, "heartbeat.interval.ms": 300, "linger.ms": 2}
    consumer_conf = {k: v for k, v in fast.items() if k != "linger.ms"}
    source = KafkaSource(a.topic_in, group_id=a.group, bootstrap_servers=a.servers, idle_timeout=a.idle,
                         time="" if a.no_ts else "ts", config=consumer_conf)
    sink = KafkaSink(a.topic_out, bootstrap_servers=a.servers, exactly_once=a.exactly_once,
                     time=None if a.no_ts else "ts", config={"linger.ms": 2})
    if a.assignment:
        threading.Thread(target=keep_assignment, args=(source, a.assignment), daemon=True).start()
    op = Identity() if a.trivial else ZScore(delay=a.delay, progress=a.progress)
    if a.ready:
        open(a.ready, "w").close()
    while a.go and not os.path.exists(a.go):
        time.sleep(0.02)
    summary = run(source, op, sink, checkpoint=a.store, checkpoint_every_seconds=a.every,
                  batch_size=a.batch_size, check_order=not a.trivial)
    summary["restored"] = source.restored
    summary["transactions"] = sink.transactions
    summary["pauses"] = source.pauses
    if a.summary:
        with open(a.summary, "w") as f:
            json.dump(summary, f, default=str)


if __name__ == "__main__":
    main()
