"""Run the later stages of a detector pipeline over the stored results of its first stage.

A NAB detector built as a :class:`~stream.Pipeline` (``htm-rest``: the HTM detector, then
a rest period) computes its first stage exactly as that stage alone does, so a stored
result folder of the first stage (same seed) holds its outputs: the ``anomaly_score``
and ``raw_score`` columns of every file. :func:`run_after_stored` feeds those files,
one key per file, to the pipeline's other operators and writes their result files: the
same files a full run of the pipeline writes, for the cost of the later stages only
(tested on the two-file excerpt). Use it to score a post-processing stage on runs
already made; report it as what it is.

Example (the CAD-style detector's stored results, then a rest period of 1 % of each file):
    >>> import filecmp, functools, os, tempfile
    >>> from stream import Pipeline
    >>> from operators.anomaly import ContextualDetector
    >>> from operators.anomaly.rest import RestPeriod
    >>> from operators.nab.runner import run_corpus
    >>> def cad_rest(streams, seed=0):
    ...     return Pipeline([ContextualDetector.for_nab(streams), RestPeriod.for_nab(streams)])
    >>> nab = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "nab")
    >>> full, base, after = (tempfile.mkdtemp() for _ in range(3))
    >>> direct = run_corpus(cad_rest, nab, full, "cad")
    >>> stored = run_corpus(ContextualDetector.for_nab, nab, base, "cad")
    >>> report = run_after_stored(cad_rest, nab, os.path.join(base, "cad"), after, "cad")
    >>> names = [os.path.relpath(p, after) for p in report["files"]]
    >>> filecmp.cmpfiles(full, after, names, shallow=False)[0] == names   # same bytes
    True
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from stream import Batch, Operator, Pipeline
from stream.errors import HebbstreamError

from .corpus import NABFormatError, corpus_files, read_csv_columns, result_path, window_labels, write_result
from .replay import EXTRA_COLUMNS, NABCorpusSource, labelled_windows


def run_after_stored(detector_factory: Callable[..., Operator], nab_dir: str, stored_dir: str, out_dir: str,
                     detector: str, *, files: Sequence[str] | None = None, seed: int | None = None,
                     score_column: str = "anomaly_score") -> dict[str, Any]:
    """Write ``out_dir/<detector>/...`` result files: the pipeline ``detector_factory``
    builds, its first operator's outputs read from ``stored_dir`` (a result folder of that
    operator alone), the other operators run over them. Returns ``detector_dir``,
    ``files``, ``events``, ``seconds`` and ``workers`` (1), as
    :func:`~operators.nab.runner.run_corpus` does."""
    t0 = time.perf_counter()
    names = list(files) if files is not None else corpus_files(nab_dir)
    source = NABCorpusSource(nab_dir, names)
    windows = labelled_windows(nab_dir, names)
    operator = detector_factory(dict(source.streams), **({} if seed is None else {"seed": seed}))
    if not isinstance(operator, Pipeline) or len(operator.operators) < 2:
        raise HebbstreamError(f"detector {detector!r} is not a pipeline of two or more operators: "
                              "there is no later stage to run over stored results")
    later = operator.operators[1:]
    stored_name = os.path.basename(os.path.normpath(stored_dir))
    detector_dir = os.path.join(out_dir, detector)
    written, events = [], 0
    for name in names:
        path = result_path(stored_dir, stored_name, name)
        if not os.path.exists(path):
            raise NABFormatError(f"{stored_dir}: no stored result for {name} ({path})")
        ts, values = source.data[name]
        kept = [c for c in (score_column, *EXTRA_COLUMNS) if c in _columns_of(path)]
        if score_column not in kept:
            raise NABFormatError(f"{path}: no column {score_column!r}")
        cols = read_csv_columns(path, kept, {c: pa.float64() for c in kept})
        if len(cols[score_column]) != len(values):
            raise NABFormatError(f"{path}: {len(cols[score_column])} rows, the corpus file {len(values)}")
        data = {"key": pa.array([name] * len(values)), "timestamp": pa.array(ts, pa.timestamp("ns")),
                "value": pa.array(values), **{c: pa.array(cols[c]) for c in kept}}
        batch = Batch(pa.record_batch(data), source=path, time_column="timestamp")
        for op in later:
            batch = op(batch)
        out = {c: np.asarray(batch.numpy(c), dtype=np.float64) for c in kept}
        written.append(write_result(detector_dir, detector, name, ts, values, out.pop(score_column),
                                    window_labels(name, ts, windows[name]), out))
        events += len(values)
    return {"detector_dir": detector_dir, "files": written, "events": events,
            "seconds": time.perf_counter() - t0, "workers": 1}


def _columns_of(path: str) -> list[str]:
    with open(path) as f:
        return f.readline().strip().split(",")
