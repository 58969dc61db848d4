"""Dead-letter records: one row per rejected event, in a fixed schema, strict JSON inside.

A record has the ``source`` (file or topic), the ``offset`` (row or message offset), the
``key``, the ``reason`` and the ``record`` itself as JSON. Two kinds of events end here:

- rows an operator rejected (NaN, a missing value, time going backwards): ``record`` is
  the row as a JSON object;
- rows a source could not turn into an event (a cell that does not parse, a wrong
  number of cells, bytes that are not text): ``record`` is the raw text of the row as a
  JSON string (bytes that do not decode appear as ``\\xNN`` escapes) and ``key`` is empty.

``record`` is always strict JSON (RFC 8259), readable by any JSON parser: NaN and
infinities, which JSON cannot hold, are written as the strings ``"NaN"``, ``"Infinity"``
and ``"-Infinity"`` (not ``null``, so a missing value and a NaN stay apart); values JSON
has no type for (timestamps, bytes) are written as their ``str()``.

Example:
    >>> import json, math
    >>> strict_json({"x": math.nan, "y": [1.0, -math.inf], "ok": 2})
    '{"x": "NaN", "y": [1.0, "-Infinity"], "ok": 2}'
    >>> json.loads(strict_json({"x": math.inf}))
    {'x': 'Infinity'}
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pyarrow as pa

from .batch import Batch
from .connector import Sink
from .errors import BadEventError
from .timefmt import json_default

log = logging.getLogger("hebbstream")

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its name (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def strict_json(value: Any) -> str:
    """``value`` as strict JSON: no bare ``NaN``/``Infinity`` (see the module docstring), times in RFC 3339."""
    try:
        return json.dumps(value, default=json_default, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere: the rare case pays for the walk
        return json.dumps(_finite(value), default=json_default, allow_nan=False)


class DeadLetter:
    """Turns rejected rows into dead-letter records and writes them to ``sink``."""

    SCHEMA = pa.schema([("source", pa.string()), ("offset", pa.int64()), ("key", pa.string()),
                        ("reason", pa.string()), ("record", pa.string())])

    def __init__(self, sink: Sink):
        self.sink = sink
        self.count = 0

    def __call__(self, batch: Batch, reasons: list[str]) -> None:
        """Rows an operator rejected, one reason per row."""
        self._write(batch.source, batch.positions(), [str(k) for k in batch.keys()], reasons,
                    [strict_json(r) for r in batch.data.to_pylist()])

    def source_row(self, error: BadEventError) -> None:
        """A row its source could not read: ``error`` names it and holds its raw text."""
        self._write(error.source, [error.offset], [""], [error.reason], [strict_json(error.record)])

    def _write(self, source: str, offsets: Any, keys: list[str], reasons: list[str],
               records: list[str]) -> None:
        rec = pa.record_batch({"source": [source] * len(keys), "offset": offsets, "key": keys,
                               "reason": reasons, "record": records}, schema=self.SCHEMA)
        self.sink.write(Batch(rec, source=source, row_offsets=rec.column(1).fill_null(-1).to_numpy()))
        self.count += len(keys)
        for r, where in zip(reasons, offsets):
            log.warning("dead-letter: %s row %s: %s", source, where, r)
