"""``hebbstream produce FILE --topic T [--rate R | --speed S]``: replay a recorded file into a topic.

The file is read with the registered source for its extension (``.csv``, ``.arrow``,
``.parquet``, ...); each row becomes one message written by a :class:`KafkaSink` (the
``key`` column is the message key, or the file's name when it has no such column; a
timestamp ``time`` column is the message timestamp).
``--rate`` paces the replay in events per second; ``--speed`` by event time (``--time``
names the column; 1 = as it happened, 3600 = an hour a second); neither: as fast as possible.

Without a broker (no ``--bootstrap-servers``, no ``$KAFKA_BOOTSTRAP_SERVERS``) it starts
librdkafka's mock cluster in this process, prints its address
(``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:PORT``) and keeps it up after the replay until
interrupted, so that pipelines in other processes can read the topic: a live stream on
one machine with nothing installed (the mock keeps everything in memory and is for trying
things out, not for production).

Example:
    >>> import argparse
    >>> from connectors.kafka.cli import add_parser
    >>> sub = argparse.ArgumentParser(prog="hebbstream").add_subparsers()
    >>> p = add_parser(sub)
    >>> args = p.parse_args(["data.csv", "--topic", "metrics", "--rate", "500", "-X", "linger.ms=10"])
    >>> args.topic, args.rate, args.config
    ('metrics', 500.0, ['linger.ms=10'])
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

import pyarrow as pa

from stream.batcher import paced
from stream.errors import BadEventError, ConfigError
from stream.registry import lookup

_SOURCES = {".csv": "csv", ".arrow": "arrow", ".arrows": "arrow", ".ipc": "arrow", ".feather": "arrow",
            ".parquet": "parquet", ".pq": "parquet"}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``produce`` sub-command to the ``hebbstream`` CLI."""
    p = sub.add_parser("produce", help="replay a recorded file into a Kafka topic",
                       description="Replay a recorded file (CSV, Arrow, Parquet) into a Kafka topic, "
                                   "one message per row, at a chosen rate.")
    p.add_argument("file", help="recorded stream: a file, folder or glob")
    p.add_argument("--topic", required=True, help="topic to write to")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    pace.add_argument("--speed", type=float, default=None,
                      help="pace by event time (needs --time): 1 = as it happened, 3600 = an hour a second")
    p.add_argument("--bootstrap-servers",
                   help="host:port,... (default: $KAFKA_BOOTSTRAP_SERVERS; neither: a mock cluster in this process)")
    p.add_argument("--format", choices=("json", "arrow", "raw"), default="json", help="payload format")
    p.add_argument("--key", default="key", help="column holding the message key (default: key)")
    p.add_argument("--time", default=None, help="column holding event time (message timestamp)")
    p.add_argument("--limit", type=int, help="stop after this many rows")
    p.add_argument("-X", "--config", action="append", default=[], metavar="NAME=VALUE",
                   help="librdkafka setting, e.g. -X security.protocol=SASL_SSL (repeatable)")
    p.set_defaults(func=_main)
    return p


def parse_settings(items: list[str]) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` → ``{"a.b": "1", "c": "x"}``.

    >>> parse_settings(["linger.ms=5", "sasl.password=a=b"])
    {'linger.ms': '5', 'sasl.password': 'a=b'}
    """
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"-X {item!r}: expected NAME=VALUE")
        out[name.strip()] = value
    return out


def start_mock_cluster(brokers: int = 1) -> tuple[Any, str]:
    """librdkafka's mock cluster, owned by the returned client (it lives as long as that client
    does), and its bootstrap servers."""
    from confluent_kafka import Producer

    owner = Producer({"test.mock.num.brokers": brokers, "log_level": 3})
    meta = owner.list_topics(timeout=10)
    return owner, ",".join(f"{b.host}:{b.port}" for b in meta.brokers.values())


def produce_file(path: str, topic: str, *, rate: float = 0.0, speed: float | None = None,
                 bootstrap_servers: str | None = None, format: str = "json", key: str = "key",
                 time_column: str | None = None, limit: int | None = None,
                 config: dict[str, Any] | None = None) -> int:
    """Write the rows of ``path`` to ``topic``; returns the number of messages."""
    from .sink import KafkaSink

    stem, ext = os.path.splitext(os.path.basename(path.rstrip("/")))
    ext = ext.lower()
    kind = _SOURCES.get(ext)
    if kind is None:
        raise ConfigError(f"{path}: cannot tell the file format from {ext!r}; known: {sorted(_SOURCES)}")
    source = lookup("sources", kind)(path, time=time_column) if time_column else lookup("sources", kind)(path)
    sink = KafkaSink(topic, bootstrap_servers=bootstrap_servers, format=format, key=key,
                     time=time_column, config=config)
    if speed is not None and not time_column:
        raise ConfigError("--speed paces by event time: name the time column with --time")
    sink.open(None)
    sent, start = 0, time.monotonic()
    step = max(1, int(rate / 20)) if rate > 0 else None  # pace in 50 ms slices
    batches = source.batches(None)
    if speed:
        batches = paced(batches, speed, threading.Event())
    try:
        for batch in batches:
            if isinstance(batch, BadEventError):  # a row the source could not read
                raise batch
            if limit is not None and sent + batch.num_rows > limit:
                batch = batch.slice(0, limit - sent)
            for lo in range(0, batch.num_rows, step or batch.num_rows or 1):
                part = batch.slice(lo, step) if step else batch
                if rate > 0:
                    wait = start + sent / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                if key not in part.column_names:  # one recorded stream: its file name is the key
                    part = part.with_columns({key: pa.array([stem] * part.num_rows, pa.string())})
                sink.write(part)
                sent += part.num_rows
            if limit is not None and sent >= limit:
                break
        sink.flush()
    finally:
        sink.close()
        source.close()
    return sent


def _main(args: argparse.Namespace) -> int:
    config = parse_settings(args.config)
    servers = args.bootstrap_servers or config.get("bootstrap.servers") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    mock = None
    if not servers:
        mock, servers = start_mock_cluster()
        print(f"started librdkafka's mock cluster; in another shell:\n  export KAFKA_BOOTSTRAP_SERVERS={servers}",
              file=sys.stderr, flush=True)
    t0 = time.monotonic()
    n = produce_file(args.file, args.topic, rate=args.rate, speed=args.speed, bootstrap_servers=servers,
                     format=args.format, key=args.key, time_column=args.time, limit=args.limit, config=config)
    dt = time.monotonic() - t0
    print(f"{n} messages to {args.topic} in {dt:.2f} s ({n / dt if dt else 0:,.0f} msg/s)", file=sys.stderr)
    if mock is not None:
        print("the mock cluster stays up for readers until Ctrl-C", file=sys.stderr, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            mock.flush(1)
    return 0
