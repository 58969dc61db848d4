"""Small sources and sinks for engine tests, usable without the connectors package."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from stream import Batch, Sink, Source


class ListSource(Source):
    """Rows from a list of record batches, numbered across batches; optional pauses."""

    def __init__(self, batches: list[pa.RecordBatch], name: str = "list", key: str = "key",
                 time: str = "ts", pause: float = 0.0, log: list | None = None):
        self.data = batches
        self.name = name
        self.key, self.time = key, time
        self.pause = pause
        self.log = log

    def batches(self, position=None):
        import time as _time

        start = (position or {}).get("row", 0)
        offset = 0
        for rb in self.data:
            if offset + rb.num_rows > start:
                skip = max(0, start - offset)
                if self.log is not None:
                    self.log.append(("read", offset + skip))
                if self.pause:
                    _time.sleep(self.pause)
                yield Batch(rb.slice(skip), source=self.name, offset=offset + skip,
                            key_column=self.key, time_column=self.time)
            offset += rb.num_rows

    def length(self):
        return sum(b.num_rows for b in self.data)


class ListSink(Sink):
    """Collects output batches; flush point = number of batches kept."""

    def __init__(self):
        self.batches: list[Batch] = []

    def open(self, flush_point=None):
        if flush_point is not None:
            del self.batches[flush_point["n"]:]

    def write(self, batch):
        self.batches.append(batch)

    def flush(self):
        return {"n": len(self.batches)}

    def table(self) -> pa.Table:
        return pa.Table.from_batches([b.data for b in self.batches])


def make_stream(n: int = 100, keys=("a", "b", "c"), chunk: int = 17, seed: int = 0) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    key = np.array(keys)[rng.integers(0, len(keys), n)]
    ts = np.arange(n, dtype=np.int64)
    x = rng.normal(size=n)
    table = pa.table({"key": key, "ts": ts, "x": x})
    return table.to_batches(max_chunksize=chunk)

