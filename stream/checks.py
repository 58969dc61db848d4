"""Engine-level event checks that run before the user's operators."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .batch import Batch
from .operator import Operator

if TYPE_CHECKING:
    from .testing import UnitTest


class EventTimeOrder(Operator):
    """Reject events whose time goes backwards within their key.

    Equal times are allowed. The last time seen per key is state, so the check holds
    across batches and checkpoints.

    Example:
        >>> import pyarrow as pa
        >>> from stream.batch import Batch
        >>> op = EventTimeOrder()
        >>> b = Batch(pa.record_batch({"key": ["a", "a", "b", "a"], "ts": [1, 3, 0, 2]}))
        >>> bad, reasons = op.check_rows(b)
        >>> bad.tolist()
        [False, False, False, True]
        >>> reasons
        ["column 'ts' goes backwards within key 'a': 2 after 3"]
    """

    def __init__(self) -> None:
        self.last: dict[Any, int] = {}

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        from .testing import UnitTest

        return [UnitTest({}, _unit_test_stream)]

    def check_rows(self, batch: Batch) -> tuple[np.ndarray, list[str]] | None:
        times = batch.times()
        if times is None or batch.num_rows == 0:
            return None
        times = np.asarray(times)
        if self._in_order(batch, times):
            return None
        bad = np.zeros(batch.num_rows, dtype=bool)
        prior = np.empty(batch.num_rows, dtype=times.dtype)
        for key, idx in batch.key_groups().items():
            t = times[idx]
            start = self.last.get(key)
            running = np.maximum.accumulate(t)
            before = np.empty_like(running)
            before[1:] = running[:-1]
            before[0] = t[0] if start is None else start
            if start is not None:
                before = np.maximum(before, start)
            bad[idx] = t < before
            prior[idx] = before
            self.last[key] = running[-1] if start is None else max(start, running[-1])
        if not bad.any():
            return None
        keys = batch.keys()
        show = _time_formatter(batch)
        reasons = [f"column {batch.time_column!r} goes backwards within key {keys[i]!r}: "
                   f"{show(times[i])} after {show(prior[i])}" for i in np.flatnonzero(bad)]
        return bad, reasons

    def _in_order(self, batch: Batch, times: np.ndarray) -> bool:
        """Fast path for streams in time order overall (most recordings): when times never
        decrease across the batch and start at or after every key's last time, no key goes
        backwards, and each key's new last time is that of its last row. No per-key loop."""
        if times.dtype.kind not in "iuf" or not np.all(times[1:] >= times[:-1]):
            return False
        if self.last and not times[0] >= max(self.last.values()):
            return False
        if batch.key_column not in batch:
            self.last[""] = times[-1]
            return True
        keys, codes = batch.key_codes()
        last_row = np.zeros(len(keys), dtype=np.int64)
        np.maximum.at(last_row, codes, np.arange(len(codes)))
        self.last.update(zip(keys.tolist(), times[last_row].tolist(), strict=True))
        return True

    def process(self, batch: Batch) -> Batch:
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"last": {k: int(v) if isinstance(v, np.integer) else v for k, v in self.last.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = dict(state["last"])


def _time_formatter(batch: Batch):
    """Show times as the user wrote them: ISO dates for timestamp columns, numbers otherwise."""
    import pyarrow as pa

    typ = batch.column(batch.time_column).type
    if pa.types.is_timestamp(typ):
        return lambda t: str(np.datetime64(int(t), "ns"))
    return lambda t: str(t)


def _unit_test_stream(n: int = 40) -> Batch:
    """Two keys whose times never go backwards (each key's clock apart): input for the contract checks."""
    import pyarrow as pa

    keys = np.array(["a", "b"])[np.arange(n) % 3 % 2]
    times = np.where(keys == "a", np.arange(n) * 2, np.arange(n) * 3)
    return Batch(pa.record_batch({"key": keys, "ts": times.astype(np.int64)}), source="contract")
