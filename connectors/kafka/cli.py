"""``hebbstream produce FILE --topic T --rate R``: replay a recorded file into a topic.

The file is read with the registered source for its extension (``.csv``, ``.arrow``,
``.parquet``, ...); each row becomes one message written by a :class:`KafkaSink` (the
``key`` column is the message key, a timestamp ``time`` column the message timestamp).
``--rate`` paces the replay in events per second (0: as fast as possible).

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
import time
from typing import Any

from stream.errors import ConfigError
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
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p.add_argument("--bootstrap-servers", help="host:port,... (default: $KAFKA_BOOTSTRAP_SERVERS)")
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


def produce_file(path: str, topic: str, *, rate: float = 0.0, bootstrap_servers: str | None = None,
                 format: str = "json", key: str = "key", time_column: str | None = None,
                 limit: int | None = None, config: dict[str, Any] | None = None) -> int:
    """Write the rows of ``path`` to ``topic``; returns the number of messages."""
    from .sink import KafkaSink

    ext = os.path.splitext(path.rstrip("/"))[1].lower()
    kind = _SOURCES.get(ext)
    if kind is None:
        raise ConfigError(f"{path}: cannot tell the file format from {ext!r}; known: {sorted(_SOURCES)}")
    source = lookup("sources", kind)(path, time=time_column) if time_column else lookup("sources", kind)(path)
    sink = KafkaSink(topic, bootstrap_servers=bootstrap_servers, format=format, key=key,
                     time=time_column, config=config)
    sink.open(None)
    sent, start = 0, time.monotonic()
    step = max(1, int(rate / 20)) if rate > 0 else None  # pace in 50 ms slices
    try:
        for batch in source.batches(None):
            if limit is not None and sent + batch.num_rows > limit:
                batch = batch.slice(0, limit - sent)
            for lo in range(0, batch.num_rows, step or batch.num_rows or 1):
                part = batch.slice(lo, step) if step else batch
                if rate > 0:
                    wait = start + sent / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
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
    t0 = time.monotonic()
    n = produce_file(args.file, args.topic, rate=args.rate, bootstrap_servers=args.bootstrap_servers,
                     format=args.format, key=args.key, time_column=args.time, limit=args.limit,
                     config=parse_settings(args.config))
    dt = time.monotonic() - t0
    print(f"{n} messages to {args.topic} in {dt:.2f} s ({n / dt if dt else 0:,.0f} msg/s)", file=sys.stderr)
    return 0
