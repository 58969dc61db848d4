"""``HTMDetector``: HTM anomaly detection as a keyed, batched, prequential operator.

One HTM model (RDSE + time-of-day encoder → spatial pooler → temporal memory) per key;
a key seen for the first time mid-stream gets a fresh model. Within a micro-batch the
records of all keys advance in lockstep, so one tensor program serves every key (NumPy
on CPU; torch when ``device`` is a torch device, CUDA under ``device="auto"``). Each
record is scored before the model learns from it. ``HTMConfig(tm="backtracking")``
swaps in NuPIC's backtracking temporal memory (the one NuPIC's NAB detector used;
NumPy only, one model per key, each key's records of a batch in a row, several times
slower).

Outputs (default names):
- ``anomaly_score``: the raw HTM score, fraction of active columns not predicted.
- ``anomaly_likelihood``: NuPIC's reported score: the log-scaled anomaly likelihood, or
  1.0 when the value leaves the running range by more than 5 % (spatial check).
- ``alert`` (when ``alert_threshold`` is set): ``anomaly_likelihood >= alert_threshold``
  once the key is past its probationary period.

The value encoder's resolution is ``resolution``: a number; a ``{key: number}`` dict;
``"minmax"`` with ``value_range={key: (min, max)}`` (NuPIC's NAB rule, which uses the
whole file's min and max); or ``"auto"`` (default): NuPIC's rule applied to the first
``warmup`` records of the key, which the model then learns from. Records of the warm-up
are scored when they arrive (raw score 1.0: nothing can be predicted yet), so the
detector never looks ahead.

Bad input: a missing value or timestamp, NaN or infinity is rejected with
:class:`~stream.errors.BadEventError` naming the source, row and key (or goes to the
dead-letter sink); a constant stream is fine (its raw scores fall to 0 and the
likelihood uses NuPIC's wide null distribution); time going backwards is rejected by the
engine's ``EventTimeOrder`` check before the operator sees it.

Example:
    >>> import numpy as np, pyarrow as pa
    >>> from stream import Batch
    >>> from operators.htm import HTMDetector
    >>> from operators.htm.model import HTMConfig
    >>> n = 60
    >>> ts = np.arange(n, dtype="int64") * 300 * 10**9
    >>> data = pa.record_batch({"key": ["a"] * n, "timestamp": pa.array(ts, pa.timestamp("ns")),
    ...                         "value": np.sin(np.arange(n) / 3.0)})
    >>> det = HTMDetector(config=HTMConfig.small(), resolution=0.1, probationary_period=20)
    >>> out = det(Batch(data, time_column="timestamp"))
    >>> out.column_names
    ['key', 'timestamp', 'value', 'anomaly_score', 'anomaly_likelihood']
    >>> float(out.numpy("anomaly_score")[0]), float(out.numpy("anomaly_likelihood")[0])
    (1.0, 0.0301029996658834)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from stream import Batch, Operator
from stream.batch import event_time_ns
from stream.errors import ConfigError
from stream.options import at_least, between
from stream.spill import check_limit, plain_key, spiller_of
from stream.testing import UnitTest

from .encoders import nab_resolution
from .likelihood import NumentaScore
from .model import HTMConfig, HTMModel

RESOLUTION_MODES = ("auto", "minmax")


class HTMDetector(Operator):
    """HTM anomaly detector, one model per key, many keys batched.

    Args:
        config: model hyper-parameters (:class:`~operators.htm.model.HTMConfig`; default
            NuPIC's NAB detector).
        resolution: RDSE resolution: a number, ``{key: number}``, ``"minmax"`` or
            ``"auto"`` (see the module docstring).
        value_range: ``{key: (min, max)}`` for ``resolution="minmax"``.
        warmup: records used to choose the resolution under ``"auto"``.
        probationary_period: records before the likelihood is estimated: an int, or
            ``{key: int}``; ``rows={key: n}`` instead sets NAB's ``min(0.15 n, 750)``.
        rows: stream lengths, when known (NAB).
        spatial_tolerance: the range check's margin (``None``: off).
        alert_threshold: add an ``alert`` column (``anomaly_likelihood >= threshold``).
        value_column / time_column: input columns.
        raw_column / score_column: output names of the raw score and the reported score.
        device: ``"auto"``, ``"numpy"``, ``"torch"`` (CPU) or a torch device.
        max_resident_keys: at most this many keys' models in memory; the least recently
            used are spilled to disk and restored on their next record, with the same
            outputs (:mod:`stream.spill`). A spilled key's slot is reused, so memory is
            bounded by this many keys. ``None``: every key stays in memory.
    """

    #: checked when a pipeline file is loaded (see :mod:`stream.options`)
    option_checks = {"warmup": at_least(1), "probationary_period": at_least(0), "spatial_tolerance": at_least(0),
                     "alert_threshold": between(0, 1), "seed": at_least(0)}

    def __init__(self, config: HTMConfig | None = None, *, resolution: Any = "auto",
                 value_range: Mapping[Any, tuple[float, float]] | None = None, warmup: int = 100,
                 probationary_period: int | Mapping[Any, int] = 750,
                 rows: Mapping[Any, int] | None = None, spatial_tolerance: float | None = 0.05,
                 alert_threshold: float | None = None, value_column: str = "value",
                 time_column: str | None = "timestamp", raw_column: str = "anomaly_score",
                 score_column: str = "anomaly_likelihood", device: Any = "auto",
                 seed: int | None = None, max_resident_keys: int | None = None):
        self.config = config or HTMConfig()
        if seed is not None:
            self.config = HTMConfig.from_dict({**self.config.to_dict(), "seed": seed})
        if isinstance(resolution, str) and resolution not in RESOLUTION_MODES:
            raise ConfigError(f"resolution must be a number, a dict or one of {RESOLUTION_MODES}")
        if resolution == "minmax" and value_range is None:
            raise ConfigError('resolution="minmax" needs value_range={key: (min, max)}')
        if self.config.time_of_day and time_column is None:
            raise ConfigError("the time-of-day encoder needs a time_column")
        self.resolution, self.value_range, self.warmup = resolution, value_range, int(warmup)
        self.probationary_period, self.rows = probationary_period, rows
        self.spatial_tolerance, self.alert_threshold = spatial_tolerance, alert_threshold
        self.value_column, self.time_column = value_column, time_column
        self.raw_column, self.score_column = raw_column, score_column
        self.device = device
        self.max_resident_keys = check_limit(max_resident_keys, "HTMDetector")
        self.model = HTMModel(self.config, device)
        self._reset_keys()

    def _reset_keys(self) -> None:
        self.slot: dict[Any, int] = {}
        self.keys: list[Any] = []             # per slot; None on a free slot
        self.res: list[float] = []            # per slot; NaN while warming up
        self.pending: list[list[tuple[float, int]]] = []   # warm-up records per slot
        self.scorers: list[NumentaScore | None] = []
        self.free: list[int] = []             # slots of spilled keys, reused first

    # -- construction for NAB ----------------------------------------------------------
    @classmethod
    def for_nab(cls, streams: Mapping[str, Any], seed: int = 0, *, minmax: bool = True,
                **kwargs: Any) -> HTMDetector:
        """The NAB configuration: ``streams`` maps file names to objects with ``rows``,
        ``min`` and ``max`` (``nab_runner.NABStream``). Output columns follow NAB's
        result files: ``anomaly_score`` is the reported score, ``raw_score`` the raw one."""
        args: dict[str, Any] = dict(rows={k: s.rows for k, s in streams.items()},
                                    raw_column="raw_score", score_column="anomaly_score",
                                    seed=seed)
        if minmax:
            args.update(resolution="minmax",
                        value_range={k: (s.min, s.max) for k, s in streams.items()})
        args.update(kwargs)
        return cls(**args)

    # -- the operator contract ------------------------------------------------------------
    def required_columns(self) -> dict[str, str]:
        req = {self.value_column: "number"}
        if self.config.time_of_day:
            req[self.time_column] = "timestamp"
        return req

    def _slot_of(self, key: Any) -> int:
        slot = self.slot.get(key)
        if slot is not None:
            return slot
        slot = self.free.pop() if self.free else self._append_slot()
        self.slot[key] = slot
        self.keys[slot] = key
        self.res[slot] = self._initial_resolution(key)
        self.pending[slot] = []
        self.scorers[slot] = self._new_scorer(key)
        return slot

    def _append_slot(self) -> int:
        """A new slot, free (a placeholder in every per-slot list)."""
        slot = len(self.keys)
        self.keys.append(None)
        self.res.append(float("nan"))
        self.pending.append([])
        self.scorers.append(None)
        if self.model.slots <= slot:
            grow = max(1, self.model.slots)   # double the capacity, but not far past max_resident_keys
            if self.max_resident_keys is not None:
                room = self.max_resident_keys - self.model.slots
                grow = min(grow, room) if room > 0 else max(1, self.max_resident_keys // 8)
            self.model.add_slots(grow)
        return slot

    def _initial_resolution(self, key: Any) -> float:
        r = self.resolution
        if isinstance(r, Mapping):
            if key not in r:
                raise KeyError(f"no resolution for key {key!r} in the resolution dict")
            return float(r[key])
        if r == "minmax":
            if key not in self.value_range:
                raise KeyError(f"no value_range for key {key!r}")
            lo, hi = self.value_range[key]
            return nab_resolution(lo, hi)
        if r == "auto":
            return float("nan")
        return float(r)

    def _new_scorer(self, key: Any) -> NumentaScore:
        if self.rows is not None and key in self.rows:
            return NumentaScore(int(self.rows[key]), spatial_tolerance=self.spatial_tolerance)
        p = self.probationary_period
        p = int(p[key]) if isinstance(p, Mapping) else int(p)
        learning = p // 2
        return NumentaScore(spatial_tolerance=self.spatial_tolerance, learning_period=learning,
                            estimation_samples=p - learning)

    def _times(self, batch: Batch) -> np.ndarray:
        if not self.config.time_of_day:
            return np.zeros(batch.num_rows, dtype=np.int64)
        return event_time_ns(batch.column(self.time_column))

    def process(self, batch: Batch) -> Batch:
        values = np.asarray(batch.numpy(self.value_column), dtype=np.float64)
        times = self._times(batch)
        groups = batch.key_groups()
        raw = np.empty(batch.num_rows)
        # rows that go through the model now: (slot, row); warm-up rows wait
        slot_rows: list[tuple[int, np.ndarray]] = []
        for key, idx in groups.items():
            slot = self._slot_of(key)
            if np.isnan(self.res[slot]):
                idx = self._warm_up(slot, idx, values, times, raw)
            if len(idx):
                slot_rows.append((slot, idx))
        self._run_keys(slot_rows, values, times, raw)
        score = np.empty(batch.num_rows)
        settled = np.empty(batch.num_rows, dtype=bool)
        for key, idx in groups.items():
            scorer = self.scorers[self.slot[key]]
            lik = scorer.likelihood
            for i in idx:
                settled[i] = lik.iteration >= lik.probation
                score[i] = scorer.update(float(values[i]), float(raw[i]))[0]
        out = {self.raw_column: raw, self.score_column: score}
        if self.alert_threshold is not None:
            # no alerts while the key is in probation (the likelihood is not fitted yet)
            out["alert"] = settled & (score >= self.alert_threshold)
        return batch.with_columns(out)

    def _warm_up(self, slot: int, idx: np.ndarray, values: np.ndarray, times: np.ndarray,
                 raw: np.ndarray) -> np.ndarray:
        """Hold records until ``warmup`` are seen, then fix the resolution and learn them."""
        pend = self.pending[slot]
        need = max(1, self.warmup) - len(pend)
        held, rest = idx[:need], idx[need:]
        pend.extend((float(values[i]), int(times[i])) for i in held)
        raw[held] = 1.0
        if len(pend) >= max(1, self.warmup):
            v = np.array([p[0] for p in pend])
            self.res[slot] = nab_resolution(v.min(), v.max())
            t = np.array([p[1] for p in pend], dtype=np.int64)
            for j in range(len(v)):   # learn the warm-up records, one step each
                self.model.step(np.array([slot]), v[j:j + 1], np.array([self.res[slot]]),
                                t[j:j + 1])
            self.pending[slot] = []
        return rest

    def _run_keys(self, slot_rows: list[tuple[int, np.ndarray]], values: np.ndarray,
                      times: np.ndarray, raw: np.ndarray) -> None:
        """Every key's rows of this batch through the model at once (:meth:`HTMModel.run`:
        the spatial pooler steps the keys together)."""
        if not slot_rows:
            return
        lengths = np.array([len(r) for _, r in slot_rows])
        slots = np.array([s for s, _ in slot_rows])
        rows = np.concatenate([r for _, r in slot_rows])
        raw[rows] = self.model.run(slots, lengths, values[rows],
                                   np.array(self.res)[np.repeat(slots, lengths)], times[rows])

    def peek(self, key: Any, value: float, time_ns: int = 0) -> tuple[float, float]:
        """``(raw, reported)`` scores the next record of ``key`` would get, changing nothing
        (River's ``score_one``). A key not seen yet, or still warming up, gets raw 1.0."""
        import copy

        spiller = spiller_of(self)
        if spiller is not None and plain_key(key) in spiller.spilled:
            spiller.restore_keys([key])
        slot = self.slot.get(key)
        scorer = copy.deepcopy(self.scorers[slot]) if slot is not None else self._new_scorer(key)
        if slot is None or np.isnan(self.res[slot]):
            raw = 1.0
        else:
            raw = float(self.model.peek(np.array([slot]), np.array([float(value)]),
                                        np.array([self.res[slot]]), np.array([int(time_ns)]))[0])
        return raw, scorer.update(float(value), raw)[0]

    # -- per-key state: spilling idle keys (stream.spill) --------------------------------------
    def resident_keys(self) -> list[Any]:
        return list(self.slot)

    def key_state(self, key: Any) -> dict[str, Any]:
        slot = self.slot[key]
        return {"resolution": float(self.res[slot]),
                "pending": np.array([v for v, _ in self.pending[slot]], dtype=np.float64),
                "pending_t": np.array([t for _, t in self.pending[slot]], dtype=np.int64),
                "scorer": self.scorers[slot].state_dict(), "model": self.model.slot_state(slot)}

    def evict_key(self, key: Any) -> None:
        slot = self.slot.pop(key)
        self.model.clear_slot(slot)
        self.keys[slot], self.res[slot], self.pending[slot], self.scorers[slot] = None, float("nan"), [], None
        self.free.append(slot)

    def restore_key(self, key: Any, state: dict[str, Any]) -> None:
        if key in self.slot:
            raise ValueError(f"key {key!r} is resident already")
        slot = self._slot_of(key)
        try:
            pending = [(float(v), int(t)) for v, t in zip(np.asarray(state["pending"], dtype=np.float64),
                                                         np.asarray(state["pending_t"], dtype=np.int64), strict=True)]
            self.scorers[slot].load_state_dict(state["scorer"])
            self.model.load_slot(slot, state["model"])
        except BaseException:
            self.evict_key(key)
            raise
        self.res[slot], self.pending[slot] = float(state["resolution"]), pending

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "config": self.config.to_dict(),
            "keys": list(self.keys),
            "resolution": np.array(self.res, dtype=np.float64),
            "pending": [np.array(p, dtype=np.float64).reshape(-1, 2)[:, 0] for p in self.pending],
            "pending_t": [np.array([t for _, t in p], dtype=np.int64) for p in self.pending],
            "scorers": [s.state_dict() if s is not None else None for s in self.scorers],
            "model": self.model.state_dict(),
        }
        if self.free:   # slots of spilled keys (their entries above are placeholders)
            state["free_slots"] = np.array(sorted(self.free), dtype=np.int64)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if HTMConfig.from_dict(state["config"]) != self.config:
            raise ValueError("the checkpoint's HTM configuration differs from this detector's")
        self._reset_keys()
        self.model = HTMModel(self.config, self.device)
        keys = list(state["keys"])
        free = {int(i) for i in np.asarray(state.get("free_slots", []), dtype=np.int64)}
        for i, key in enumerate(keys):   # slots in order
            if i in free:
                self._append_slot()
            else:
                self._slot_of(key)
        self.free = sorted(free, reverse=True)
        self.res = [float(r) for r in np.asarray(state["resolution"])]
        self.pending = [[(float(v), int(t)) for v, t in zip(vs, ts)]
                        for vs, ts in zip(state["pending"], state["pending_t"])]
        for scorer, s in zip(self.scorers, state["scorers"]):
            if scorer is not None:
                scorer.load_state_dict(s)
        self.model.load_state_dict(state["model"])

    def to(self, device: Any) -> HTMDetector:
        state = self.model.state_dict()
        self.device = device
        self.model = HTMModel(self.config, device)
        self.model.load_state_dict(state)
        return self

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        small = {"config": HTMConfig.small(), "resolution": 0.5, "probationary_period": 20}
        return [UnitTest({**small, "alert_threshold": 0.5}, lambda: _unit_test_stream(40, ("a", "b"))),
                UnitTest({**small, "resolution": "auto", "warmup": 10}, lambda: _unit_test_stream(30, ("a",))),
                UnitTest({**small, "config": HTMConfig.small(tm="backtracking")},
                         lambda: _unit_test_stream(40, ("a", "b")))]

    def summary(self) -> dict[str, Any]:
        """Run-summary metrics: keys, state size, segment capacity, backend."""
        spiller = spiller_of(self)
        return {"keys": len(self.slot) + (len(spiller.spilled) if spiller is not None else 0),
                "resident_keys": len(self.slot), "state_bytes": self.model.memory_bytes(),
                "segments_per_column": self.model.tm.segments_per_column,
                "backend": f"{self.model.be.kind}:{self.model.be.device}"}


def _unit_test_stream(n: int, keys: tuple[str, ...], seed: int = 0) -> Batch:
    """A noisy sine per key, every 5 minutes: input for the contract checks."""
    rng = np.random.default_rng(seed)
    steps = np.repeat(np.arange(n), len(keys))
    offsets = np.tile(np.arange(len(keys)) * 5.0, n)
    values = np.sin(steps / 5.0) * 10 + rng.normal(size=steps.size) + offsets
    data = pa.record_batch({"key": list(keys) * n, "timestamp": pa.array(steps * 300 * 10**9, pa.timestamp("ns")),
                            "value": values})
    return Batch(data, source="contract", time_column="timestamp")
