"""Kill a checkpointing run with SIGKILL part-way, resume it, and compare with a run that
never stopped: no event missing, none doubled, the same values. Also: corrupt and
mismatched checkpoints are refused with errors naming them."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest
from connector_data import read_all, source
from running_sum import RunningSum

from connectors.csv import CSVSink, CSVSource
from stream import CheckpointError, run

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reliability_job.py")
ROWS = 12_000


def recorded_stream(path: str) -> pa.Table:
    rng = np.random.default_rng(7)
    table = pa.table({"key": np.array([f"sensor-{i}" for i in range(7)])[rng.integers(0, 7, ROWS)],
                      "ts": np.arange(ROWS), "x": np.round(rng.normal(size=ROWS), 6)})
    pacsv.write_csv(table, path)
    return table


def job(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, JOB, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def checkpoints(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "ckpt-*", "MANIFEST.json")))


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    inp = str(tmp_path / "stream.csv")
    table = recorded_stream(inp)

    # the run that never stops; each run also writes its alert rows to a side output
    full = finish(job(inp, str(tmp_path / "full"), str(tmp_path / "ckpt-full"),
                      "--alerts", str(tmp_path / "full-alerts")))
    assert full["events"] == ROWS

    # the run that is killed: slow batches, so it is still going after its first checkpoints
    out, ckpt, alerts = str(tmp_path / "out"), str(tmp_path / "ckpt"), str(tmp_path / "alerts")
    proc = job(inp, out, ckpt, "--pause", "0.015", "--alerts", alerts)
    deadline = time.monotonic() + 60
    while len(checkpoints(ckpt)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.15)  # land somewhere between checkpoints
    assert proc.poll() is None, "the job ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert checkpoints(ckpt), "no checkpoint was taken before the kill"
    assert os.listdir(out), "no part was committed before the kill"

    resumed = finish(job(inp, out, ckpt, "--resume", "--alerts", alerts))
    assert resumed["resumed_from"] is not None and 0 < resumed["resumed_from"]["row"] < ROWS
    assert resumed["events_total"] == ROWS and resumed["events"] < ROWS

    want, _ = read_all(source("csv", str(tmp_path / "full")))
    got, _ = read_all(source("csv", out))
    assert got.num_rows == ROWS, "events missing or doubled"
    assert got.column("ts").to_pylist() == list(range(ROWS))
    assert got.equals(want)
    assert got.select(["key", "ts", "x"]).equals(table)
    assert not [n for n in os.listdir(out) if n.startswith(".")], "in-progress leftovers"

    # the side output too: exactly the alert rows of the main output, once each
    want_alerts = ds.dataset(str(tmp_path / "full-alerts"), format="parquet").to_table()
    got_alerts = ds.dataset(alerts, format="parquet").to_table()
    assert got_alerts.equals(want_alerts)
    opened = got.filter(pc.equal(got["alert"], True))
    assert 10 < got_alerts.num_rows == opened.num_rows
    assert got_alerts["ts"].to_pylist() == opened["ts"].to_pylist()
    assert not [n for n in os.listdir(alerts) if n.startswith(".")], "in-progress leftovers"


@pytest.fixture()
def checkpointed(tmp_path):
    inp = str(tmp_path / "stream.csv")
    recorded_stream(inp)
    ckpt = str(tmp_path / "ckpt")
    run(CSVSource(inp, key="key", time="ts", batch_size=500), RunningSum(),
        CSVSink(str(tmp_path / "out"), durable=False), batch_size=500, checkpoint=ckpt,
        checkpoint_every_batches=5, max_events=4000)
    return inp, ckpt, tmp_path


def _flip_bytes(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    for i in (len(data) // 3, len(data) // 2):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("name", ["state.json", "arrays.npz", "MANIFEST.json"])
def test_corrupt_checkpoints_are_refused_naming_the_file(checkpointed, name):
    inp, ckpt, tmp_path = checkpointed
    for manifest in checkpoints(ckpt):  # every checkpoint: nothing to fall back to
        _flip_bytes(os.path.join(os.path.dirname(manifest), name))
    path = os.path.join(os.path.dirname(checkpoints(ckpt)[-1]), name)
    with pytest.raises(CheckpointError, match=path.replace(".", r"\.")):
        run(CSVSource(inp, key="key", time="ts"), RunningSum(), CSVSink(str(tmp_path / "out")),
            checkpoint=ckpt, resume=True)


@pytest.mark.parametrize("name", ["state.json", "arrays.npz", "MANIFEST.json"])
def test_corrupt_newest_checkpoint_falls_back_to_the_newest_valid_one(checkpointed, name, caplog):
    inp, ckpt, tmp_path = checkpointed
    newest, previous = checkpoints(ckpt)[-1], checkpoints(ckpt)[-2]
    _flip_bytes(os.path.join(os.path.dirname(newest), name))
    summary = run(CSVSource(inp, key="key", time="ts", batch_size=500), RunningSum(),
                  CSVSink(str(tmp_path / "out"), durable=False), batch_size=500, checkpoint=ckpt, resume=True)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert os.path.basename(os.path.dirname(newest)) in warning
    assert os.path.basename(os.path.dirname(previous)) in warning
    assert summary["events_total"] == ROWS and 0 < summary["resumed_from"]["row"] < 4000
    run(CSVSource(inp, key="key", time="ts", batch_size=500), RunningSum(),
        CSVSink(str(tmp_path / "full"), durable=False), batch_size=500)
    want, _ = read_all(source("csv", str(tmp_path / "full")))
    got, _ = read_all(source("csv", str(tmp_path / "out")))
    assert got.equals(want)


def test_checkpoint_of_another_pipeline_is_refused(checkpointed):
    inp, ckpt, tmp_path = checkpointed
    with pytest.raises(CheckpointError, match="written by another pipeline"):
        run(CSVSource(inp, key="key", time="ts"), RunningSum() | RunningSum(),
            CSVSink(str(tmp_path / "out")), checkpoint=ckpt, resume=True)
