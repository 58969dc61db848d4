"""NAB corpus over worker processes: same result files as one process, errors surface."""

from __future__ import annotations

import filecmp
import functools
import importlib
import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest

from operators.htm.detector import HTMDetector
from operators.htm.model import HTMConfig
from operators.nab.runner import run_corpus
from operators.nab.workers import NABWorkerError, plan_jobs
from stream import Batch, Operator
from stream.cli import main
from stream.errors import HebbstreamError

HERE = os.path.dirname(__file__)
EXCERPT = os.path.join(HERE, "data", "nab")
FILES = ["realAdExchange/exchange-2_cpc_results.csv", "realKnownCause/rogue_agent_key_hold.csv"]


class FailsOn(Operator):
    """Test-only detector: scores 0, but fails (raises, or kills its process) on one key."""

    requires = {"value": "number"}

    def __init__(self, key: str | None, how: str = "raise"):
        self.key, self.how = key, how

    def process(self, batch: Batch) -> Batch:
        if self.key is not None and self.key in set(batch.keys().tolist()):
            if self.how == "exit":
                os._exit(3)   # a worker that dies without a word
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)   # the OOM killer
            raise RuntimeError(f"cannot score {self.key}")
        return batch.with_columns({"anomaly_score": np.zeros(batch.num_rows)})


def fails_on(streams, seed=0, key=FILES[1], how="raise"):
    return FailsOn(key if key in streams else None, how)


def spawnable(name: str):
    """``name`` from this file imported by its name on the tests path (``pythonpath``),
    which a spawned worker can import too (pytest's own module name it cannot)."""
    return getattr(importlib.import_module("test_nab_workers"), name)


def small_htm(tm: str) -> functools.partial:
    # NumPy: workers need not import torch (a second each on a busy 2-core machine)
    return functools.partial(HTMDetector.for_nab, config=HTMConfig.small(tm=tm), device="numpy")


def result_names(report: dict) -> list[str]:
    return [os.path.relpath(p, os.path.dirname(report["detector_dir"])) for p in report["files"]]


def assert_same_files(one: str, many: str, names: list[str]) -> None:
    match, mismatch, errors = filecmp.cmpfiles(one, many, names, shallow=False)
    assert (mismatch, errors) == ([], []) and match == names


@pytest.mark.parametrize("tm", ["plain", pytest.param("backtracking", marks=pytest.mark.slow)])
def test_two_workers_write_the_same_bytes_as_one(tmp_path, tm):
    one = run_corpus(small_htm(tm), EXCERPT, str(tmp_path / "one"), "htm", seed=3)
    two = run_corpus(small_htm(tm), EXCERPT, str(tmp_path / "two"), "htm", seed=3, workers=2)
    names = result_names(one)
    assert result_names(two) == names and len(names) == 2
    assert_same_files(str(tmp_path / "one"), str(tmp_path / "two"), names)
    assert (one["workers"], two["workers"]) == (1, 2)
    assert two["events"] == one["events"] == 1624 + 1882
    # each worker owns one file: the largest goes first, onto worker 1
    assert [w["files"] for w in two["per_worker"]] == [[FILES[1]], [FILES[0]]]
    assert two["metrics"]["0.HTMDetector"]["keys"] == [1, 1]
    assert two["metrics"]["0.HTMDetector"]["backend"] == one["metrics"]["0.HTMDetector"]["backend"]


def test_more_workers_than_files(tmp_path):
    one = run_corpus(small_htm("plain"), EXCERPT, str(tmp_path / "one"), "htm")
    five = run_corpus(small_htm("plain"), EXCERPT, str(tmp_path / "five"), "htm", workers=5)
    assert five["workers"] == 2 and len(five["per_worker"]) == 2
    assert_same_files(str(tmp_path / "one"), str(tmp_path / "five"), result_names(one))
    # one file and several workers: it runs in this process
    alone = run_corpus(small_htm("plain"), EXCERPT, str(tmp_path / "alone"), "htm",
                       files=FILES[:1], workers=4)
    assert alone["workers"] == 1 and "per_worker" not in alone


def test_a_failing_detector_raises_in_the_parent_naming_the_file(tmp_path):
    with pytest.raises(NABWorkerError) as info:
        run_corpus(spawnable("fails_on"), EXCERPT, str(tmp_path), "x", workers=2)
    message = str(info.value)
    assert message.startswith(f"NAB worker 1 of 2 (file {FILES[1]}) failed: RuntimeError: "
                              f"cannot score {FILES[1]}")
    assert "--- worker traceback ---" in message and "in process" in message   # where it broke
    assert info.value.files == [FILES[1]]
    assert isinstance(info.value.__cause__, RuntimeError)
    assert multiprocessing.active_children() == []   # the other worker is gone too


@pytest.mark.parametrize("how, what", [("exit", r"died \(exit code 3\)"),
                                       ("kill", "was killed by signal 9")])
def test_a_worker_that_dies_is_an_error_not_a_hang(tmp_path, how, what):
    factory = functools.partial(spawnable("fails_on"), key=FILES[0], how=how)
    with pytest.raises(NABWorkerError, match=rf"NAB worker 2 of 2 \(file {FILES[0]}\) {what} "
                                             "before reporting"):
        run_corpus(factory, EXCERPT, str(tmp_path), "x", workers=2)
    assert multiprocessing.active_children() == []


def test_bad_arguments_fail_before_any_worker_starts(tmp_path):
    with pytest.raises(HebbstreamError, match="must pickle"):
        run_corpus(lambda streams, seed=0: fails_on(streams), EXCERPT, str(tmp_path), workers=2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_corpus(small_htm("plain"), EXCERPT, str(tmp_path), workers=0)
    with pytest.raises(HebbstreamError, match="no entry for"):
        run_corpus(small_htm("plain"), EXCERPT, str(tmp_path), files=[*FILES, "a/b.csv"], workers=2)


def test_plan_jobs_cuts_largest_first_shrinking_jobs():
    assert plan_jobs(["a", "b", "c"], [5, 3, 4], 2) == [["a"], ["c"], ["b"]]
    assert plan_jobs(["a", "b"], [1, 1], 3) == [["a"], ["b"]]
    assert plan_jobs(["a", "b", "c"], [1, 1, 1], 1, share=1) == [["a", "b", "c"]]
    rng = random.Random(0)
    for _ in range(50):
        n, w = rng.randint(1, 60), rng.randint(1, 8)
        names = [f"f{i}" for i in range(n)]
        sizes = [rng.randint(1, 1000) for _ in names]
        jobs = plan_jobs(names, sizes, w)
        assert sorted(sum(jobs, [])) == sorted(names) and all(jobs)
        flat = [sizes[names.index(f)] for f in sum(jobs, [])]
        assert flat == sorted(flat, reverse=True)                 # largest files first
        left = sum(sizes)
        for job in jobs:   # each job holds >= 1/(2w) of what was left, or is the rest
            records = sum(sizes[names.index(f)] for f in job)
            smallest = min(sizes[names.index(f)] for f in job)
            assert records >= left / (2 * w) or job is jobs[-1]
            assert records - smallest < left / (2 * w)           # it stops once it has enough
            left -= records
    with pytest.raises(ValueError, match="workers must be >= 1"):
        plan_jobs(["a"], [1], 0)


def write_corpus(root, sizes: dict[str, int]) -> None:
    """A tiny NAB corpus: ``cat/<name>.csv`` with ``sizes[name]`` rows each, no windows."""
    os.makedirs(root / "data" / "cat")
    os.makedirs(root / "labels")
    for name, n in sizes.items():
        with open(root / "data" / "cat" / f"{name}.csv", "w") as f:
            f.write("timestamp,value\n")
            for i in range(n):
                f.write(f"2015-01-{1 + i // 1440:02d} {i // 60 % 24:02d}:{i % 60:02d}:00,{i % 7}\n")
    with open(root / "labels" / "combined_windows.json", "w") as f:
        f.write("{" + ", ".join(f'"cat/{name}.csv": []' for name in sizes) + "}")


class WaitsFor(Operator):
    """Test-only detector: scores 0; on one key it first waits for other result files."""

    requires = {"value": "number"}

    def __init__(self, key: str | None, paths: list[str]):
        self.key, self.paths = key, paths

    def process(self, batch: Batch) -> Batch:
        if self.key is not None and self.key in set(batch.keys().tolist()):
            deadline = time.monotonic() + 120
            while not all(os.path.exists(p) for p in self.paths):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"waited in vain for {self.paths}")
                time.sleep(0.05)
        return batch.with_columns({"anomaly_score": np.zeros(batch.num_rows)})


def waits_for(streams, seed=0, key="", paths=()):
    return WaitsFor(key if key in streams else None, list(paths))


def test_a_slow_job_holds_one_worker_while_the_other_takes_the_rest(tmp_path):
    sizes = {"slow": 400, "a": 300, "b": 200, "c": 100}
    write_corpus(tmp_path / "nab", sizes)
    out = tmp_path / "out"
    # the slow file (largest: the first job, worker 1) cannot finish before the others do
    others = [str(out / "x" / "cat" / f"x_{name}.csv") for name in ("a", "b", "c")]
    factory = functools.partial(spawnable("waits_for"), key="cat/slow.csv", paths=others)
    report = run_corpus(factory, str(tmp_path / "nab"), str(out), "x", workers=2)
    assert report["workers"] == 2 and report["jobs"] == 4 and report["events"] == 1000
    first, second = report["per_worker"]
    assert (first["files"], first["jobs"], first["events"]) == (["cat/slow.csv"], 1, 400)
    assert (second["files"], second["jobs"]) == (["cat/a.csv", "cat/b.csv", "cat/c.csv"], 3)
    assert [os.path.basename(p) for p in report["files"]] == [f"x_{n}.csv" for n in sorted(sizes)]   # corpus order


def small_htm_plain(streams, seed=0):
    """Factory for ``--factory test_nab_workers:small_htm_plain``."""
    return small_htm("plain")(streams, seed=seed)


def test_cli_workers(tmp_path, capsys):
    outs = []
    for workers in ("1", "2"):
        out = str(tmp_path / workers)
        assert main(["nab", "--nab-dir", EXCERPT, "--out", out, "--workers", workers,
                     "--factory", "test_nab_workers:small_htm_plain"]) == 0
        captured = capsys.readouterr()
        assert "of 2 files in" in captured.err and f"on {workers} worker(s)" in captured.err
        outs.append(captured.out)
    assert outs[0] == outs[1]   # the same scores
    assert_same_files(str(tmp_path / "1"), str(tmp_path / "2"),
                      [os.path.join("htm", n.split("/")[0], "htm_" + n.split("/")[1]) for n in FILES])
    assert main(["nab", "--nab-dir", EXCERPT, "--out", str(tmp_path), "--workers", "0"]) == 1
    assert "--workers must be >= 1" in capsys.readouterr().err
