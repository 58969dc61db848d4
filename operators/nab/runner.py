"""Run a detector over the NAB corpus through the engine, write NAB result files, score them.

:func:`run_corpus` replays the corpus in this process (:mod:`operators.nab.replay`:
every file one key of one interleaved stream) or shares the files out to worker
processes (:mod:`operators.nab.workers`; the result files are the same bytes);
:func:`score_results` scores a detector's result folder with :mod:`operators.nab.scorer`.

Example (the CAD-style detector on the two-file excerpt the tests use):
    >>> import os, tempfile
    >>> from operators.nab.detectors import nab_factory
    >>> nab = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "nab")
    >>> out = tempfile.mkdtemp()
    >>> report = run_corpus(nab_factory("cad"), nab, out, "cad")
    >>> sorted(os.listdir(os.path.join(out, "cad")))
    ['realAdExchange', 'realKnownCause']
    >>> scores = score_results(os.path.join(out, "cad"), nab)
    >>> sorted(scores)
    ['reward_low_FN_rate', 'reward_low_FP_rate', 'standard']
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stream import Operator

from .corpus import NABFormatError, corpus_row_count, read_results, read_windows
from .replay import NABCorpusSource, NABResultSink, NABStream, labelled_windows, replay_corpus
from .scorer import PROFILES, Profile, ProfileReport, ScoringTable, evaluate, load_profiles
from .workers import START_METHOD, run_workers

__all__ = ["NABCorpusSource", "NABResultSink", "NABStream", "labelled_windows", "read_nab_thresholds",
           "run_corpus", "score_results", "scoring_table"]

THRESHOLDS_FILE = os.path.join("config", "thresholds.json")


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
        workers: processes to share the files out to (:mod:`operators.nab.workers`:
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
        return run_workers(detector_factory, nab_dir, out_dir, detector, files, workers,
                           start_method=start_method or START_METHOD, progress=progress,
                           seed=seed, batch_size=batch_size, per_turn=per_turn,
                           score_column=score_column, device=device)
    return replay_corpus(detector_factory, nab_dir, out_dir, detector, files=files, seed=seed,
                         batch_size=batch_size, per_turn=per_turn, score_column=score_column,
                         progress=progress, device=device)


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
