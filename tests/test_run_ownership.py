"""Two real ``hebbstream run`` processes on one checkpoint folder or sink.

The first run is paused with SIGSTOP once it has checkpointed (so it is certainly running
and holding its locks, whatever the machine's load), the others are started against it
and must be refused naming it; then the first continues and must write all its rows.
A run killed with SIGKILL leaves its lock files behind; the next run takes them over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(os.path.dirname(sys.executable), "hebbstream")
ROWS = 200

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")


def _pipeline(tmp: Path, name: str, ckpt: Path, out: Path, inp: Path) -> Path:
    path = tmp / name
    # paced at 100 events per second of event time (ts counts seconds): about 2 s
    path.write_text(f"""
[source]
type = "csv"
path = "{inp}"
key = "key"
time = "ts"
[sink]
type = "csv"
path = "{out}"
[checkpoint]
path = "{ckpt}"
every_batches = 2
[run]
batch_size = 20
speed = 100
""")
    return path


@pytest.fixture()
def setup(tmp_path):
    inp = tmp_path / "in.csv"
    rng = np.random.default_rng(3)
    pacsv.write_csv(pa.table({"key": [f"k{i % 4}" for i in range(ROWS)], "ts": np.arange(ROWS),
                              "x": np.round(rng.normal(size=ROWS), 4)}), str(inp))
    out, ckpt = tmp_path / "scored.csv", tmp_path / "ckpt"
    return inp, out, ckpt, _pipeline(tmp_path, "job.toml", ckpt, out, inp)


def _env() -> dict[str, str]:
    # the console script imports this checkout's packages, not another install's
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([EXE, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "run", *args], capture_output=True, text=True, timeout=180, env=_env())


def _wait_for_checkpoint(proc: subprocess.Popen, ckpt: Path) -> None:
    deadline = time.monotonic() + 120
    while not list(ckpt.glob("ckpt-*/MANIFEST.json")):
        assert proc.poll() is None, f"the first run ended early: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "the first run took no checkpoint"
        time.sleep(0.01)


def _lines(path: Path) -> list[str]:
    files = sorted(p for p in path.iterdir() if p.name.startswith("part-"))
    return [line for f in files for line in f.read_text().splitlines()[1:]]


def test_second_run_is_refused_naming_the_first_which_completes(setup, tmp_path):
    inp, out, ckpt, toml = setup
    first = _start(str(toml))
    try:
        _wait_for_checkpoint(first, ckpt)
        os.kill(first.pid, signal.SIGSTOP)
        assert first.poll() is None
        # the same pipeline again, even with --overwrite: the checkpoint folder is taken
        again = _cli(str(toml), "--overwrite")
        assert again.returncode == 1, again.stderr
        assert "hebbstream: error:" in again.stderr and "Traceback" not in again.stderr
        assert f"checkpoint folder {ckpt} is in use" in again.stderr and f"pid {first.pid}" in again.stderr
        # another checkpoint folder, the same sink: the sink is taken
        other = _pipeline(tmp_path, "other.toml", tmp_path / "ckpt2", out, inp)
        clash = _cli(str(other), "--overwrite")
        assert clash.returncode == 1, clash.stderr
        assert f"sink {out} is in use" in clash.stderr and f"pid {first.pid}" in clash.stderr
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert _lines(out) == inp.read_text().splitlines()[1:], "the first run lost or doubled rows"
    assert not (ckpt / "LOCK").exists() and not (tmp_path / ".scored.csv.lock").exists()


def test_locks_of_a_killed_run_are_taken_over_by_the_resume(setup, tmp_path):
    inp, out, ckpt, toml = setup
    first = _start(str(toml))
    try:
        _wait_for_checkpoint(first, ckpt)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    assert (ckpt / "LOCK").exists() and (tmp_path / ".scored.csv.lock").exists()
    resumed = _cli(str(toml), "--resume", "--speed", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("taking over the lock") == 2  # the folder's and the sink's
    assert f"left by pid {first.pid}" in resumed.stderr
    assert _lines(out) == inp.read_text().splitlines()[1:]
    fresh = _cli(str(toml))  # the finished run's checkpoints are not deleted by a fresh start
    assert fresh.returncode == 1 and "--overwrite" in fresh.stderr and "in use" not in fresh.stderr
