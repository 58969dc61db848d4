"""JSON encoding by Arrow kernels gives what ``json.loads`` reads back as the same rows."""

from __future__ import annotations

import json
import math

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.kafka.codec import Codec

texts = st.one_of(st.none(), st.text(max_size=8))  # quotes, backslashes, control characters, non-ASCII
floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**17, 10**17).map(float))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(texts, floats, st.one_of(st.none(), st.integers(-10**12, 10**12))), min_size=1,
                max_size=12), st.integers(0, 4))
def test_json_encoding_reads_back_as_the_rows(rows, start):
    rb = pa.record_batch({"s": pa.array([r[0] for r in rows], pa.string()),
                          "f": pa.array([r[1] for r in rows], pa.float64()),
                          "i": pa.array([r[2] for r in rows], pa.int64())})
    rb = rb.slice(min(start, len(rows) - 1))  # a slice: offsets not starting at 0
    encoded = Codec("json").encode(rb)
    assert len(encoded) == rb.num_rows
    for payload, row in zip(encoded, rb.to_pylist(), strict=True):
        got = json.loads(payload)
        assert list(got) == ["s", "f", "i"]
        assert got["s"] == row["s"] and got["i"] == row["i"]
        f = row["f"]
        if f is None or not math.isfinite(f):
            assert got["f"] is None  # NaN and infinities are not JSON numbers
        else:
            assert isinstance(got["f"], float) and got["f"] == f  # 3.0 stays a float


def test_times_are_written_in_rfc_3339():
    import datetime as dt

    rb = pa.record_batch({"ts": pa.array([dt.datetime(2026, 1, 1, 12, 30, 5, 250000)], pa.timestamp("ms", "UTC"))})
    assert json.loads(Codec("json").encode(rb)[0])["ts"] == "2026-01-01T12:30:05.250Z"
    with_null = pa.record_batch({"ts": pa.array([0, None], pa.timestamp("ms", "UTC"))})
    assert [json.loads(v)["ts"] for v in Codec("json").encode(with_null)] == ["1970-01-01T00:00:00.000Z", None]
