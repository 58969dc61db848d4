"""Run the NAB corpus as N worker processes that share out the streams (keys) as they go.

This is hebbstream's scale-out on one machine, the way workers of a Kafka consumer
group share a topic: each worker runs the ordinary engine path over a set of keys
(:func:`~operators.nab.replay.replay_corpus` on some corpus files, interleaved, the
detector batching its keys) and writes their result files; the parent only hands out
the files and collects the reports. A key's model is independent of the other keys and
its random draws depend only on its own data and seed, so the result files are
byte-identical to a one-process run, whichever worker ran which file.

The files are cut into jobs (:func:`plan_jobs`): largest files first, each job about
1/(2N) of the records still unplanned, so the first jobs are large (many keys batched
together) and the last ones single small files. A worker that finishes a job gets the
next one, so a worker whose streams cost more per record (more segments, more
backtracking) simply takes fewer jobs: the workers finish close together without
knowing the costs beforehand. Workers start with ``"spawn"`` by default: a fresh
interpreter inherits no threads, locks or torch/OpenMP state from the parent, so the
detector factory must be picklable (a module-level function, or a
:func:`functools.partial` of one). A worker that raises, or dies, stops the run: the
other workers are terminated and :class:`NABWorkerError` names the files of the job that
failed and carries its traceback.

Example (the HTM detector, small, on the two-file excerpt; the factory is a partial,
so it pickles):
    >>> import filecmp, functools, os, tempfile
    >>> from operators.htm.detector import HTMDetector
    >>> from operators.htm.model import HTMConfig
    >>> from operators.nab.replay import replay_corpus
    >>> plan_jobs(["a.csv", "b.csv", "c.csv", "d.csv"], [10, 40, 30, 20], 2)
    [['b.csv'], ['c.csv'], ['d.csv'], ['a.csv']]
    >>> nab = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "nab")
    >>> factory = functools.partial(HTMDetector.for_nab, config=HTMConfig.small(), device="numpy")
    >>> one, two = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> report = run_workers(factory, nab, two, "htm", None, 2)
    >>> report["workers"], report["events"], sorted(len(w["files"]) for w in report["per_worker"])
    (2, 3506, [1, 1])
    >>> names = [os.path.relpath(p, two) for p in report["files"]]
    >>> _ = replay_corpus(factory, nab, one, "htm")
    >>> filecmp.cmpfiles(one, two, names, shallow=False)[0] == names   # same bytes
    True
"""

from __future__ import annotations

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

from .corpus import DATA_DIR, NABFormatError, corpus_files, corpus_row_count
from .replay import labelled_windows, replay_corpus

#: How worker processes start (a :mod:`multiprocessing` start method).
START_METHOD = "spawn"
#: Worker files named in an error message (the rest are counted).
NAMED_FILES = 10
#: Seconds a worker that has reported gets to exit before it is terminated.
EXIT_GRACE_S = 30.0
#: Each job takes about 1/(JOB_SHARE * workers) of the records not yet planned: smaller
#: jobs balance better, larger ones batch more keys through the spatial pooler at once.
JOB_SHARE = 2


class NABWorkerError(HebbstreamError):
    """A worker process failed: names its job's files; ``worker_traceback`` holds its
    traceback (also in the message); ``__cause__`` is the worker's exception when it
    could be sent."""

    def __init__(self, message: str, files: Sequence[str] = (), worker_traceback: str = ""):
        super().__init__(message)
        self.files = list(files)
        self.worker_traceback = worker_traceback


def plan_jobs(files: Sequence[str], sizes: Sequence[int], workers: int,
              share: int = JOB_SHARE) -> list[list[str]]:
    """Cut ``files`` into jobs for ``workers`` workers (guided self-scheduling): files
    largest first (``sizes``: records; ties in ``files`` order), each job taking files
    until it holds at least 1/(``share`` * ``workers``) of the records not yet in a job.
    Every file is in exactly one job; the jobs come largest first."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if len(files) != len(sizes):
        raise ValueError("files and sizes differ in length")
    order = sorted(range(len(files)), key=lambda i: (-sizes[i], i))
    left = sum(sizes)
    jobs: list[list[str]] = []
    while order:
        target = left / (share * workers)
        job, records = [], 0
        while order and (not job or records < target):
            i = order.pop(0)
            job.append(files[i])
            records += sizes[i]
        jobs.append(job)
        left -= records
    return jobs


def _describe(index: int, count: int, files: Sequence[str]) -> str:
    named = ", ".join(files[:NAMED_FILES])
    more = f" and {len(files) - NAMED_FILES} more" if len(files) > NAMED_FILES else ""
    return f"NAB worker {index + 1} of {count} (file{'s' if len(files) > 1 else ''} {named}{more})"


def _work(conn: Connection, factory: Callable[..., Operator], nab_dir: str, out_dir: str,
          detector: str, options: dict[str, Any]) -> None:
    """A worker's body: run each job (a list of files) it receives until it gets ``None``;
    send each job's summary, or the error (and stop)."""
    try:
        while (files := conn.recv()) is not None:
            conn.send(("done", replay_corpus(factory, nab_dir, out_dir, detector, files=files,
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
    """:func:`~operators.nab.replay.replay_corpus` over ``workers`` processes; ``options``
    go to each job's ``replay_corpus``. Returns the merged summary (see :func:`merge_summaries`)."""
    names = list(files) if files is not None else corpus_files(nab_dir)
    labelled_windows(nab_dir, names)   # fail here, before any process starts
    sizes = []
    for name in names:
        rows = corpus_row_count(nab_dir, name)
        if rows is None:
            raise NABFormatError(f"{os.path.join(nab_dir, DATA_DIR, *name.split('/'))}: no such file")
        sizes.append(rows)
    jobs = plan_jobs(names, sizes, workers)
    if len(names) == 1:   # one file: nothing to share out
        return replay_corpus(detector_factory, nab_dir, out_dir, detector, files=names,
                             progress=progress, **options)
    if start_method != "fork":
        try:
            pickle.dumps(detector_factory)
        except Exception as exc:
            raise HebbstreamError(f"workers={workers} runs the detector factory in new processes, "
                                  f"so it must pickle (a module-level function or a "
                                  f"functools.partial of one); {detector_factory!r}: {exc}") from exc
    ctx = mp.get_context(start_method)
    count = min(workers, len(jobs))
    t0 = time.perf_counter()
    procs: list[Any] = []
    conns: list[Connection] = []
    running: dict[Connection, int] = {}     # connection → index of the job it runs
    runs: list[tuple[int, list[str], dict[str, Any]]] = []
    finished = False
    try:
        for w in range(count):
            conn, child = ctx.Pipe()
            proc = ctx.Process(target=_work, name=f"nab-worker-{w + 1}", daemon=True,
                               args=(child, detector_factory, nab_dir, out_dir, detector,
                                     options))
            proc.start()
            # only the worker may hold its end: when it dies, recv() here sees EOF
            child.close()
            procs.append(proc)
            conns.append(conn)
        following = iter(range(len(jobs)))
        for conn, j in zip(conns, following):
            conn.send(jobs[j])
            running[conn] = j
        while running:
            for conn in wait(list(running)):
                w, j = conns.index(conn), running.pop(conn)
                who = _describe(w, count, jobs[j])
                try:
                    message = conn.recv()
                except EOFError:
                    procs[w].join(EXIT_GRACE_S)
                    code = procs[w].exitcode
                    how = (f"was killed by signal {-code}" if code is not None and code < 0
                           else f"died (exit code {code})")
                    raise NABWorkerError(f"{who} {how} before reporting (anything it printed is "
                                         "above; a script that starts workers needs "
                                         "if __name__ == '__main__')", jobs[j]) from None
                if message[0] == "failed":
                    _, error, tb, cause = message
                    err = NABWorkerError(f"{who} failed: {error}\n--- worker traceback ---\n"
                                         f"{tb.rstrip()}", jobs[j], tb)
                    raise err from _unpickled(cause)
                runs.append((w, jobs[j], message[1]))
                if progress:
                    print(f"{who}: {message[1]['events']:,} records in "
                          f"{message[1]['seconds']:.1f} s", file=sys.stderr, flush=True)
                j = next(following, None)
                try:
                    conn.send(jobs[j] if j is not None else None)
                except OSError:   # it died since it reported: its EOF comes next, if it matters
                    pass
                if j is not None:
                    running[conn] = j
        finished = True
    finally:
        for proc, conn in zip(procs, conns):
            if finished:
                proc.join(EXIT_GRACE_S)
            if proc.is_alive():   # a failure stops the other workers
                proc.terminate()
            proc.join()
            conn.close()
    return merge_summaries(names, count, runs, time.perf_counter() - t0)


def merge_summaries(names: Sequence[str], workers: int,
                    runs: Sequence[tuple[int, Sequence[str], dict[str, Any]]],
                    seconds: float) -> dict[str, Any]:
    """One run summary from the jobs' :func:`~operators.nab.replay.replay_corpus` ones
    (``runs``: ``(worker, files, summary)`` in the order they finished).

    Counts add up; ``seconds`` is the parent's wall time; ``operator_seconds`` add up
    (CPU time over all workers); ``latency_s`` takes the worst job's percentiles;
    ``files`` follow ``names`` (the corpus order); ``metrics`` list numbers per job and
    keep other values all jobs agree on; ``per_worker`` holds each worker's files (in
    the order it ran them), job count, records and seconds (its jobs' run times).
    """
    summaries = [s for _, _, s in runs]
    written: dict[str, str] = {}
    for _, files, s in runs:
        written.update(zip(files, s["files"]))
    first = summaries[0]
    events = sum(s["events"] for s in summaries)
    per_worker = [{"files": [], "jobs": 0, "events": 0, "seconds": 0.0} for _ in range(workers)]
    for w, files, s in runs:
        mine = per_worker[w]
        mine["files"] += list(files)
        mine["jobs"] += 1
        mine["events"] += s["events"]
        mine["seconds"] += s["seconds"]
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
        "workers": workers,
        "jobs": len(runs),
        "per_worker": per_worker,
    }
    if "metrics" in first:
        out["metrics"] = {label: {field: _merged([s["metrics"][label][field] for s in summaries])
                                  for field in fields}
                          for label, fields in first["metrics"].items()}
    return out


def _merged(values: list[Any]) -> Any:
    """Numbers stay per job (a list: whether they add up depends on the metric); any
    other value every job reported is kept as one, else listed too."""
    numbers = any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return values if numbers or any(v != values[0] for v in values) else values[0]
