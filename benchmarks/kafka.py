"""Kafka throughput per worker against a bare confluent-kafka loop, and failover time.

A librdkafka mock cluster (``tests/kafka/broker.py``; or ``$KAFKA_BOOTSTRAP_SERVERS``)
gets N JSON messages of ~100 B (1,000 keys, 4 partitions). Then, in the same run and
alternating ``--repeat`` times (best counts; the machine is shared):

- **bare**: a confluent-kafka consumer (group, ``consume(1000)``) that produces every
  message's key and value to an output topic and commits offsets every second;
- **hebbstream**: ``stream.run(KafkaSource | Identity | KafkaSink)`` with checkpoints
  every second (per-partition state saved, offsets committed after it), JSON decoded
  into Arrow and encoded back; also with ``format="raw"`` (bytes through).

Both are timed from the first message consumed to the last output acknowledged and the
offsets committed (consumer-group joins excluded). Figures: ``events_per_s`` (JSON),
``events_per_s_raw``, ``bare_events_per_s``, ``ratio_vs_bare`` (target ≥ 0.8),
``ratio_vs_bare_raw``.

Failover: two worker processes (``tests/kafka/worker.py``, trivial operator) share a
topic fed at a steady rate; one is SIGKILLed; ``failover_s`` is the time from the kill
to the survivor's first output for a partition the dead worker owned (message
timestamps of the output topic). It is bounded below by ``session.timeout.ms`` (4 s
here), after which the group rebalances.

    python benchmarks/kafka.py            # 200 k messages
    python benchmarks/kafka.py --quick    # 60 k messages, under a minute
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import numpy as np
from common import finish, parse_args

from connectors.kafka import KafkaSink, KafkaSource
from stream import Operator, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "kafka", "worker.py")


class Clocked(Operator):
    """Identity that notes when rows first arrived (in a class attribute: the Kafka source
    runs one copy of the pipeline per partition)."""

    first: float | None = None

    def process(self, batch):
        if Clocked.first is None:
            Clocked.first = time.perf_counter()
        return batch


def start_broker() -> tuple[subprocess.Popen | None, str]:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        return None, servers
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "kafka", "broker.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip()


def fill(servers: str, topic: str, n: int, seed: int, rate: float | None = None) -> None:
    from confluent_kafka import Producer

    rng = np.random.default_rng(seed)
    p = Producer({"bootstrap.servers": servers, "linger.ms": 5})
    keys = rng.integers(0, 1000, n)
    xs = rng.normal(size=n)
    t0 = time.monotonic()
    for i in range(n):
        key = f"sensor-{keys[i]:04d}"
        value = f'{{"key":"{key}","seq":{i},"x":{float(xs[i])!r},"unit":"celsius"}}'
        while True:
            try:
                p.produce(topic, value.encode(), key=key.encode())
                break
            except BufferError:
                p.poll(0.05)
        if rate and i % 100 == 0:
            wait = t0 + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            p.poll(0)
    p.flush(60)


def stored(servers: str, topic: str, partitions: int = 4) -> int:
    """Messages the topic holds (the mock cluster drops old batches beyond its capacity)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": servers, "group.id": "bench-count"})
    try:
        marks = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in range(partitions)]
    finally:
        c.close()
    return sum(high - low for low, high in marks)


def bare_loop(servers: str, topic: str, n: int) -> float:
    """Events/s of a plain consume → produce loop with a commit every second."""
    from confluent_kafka import Consumer, Producer

    c = Consumer({"bootstrap.servers": servers, "group.id": f"bare-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    p = Producer({"bootstrap.servers": servers, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    out = f"bare-out-{uuid.uuid4().hex[:6]}"
    c.subscribe([topic])
    seen, first, last_commit = 0, None, time.monotonic()
    while seen < n:
        msgs = c.consume(1000, 0.1)
        if not msgs:
            continue
        first = first or time.perf_counter()
        for m in msgs:
            if m.error():
                continue
            while True:
                try:
                    p.produce(out, m.value(), key=m.key())
                    break
                except BufferError:
                    p.poll(0.05)
            seen += 1
        p.poll(0)
        if time.monotonic() - last_commit >= 1.0:
            p.flush(30)  # at-least-once: outputs acknowledged before the offsets are committed
            c.commit(asynchronous=False)
            last_commit = time.monotonic()
    p.flush(30)
    c.commit(asynchronous=False)
    elapsed = time.perf_counter() - first
    c.close()
    return n / elapsed


def hebbstream_run(servers: str, topic: str, n: int, fmt: str) -> float:
    op = Clocked()
    Clocked.first = None
    source = KafkaSource(topic, group_id=f"hs-{uuid.uuid4().hex[:6]}", bootstrap_servers=servers, format=fmt,
                         key="" if fmt == "raw" else "key", time="")
    sink = KafkaSink(f"hs-out-{uuid.uuid4().hex[:6]}", bootstrap_servers=servers, format=fmt, time=None)
    flushed: list[float] = []
    flush = sink.flush

    def timed_flush():
        point = flush()
        flushed.append(time.perf_counter())
        return point

    sink.flush = timed_flush
    with tempfile.TemporaryDirectory() as ckpt:
        # max_events: the run's final checkpoint (flush + commit) comes right after the last event
        summary = run(source, op, sink, checkpoint=ckpt, checkpoint_every_seconds=1.0, check_order=False,
                      max_events=n)
    assert summary["events"] == n, f"hebbstream read {summary['events']} of {n} messages"
    return n / (flushed[-1] - Clocked.first)


def failover(servers: str, seed: int, seconds: float, rate: float, idle: float) -> float:
    """Seconds from SIGKILL of one worker to the survivor's first output on its partitions."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topic_in, topic_out, group = (f"{s}-{uuid.uuid4().hex[:6]}" for s in ("fo-in", "fo-out", "fo-group"))
    work = tempfile.mkdtemp()
    feeder = threading.Thread(target=fill, args=(servers, topic_in, int(seconds * rate), seed, rate))
    feeder.start()

    def worker(name):
        return subprocess.Popen([sys.executable, WORKER, servers, topic_in, topic_out, group, f"{work}/store",
                                 "--trivial", "--no-ts", "--idle", str(idle), "--batch-size", "500",
                                 "--assignment", f"{work}/{name}.assigned"],
                                stderr=open(f"{work}/{name}.log", "w"))

    victim, survivor = worker("victim"), worker("survivor")
    time.sleep(seconds / 2)
    with open(f"{work}/victim.assigned") as f:
        moved = set(json.load(f))
    killed = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    feeder.join()
    survivor.wait(timeout=120)
    c = Consumer({"bootstrap.servers": servers, "group.id": "fo-reader", "enable.auto.commit": False})
    parts = [int(name.rsplit("-", 1)[1]) for name in moved]
    ends = {p: c.get_watermark_offsets(TopicPartition(topic_out, p), timeout=30)[1] for p in parts}
    c.assign([TopicPartition(topic_out, p, OFFSET_BEGINNING) for p in parts])
    first_after = None
    seen = {p: -1 for p in parts}
    deadline = time.monotonic() + 60
    while any(seen[p] < ends[p] - 2 for p in parts) and time.monotonic() < deadline:
        for m in c.consume(1000, 0.2):
            if m.error():
                continue
            seen[m.partition()] = m.offset()
            stamp = m.timestamp()[1] / 1000
            if stamp > killed and (first_after is None or stamp < first_after):
                first_after = stamp
    c.close()
    if first_after is None:
        raise RuntimeError(f"no output on the dead worker's partitions {sorted(moved)} after the kill "
                           f"(logs in {work})")
    return first_after - killed


def main() -> None:
    def extra(p):
        p.add_argument("--repeat", type=int, default=2)
        p.add_argument("--no-failover", action="store_true")

    args = parse_args("kafka", "Kafka topic → trivial operator → topic, per worker, vs a bare loop", extra)
    n = 60_000 if args.quick else 200_000
    broker, servers = start_broker()
    try:
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        fill(servers, topic, n, args.seed)
        if stored(servers, topic) != n:
            raise RuntimeError(f"the broker kept {stored(servers, topic)} of {n} messages; use fewer")
        bare, ours, raw = [], [], []
        for _ in range(args.repeat):
            bare.append(bare_loop(servers, topic, n))
            ours.append(hebbstream_run(servers, topic, n, "json"))
            raw.append(hebbstream_run(servers, topic, n, "raw"))
        figures = {"events": n, "events_per_s": max(ours), "events_per_s_raw": max(raw),
                   "bare_events_per_s": max(bare), "ratio_vs_bare": max(ours) / max(bare),
                   "ratio_vs_bare_raw": max(raw) / max(bare), "runs": {"bare": bare, "json": ours, "raw": raw},
                   "broker": "real cluster" if broker is None else "librdkafka mock cluster (3 brokers)",
                   "target_ratio": 0.8}
        if not args.no_failover:
            figures["failover_s"] = failover(servers, args.seed, 8.0 if args.quick else 20.0, 5000.0,
                                             idle=3.0 if args.quick else 5.0)
            figures["session_timeout_s"] = 4.0
    finally:
        if broker is not None:
            broker.stdin.close()
            broker.wait(timeout=10)
    finish("kafka", figures, quick=args.quick)


if __name__ == "__main__":
    main()
