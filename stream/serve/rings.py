"""Bounded per-key ring buffers: the recent window of each key that the dashboard draws.

Memory is fixed when the buffers are made: ``max_keys × window`` slots of an event time,
a value and a score (8 bytes each) and an alert flag (1 byte), so 25 bytes a slot — the
defaults (200 keys × 600 events) take 3 MB whatever the stream. When a new key arrives and
every slot is taken, the key updated longest ago gives its slot up.

Example:
    >>> import numpy as np
    >>> rings = KeyRings(max_keys=2, window=3)
    >>> keys = np.array(["a", "a", "b", "a", "a"])
    >>> rings.add(*np.unique(keys, return_inverse=True), np.arange(5.0), np.arange(5.0),
    ...           np.array([0.1, 0.2, 0.9, 0.3, 0.4]), np.array([False, False, True, False, False]))
    >>> rings.series("a")["x"]  # the last 3 of key a
    [1.0, 3.0, 4.0]
    >>> [(k["key"], k["score"]) for k in rings.ranking()]
    [('b', 0.9), ('a', 0.4)]
    >>> def one(key, t):
    ...     rings.add(np.array([key]), np.array([0]), np.array([t]), np.array([t]), np.array([0.5]),
    ...               np.array([False]))
    >>> one("a", 5.0); one("c", 6.0)
    >>> sorted(rings.keys())  # b was updated longest ago
    ['a', 'c']
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class KeyRings:
    """The last ``window`` events of up to ``max_keys`` keys (thread-safe: the run writes, the server reads).

    Args:
        recent: how many of a key's latest events rank it (their highest score).
    """

    BYTES_PER_SLOT = 8 * 3 + 1

    def __init__(self, max_keys: int = 200, window: int = 600, recent: int = 60) -> None:
        self.max_keys, self.window, self.recent = max_keys, window, min(recent, window)
        self.x = np.zeros((max_keys, window))
        self.value = np.full((max_keys, window), np.nan)
        self.score = np.full((max_keys, window), np.nan)
        self.alert = np.zeros((max_keys, window), dtype=bool)
        self.count = np.zeros(max_keys, dtype=np.int64)   # events ever written to the slot's key
        self.alerts = np.zeros(max_keys, dtype=np.int64)  # alerts of the slot's key
        self.touched = np.zeros(max_keys, dtype=np.int64)  # update clock, for eviction
        self._clock = 0
        self._slot: dict[Any, int] = {}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """The fixed memory budget, in bytes."""
        return self.max_keys * self.window * self.BYTES_PER_SLOT

    def _slot_of(self, key: Any) -> int:
        slot = self._slot.get(key)
        if slot is not None:
            return slot
        if len(self._slot) < self.max_keys:
            slot = len(self._slot)
        else:
            slot = int(np.argmin(self.touched))
            del self._slot[next(k for k, s in self._slot.items() if s == slot)]
        self._slot[key] = slot
        self.count[slot] = self.alerts[slot] = 0
        self.alert[slot] = False
        return slot

    def add(self, uniq: np.ndarray, inverse: np.ndarray, x: np.ndarray, value: np.ndarray, score: np.ndarray,
            alert: np.ndarray) -> None:
        """Append rows to their keys' rings: the distinct keys, each row's index into them
        (as :meth:`Batch.key_codes` gives them), and one row-aligned array per field.

        Vectorised over rows: only the last ``window`` rows of each key are written, and of
        a batch with more keys than ``max_keys``, the keys seen last."""
        n = len(inverse)
        if n == 0:
            return
        counts = np.bincount(inverse, minlength=len(uniq))
        order = np.argsort(inverse, kind="stable")
        starts = np.cumsum(counts) - counts
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - np.repeat(starts, counts)  # each row's place among its key's rows
        present = np.flatnonzero(counts)
        last = order[starts[present] + counts[present] - 1]  # each present key's last row
        present = present[np.argsort(last, kind="stable")][-self.max_keys:]  # oldest first: newest slots last
        with self._lock:
            slot_of_key = np.full(len(uniq), -1, dtype=np.int64)
            for k in present.tolist():
                key = uniq[k]
                slot = self._slot_of(key.item() if isinstance(key, np.generic) else key)
                self._clock += 1
                self.touched[slot] = self._clock  # now: no later key of this batch evicts it
                slot_of_key[k] = slot
            keep = (slot_of_key[inverse] >= 0) & (rank >= counts[inverse] - self.window)
            rows = np.flatnonzero(keep)
            slots = slot_of_key[inverse[rows]]
            at = (self.count[slots] + rank[rows]) % self.window
            self.x[slots, at] = x[rows]
            self.value[slots, at] = value[rows]
            self.score[slots, at] = score[rows]
            self.alert[slots, at] = alert[rows]
            self.count[slot_of_key[present]] += counts[present]
            seen = np.flatnonzero(slot_of_key[inverse] >= 0)  # alerts of rows older than the window count too
            np.add.at(self.alerts, slot_of_key[inverse[seen]], alert[seen].astype(np.int64))

    def keys(self) -> list[Any]:
        with self._lock:
            return list(self._slot)

    def _order(self, slot: int) -> np.ndarray:
        n = int(self.count[slot])
        if n <= self.window:
            return np.arange(n)
        return (n + np.arange(self.window)) % self.window

    def ranking(self, limit: int = 50) -> list[dict[str, Any]]:
        """Keys by their highest score over their ``recent`` latest events, highest first."""
        rows = []
        with self._lock:
            for key, slot in self._slot.items():
                order = self._order(slot)
                recent = self.score[slot, order[-self.recent:]]
                best = float(np.nanmax(recent)) if np.isfinite(recent).any() else None
                rows.append({"key": str(key), "score": best, "events": int(self.count[slot]),
                             "alerts": int(self.alerts[slot]), "last": float(self.x[slot, order[-1]])})
        rows.sort(key=lambda r: -1.0 if r["score"] is None else r["score"], reverse=True)
        return rows[:limit]

    def series(self, key: str) -> dict[str, Any] | None:
        """The window of ``key`` (as the dashboard names it: a string) in time order, or ``None``."""
        with self._lock:
            slot = next((s for k, s in self._slot.items() if str(k) == key), None)
            if slot is None:
                return None
            order = self._order(slot)
            return {"key": key, "x": self.x[slot, order].tolist(),
                    "value": _json_floats(self.value[slot, order]),
                    "score": _json_floats(self.score[slot, order]),
                    "alerts": np.flatnonzero(self.alert[slot, order]).tolist()}


def _json_floats(a: np.ndarray) -> list[float | None]:
    """JSON has no NaN: missing values are null."""
    return [None if v != v else v for v in a.tolist()]
