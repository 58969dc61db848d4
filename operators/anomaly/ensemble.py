"""Detectors side by side on the same stream, their scores combined into one.

:class:`ScoreEnsemble` runs each member detector over every batch (each writes its
score to a column of its own), puts the members' scores on one scale, per key and
prequentially, and combines them:

- ``calibrate="rank"``: a score becomes the fraction of the key's earlier scores of that
  member strictly below it (its empirical distribution function before this row), so
  members with different ranges and tails weigh alike; ``"raw"`` keeps the scores.
- ``combine="mean"`` (the members agree) or ``"max"`` (any member alarms).

Members are named like pipeline operators: ``"cad"`` and ``"art"`` (this package's
detectors), or any name registered under ``hebbstream.operators`` (``"htm"``), with
``member_options`` as their parameters.

Example (two members on a hand-made stream; the ensemble score is the mean of their
ranks):
    >>> import pyarrow as pa
    >>> from stream import Batch
    >>> ens = ScoreEnsemble(members=["cad", "art"], value_range={"a": [0.0, 1.0]},
    ...                     member_options={"art": {"window": 4, "levels": 1}})
    >>> batch = Batch(pa.record_batch({"key": ["a"] * 6, "value": [0.0, 1.0, 0.0, 1.0, 0.0, 0.9]}))
    >>> out = ens(batch)
    >>> [round(float(v), 3) for v in out.numpy("anomaly_score")]
    [0.0, 0.5, 0.0, 0.0, 0.5, 0.0]
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from stream import Batch, Operator, registry, spill
from stream.errors import CheckpointError, ConfigError
from stream.options import one_of
from stream.testing import UnitTest

from .artime import ARTDetector
from .cad import ContextualDetector
from .keyed import UNIT_TEST_RANGE, unit_test_stream

#: Members known by short name (others are looked up among registered operators).
MEMBERS: dict[str, type[Operator]] = {"cad": ContextualDetector, "art": ARTDetector}


def member_class(name: str) -> Any:
    if name in MEMBERS:
        return MEMBERS[name]
    if name in registry.names("operators"):
        return registry.lookup("operators", name)
    raise ConfigError(f"ScoreEnsemble: unknown member {name!r}; known: "
                      f"{', '.join(sorted(set(MEMBERS) | set(registry.names('operators'))))}")


class ScoreEnsemble(Operator):
    """Member detectors side by side, their per-key calibrated scores combined.

    Args:
        members: member detector names (at least one).
        member_options: ``{member: {parameter: value}}``; ``value_range`` is passed to
            every member that takes one.
        calibrate: ``"rank"`` or ``"raw"``; combine: ``"mean"`` or ``"max"``.
        value_range / value_column / score_column: as the members'.
        max_resident_keys: at most this many keys in memory (every member's models and the
            key's score history), the least recently used spilled to disk (:mod:`stream.spill`).
    """

    requires = {"value": "number"}
    option_checks: ClassVar[dict[str, Any]] = {"calibrate": one_of("rank", "raw"),
                                               "combine": one_of("mean", "max")}

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        return [UnitTest({"members": ["cad", "art"], "value_range": UNIT_TEST_RANGE,
                          "member_options": {"art": {"window": 4, "levels": 1}}}, unit_test_stream)]

    def __init__(self, *, members: list[str] | None = None, member_options: dict[str, dict[str, Any]] | None = None,
                 calibrate: str = "rank", combine: str = "mean", value_range: dict[str, list[float]] | None = None,
                 value_column: str = "value", score_column: str = "anomaly_score",
                 max_resident_keys: int | None = None) -> None:
        self.max_resident_keys = spill.check_limit(max_resident_keys, "ScoreEnsemble")
        self.member_names = list(members if members is not None else ["cad", "art"])
        if not self.member_names:
            raise ConfigError("ScoreEnsemble: members must name at least one detector")
        if calibrate not in ("rank", "raw") or combine not in ("mean", "max"):
            raise ConfigError(f"ScoreEnsemble: calibrate must be 'rank' or 'raw', combine 'mean' or 'max' "
                              f"(got {calibrate!r}, {combine!r})")
        options = dict(member_options or {})
        unknown = sorted(set(options) - set(self.member_names))
        if unknown:
            raise ConfigError(f"ScoreEnsemble: member_options for {unknown}, which are not members")
        self.calibrate, self.combine = calibrate, combine
        self.value_column, self.score_column = value_column, score_column
        self.columns = [f"_{score_column}_{i}" for i in range(len(self.member_names))]
        self.members: list[Operator] = []
        for name, column in zip(self.member_names, self.columns):
            kwargs = dict(options.get(name, {}))
            if value_range is not None:
                kwargs.setdefault("value_range", value_range)
            kwargs.update(value_column=value_column, score_column=column)
            self.members.append(member_class(name)(**kwargs))
        self.history: dict[Any, list[list[float]]] = {}   # key → per member, sorted past scores
        if self.max_resident_keys is not None:
            others = [n for n, m in zip(self.member_names, self.members) if not spill.supports_spill(m)]
            if others:
                raise ConfigError(f"ScoreEnsemble: max_resident_keys needs members that keep per-key state "
                                  f"hooks; {others} do not")

    @classmethod
    def for_nab(cls, streams: Mapping[str, Any], seed: int = 0, *, members: list[str] | None = None,
                member_options: dict[str, dict[str, Any]] | None = None, **kwargs: Any) -> ScoreEnsemble:
        """Each member built by its own ``for_nab`` (NAB's per-file min, max and length, and
        the member's NAB parameters); the combination chosen on the tuning half of the corpus
        unless given: raw scores, their maximum (tuning half, standard profile, CAD- and
        ARTime-style members: max of raw 64.81, mean of raw 64.13, max of ranks 54.40, mean
        of ranks 53.98; CAD alone 65.89)."""
        kwargs.setdefault("calibrate", "raw")
        kwargs.setdefault("combine", "max")
        ensemble = cls(members=members, member_options=member_options, **kwargs)
        for i, (name, column) in enumerate(zip(ensemble.member_names, ensemble.columns)):
            klass = member_class(name)
            opts = dict((member_options or {}).get(name, {}), value_column=ensemble.value_column,
                        score_column=column)
            if hasattr(klass, "for_nab"):
                ensemble.members[i] = klass.for_nab(streams, seed=seed, **opts)
        return ensemble

    def required_columns(self) -> dict[str, str]:
        return {self.value_column: "number"}

    def to(self, device: Any) -> ScoreEnsemble:
        self.members = [m.to(device) for m in self.members]
        return self

    def process(self, batch: Batch) -> Batch:
        out = batch
        for member in self.members:
            out = member.process(out)
        scores = np.stack([np.asarray(out.numpy(c), dtype=np.float64) for c in self.columns], axis=1)
        if self.calibrate == "rank":
            scores = self._ranks(batch, scores)
        combined = scores.mean(axis=1) if self.combine == "mean" else scores.max(axis=1)
        return batch.with_columns({self.score_column: combined})

    def _ranks(self, batch: Batch, scores: np.ndarray) -> np.ndarray:
        ranks = np.zeros_like(scores)
        for key, idx in batch.key_groups().items():
            past = self.history.setdefault(key, [[] for _ in self.members])
            for i in idx.tolist():
                for m, seen in enumerate(past):
                    s = float(scores[i, m])
                    ranks[i, m] = bisect.bisect_left(seen, s) / len(seen) if seen else 0.0
                    bisect.insort(seen, s)
        return ranks

    # -- per-key state: spilling idle keys (stream.spill); the members' keys and the history --
    def resident_keys(self) -> list[Any]:
        return list(dict.fromkeys(k for m in self.members for k in m.resident_keys()))

    def key_state(self, key: Any) -> dict[str, Any]:
        history = self.history.get(key)
        return {"members": [m.key_state(key) for m in self.members],
                "history": None if history is None else [np.asarray(h, dtype=np.float64) for h in history]}

    def evict_key(self, key: Any) -> None:
        for member in self.members:
            member.evict_key(key)
        self.history.pop(key, None)

    def restore_key(self, key: Any, state: dict[str, Any]) -> None:
        if len(state["members"]) != len(self.members):
            raise ValueError(f"{len(state['members'])} members in the spilled state, {len(self.members)} here")
        for member, st in zip(self.members, state["members"]):
            member.restore_key(key, st)
        if state["history"] is not None:
            self.history[key] = [np.asarray(h, dtype=np.float64).tolist() for h in state["history"]]

    def state_dict(self) -> dict[str, Any]:
        keys = list(self.history)
        return {"members": [m.state_dict() for m in self.members], "keys": keys,
                "history": [[np.asarray(h, dtype=np.float64) for h in self.history[k]] for k in keys]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            if len(state["members"]) != len(self.members):
                raise ValueError(f"{len(state['members'])} members in the checkpoint, {len(self.members)} here")
            history = {}
            for key, per in zip(state["keys"], state["history"], strict=True):
                if len(per) != len(self.members):
                    raise ValueError("a key's history does not have one list per member")
                history[key] = [np.asarray(h, dtype=np.float64).tolist() for h in per]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"ScoreEnsemble: malformed checkpoint state: {exc!r}") from exc
        for member, st in zip(self.members, state["members"]):
            member.load_state_dict(st)
        self.history = history

    def __repr__(self) -> str:
        return f"ScoreEnsemble(members={self.member_names}, calibrate={self.calibrate!r}, combine={self.combine!r})"
