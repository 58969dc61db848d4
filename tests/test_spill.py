"""Idle keys spilled to disk (``max_resident_keys``): the same outputs, event for event, as with
every key in memory; bounded memory; checkpoints that cover resident and spilled keys, through
SIGKILL and resume; option checks."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from connectors.csv import CSVSink, CSVSource
from operators.anomaly.artime import ARTDetector
from operators.anomaly.cad import ContextualDetector
from operators.anomaly.ensemble import ScoreEnsemble
from operators.htm import HTMDetector
from operators.htm.model import HTMConfig
from operators.river import RiverOperator
from stream import Batch, ConfigError, run
from stream.options import check_options
from stream.spill import spiller_of

KEYS = [f"k{i}" for i in range(5)]


def interleaved(steps: int, keys: list[str] = KEYS, seed: int = 0) -> pa.RecordBatch:
    """``keys`` interleaved (not round-robin: a random key per row), a noisy sine each, every 5 minutes."""
    rng = np.random.default_rng(seed)
    key = np.array(keys)[rng.integers(0, len(keys), steps * len(keys))]
    t = np.arange(key.size)
    value = np.sin(t / 7.0) * 10 + rng.normal(size=key.size) + np.array([keys.index(k) for k in key]) * 3.0
    return pa.record_batch({"key": key, "timestamp": pa.array(t * 300 * 10**9, pa.timestamp("ns")),
                            "value": value, "x1": rng.normal(size=key.size)})


def outputs(op, data: pa.RecordBatch, batch: int = 7) -> pa.Table:
    """``op`` over ``data`` in micro-batches of ``batch`` rows: the appended columns."""
    parts = []
    for lo in range(0, data.num_rows, batch):
        out = op(Batch(data.slice(lo, batch), source="test", offset=lo, time_column="timestamp"))
        parts.append(out.data.select(out.column_names[data.num_columns:]))
    return pa.Table.from_batches(parts)


def assert_same_with_spilling(make, data: pa.RecordBatch, limit: int = 2) -> object:
    """Outputs of ``make()`` and of ``make(max_resident_keys=limit)`` are equal; returns the spilling one."""
    want = outputs(make(), data)
    spilling = make(max_resident_keys=limit)
    got = outputs(spilling, data)
    assert got.equals(want)
    spiller = spiller_of(spilling)
    assert spiller.spills > 0 and spiller.restores > 0, "nothing was spilled and restored"
    assert len(spilling.resident_keys()) <= limit
    return spilling


@pytest.mark.parametrize("tm", ["plain", "backtracking"])
def test_htm_outputs_equal_with_spilling(tm):
    def make(**kw):   # "auto" resolution: keys are spilled while warming up too
        return HTMDetector(config=HTMConfig.small(tm=tm), resolution="auto", warmup=8, probationary_period=20,
                           alert_threshold=0.5, **kw)

    det = assert_same_with_spilling(make, interleaved(16))
    assert det.summary()["keys"] == len(KEYS) and det.summary()["resident_keys"] <= 2


@pytest.mark.parametrize("tm", ["plain", "backtracking"])
def test_htm_spilled_keys_free_their_slots(tm):
    """Keys come and go: slots are reused, so the model holds about max_resident_keys keys, not all."""
    keys = [f"m{i}" for i in range(12)]
    rows = 10
    data = pa.record_batch({"key": np.repeat(keys, rows),
                            "timestamp": pa.array(np.arange(len(keys) * rows) * 300 * 10**9, pa.timestamp("ns")),
                            "value": np.tile(np.arange(rows, dtype=float) % 4, len(keys))})
    det = HTMDetector(config=HTMConfig.small(tm=tm), resolution=0.5, probationary_period=4, max_resident_keys=2)
    outputs(det, data, batch=5)
    assert det.model.slots <= 3 and len(det.free) >= 1
    assert spiller_of(det).spills == len(keys) - 2


@pytest.mark.parametrize("make", [
    lambda **kw: ContextualDetector(warmup=10, rest=3, **kw),   # keys spilled while still waiting for a range
    lambda **kw: ARTDetector(value_range={k: [-20.0, 30.0] for k in KEYS}, window=4, levels=1, mask=2, **kw),
    lambda **kw: ScoreEnsemble(members=["cad", "art"], member_options={"art": {"window": 4, "levels": 1}},
                               value_range={k: [-20.0, 30.0] for k in KEYS}, **kw),
], ids=["cad", "art", "ensemble"])
def test_keyed_detector_outputs_equal_with_spilling(make):
    assert_same_with_spilling(make, interleaved(30))


def test_river_per_key_outputs_equal_with_spilling():
    def make(**kw):
        return RiverOperator({"model": "anomaly.HalfSpaceTrees",
                              "params": {"n_trees": 3, "height": 4, "window_size": 10, "seed": 1}},
                             features=["value", "x1"], per_key=True, **kw)

    assert_same_with_spilling(make, interleaved(20))


# -- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [HTMDetector, ContextualDetector, ARTDetector, ScoreEnsemble, RiverOperator])
@pytest.mark.parametrize("value", [0, -3])
def test_max_resident_keys_below_one_is_refused_in_a_pipeline_file(cls, value):
    with pytest.raises(ConfigError, match=r"p\.toml \[operators\.0\] key 'max_resident_keys'.*>= 1"):
        check_options(cls, {"max_resident_keys": value}, "p.toml [operators.0]", only={"max_resident_keys": value})


@pytest.mark.parametrize("make", [
    lambda: HTMDetector(config=HTMConfig.small(), max_resident_keys=0),
    lambda: ContextualDetector(max_resident_keys=True),
    lambda: RiverOperator("anomaly.HalfSpaceTrees", max_resident_keys=2),   # one model for all keys
])
def test_max_resident_keys_is_checked_when_built(make):
    with pytest.raises(ConfigError, match="max_resident_keys"):
        make()


def test_max_resident_keys_is_not_part_of_the_checkpoint_fingerprint():
    """Outputs do not depend on it, so a checkpoint resumes with another value."""
    assert repr(ContextualDetector(max_resident_keys=3)) == repr(ContextualDetector())
    assert repr(HTMDetector(config=HTMConfig.small(), max_resident_keys=3)) == \
        repr(HTMDetector(config=HTMConfig.small()))


# -- checkpoints --------------------------------------------------------------------------------
def test_state_without_a_checkpoint_store_folds_the_spilled_keys_in():
    """Without a store the spill folder is temporary: a pipeline's state carries the spilled keys itself."""
    from stream import Pipeline

    data = interleaved(30)
    want = outputs(ContextualDetector(warmup=10, rest=3), data)
    first = Pipeline([ContextualDetector(warmup=10, rest=3, max_resident_keys=2)])
    half = 70
    got = [outputs(first, data.slice(0, half))]
    assert spiller_of(first.operators[0]).spilled
    state = first.state_dict()
    second = Pipeline([ContextualDetector(warmup=10, rest=3, max_resident_keys=2)])
    second.load_state_dict(state)
    assert len(second.operators[0].resident_keys()) == len(KEYS)   # folded-in keys come back resident
    got.append(outputs(second, data.slice(half)))
    assert pa.concat_tables(got).equals(want)


ROWS = 900


def recorded_stream(path: str, rows: int = ROWS, keys: int = 7) -> pa.Table:
    rng = np.random.default_rng(11)
    k = rng.integers(0, keys, rows)
    table = pa.table({"key": np.array([f"sensor-{i}" for i in range(keys)])[k], "ts": np.arange(rows),
                      "value": np.round(np.sin(np.arange(rows) / 9.0) * 5 + k + rng.normal(size=rows) * 0.3, 4)})
    pacsv.write_csv(table, path)
    return table


def scored(folder: str) -> list[str]:
    """Data lines of a CSV sink's committed part files, in order (headers dropped)."""
    files = sorted(glob.glob(os.path.join(folder, "part-*.csv")))
    assert files, f"no part file in {folder}"
    return [line for f in files for line in open(f).read().splitlines()[1:]]


def cad_run(inp: str, out: str, ckpt: str | None, limit: int | None, **kw) -> dict:
    return run(CSVSource(inp, key="key", time="ts", batch_size=30), ContextualDetector(warmup=20, rest=5,
                                                                                      max_resident_keys=limit),
               CSVSink(out, durable=False), batch_size=30, checkpoint=ckpt, checkpoint_every_batches=4, **kw)


def test_checkpoint_covers_spilled_keys_and_resume_equals_an_uninterrupted_run(tmp_path):
    inp = str(tmp_path / "in.csv")
    recorded_stream(inp)
    cad_run(inp, str(tmp_path / "full"), str(tmp_path / "ckpt-full"), None)   # spilling off
    assert not os.path.exists(tmp_path / "ckpt-full" / "spill"), "a run that never spills made a spill folder"
    ckpt = str(tmp_path / "ckpt")
    first = cad_run(inp, str(tmp_path / "out"), ckpt, 2, max_events=450)
    assert first["events_total"] == 450
    spill_files = glob.glob(os.path.join(ckpt, "spill", "*", "*.spill"))
    assert spill_files, "no key was spilled beside the checkpoints"
    # resumed with another limit (and a fresh operator): spilled keys come back from the files
    second = cad_run(inp, str(tmp_path / "out"), ckpt, 3, resume=True)
    assert second["events_total"] == ROWS and second["resumed_from"]["row"] == 450
    assert scored(str(tmp_path / "out")) == scored(str(tmp_path / "full"))


def test_files_no_checkpoint_refers_to_are_deleted_and_overwrite_deletes_all(tmp_path):
    inp = str(tmp_path / "in.csv")
    recorded_stream(inp, rows=600)
    ckpt = str(tmp_path / "ckpt")
    cad_run(inp, str(tmp_path / "out"), ckpt, 2)
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(ckpt, "spill", "*", "*.spill"))}
    referenced = set()
    for state_file in glob.glob(os.path.join(ckpt, "ckpt-*", "state.json")):
        referenced |= set(_spill_names(json.load(open(state_file))))
    assert referenced and referenced <= on_disk
    assert len(on_disk) <= len(referenced) + 7, "superseded spill files were kept"
    # a run started over deletes them with the checkpoints
    cad_run(inp, str(tmp_path / "out"), ckpt, None, overwrite=True)
    assert not os.path.exists(os.path.join(ckpt, "spill"))


def _spill_names(tree) -> list[str]:
    if isinstance(tree, dict):
        return [n for v in tree.values() for n in _spill_names(v)]
    if isinstance(tree, list):
        return [tree[1]] if len(tree) == 4 and isinstance(tree[1], str) and tree[1].endswith(".spill") else \
            [n for v in tree for n in _spill_names(v)]
    return []


JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spill_job.py")


def job(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, JOB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_sigkill_then_resume_with_spilling_equals_a_run_that_never_stopped(tmp_path):
    inp = str(tmp_path / "in.csv")
    recorded_stream(inp)
    cad_run(inp, str(tmp_path / "full"), str(tmp_path / "ckpt-full"), None)   # the job's detector, spilling off
    out, ckpt = str(tmp_path / "out"), str(tmp_path / "ckpt")
    proc = job(inp, out, ckpt, "--pause", "0.05", "--max-resident-keys", "2")
    deadline = time.monotonic() + 60
    while len(glob.glob(os.path.join(ckpt, "ckpt-*", "MANIFEST.json"))) < 2 and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.12)   # land between checkpoints, with keys spilled since the last one
    assert proc.poll() is None, "the job ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert glob.glob(os.path.join(ckpt, "spill", "*", "*.spill")), "no key was spilled before the kill"
    resumed = finish(job(inp, out, ckpt, "--resume", "--max-resident-keys", "2"))
    assert resumed["resumed_from"] is not None and resumed["events_total"] == ROWS
    got, want = scored(out), scored(str(tmp_path / "full"))
    assert len(got) == ROWS and got == want
