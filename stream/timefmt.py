"""Times as text: RFC 3339 everywhere (``2026-01-01T00:00:00.000Z``).

Arrow's cast of a timestamp to text writes a space between date and time
(``2026-01-01 00:00:00.000Z``) and Python's ``str(datetime)`` does too; both are ISO 8601
look-alikes that strict RFC 3339 parsers refuse. These helpers are what the engine's JSON
output (Kafka payloads, dead-letter records) uses instead.

Example:
    >>> import datetime as dt
    >>> import pyarrow as pa
    >>> rfc3339_ms(1767225600000)
    '2026-01-01T00:00:00.000Z'
    >>> rfc3339_array(pa.array([1767225600123, None], pa.timestamp("ms", tz="UTC"))).to_pylist()
    ['2026-01-01T00:00:00.123Z', None]
    >>> json_default(dt.datetime(2026, 1, 1, 12, 30, tzinfo=dt.timezone.utc))
    '2026-01-01T12:30:00+00:00'
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def rfc3339_ms(ms: int) -> str:
    """Milliseconds since the epoch (UTC) as RFC 3339 text."""
    t = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def rfc3339_array(arr: pa.Array) -> pa.Array:
    """A timestamp (or date) column as RFC 3339 strings (nulls stay null): Arrow's text
    with ``T`` between date and time."""
    text = pc.cast(arr, pa.string())
    if pa.types.is_date(arr.type):
        return text
    return pc.replace_substring_regex(text, r"^(-?\d+-\d\d-\d\d) ", r"\1T", max_replacements=1)


def json_default(v: Any) -> Any:
    """``default=`` for :func:`json.dumps`: datetimes as RFC 3339 (naive ones as they are,
    with ``T``), anything else as ``str``."""
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    return str(v)
