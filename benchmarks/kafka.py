"""Kafka throughput per worker against bare confluent-kafka loops, and failover time.

A librdkafka mock cluster (``tests/kafka/broker.py``; or ``$KAFKA_BOOTSTRAP_SERVERS``)
gets N JSON messages of ~100 B (1,000 keys, 4 partitions). Then, in the same run and
alternating ``--repeat`` times (best counts; the machine is shared), four loops read
the topic and write every message to a new topic, in consumer groups, with
``consume(5000)``:

- **bare**: confluent-kafka alone: each message's value and key produced as they are
  (bytes through, no decoding), outputs flushed and offsets committed every second;
- **bare_json**: the same, with ``json.loads`` and ``json.dumps`` per message (what a
  hand-written loop with the standard library does for JSON in and out);
- **json**: ``stream.run(KafkaSource | Clocked | KafkaSink)``, JSON decoded into Arrow and
  encoded back, checkpoints every second (per-partition state saved, offsets committed
  after it);
- **raw**: the same with ``format="raw"`` (value bytes through as a binary column); as
  in the bare loop, the message key becomes the ``key`` column and goes out as the key.

Each is timed from the first message consumed (hebbstream: first rows at the operator)
to the last output acknowledged (consumer-group joins excluded), with the process's CPU
time over the same span (the broker runs in another process). Figures:
``events_per_s`` (JSON), ``events_per_s_raw``, ``bare_events_per_s``,
``bare_json_events_per_s``; ``ratio_vs_bare`` (JSON vs bytes through),
``ratio_vs_bare_raw`` (the like-for-like one: target ≥ 0.8), ``ratio_vs_bare_json``
(JSON vs JSON); ``cpu_us_per_event`` and ``cpu_ratio_*`` (the same ratios from CPU time
per event, steadier on a busy machine); ``paired_ratio_median`` (per round against the
same round's bare loop, the median over rounds); ``consume_only_events_per_s``: when that is not
well above the loops' rates, the broker is what they measure. The mock cluster delivers
about 170 k messages/s to one consumer once a run reads more than ~100 k messages (4
topics of 50 k: the same), against 0.6–3 M/s for 60 k; hence 60 k by default. A real
cluster can take ``--events`` in the millions.

Failover: two worker processes (``tests/kafka/worker.py``, trivial operator) share a
topic fed at a steady rate; one is SIGKILLed; ``failover_s`` is the time from the kill
to the survivor's first output for a partition the dead worker owned (message
timestamps of the output topic). It is bounded below by ``session.timeout.ms`` (4 s
here), after which the group rebalances.

    python benchmarks/kafka.py                 # 60 k messages, 5 rounds, 20 s failover
    python benchmarks/kafka.py --quick         # 60 k messages, 2 rounds, 8 s failover
    python benchmarks/kafka.py --events 200000 # broker-bound on the mock cluster
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
CONSUME_BATCH = 5000  # messages per consume() call, for both loops


class Clocked(Operator):
    """Identity that notes when rows first arrived (in a class attribute: the Kafka source
    runs one copy of the pipeline per partition)."""

    first: tuple[float, float] | None = None  # wall clock, process CPU time

    def process(self, batch):
        if Clocked.first is None:
            Clocked.first = (time.perf_counter(), time.process_time())
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


def bare_loop(servers: str, topic: str, n: int, decode: bool = False) -> tuple[float, float]:
    """Events/s (and CPU µs per event) of a plain consume → produce loop with a commit every
    second; with ``decode``, each value goes through ``json.loads`` and ``json.dumps`` (what
    a hand-written loop with the standard library does for JSON in and out)."""
    from confluent_kafka import Consumer, Producer

    c = Consumer({"bootstrap.servers": servers, "group.id": f"bare-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    p = Producer({"bootstrap.servers": servers, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    out = f"bare-out-{uuid.uuid4().hex[:6]}"
    loads, dumps = json.loads, json.dumps
    c.subscribe([topic])
    seen, first, cpu0, last_commit = 0, None, 0.0, time.monotonic()
    while seen < n:
        msgs = c.consume(CONSUME_BATCH, 0.1)
        if not msgs:
            continue
        if first is None:
            first, cpu0 = time.perf_counter(), time.process_time()
        for m in msgs:
            if m.error():
                continue
            value = dumps(loads(m.value()), separators=(",", ":")).encode() if decode else m.value()
            while True:
                try:
                    p.produce(out, value, key=m.key())
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
    elapsed, cpu = time.perf_counter() - first, time.process_time() - cpu0
    c.close()
    return n / elapsed, cpu / n * 1e6


def hebbstream_run(servers: str, topic: str, n: int, fmt: str) -> tuple[float, float]:
    """Events/s (and CPU µs per event) of KafkaSource | Clocked | KafkaSink."""
    op = Clocked()
    Clocked.first = None
    # the message key becomes the key column and goes back out as the message key, as
    # in the bare loop (JSON: the payload's "key" field, equal to the message key here)
    source = KafkaSource(topic, group_id=f"hs-{uuid.uuid4().hex[:6]}", bootstrap_servers=servers, format=fmt,
                         key="key", time="", batch_size=CONSUME_BATCH)
    sink = KafkaSink(f"hs-out-{uuid.uuid4().hex[:6]}", bootstrap_servers=servers, format=fmt, time=None)
    flushed: list[tuple[float, float]] = []
    flush = sink.flush

    def timed_flush():
        point = flush()
        flushed.append((time.perf_counter(), time.process_time()))
        return point

    sink.flush = timed_flush
    with tempfile.TemporaryDirectory() as ckpt:
        # max_events: the run's final checkpoint (flush + commit) comes right after the last event
        summary = run(source, op, sink, checkpoint=ckpt, checkpoint_every_seconds=1.0, check_order=False,
                      max_events=n)
    assert summary["events"] == n, f"hebbstream read {summary['events']} of {n} messages"
    (start, cpu0), (end, cpu1) = Clocked.first, flushed[-1]
    return n / (end - start), (cpu1 - cpu0) / n * 1e6


def consume_only(servers: str, topic: str, n: int) -> float:
    """Events/s of consuming alone: when it is not well above the loops' rates, the broker
    is what they measure."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": servers, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    seen, first = 0, None
    while seen < n:
        msgs = c.consume(CONSUME_BATCH, 0.1)
        if msgs and first is None:
            first = time.perf_counter()
        seen += len(msgs)
    elapsed = time.perf_counter() - first
    c.close()
    return n / elapsed


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
        p.add_argument("--repeat", type=int, default=None, help="rounds of the four loops (default 5, --quick 2)")
        p.add_argument("--events", type=int, default=60_000, help="messages (the mock cluster caps "
                       "reading at ~170 k/s beyond ~100 k)")
        p.add_argument("--no-failover", action="store_true")

    args = parse_args("kafka", "Kafka topic → trivial operator → topic, per worker, vs a bare loop", extra)
    n = args.events
    repeat = args.repeat or (2 if args.quick else 5)
    broker, servers = start_broker()
    try:
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        fill(servers, topic, n, args.seed)
        if stored(servers, topic) != n:
            raise RuntimeError(f"the broker kept {stored(servers, topic)} of {n} messages; use fewer")
        loops = {"bare": lambda: bare_loop(servers, topic, n),
                 "bare_json": lambda: bare_loop(servers, topic, n, decode=True),
                 "json": lambda: hebbstream_run(servers, topic, n, "json"),
                 "raw": lambda: hebbstream_run(servers, topic, n, "raw")}
        eps: dict[str, list[float]] = {name: [] for name in loops}
        cpu: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(repeat):  # alternating, so a busy spell of the machine hits all
            for name, loop in loops.items():
                rate, us = loop()
                eps[name].append(rate)
                cpu[name].append(us)
        best = {name: max(v) for name, v in eps.items()}
        least = {name: min(v) for name, v in cpu.items()}
        figures = {"events": n, "events_per_s": best["json"], "events_per_s_raw": best["raw"],
                   "bare_events_per_s": best["bare"], "bare_json_events_per_s": best["bare_json"],
                   "ratio_vs_bare": best["json"] / best["bare"], "ratio_vs_bare_raw": best["raw"] / best["bare"],
                   "ratio_vs_bare_json": best["json"] / best["bare_json"],
                   "cpu_us_per_event": least,
                   "cpu_ratio_vs_bare": least["bare"] / least["json"],
                   "cpu_ratio_vs_bare_raw": least["bare"] / least["raw"],
                   "cpu_ratio_vs_bare_json": least["bare_json"] / least["json"],
                   # per round, each loop against the bare loop of the same round: the median
                   # is less at the mercy of one lucky or unlucky round than best vs best
                   "paired_ratio_median": {name: float(np.median(np.divide(eps[name], eps["bare"])))
                                           for name in ("raw", "json")}
                   | {"json_vs_bare_json": float(np.median(np.divide(eps["json"], eps["bare_json"])))},
                   "consume_only_events_per_s": consume_only(servers, topic, n),
                   "runs": eps, "runs_cpu_us_per_event": cpu,
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
