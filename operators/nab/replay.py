"""Replay NAB corpus files through the engine in this process and collect the scores.

:func:`replay_corpus` runs the chosen corpus files as one keyed stream (key = the file's
relative name, e.g. ``realKnownCause/nyc_taxi.csv``) through :func:`stream.run`: the
source (:class:`NABCorpusSource`) interleaves the files row by row, so each micro-batch
holds a few rows of every stream and a detector that batches its per-key work runs all
58 streams together. Scores are collected per key (:class:`NABResultSink`) and written
as NAB result files. The detector is built by a factory that receives what NAB lets a
detector know up front about each stream (:class:`NABStream`: its length, min and max).

This is the one-process path; :mod:`operators.nab.workers` runs it in worker processes
and :func:`operators.nab.runner.run_corpus` chooses between the two.

Example (a toy detector that scores the distance to the previous value):
    >>> import os, tempfile
    >>> import numpy as np
    >>> from stream import Operator
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
    >>> report = replay_corpus(Jump, nab, out, "jump")
    >>> sorted(os.path.relpath(p, out) for p in report["files"])  # doctest: +NORMALIZE_WHITESPACE
    ['jump/realAdExchange/jump_exchange-2_cpc_results.csv',
     'jump/realKnownCause/jump_rogue_agent_key_hold.csv']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from stream import Batch, Operator, Sink, Source, run

from .corpus import NABFormatError, corpus_files, read_corpus_file, read_windows, window_labels, write_result

#: Columns a detector may add that are worth keeping in the result files.
EXTRA_COLUMNS = ("raw_score", "anomaly_likelihood")


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


def replay_corpus(detector_factory: Callable[..., Operator], nab_dir: str, out_dir: str,
                  detector: str = "htm", *, files: Sequence[str] | None = None,
                  seed: int | None = None, batch_size: int = 4096, per_turn: int = 1,
                  score_column: str = "anomaly_score", progress: bool = False,
                  device: Any = None) -> dict[str, Any]:
    """Run a detector over corpus files in this process; write
    ``out_dir/<detector>/<category>/<detector>_<file>``.

    The arguments are :func:`operators.nab.runner.run_corpus`'s, less the worker
    options. Returns the engine's run summary plus ``detector_dir``, ``files`` written
    and ``workers`` (1). NAB files repeat or step back timestamps at clock changes, so
    the run does not reject time going backwards within a key (NAB detectors see rows
    in file order).
    """
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
