"""A rest period after each detection: a key's next records cannot alarm again.

NuPIC's anomaly likelihood already reports only the first record of a run of very
unlikely records as such (its red-run filter); a stream whose surprise comes back a few
records later alarms again, and on NAB every alarm after the first in an anomaly window
either earns nothing (inside the window) or costs a false positive (after it).
:class:`RestPeriod` extends the filter over time: after a record scores at or above
``level`` (default: the score of a likelihood of 0.99999, NuPIC's red level), the key's
next ``records`` scores are capped at ``cap`` (default: the score of a likelihood of
0.999, NuPIC's yellow level, what the red-run filter reports for a continued run). The
record that alarms keeps its score, so the detector's first alarm is as early as before.

It runs after any detector that writes ``score_column`` (in place), per key and
prequentially, so batch boundaries change nothing. ``records`` is a number of records,
or ``{key: records}``; :meth:`RestPeriod.for_nab` sets it per NAB file to ``fraction`` of
the file's rows (NAB tells a detector each file's length; its anomaly windows are 10 % of
the file shared among its anomalies).

Example (a rest of 2 records after a score of at least 0.5):
    >>> import pyarrow as pa
    >>> from stream import Batch
    >>> rest = RestPeriod(records=2)
    >>> batch = Batch(pa.record_batch({"key": ["a"] * 6,
    ...                                "anomaly_score": [0.1, 0.9, 0.8, 0.6, 0.7, 0.2]}))
    >>> [round(float(s), 3) for s in rest(batch).numpy("anomaly_score")]
    [0.1, 0.9, 0.3, 0.3, 0.7, 0.2]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from stream import Batch, Operator
from stream.errors import CheckpointError, ConfigError
from stream.options import at_least
from stream.testing import UnitTest

#: NuPIC's red and yellow levels (likelihoods 0.99999 and 0.999) on its log scale, as
#: :func:`operators.htm.likelihood.log_likelihood` computes them
RED_SCORE = math.log(1.0000000001 - 0.99999) / math.log(1.0 - 0.9999999999)
YELLOW_SCORE = math.log(1.0000000001 - 0.999) / math.log(1.0 - 0.9999999999)
#: NAB rest period as a fraction of a file's rows, chosen on the tuning half of the corpus
#: (odd-numbered files of each category; HTM detector, standard profile, seed 0: 0.5 %
#: 72.31, 0.75 % 73.57, 1 % 73.67, 1.25 % 72.24, 2 % 72.39, 5 % 68.55; without 70.96)
NAB_REST_FRACTION = 0.01


class RestPeriod(Operator):
    """Caps a key's scores for ``records`` records after a score at or above ``level``.

    Args:
        records: rest length in records, or ``{key: records}`` (keys not listed: no rest).
        level: a score at or above it starts a rest period (when the key is not resting).
        cap: the highest score reported while a key rests.
        score_column: the column read and overwritten.
    """

    option_checks: ClassVar[dict[str, Any]] = {"records": at_least(0)}

    def __init__(self, *, records: int | Mapping[Any, int] = 0, level: float = RED_SCORE,
                 cap: float = YELLOW_SCORE, score_column: str = "anomaly_score") -> None:
        counts = records.values() if isinstance(records, Mapping) else [records]
        if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 for n in counts):
            raise ConfigError(f"RestPeriod: records must be an integer >= 0 or {{key: integer >= 0}}, "
                              f"got {records!r}")
        if not (math.isfinite(level) and math.isfinite(cap)):
            raise ConfigError(f"RestPeriod: level and cap must be finite numbers, got {level!r}, {cap!r}")
        self.records = dict(records) if isinstance(records, Mapping) else int(records)
        self.level, self.cap, self.score_column = float(level), float(cap), score_column
        self.resting: dict[Any, int] = {}   # key → records of its rest still to come

    @classmethod
    def for_nab(cls, streams: Mapping[str, Any], seed: int = 0, *, fraction: float = NAB_REST_FRACTION,
                **kwargs: Any) -> RestPeriod:
        """Each NAB file's rest: ``fraction`` of its rows (``streams``: objects with ``rows``)."""
        del seed   # deterministic
        return cls(records={k: int(fraction * s.rows) for k, s in streams.items()}, **kwargs)

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        return [UnitTest({"records": 3, "level": 0.6, "cap": 0.1}, _unit_test_stream),
                UnitTest({"records": {"a": 2}, "level": 0.5}, _unit_test_stream)]

    def required_columns(self) -> dict[str, str]:
        return {self.score_column: "number"}

    def _length(self, key: Any) -> int:
        return int(self.records.get(key, 0)) if isinstance(self.records, dict) else self.records

    def process(self, batch: Batch) -> Batch:
        scores = np.array(batch.numpy(self.score_column), dtype=np.float64)
        for key, idx in batch.key_groups().items():
            length, left = self._length(key), self.resting.get(key, 0)
            for i in idx.tolist():
                if left > 0:
                    left -= 1
                    scores[i] = min(scores[i], self.cap)
                elif scores[i] >= self.level:
                    left = length
            if left:
                self.resting[key] = left
            else:
                self.resting.pop(key, None)
        return batch.with_columns({self.score_column: scores})

    def state_dict(self) -> dict[str, Any]:
        keys = list(self.resting)
        return {"keys": keys, "left": np.array([self.resting[k] for k in keys], dtype=np.int64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            left = [int(n) for n in np.asarray(state["left"], dtype=np.int64).tolist()]
            resting = dict(zip(state["keys"], left, strict=True))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"RestPeriod: malformed checkpoint state: {exc!r}") from exc
        if any(n < 0 for n in resting.values()):
            raise CheckpointError("RestPeriod: malformed checkpoint state: a negative rest")
        self.resting = resting


def _unit_test_stream(n: int = 48) -> Batch:
    """Two keys of scores in [0, 1] with bursts: the contract checks' input."""
    import pyarrow as pa

    rng = np.random.default_rng(5)
    keys = np.where(np.arange(n) % 3 == 0, "b", "a")
    return Batch(pa.record_batch({"key": keys, "anomaly_score": np.round(rng.random(n) ** 3, 3)}), source="test")
