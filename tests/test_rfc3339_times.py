"""Times written as text are RFC 3339 (``2026-01-01T00:00:00...``), not ``str(datetime)``."""

import datetime as dt
import json

import pyarrow as pa
from streams import ListSink

from connectors.memory import MemorySource
from stream import Pipeline, run


def test_dead_letter_records_write_times_in_rfc_3339():
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    times = [t0, t0 + dt.timedelta(minutes=5), t0 + dt.timedelta(minutes=1)]  # the third goes backwards
    table = pa.table({"key": ["a"] * 3, "ts": pa.array(times, pa.timestamp("ms", "UTC")), "x": [1.0, 2.0, 3.0]})
    dead = ListSink()
    summary = run(MemorySource(table, key="key", time="ts"), Pipeline([]), ListSink(), dead_letter=dead)
    assert summary["dead_letter"] == 1
    record = json.loads(dead.table()["record"][0].as_py())
    assert record["ts"] == "2026-01-01T00:01:00+00:00"
