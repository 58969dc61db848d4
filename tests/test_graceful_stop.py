"""SIGTERM / SIGINT stop a ``hebbstream run`` gracefully: final checkpoint, exit 143 / 130,
and ``--resume`` continues with nothing missing and nothing doubled."""

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest
from streams import ListSink

from connectors.memory import MemorySource
from stream import Pipeline, run
from stream.shutdown import StopRequest, graceful_stop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = 300

PIPELINE = """\
[source]
type = "csv"
path = "in.csv"
key = "key"
time = "ts"
batch_size = 10

[sink]
type = "csv"
path = "out"

[checkpoint]
path = "ckpt"
every_batches = 1

[run]
batch_size = 10
speed = 50
"""


def cli(folder, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "run", "pipeline.toml", *args], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_with_a_final_checkpoint_and_resume_continues(tmp_path, sig, code):
    table = pa.table({"key": np.array(["a", "b", "c"])[np.arange(ROWS) % 3], "ts": np.arange(ROWS),
                      "x": np.arange(ROWS) * 0.5})
    pacsv.write_csv(table, tmp_path / "in.csv")
    (tmp_path / "pipeline.toml").write_text(PIPELINE)
    proc = cli(tmp_path, "--summary", "stopped.json")
    # paced at 50 rows/s: the run is part-way once its first checkpoint is written
    wait_for(lambda: glob.glob(str(tmp_path / "ckpt" / "ckpt-*" / "MANIFEST.json")))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"stopped by {signal.Signals(sig).name}" in err, err
    summary = json.loads((tmp_path / "stopped.json").read_text())
    assert summary["stopped"] == signal.Signals(sig).name
    assert 0 < summary["events"] < ROWS
    # the final checkpoint covers every event the stopped run processed
    done = ds.dataset(str(tmp_path / "out"), format="csv").to_table()
    assert done.num_rows == summary["events"]

    proc = cli(tmp_path, "--resume", "--speed", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    out = ds.dataset(str(tmp_path / "out"), format="csv").to_table().sort_by("ts")
    assert out["ts"].to_pylist() == list(range(ROWS))  # none missing, none doubled
    assert out["x"].to_pylist() == table["x"].to_pylist()


def test_stop_request_ends_a_run_between_micro_batches():
    stop = StopRequest()
    seen = []

    class Sink(ListSink):
        def write(self, batch):
            super().write(batch)
            seen.append(batch.num_rows)
            if len(seen) == 3:
                stop.request("test")

    table = pa.table({"key": ["a"] * 1000, "ts": np.arange(1000), "x": np.ones(1000)})
    summary = run(MemorySource(table, key="key", time="ts", batch_size=10), Pipeline([]), Sink(), batch_size=10,
                  stop_requested=stop)
    assert summary["stopped"] == "test" and summary["events"] == 30 and sum(seen) == 30


def test_handlers_are_restored_and_only_set_in_the_main_thread():
    before = signal.getsignal(signal.SIGINT)
    with graceful_stop(grace=5):
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
    result = []
    t = threading.Thread(target=lambda: result.append(graceful_stop().__enter__()))
    t.start()
    t.join()
    assert isinstance(result[0], StopRequest) and signal.getsignal(signal.SIGINT) is before
