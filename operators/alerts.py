"""``Alerts``: turn an anomaly score into alert events, one per burst, per key.

A score over a threshold on every row of a burst would page someone hundreds of times
for one incident. :class:`Alerts` runs a small state machine per key instead:

- an **episode opens** on a row whose score is ``>= enter`` while the key is past its
  first ``warmup`` events, not in an episode and not cooling down; that row (only that
  row) gets ``alert = true``;
- the episode **stays open** while the score is ``>= leave`` (``leave <= enter``:
  hysteresis, so a score hovering around ``enter`` does not open and close it over and
  over); the first row under ``leave`` closes it (that row is outside the episode);
- after an episode closes, the key **cools down**: no new episode opens until
  ``cooldown`` more events of the key have passed and, when ``cooldown_seconds`` is set,
  that many seconds of event time (the batch's time column) since the closing row.

Output columns (appended; an existing column of that name, such as the HTM detector's
own ``alert``, is replaced):

- ``alert`` (bool): true only on the row that opens an episode;
- ``alert_active`` (bool): the row is inside an episode (its opening row included);
- ``alert_episode`` (int64): the key's episode number (1, 2, ...) on rows inside an
  episode, null elsewhere.

The defaults suit :class:`~operators.htm.HTMDetector`'s ``anomaly_likelihood`` (NuPIC's
log-scaled likelihood): ``enter`` is the threshold NAB's standard-profile sweep picked for
this detector over the corpus (:data:`operators.nab.demo.DEFAULT_THRESHOLD`, 0.5545, a
tail probability of about 3e-6), ``leave = 0.5`` (about 1e-5), and ``warmup = 750``, the
detector's default probationary period: until its likelihood is fitted, a key's score is
only the spatial check (1.0 whenever a value leaves the range seen so far, which early
in a stream is often), so those events open no episode. Tune ``enter`` on labelled data
first; ``leave`` and the cool-down only shape how many events one incident makes.

State (checkpointed): per key, the events seen, whether an episode is open, the key's
episode count, the events since the last episode closed and the event time it closed at. Outputs do not
depend on how the stream is cut into micro-batches, and a resumed run continues every
key's episode where it was.

Example:
    >>> import pyarrow as pa
    >>> from stream import Batch
    >>> from operators.alerts import Alerts
    >>> scores = [0.1, 0.6, 0.7, 0.52, 0.3, 0.6, 0.2, 0.2, 0.9]
    >>> out = Alerts(cooldown=2, warmup=0)(Batch(pa.record_batch({"key": ["a"] * 9, "anomaly_likelihood": scores})))
    >>> out.column("alert").to_pylist()
    [False, True, False, False, False, False, False, False, True]
    >>> out.column("alert_episode").to_pylist()
    [None, 1, 1, 1, None, None, None, None, 2]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from stream.batch import Batch
from stream.errors import CheckpointError, ConfigError, SchemaError
from stream.operator import Operator
from stream.options import at_least, between
from stream.testing import UnitTest

#: NAB standard-profile threshold of the HTM detector (see operators.nab.demo.DEFAULT_THRESHOLD)
DEFAULT_ENTER = 0.5545
#: a little below it: the likelihood must fall clearly before an episode ends
DEFAULT_LEAVE = 0.5

#: HTMDetector's default probationary_period
DEFAULT_WARMUP = 750

_NO_TIME = np.iinfo(np.int64).min  # "never closed" / "no time column"
_FIELDS = ("seen", "active", "episodes", "since", "closed_at")


class Alerts(Operator):
    """Alert episodes from a score column, per key (see the module docstring).

    Args:
        score: the score column (higher is more anomalous).
        enter: a row with a score ``>= enter`` opens an episode.
        leave: the episode closes on the first row with a score ``< leave``; at most ``enter``.
        cooldown: events of the key after an episode closes during which none opens.
        cooldown_seconds: event time (seconds) after an episode closes during which none
            opens; needs the stream's time column (a timestamp, or numbers taken as seconds).
        warmup: the first events of each key open no episode (the detector's probationary
            period; 0 for scores that mean something from the first event).
    """

    option_checks = {"enter": between(0, 1), "leave": between(0, 1), "cooldown": at_least(0),
                     "cooldown_seconds": at_least(0), "warmup": at_least(0)}

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        return [UnitTest({"warmup": 0, "enter": 0.6, "leave": 0.45, "cooldown": 2, "cooldown_seconds": 15},
                         _unit_test_scores, sizes=(1, 7, 13))]

    def __init__(self, score: str = "anomaly_likelihood", *, enter: float = DEFAULT_ENTER,
                 leave: float = DEFAULT_LEAVE, cooldown: int = 0, cooldown_seconds: float = 0.0,
                 warmup: int = DEFAULT_WARMUP):
        if not leave <= enter:
            raise ConfigError(f"leave ({leave}) must be at most the entering threshold ({enter}): an episode "
                              "closes below leave, so a higher leave would close it on the row that opens it")
        if cooldown < 0 or cooldown_seconds < 0 or warmup < 0:
            raise ConfigError("cooldown, cooldown_seconds and warmup must be >= 0")
        self.score, self.enter, self.leave = score, float(enter), float(leave)
        self.cooldown, self.cooldown_seconds = int(cooldown), float(cooldown_seconds)
        self.warmup = int(warmup)
        self.slot: dict[Any, int] = {}
        self.keys: list[Any] = []
        self.state = {name: np.zeros(0, dtype=bool if name == "active" else np.int64) for name in _FIELDS}
        self.raised = 0

    def __repr__(self) -> str:
        return (f"Alerts(score={self.score!r}, enter={self.enter}, leave={self.leave}, "
                f"cooldown={self.cooldown}, cooldown_seconds={self.cooldown_seconds}, warmup={self.warmup})")

    def required_columns(self) -> dict[str, str]:
        return {self.score: "number"}

    # -- processing ----------------------------------------------------------------
    def _slot_of(self, key: Any) -> int:
        key = key.item() if isinstance(key, np.generic) else key
        slot = self.slot.get(key)
        if slot is None:
            slot = self.slot[key] = len(self.keys)
            self.keys.append(key)
            for name, arr in self.state.items():
                fill = _NO_TIME if name == "closed_at" else 0
                self.state[name] = np.append(arr, np.array([fill], dtype=arr.dtype))
            # a key never alerted has no cool-down to wait for
            self.state["since"][slot] = np.iinfo(np.int64).max // 2
        return slot

    def _times_ns(self, batch: Batch) -> np.ndarray | None:
        if not self.cooldown_seconds:
            return None
        if batch.time_column not in batch:
            raise SchemaError(f"{batch.source or '<stream>'}: Alerts cooldown_seconds needs the time column "
                              f"{batch.time_column!r}, the stream has {batch.column_names}")
        return batch.times_ns()

    def process(self, batch: Batch) -> Batch:
        score = np.asarray(batch.numpy(self.score), dtype=np.float64)
        times = self._times_ns(batch)
        n = batch.num_rows
        alert = np.zeros(n, dtype=bool)
        active = np.zeros(n, dtype=bool)
        episode = np.zeros(n, dtype=np.int64)
        st = self.state
        gap_ns = int(self.cooldown_seconds * 1e9)
        for key, idx in batch.key_groups().items():
            s = self._slot_of(key)
            seen, on, count, since, closed = int(st["seen"][s]), bool(st["active"][s]), int(st["episodes"][s]), \
                int(st["since"][s]), int(st["closed_at"][s])
            for i in idx.tolist():
                x = score[i]
                seen += 1
                if on:
                    if x < self.leave:
                        on, since = False, 0
                        closed = int(times[i]) if times is not None else _NO_TIME
                else:
                    since += 1
                    cooled = since > self.cooldown and (
                        times is None or closed == _NO_TIME or int(times[i]) - closed >= gap_ns)
                    if x >= self.enter and cooled and seen > self.warmup:
                        on, count = True, count + 1
                        alert[i] = True
                if on:
                    active[i] = True
                    episode[i] = count
            st["seen"][s], st["active"][s], st["episodes"][s], st["since"][s], st["closed_at"][s] = \
                seen, on, count, since, closed
        self.raised += int(alert.sum())
        return batch.with_columns({"alert": alert, "alert_active": active,
                                   "alert_episode": pa.array(episode, pa.int64(), mask=~active)})

    # -- reporting and state -------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Alerts raised by this run and keys inside an episode now (for the run summary)."""
        return {"alerts": self.raised, "active_keys": int(self.state["active"].sum()), "keys": len(self.keys)}

    def state_dict(self) -> dict[str, Any]:
        return {"keys": list(self.keys), **{name: arr.copy() for name, arr in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every key's episode; a state of another shape is refused, naming what is wrong."""
        if not isinstance(state, dict) or set(state) != {"keys", *_FIELDS}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"Alerts: the checkpoint holds {got}, expected keys, {', '.join(_FIELDS)}")
        keys = state["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, (str, int)) and not isinstance(k, bool)
                                                 for k in keys) or len(set(keys)) != len(keys):
            raise CheckpointError("Alerts: the checkpoint's keys are not a list of distinct strings or integers")
        restored = {}
        for name in _FIELDS:
            arr = state[name]
            want = np.bool_ if name == "active" else np.int64
            if not isinstance(arr, np.ndarray) or arr.dtype != want or arr.shape != (len(keys),):
                raise CheckpointError(f"Alerts: the checkpoint's {name!r} is not {len(keys)} "
                                      f"{np.dtype(want).name} values")
            restored[name] = arr.copy()
        if any((restored[name] < 0).any() for name in ("seen", "episodes", "since")):
            raise CheckpointError("Alerts: the checkpoint holds a negative event count, episode count or gap")
        self.keys = list(keys)
        self.slot = {k: i for i, k in enumerate(keys)}
        self.state = restored


def _unit_test_scores(n: int = 120) -> Batch:
    """Three keys of likelihoods around the thresholds, with event times: the contract's input."""
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.integers(1, 20, n)) * 10**9
    return Batch(pa.record_batch({"key": [f"k{i}" for i in rng.integers(0, 3, n)],
                                  "anomaly_likelihood": np.clip(rng.normal(0.45, 0.2, n), 0, 1),
                                  "ts": pa.array(times, pa.timestamp("ns"))}), key_column="key", time_column="ts")
