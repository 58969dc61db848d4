"""Run a detector over the NAB corpus through the engine, write NAB result files, score them.

:func:`run_corpus` replays every corpus file as one keyed stream (key = the file's
relative name, e.g. ``realKnownCause/nyc_taxi.csv``) through :func:`stream.run`: the
source interleaves the files row by row, so each micro-batch holds a few rows of every
stream and a detector that batches its per-key work runs all 58 streams together.
Scores are collected per key and written as NAB result files, which
:func:`score_results` scores with :mod:`operators.htm.nab_scorer`.

The detector is built by a factory that receives what NAB lets a detector know up front
about each stream (:class:`NABStream`: its length, min and max). ``workers=N`` shares
the files out to N processes, each running this same path over the jobs it takes
(:mod:`operators.htm.nab_workers`); the result files are the same bytes.

Example (a toy detector that scores the distance to the previous value):
    >>> import os, tempfile
    >>> import numpy as np
    >>> from stream import Operator
    >>> from operators.htm.nab_runner import run_corpus, score_results
    >>> class Jump(Operator):
    ...     requires = {"value": "number"}
    ...     def __init__(self, streams):
    ...         self.last = {}
    ...         self.scale = {k: (s.max - s.min) or 1.0 for k, s in streams.items()}
    ...     def process(self, batch):
    ...         keys, values = batch.keys(), batch.numpy("value")
    ...         out = np.empty(len(values))
    ...         for i, (k, v) in enumerate(zip(keys, values)):
    ...             out[i] = abs(v - self.last.get(k, v)) / self.scale[k]
    ...             self.last[k] = v
    ...         return batch.with_columns({"anomaly_score": out})
    >>> nab = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "nab")
    >>> out = tempfile.mkdtemp()
    >>> report = run_corpus(Jump, nab, out, "jump")
    >>> sorted(os.listdir(os.path.join(out, "jump")))
    ['realAdExchange', 'realKnownCause']
    >>> scores = score_results(os.path.join(out, "jump"), nab)
    >>> sorted(scores)
    ['reward_low_FN_rate', 'reward_low_FP_rate', 'standard']
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from stream import Batch, Operator, Sink, Source, run

from .nab_corpus import (
    NABFormatError,
    corpus_files,
    corpus_row_count,
    read_corpus_file,
    read_results,
    read_windows,
    window_labels,
    write_result,
)
from .nab_scorer import PROFILES, Profile, ProfileReport, ScoringTable, evaluate, load_profiles

#: Columns a detector may add that are worth keeping in the result files.
EXTRA_COLUMNS = ("raw_score", "anomaly_likelihood")
THRESHOLDS_FILE = os.path.join("config", "thresholds.json")


@dataclass(frozen=True)
class NABStream:
    """What NAB tells a detector about a stream before it starts (NAB's detectors get the
    file's length, for the probation, and its min and max, for encoder ranges)."""

    name: str
    rows: int
    min: float
    max: float


class NABCorpusSource(Source):
    """The corpus files as one keyed stream, interleaved ``per_turn`` rows at a time.

    Columns: ``key`` (file name), ``timestamp``, ``value``, ``row`` (index in the file).
    Positions count rows of the interleaved stream, so a run can resume mid-corpus.
    """

    name = "nab"

    def __init__(self, nab_dir: str, files: Sequence[str] | None = None, *, per_turn: int = 1,
                 batch_rows: int = 4096):
        if per_turn < 1 or batch_rows < 1:
            raise ValueError("per_turn and batch_rows must be >= 1")
        self.nab_dir = nab_dir
        self.files = list(files) if files is not None else corpus_files(nab_dir)
        self.batch_rows = batch_rows
        self.data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.streams: dict[str, NABStream] = {}
        for name in self.files:
            ts, values = read_corpus_file(nab_dir, name)
            if not len(values):
                raise NABFormatError(f"{nab_dir}/data/{name}: no rows")
            if not np.all(np.isfinite(values)):
                i = int(np.flatnonzero(~np.isfinite(values))[0])
                raise NABFormatError(f"{nab_dir}/data/{name}: column 'value' is {values[i]} "
                                     f"at row {i + 1}")
            self.data[name] = (ts, values)
            self.streams[name] = NABStream(name, len(values), float(values.min()),
                                           float(values.max()))
        # the interleaved order: turn by turn, file by file, row by row
        sizes = [len(self.data[n][1]) for n in self.files]
        file_id = np.repeat(np.arange(len(sizes)), sizes)
        row = np.concatenate([np.arange(n) for n in sizes])
        order = np.lexsort((row, file_id, row // per_turn))
        self._file_id, self._row = file_id[order], row[order]
        self._keys = pa.array(self.files, pa.string())
        self._stamps = np.concatenate([self.data[n][0] for n in self.files])[order]
        self._values = np.concatenate([self.data[n][1] for n in self.files])[order]

    def length(self) -> int:
        return len(self._row)

    def batches(self, position: dict[str, Any] | None = None) -> Iterator[Batch]:
        start = int((position or {}).get("row", 0))
        for lo in range(start, len(self._row), self.batch_rows):
            hi = min(lo + self.batch_rows, len(self._row))
            data = pa.record_batch({
                "key": self._keys.take(pa.array(self._file_id[lo:hi])),
                "timestamp": pa.array(self._stamps[lo:hi], pa.timestamp("ns")),
                "value": pa.array(self._values[lo:hi]),
                "row": pa.array(self._row[lo:hi]),
            })
            yield Batch(data, source=self.name, offset=lo, time_column="timestamp")


class NABResultSink(Sink):
    """Collects a detector's scores per stream, in file order, for NAB result files."""

    name = "nab-results"

    def __init__(self, streams: Mapping[str, NABStream], score_column: str = "anomaly_score"):
        self.score_column = score_column
        self.columns: dict[str, dict[str, np.ndarray]] = {}
        self.filled = {k: np.zeros(s.rows, dtype=bool) for k, s in streams.items()}

    def write(self, batch: Batch) -> None:
        if self.score_column not in batch:
            raise NABFormatError(f"the detector's output has no column {self.score_column!r} "
                                 f"(columns: {', '.join(batch.column_names)})")
        names = [self.score_column] + [c for c in EXTRA_COLUMNS if c in batch]
        values = {c: np.asarray(batch.numpy(c), dtype=np.float64) for c in names}
        rows = batch.numpy("row")
        for key, idx in batch.key_groups().items():
            filled = self.filled[key]
            cols = self.columns.setdefault(key, {c: np.full(len(filled), np.nan) for c in names})
            for c in names:
                cols.setdefault(c, np.full(len(filled), np.nan))[rows[idx]] = values[c][idx]
            filled[rows[idx]] = True

    def missing(self) -> dict[str, int]:
        """Rows of each stream that got no score (should be none after a full run)."""
        return {k: int((~f).sum()) for k, f in self.filled.items() if not f.all()}


def run_corpus(detector_factory: Callable[..., Operator], nab_dir: str, out_dir: str,
               detector: str = "htm", *, files: Sequence[str] | None = None,
               seed: int | None = None, batch_size: int = 4096, per_turn: int = 1,
               score_column: str = "anomaly_score", progress: bool = False,
               device: Any = None, workers: int = 1,
               start_method: str | None = None) -> dict[str, Any]:
    """Run a detector over the corpus and write ``out_dir/<detector>/<category>/<detector>_<file>``.

    Args:
        detector_factory: called as ``detector_factory(streams)`` (plus ``seed=seed`` when
            a seed is given) with ``{name: NABStream}``; returns the operator. It must add
            ``score_column`` to every batch.
        files: a subset of the corpus (``category/file.csv`` names); default all.
        batch_size / per_turn: micro-batch size, and rows of a stream per turn of the
            interleaving (1: every micro-batch spreads over all streams).
        device: passed to :func:`stream.run` (``pipeline.to(device)``).
        workers: processes to share the files out to (:mod:`operators.htm.nab_workers`:
            the files are cut into jobs, largest first, and a worker that finishes a
            job takes the next; each writes its jobs' results; the result files are the
            same bytes as with one). At most one worker per job starts (one file runs
            here). With more than one, the factory must pickle.
        start_method: how worker processes start (default ``"spawn"``).
        progress: a progress bar; with workers, a line per finished job.

    Returns the engine's run summary plus ``detector_dir``, ``files`` written and
    ``workers`` (with more than one: the merged summary, and ``per_worker``).
    NAB files repeat or step back timestamps at clock changes, so the run does not
    reject time going backwards within a key (NAB detectors see rows in file order).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1:
        from .nab_workers import START_METHOD, run_workers  # it imports this module

        return run_workers(detector_factory, nab_dir, out_dir, detector, files, workers,
                           start_method=start_method or START_METHOD, progress=progress,
                           seed=seed, batch_size=batch_size, per_turn=per_turn,
                           score_column=score_column, device=device)
    source = NABCorpusSource(nab_dir, files, per_turn=per_turn, batch_rows=batch_size)
    windows = labelled_windows(nab_dir, source.files)
    kwargs = {} if seed is None else {"seed": seed}
    operator = detector_factory(dict(source.streams), **kwargs)
    sink = NABResultSink(source.streams, score_column)
    summary = run(source, operator, sink, batch_size=batch_size, check_order=False,
                  progress=progress, device=device)
    missing = sink.missing()
    if missing:
        name, n = next(iter(missing.items()))
        raise NABFormatError(f"the detector returned no score for {n} row(s) of {name} "
                             f"({len(missing)} stream(s) incomplete)")
    detector_dir = os.path.join(out_dir, detector)
    written = []
    for name in source.files:
        ts, values = source.data[name]
        cols = sink.columns[name]
        extra = {c: v for c, v in cols.items() if c != score_column}
        written.append(write_result(detector_dir, detector, name, ts, values, cols[score_column],
                                    window_labels(name, ts, windows[name]), extra))
    return {**summary, "detector_dir": detector_dir, "files": written, "workers": 1}


def labelled_windows(nab_dir: str, names: Sequence[str]) -> dict[str, list[tuple]]:
    """The corpus's anomaly windows; an error when one of ``names`` has no entry."""
    windows = read_windows(nab_dir)
    unknown = [n for n in names if n not in windows]
    if unknown:
        raise NABFormatError(f"{nab_dir}: labels/combined_windows.json has no entry for "
                             f"{unknown[:3]}")
    return windows


def read_nab_thresholds(nab_dir: str) -> dict[str, dict[str, float]]:
    """NAB's stored thresholds, ``{detector: {profile: threshold}}`` (empty if absent)."""
    path = os.path.join(nab_dir, THRESHOLDS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return {det: {prof: float(v["threshold"]) for prof, v in profs.items()}
            for det, profs in raw.items()}


def scoring_table(detector_dir: str, nab_dir: str, files: Sequence[str] | None = None,
                  detector: str | None = None, column: str = "anomaly_score") -> ScoringTable:
    """Read a detector's result files (all corpus files, or ``files``) into a scoring table."""
    windows = read_windows(nab_dir)
    names = list(files) if files is not None else sorted(windows)
    results = read_results(detector_dir, names, detector, column)
    for name, (ts, _) in results.items():
        # NAB scores a result file against its corpus file: same rows, same probation
        rows = corpus_row_count(nab_dir, name)
        if rows is not None and rows != len(ts):
            raise NABFormatError(f"{detector_dir}: the result for {name} has {len(ts)} rows, "
                                 f"the corpus file {rows}")
    return ScoringTable.build(results, windows)


def score_results(detector_dir: str, nab_dir: str, *, files: Sequence[str] | None = None,
                  detector: str | None = None, profiles: Mapping[str, Profile] | None = None,
                  thresholds: Mapping[str, float] | None = None,
                  column: str = "anomaly_score") -> dict[str, ProfileReport]:
    """NAB scores of a detector folder: thresholds swept over the corpus unless given.

    ``profiles`` default to the NAB folder's ``config/profiles.json`` (NAB's three).
    """
    if profiles is None:
        path = os.path.join(nab_dir, "config", "profiles.json")
        profiles = load_profiles(path) if os.path.exists(path) else PROFILES
    table = scoring_table(detector_dir, nab_dir, files, detector, column)
    return evaluate(table, profiles, thresholds)
