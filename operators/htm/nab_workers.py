"""Run the NAB corpus as N worker processes, each owning some of the streams (keys).

This is hebbstream's scale-out on one machine, the way workers of a Kafka consumer
group share a topic: each worker owns a set of keys (corpus files), runs the ordinary
engine path over them (:func:`~operators.htm.nab_runner.run_corpus` on its files,
interleaved, the detector batching its keys) and writes their result files; the parent
only splits the files and collects the per-key reports. A key's model is independent
of the other keys and its random draws depend only on its own data and seed, so the
result files are byte-identical to a one-process run.

Files go to workers largest first, each onto the least-loaded worker (by record count),
so the workers finish close together. Workers start with ``"spawn"`` by default: a
fresh interpreter inherits no threads, locks or torch/OpenMP state from the parent, so
the detector factory must be picklable (a module-level function, or a
:func:`functools.partial` of one). A worker that raises, or dies, stops the run: the
other workers are terminated and :class:`NABWorkerError` names the failed worker's files
and carries its traceback.

Example (the HTM detector, small, on the two-file excerpt; the factory is a partial,
so it pickles):
    >>> import filecmp, functools, os, tempfile
    >>> from operators.htm.detector import HTMDetector
    >>> from operators.htm.model import HTMConfig
    >>> from operators.htm.nab_runner import run_corpus
    >>> assign_files(["a.csv", "b.csv", "c.csv", "d.csv"], [10, 40, 30, 20], 2)
    [['a.csv', 'b.csv'], ['c.csv', 'd.csv']]
    >>> nab = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "nab")
    >>> factory = functools.partial(HTMDetector.for_nab, config=HTMConfig.small(), device="numpy")
    >>> one, two = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> report = run_corpus(factory, nab, two, "htm", workers=2)
    >>> report["workers"], report["events"], [len(w["files"]) for w in report["per_worker"]]
    (2, 3506, [1, 1])
    >>> names = [os.path.relpath(p, two) for p in report["files"]]
    >>> _ = run_corpus(factory, nab, one, "htm")
    >>> filecmp.cmpfiles(one, two, names, shallow=False)[0] == names   # same bytes
    True
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from stream import Operator
from stream.errors import HebbstreamError

from .nab_corpus import DATA_DIR, NABFormatError, corpus_files, corpus_row_count
from .nab_runner import labelled_windows, run_corpus

#: How worker processes start (a :mod:`multiprocessing` start method).
START_METHOD = "spawn"
#: Worker files named in an error message (the rest are counted).
NAMED_FILES = 10
#: Seconds a worker that has reported gets to exit before it is terminated.
EXIT_GRACE_S = 30.0


class NABWorkerError(HebbstreamError):
    """A worker process failed: names its files; ``worker_traceback`` holds its traceback
    (also in the message); ``__cause__`` is the worker's exception when it could be sent."""

    def __init__(self, message: str, files: Sequence[str] = (), worker_traceback: str = ""):
        super().__init__(message)
        self.files = list(files)
        self.worker_traceback = worker_traceback


def assign_files(files: Sequence[str], sizes: Sequence[int], workers: int) -> list[list[str]]:
    """Split ``files`` over at most ``workers`` workers, balanced by ``sizes`` (records):
    largest first, each onto the least-loaded worker (the first one on ties). Each
    worker's files keep their order in ``files``; no worker is left without a file."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if len(files) != len(sizes):
        raise ValueError("files and sizes differ in length")
    n = min(workers, len(files))
    load = [(0, w) for w in range(n)]              # (records, worker): a min-heap
    owner = [0] * len(files)
    for i in sorted(range(len(files)), key=lambda i: (-sizes[i], i)):
        records, w = heapq.heappop(load)
        owner[i] = w
        heapq.heappush(load, (records + sizes[i], w))
    return [[f for f, o in zip(files, owner) if o == w] for w in range(n)]


def _describe(index: int, count: int, files: Sequence[str]) -> str:
    named = ", ".join(files[:NAMED_FILES])
    more = f" and {len(files) - NAMED_FILES} more" if len(files) > NAMED_FILES else ""
    return f"NAB worker {index + 1} of {count} (file{'s' if len(files) > 1 else ''} {named}{more})"


def _work(conn: Connection, factory: Callable[..., Operator], nab_dir: str, out_dir: str,
          detector: str, files: list[str], options: dict[str, Any]) -> None:
    """A worker's body: run its files through the engine, send the summary or the error."""
    try:
        conn.send(("done", run_corpus(factory, nab_dir, out_dir, detector, files=files,
                                      **options)))
    except BaseException as exc:   # anything, KeyboardInterrupt included, goes to the parent
        tb = traceback.format_exc()
        try:
            cause: bytes | None = pickle.dumps(exc)
            pickle.loads(cause)   # some exceptions pickle but cannot be rebuilt
        except Exception:
            cause = None
        conn.send(("failed", f"{type(exc).__name__}: {exc}", tb, cause))
    finally:
        conn.close()


def _unpickled(data: bytes | None) -> BaseException | None:
    """The worker's exception, when this process can rebuild it (its class may not import)."""
    try:
        return pickle.loads(data) if data is not None else None
    except Exception:
        return None


def run_workers(detector_factory: Callable[..., Operator], nab_dir: str, out_dir: str,
                detector: str, files: Sequence[str] | None, workers: int, *,
                start_method: str = START_METHOD, progress: bool = False,
                **options: Any) -> dict[str, Any]:
    """:func:`~operators.htm.nab_runner.run_corpus` over ``workers`` processes; ``options``
    go to each worker's ``run_corpus``. Returns the merged summary (see :func:`merge_summaries`)."""
    names = list(files) if files is not None else corpus_files(nab_dir)
    labelled_windows(nab_dir, names)   # fail here, before any process starts
    sizes = []
    for name in names:
        rows = corpus_row_count(nab_dir, name)
        if rows is None:
            raise NABFormatError(f"{os.path.join(nab_dir, DATA_DIR, *name.split('/'))}: no such file")
        sizes.append(rows)
    parts = assign_files(names, sizes, workers)
    if len(parts) == 1:   # one file: nothing to split
        return run_corpus(detector_factory, nab_dir, out_dir, detector, files=names,
                          progress=progress, **options)
    if start_method != "fork":
        try:
            pickle.dumps(detector_factory)
        except Exception as exc:
            raise HebbstreamError(f"workers={workers} runs the detector factory in new processes, "
                                  f"so it must pickle (a module-level function or a "
                                  f"functools.partial of one); {detector_factory!r}: {exc}") from exc
    ctx = mp.get_context(start_method)
    t0 = time.perf_counter()
    procs: list[Any] = []
    waiting: dict[Connection, int] = {}
    summaries: list[dict[str, Any]] = [{} for _ in parts]
    finished = False
    try:
        for i, part in enumerate(parts):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_work, name=f"nab-worker-{i + 1}", daemon=True,
                               args=(send, detector_factory, nab_dir, out_dir, detector, part,
                                     options))
            proc.start()
            # only the worker may hold the sending end: when it dies, recv() sees EOF
            send.close()
            procs.append(proc)
            waiting[recv] = i
        while waiting:
            for conn in wait(list(waiting)):
                i = waiting.pop(conn)
                who = _describe(i, len(parts), parts[i])
                try:
                    message = conn.recv()
                except EOFError:
                    procs[i].join(EXIT_GRACE_S)
                    code = procs[i].exitcode
                    how = (f"was killed by signal {-code}" if code is not None and code < 0
                           else f"died (exit code {code})")
                    raise NABWorkerError(f"{who} {how} before reporting (anything it printed is "
                                         "above; a script that starts workers needs "
                                         "if __name__ == '__main__')", parts[i]) from None
                finally:
                    conn.close()
                if message[0] == "failed":
                    _, error, tb, cause = message
                    err = NABWorkerError(f"{who} failed: {error}\n--- worker traceback ---\n"
                                         f"{tb.rstrip()}", parts[i], tb)
                    raise err from _unpickled(cause)
                summaries[i] = message[1]
                if progress:
                    print(f"{who}: {message[1]['events']:,} records in "
                          f"{message[1]['seconds']:.1f} s", file=sys.stderr, flush=True)
        finished = True
    finally:
        for proc in procs:
            if finished:
                proc.join(EXIT_GRACE_S)
            if proc.is_alive():   # a failure stops the other workers
                proc.terminate()
            proc.join()
    return merge_summaries(names, parts, summaries, time.perf_counter() - t0)


def merge_summaries(names: Sequence[str], parts: Sequence[Sequence[str]],
                    summaries: Sequence[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """One run summary from the workers' :func:`~operators.htm.nab_runner.run_corpus` ones.

    Counts add up; ``seconds`` is the parent's wall time; ``operator_seconds`` add up
    (CPU time over all workers); ``latency_s`` takes the worst worker's percentiles;
    ``files`` follow ``names`` (the corpus order); ``metrics`` list numbers per worker and
    keep other values all workers agree on; ``per_worker`` holds each worker's files
    and summary.
    """
    written: dict[str, str] = {}
    for part, s in zip(parts, summaries):
        written.update(zip(part, s["files"]))
    first = summaries[0]
    events = sum(s["events"] for s in summaries)
    out: dict[str, Any] = {
        **{k: sum(s[k] for s in summaries) for k in ("events", "events_total", "batches",
                                                     "dead_letter", "checkpoints")},
        "seconds": seconds,
        "events_per_s": events / seconds if seconds > 0 else float("nan"),
        "latency_s": {q: max(s["latency_s"][q] for s in summaries) for q in first["latency_s"]},
        "operator_seconds": {k: sum(s["operator_seconds"].get(k, 0.0) for s in summaries)
                             for k in first["operator_seconds"]},
        "resumed_from": None,
        "machine": first["machine"],
        "detector_dir": first["detector_dir"],
        "files": [written[name] for name in names],
        "workers": len(parts),
        "per_worker": [{**{k: v for k, v in s.items() if k != "files"}, "files": list(p)}
                       for p, s in zip(parts, summaries)],
    }
    if "metrics" in first:
        out["metrics"] = {label: {field: _merged([s["metrics"][label][field] for s in summaries])
                                  for field in fields}
                          for label, fields in first["metrics"].items()}
    return out


def _merged(values: list[Any]) -> Any:
    """Numbers stay per worker (a list: whether they add up depends on the metric); any
    other value every worker reported is kept as one, else listed too."""
    numbers = any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return values if numbers or any(v != values[0] for v in values) else values[0]
