"""The Numenta Anomaly Benchmark (NAB) scoring rules, vectorised with NumPy.

NAB rewards a detector for flagging each labelled anomaly window early and charges it
for every flagged row outside the windows:

- The first ``min(floor(0.15·N), 750)`` rows of a file of ``N`` rows are probation:
  they are neither rewarded nor charged.
- The scaled sigmoid ``S(y) = 2/(1 + e^{5y}) - 1`` (``-1`` for ``y >= 3``) weighs a
  detection by its position. Inside a window ``[left, right]`` of ``w`` rows, row ``i``
  sits at ``y = -(right - i + 1)/w`` and only the window's earliest detection counts,
  worth ``A_TP·S(y)/S(-1)`` (exactly ``A_TP`` at the left edge). A window without a
  detection costs ``-A_FN``. A detection outside the windows costs
  ``A_FP·S(|i - prevRight|/(prevWidth - 1))`` after a window, ``-A_FP`` before any.
- One threshold per detector and profile, for the whole corpus, chosen by sweeping every
  distinct anomaly score (rows scoring at or above it are detections) and keeping the
  best raw score; on ties the highest threshold wins, as in NAB's sweeper.
- The raw score is normalised to ``100·(S - S_null)/(S_perfect - S_null)`` where
  ``S_null`` is the score of a detector that outputs a constant (it scores best by
  flagging nothing: ``-A_FN`` per window) and ``S_perfect = A_TP`` per window.

The sweep costs one sort of the corpus (365,558 rows): well under a second.

Example (one file of 20 rows, one window over rows 12..15, probation = 3 rows):
    >>> import numpy as np
    >>> from operators.nab.scorer import ScoringTable, STANDARD, scaled_sigmoid
    >>> ts = np.arange(20).astype("datetime64[m]")
    >>> scores = np.zeros(20); scores[12] = 0.9; scores[17] = 0.8
    >>> table = ScoringTable.build({"a.csv": (ts, scores)}, {"a.csv": [(ts[12], ts[15])]})
    >>> best = table.best(STANDARD)
    >>> best.threshold, round(best.score, 6)      # 0.9 flags only the left edge: +A_TP
    (0.9, 1.0)
    >>> fp_cost = 0.11 * float(scaled_sigmoid((17 - 15) / (4 - 1)))   # 2 rows after the window
    >>> round(table.score_at(STANDARD, 0.8).score - (1.0 + fp_cost), 12)
    0.0
    >>> round(table.normalised(STANDARD, best.score), 1)    # one window: null -1, perfect +1
    100.0
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# NAB's probationary-period rule: the HTM likelihood sizes its learning period by it too
from operators.htm.likelihood import PROBATION_FRACTION, probation_length


@dataclass(frozen=True)
class Profile:
    """A NAB application profile: the weights of true positives, false positives, misses."""

    name: str
    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


STANDARD = Profile("standard", tp=1.0, fp=0.11, fn=1.0)
LOW_FP = Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0)
LOW_FN = Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0)
#: The three profiles of NAB's config/profiles.json, in NAB's reporting order.
PROFILES: dict[str, Profile] = {p.name: p for p in (STANDARD, LOW_FP, LOW_FN)}


def load_profiles(path: str) -> dict[str, Profile]:
    """Read NAB's ``config/profiles.json`` (``{name: {"CostMatrix": {tpWeight, ...}}}``)."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    out = {}
    for name, spec in raw.items():
        try:
            cm = spec["CostMatrix"]
            out[name] = Profile(name, tp=float(cm["tpWeight"]), fp=float(cm["fpWeight"]),
                                fn=float(cm["fnWeight"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: profile {name!r} needs CostMatrix with tpWeight, fpWeight, "
                             f"fnWeight: {exc}") from exc
    return out


def scaled_sigmoid(y: np.ndarray | float) -> np.ndarray:
    """NAB's ``S(y) = 2/(1 + e^{5y}) - 1``, and ``-1`` for ``y >= 3``.

    >>> scaled_sigmoid(np.array([-1.0, 0.0, 1.0, 3.0])).round(5).tolist()
    [0.98661, 0.0, -0.98661, -1.0]
    """
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(over="ignore"):
        s = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y >= 3.0, -1.0, s)


_MAX_TP = float(scaled_sigmoid(-1.0))


@dataclass(frozen=True)
class Result:
    """A raw NAB score at one threshold, with NAB's row counts (probation excluded)."""

    threshold: float
    score: float
    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0


@dataclass(frozen=True)
class FileResult:
    """One file's share of a :class:`Result` (NAB's per-file scores table)."""

    name: str
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    rows: int


@dataclass(frozen=True)
class Window:
    """Where a labelled window lies in a file, in rows.

    ``first..last`` are the rows scored as inside the window; ``right`` and ``width``
    place a row within it (``y = -(right - i + 1)/width``) and size the decay of false
    positives after it. They differ from ``last`` and ``last - first + 1`` only when a
    file repeats timestamps (a few NAB files do, around clock changes).
    """

    first: int
    last: int
    right: int
    width: int


def window_bounds(name: str, timestamps: np.ndarray, windows: Sequence[tuple]) -> list[Window]:
    """Locate labelled windows, given as ``(start, end)`` timestamps, in a file.

    As NAB's sweeper does: walking the rows in order, a window opens at the first row
    stamped with its start (after the previous window opened) and closes at the next row
    stamped with its end; its right edge is the first row stamped with its end and its
    width counts from the first row stamped with its start. NAB's window limits are
    timestamps of rows of the file; a limit that is not is an error.
    """
    stamps = np.asarray(timestamps).astype("datetime64[ns]")
    out: list[Window] = []
    after = 0
    for start, end in windows:
        t0, t1 = np.datetime64(start, "ns"), np.datetime64(end, "ns")
        at_start = np.flatnonzero(stamps == t0)
        at_end = np.flatnonzero(stamps == t1)
        if not len(at_start) or not len(at_end):
            missing = start if not len(at_start) else end
            raise ValueError(f"{name}: anomaly window {start} .. {end}: no row is stamped "
                             f"{missing}; window limits must be timestamps of rows of the file")
        opens = at_start[at_start >= after]
        if not len(opens):
            raise ValueError(f"{name}: anomaly window {start} .. {end} starts before the "
                             "previous one")
        first = int(opens[0])
        closes = at_end[at_end >= first]
        if not len(closes):
            raise ValueError(f"{name}: anomaly window {start} .. {end} ends before it starts")
        right = int(at_end[0])
        out.append(Window(first, int(closes[0]), right, right - int(at_start[0]) + 1))
        after = first + 1
    return out


class ScoringTable:
    """Every scorable row of a corpus with what a detection there is worth.

    Built once per results folder (:meth:`build`); sweeping and scoring a profile are
    then a handful of array operations. Rows are stored file after file, in time order,
    probation rows dropped.

    Attributes:
        names: file names, in the order of ``file_rows``.
        file_rows: number of rows of each file (probation included).
        n_windows: number of labelled windows of each file.
        file_id / window / tp_unit / fp_unit / scores: per scorable row: its file, its
            window (``-1`` outside), ``S(y)/S(-1)`` inside a window, ``S(y)`` outside.
        row: index of each scorable row within its file.
    """

    def __init__(self, names: list[str], file_rows: np.ndarray, n_windows: np.ndarray,
                 file_id: np.ndarray, row: np.ndarray, window: np.ndarray, tp_unit: np.ndarray,
                 fp_unit: np.ndarray, scores: np.ndarray, window_file: np.ndarray):
        self.names = names
        self.file_rows = file_rows
        self.n_windows = n_windows
        self.file_id = file_id
        self.row = row
        self.window = window
        self.tp_unit = tp_unit
        self.fp_unit = fp_unit
        self.scores = scores
        self.window_file = window_file
        self._order: np.ndarray | None = None

    # -- construction -----------------------------------------------------------------
    @classmethod
    def build(cls, files: Mapping[str, tuple[np.ndarray, np.ndarray]],
              windows: Mapping[str, Sequence[tuple]],
              probation_fraction: float = PROBATION_FRACTION) -> ScoringTable:
        """Build from ``{name: (timestamps, anomaly_scores)}`` and ``{name: [(start, end)]}``.

        A file missing from ``windows`` has no anomaly window.
        """
        names = sorted(files)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                              ("file_id", "row", "window", "tp", "fp", "score")}
        file_rows = np.zeros(len(names), dtype=np.int64)
        n_windows = np.zeros(len(names), dtype=np.int64)
        window_file: list[int] = []
        for fid, name in enumerate(names):
            ts, sc = files[name]
            ts = np.asarray(ts).astype("datetime64[ns]")
            sc = np.asarray(sc, dtype=np.float64)
            n = len(ts)
            if len(sc) != n:
                raise ValueError(f"{name}: {n} timestamps but {len(sc)} anomaly scores")
            if n and not np.all(np.isfinite(sc)):
                i = int(np.flatnonzero(~np.isfinite(sc))[0])
                raise ValueError(f"{name}: column 'anomaly_score' is {sc[i]!r} at row {i}, "
                                 "not a finite number")
            bounds = window_bounds(name, ts, windows.get(name, ()))
            file_rows[fid], n_windows[fid] = n, len(bounds)
            idx = np.arange(n)
            win = np.full(n, -1, dtype=np.int64)
            tp = np.zeros(n)
            # distance to the previous window's right edge, in units of (width - 1)
            prev_right = np.full(n, -1, dtype=np.int64)
            prev_width = np.zeros(n)
            for w in bounds:
                inside = slice(w.first, w.last + 1)
                win[inside] = len(window_file)
                window_file.append(fid)
                tp[inside] = scaled_sigmoid(-(w.right - idx[inside] + 1) / w.width) / _MAX_TP
                prev_right[w.last + 1:] = w.right
                prev_width[w.last + 1:] = w.width
            after = prev_right >= 0
            with np.errstate(divide="ignore", invalid="ignore"):
                # a one-row window has no width to scale by: every later row counts as far away
                y = np.where(after & (prev_width > 1),
                             np.abs(idx - prev_right) / np.maximum(prev_width - 1, 1), 3.0)
            fp = scaled_sigmoid(y)
            keep = idx >= probation_length(n, probation_fraction)
            for key, arr in (("file_id", np.full(n, fid, dtype=np.int64)), ("row", idx),
                             ("window", win), ("tp", tp), ("fp", fp), ("score", sc)):
                parts[key].append(arr[keep])
        cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
        return cls(names, file_rows, n_windows, cat["file_id"].astype(np.int64),
                   cat["row"].astype(np.int64), cat["window"].astype(np.int64), cat["tp"],
                   cat["fp"], cat["score"], np.asarray(window_file, dtype=np.int64))

    def with_scores(self, scores: np.ndarray) -> ScoringTable:
        """The same rows and windows with other anomaly scores (one per scorable row)."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != self.scores.shape:
            raise ValueError(f"need {self.scores.shape[0]} scores, got {scores.shape}")
        return ScoringTable(self.names, self.file_rows, self.n_windows, self.file_id, self.row,
                            self.window, self.tp_unit, self.fp_unit, scores, self.window_file)

    # -- the sweep ----------------------------------------------------------------------
    def _descending(self) -> np.ndarray:
        if self._order is None:
            self._order = np.argsort(-self.scores, kind="stable")
        return self._order

    def _scored_windows(self) -> np.ndarray:
        """Windows with at least one scorable row (NAB's misses are counted for these)."""
        return np.unique(self.window[self.window >= 0])

    def sweep(self, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
        """Raw score for every distinct threshold, highest threshold first.

        Returns ``(thresholds, scores)``; the first entry flags nothing (its threshold
        lies above every score, 1.1 for scores in [0, 1] as in NAB).
        """
        n = len(self.scores)
        base = -profile.fn * len(self._scored_windows())
        order = self._descending()
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        delta = np.zeros(n)
        outside = self.window < 0
        delta[rank[outside]] = profile.fp * self.fp_unit[outside]
        inside = np.flatnonzero(~outside)
        if len(inside):
            # Walk each window's rows from the highest score down; a window's value is
            # that of its earliest detection so far (earliest = largest S), so it only
            # changes when a row earlier than all detected ones turns up.
            by = inside[np.lexsort((rank[inside], self.window[inside]))]
            grp = self.window[by]
            # running minimum of the row index within each window: shift each window's
            # keys below every earlier window's so the running minimum restarts there
            big = np.int64(len(self.scores) + 1)
            key = by - grp * big
            earliest = np.minimum.accumulate(key) + grp * big
            value = profile.tp * self.tp_unit[earliest]
            step = np.diff(value, prepend=0.0)
            first = np.ones(len(by), dtype=bool)
            first[1:] = grp[1:] != grp[:-1]
            step[first] = value[first] + profile.fn
            delta[rank[by]] = step
        total = base + np.cumsum(delta)
        ranked = self.scores[order]
        ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True)) if n else np.zeros(0, int)
        top = float(ranked[0]) if n else 1.0
        start = 1.1 if top < 1.1 else float(np.nextafter(top, np.inf))
        return (np.concatenate([[start], ranked[ends]]), np.concatenate([[base], total[ends]]))

    def best(self, profile: Profile) -> Result:
        """The threshold with the best raw score over the corpus (highest one on ties)."""
        thresholds, scores = self.sweep(profile)
        i = int(np.argmax(scores))
        return self.score_at(profile, float(thresholds[i]))

    # -- scoring at a threshold ---------------------------------------------------------------
    def score_files(self, profile: Profile, threshold: float) -> list[FileResult]:
        """Per-file scores and counts when rows scoring ``>= threshold`` are detections."""
        flagged = self.scores >= threshold
        outside = self.window < 0
        nf = len(self.names)
        fp_rows = flagged & outside
        fp_score = np.bincount(self.file_id[fp_rows], weights=profile.fp * self.fp_unit[fp_rows],
                               minlength=nf)
        hits = np.flatnonzero(flagged & ~outside)
        # rows are in time order within each window, so a window's first hit is its earliest
        win_hit, first = np.unique(self.window[hits], return_index=True)
        tp_score = np.bincount(self.window_file[win_hit],
                               weights=profile.tp * self.tp_unit[hits[first]], minlength=nf)
        scored = self._scored_windows()
        missed = np.setdiff1d(scored, win_hit)
        fn_score = -profile.fn * np.bincount(self.window_file[missed], minlength=nf)

        def count(mask: np.ndarray) -> np.ndarray:
            return np.bincount(self.file_id[mask], minlength=nf)

        tp, fp = count(flagged & ~outside), count(fp_rows)
        fn, tn = count(~flagged & ~outside), count(~flagged & outside)
        total = fp_score + tp_score + fn_score
        return [FileResult(name, float(total[i]), int(tp[i]), int(tn[i]), int(fp[i]), int(fn[i]),
                           int(self.file_rows[i])) for i, name in enumerate(self.names)]

    def score_at(self, profile: Profile, threshold: float) -> Result:
        """Raw corpus score at ``threshold``: the sum of the per-file scores, as NAB reports."""
        files = self.score_files(profile, threshold)
        return Result(threshold, float(sum(f.score for f in files)), sum(f.tp for f in files),
                      sum(f.tn for f in files), sum(f.fp for f in files), sum(f.fn for f in files))

    # -- normalisation ----------------------------------------------------------------------
    def null_score(self, profile: Profile) -> float:
        """Raw score of NAB's null detector (a constant score) after its own threshold sweep."""
        return self.with_scores(np.full_like(self.scores, 0.5)).best(profile).score

    def perfect_score(self, profile: Profile) -> float:
        """Raw score of a detector that hits every window at its left edge and nothing else."""
        return profile.tp * float(self.n_windows.sum())

    def normalised(self, profile: Profile, raw: float) -> float:
        """NAB's final score: 0 for the null detector, 100 for a perfect one."""
        return normalise(raw, self.null_score(profile), self.perfect_score(profile))


def normalise(raw: float, null: float, perfect: float) -> float:
    """``100·(raw - null)/(perfect - null)``."""
    if perfect == null:
        raise ValueError("the scored files hold no anomaly window: the NAB score is undefined")
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class ProfileReport:
    """A detector's NAB result for one profile."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    normalised: float
    result: Result


def evaluate(table: ScoringTable, profiles: Mapping[str, Profile] | None = None,
             thresholds: Mapping[str, float] | None = None) -> dict[str, ProfileReport]:
    """Sweep (or use the given ``thresholds``) and normalise, for each profile.

    >>> import numpy as np
    >>> ts = np.arange(10).astype("datetime64[h]")
    >>> t = ScoringTable.build({"f": (ts, np.linspace(0, 1, 10))}, {"f": [(ts[8], ts[9])]})
    >>> {k: round(r.normalised, 2) for k, r in evaluate(t).items()}
    {'standard': 100.0, 'reward_low_FP_rate': 100.0, 'reward_low_FN_rate': 100.0}
    """
    out = {}
    for name, profile in (profiles or PROFILES).items():
        if thresholds is not None and name in thresholds:
            result = table.score_at(profile, float(thresholds[name]))
        else:
            result = table.best(profile)
        null, perfect = table.null_score(profile), table.perfect_score(profile)
        out[name] = ProfileReport(name, result.threshold, result.score, null, perfect,
                                  normalise(result.score, null, perfect), result)
    return out
