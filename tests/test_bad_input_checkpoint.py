"""Bad input around checkpoints and outputs, through the CLI as a user meets it.

Each case starts from a small recorded stream (CSV → CSV sink with committed parts,
a checkpoint every two batches) and checks: the exit code, that the message names the
folder, file, key or holder at fault, and that no committed output or checkpoint was
lost. Cases that should succeed (fall back, take over, --overwrite, --force) check that
the output equals an uninterrupted run's.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from bad_input import assert_kept, assert_refused, run_cli, snapshot, write_pipeline

from stream.lock import PathLock

ROWS = 120


def _pipeline(folder: Path, *, inp: Path, out: Path, ckpt: Path | None) -> Path:
    text = f"""
[source]
type = "csv"
path = "{inp}"
key = "key"
time = "ts"
batch_size = 20
[sink]
type = "csv"
path = "{out}"
[run]
batch_size = 20
"""
    if ckpt is not None:
        text += f'[checkpoint]\npath = "{ckpt}"\nevery_batches = 2\n'
    return write_pipeline(folder, text, name=f"{out.name}-{ckpt.name if ckpt else 'none'}.toml")


def _write_input(path: Path, rows: int = ROWS, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    pacsv.write_csv(pa.table({"key": [f"k{i % 3}" for i in range(rows)], "ts": np.arange(rows),
                              "x": np.round(rng.normal(size=rows), 4)}), str(path))


def _lines(path: Path) -> list[str]:
    """Data lines of a CSV output: one file, or its part files in order (headers dropped)."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.name.startswith("part-"))
    return [line for f in files for line in f.read_text().splitlines()[1:]]


class Job:
    """A stream, its pipeline file, and what an uninterrupted run writes."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.inp, self.out, self.ckpt = tmp / "in.csv", tmp / "scored.csv", tmp / "ckpt"
        _write_input(self.inp)
        self.toml = _pipeline(tmp, inp=self.inp, out=self.out, ckpt=self.ckpt)

    def run(self, *flags: str):
        return run_cli(["run", str(self.toml), *flags])

    def partial(self, events: int = 60) -> None:
        """A run stopped part-way (as after a crash): checkpoints and committed parts left."""
        result = self.run("--max-events", str(events))
        assert result.rc == 0, result.err

    def expected(self) -> list[str]:
        return self.inp.read_text().splitlines()[1:]

    def manifests(self) -> list[Path]:
        return sorted(self.ckpt.glob("ckpt-*/MANIFEST.json"))


@pytest.fixture()
def job(tmp_path) -> Job:
    return Job(tmp_path)


# -- a fresh run over earlier output ---------------------------------------------------
def test_fresh_run_over_earlier_checkpoints_is_refused(job):
    job.partial()
    kept = snapshot(job.ckpt, job.out)
    assert_refused(job.run(), str(job.ckpt), "--overwrite", "--resume", rc=1)
    assert_kept(kept)


def test_fresh_run_over_committed_parts_is_refused(job):
    job.partial()
    other = _pipeline(job.tmp, inp=job.inp, out=job.out, ckpt=job.tmp / "ckpt2")
    kept = snapshot(job.ckpt, job.out)
    assert_refused(run_cli(["run", str(other)]), str(job.out), "committed part file", "--overwrite", rc=1)
    assert_kept(kept)


def test_fresh_run_over_a_finished_plain_file_is_refused(job):
    plain = _pipeline(job.tmp, inp=job.inp, out=job.out, ckpt=None)
    assert run_cli(["run", str(plain)]).rc == 0 and job.out.is_file()
    kept = snapshot(job.out)
    assert_refused(run_cli(["run", str(plain)]), str(job.out), "earlier run", rc=1)
    assert_kept(kept)


def test_resume_without_a_checkpoint_over_earlier_output_is_refused(job):
    job.partial()
    for path in job.ckpt.glob("ckpt-*"):
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    kept = snapshot(job.out)
    assert_refused(job.run("--resume"), str(job.out), "--overwrite", rc=1)
    assert_kept(kept)


def test_overwrite_starts_over(job):
    job.partial()
    result = job.run("--overwrite")
    assert result.rc == 0, result.err
    assert _lines(job.out) == job.expected()


def test_force_without_resume_is_refused(job):
    assert_refused(job.run("--force"), "--force", "--resume", rc=1)
    assert not job.out.exists()


# -- locks -------------------------------------------------------------------------------
def test_checkpoint_folder_held_by_a_live_run_is_refused(job):
    job.partial()
    kept = snapshot(job.ckpt, job.out)
    with PathLock(str(job.ckpt / "LOCK"), "checkpoint folder"):
        result = job.run("--resume")
    assert_refused(result, str(job.ckpt), "in use", f"pid {os.getpid()}", socket.gethostname(), rc=1)
    assert_kept(kept)


def test_sink_held_by_a_live_run_is_refused(job):
    with PathLock(str(job.tmp / ".scored.csv.lock"), "sink"):
        result = job.run()
    assert_refused(result, f"sink {job.out}", "in use", f"pid {os.getpid()}", rc=1)
    assert not job.out.exists()


def test_lock_from_another_host_is_refused_naming_the_file(job):
    job.ckpt.mkdir()
    (job.ckpt / "LOCK").write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": 0,
                                               "command": "hebbstream run x.toml"}))
    assert_refused(job.run(), "elsewhere.example", str(job.ckpt / "LOCK"), "delete the lock file", rc=1)
    assert (job.ckpt / "LOCK").exists()


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_dead_run_is_taken_over(job, caplog):
    job.partial()
    (job.ckpt / "LOCK").write_text(json.dumps({"pid": _gone_pid(), "host": socket.gethostname(),
                                               "started": 0, "command": "hebbstream run old.toml"}))
    result = job.run("--resume")
    assert result.rc == 0, result.err
    assert "taking over the lock" in caplog.text and "old.toml" in caplog.text
    assert _lines(job.out) == job.expected()
    assert not (job.ckpt / "LOCK").exists(), "the lock outlived the run"


def test_unreadable_lock_file_nobody_holds_is_taken_over(job):
    job.ckpt.mkdir()
    (job.ckpt / "LOCK").write_bytes(b"\x00garbage")
    result = job.run()
    assert result.rc == 0, result.err
    assert _lines(job.out) == job.expected()


# -- damaged checkpoints ---------------------------------------------------------------
MANIFESTS = {
    "a list": ("[1, 2]", "not an object"),
    "no files key": ('{"format": "hebbstream-checkpoint/1"}', "key 'files' is missing"),
    "files a list": ('{"format": "hebbstream-checkpoint/1", "files": []}', "key 'files' is a list"),
    "unknown entry": (None, "unknown entry 'evil.bin'"),
    "no sha256": (None, "files.arrays.npz.sha256"),
    "wrong format": ('{"format": "other/9", "files": {}}', "key 'format'"),
    "not JSON": ('{"format": ', "not valid JSON"),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_malformed_manifest_names_the_file_and_key(job, case):
    job.partial()
    text, expect = MANIFESTS[case]
    for path in job.manifests():  # every checkpoint, so there is nothing to fall back to
        manifest = json.loads(path.read_text())
        if case == "unknown entry":
            manifest["files"]["evil.bin"] = {"bytes": 1, "sha256": "0"}
        elif case == "no sha256":
            del manifest["files"]["arrays.npz"]["sha256"]
        path.write_text(text if text is not None else json.dumps(manifest))
    kept = snapshot(job.ckpt, job.out)
    assert_refused(job.run("--resume"), f"{job.manifests()[-1]}", expect, rc=1)
    assert_kept(kept)


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(job, caplog):
    job.partial()
    newest, previous = job.manifests()[-1].parent, job.manifests()[-2].parent
    (newest / "MANIFEST.json").write_text("[]")
    result = job.run("--resume")
    assert result.rc == 0, result.err
    assert newest.name in caplog.text and previous.name in caplog.text
    assert _lines(job.out) == job.expected()


def test_half_written_checkpoint_is_cleaned_up(job):
    job.partial()
    newest = int(job.manifests()[-1].parent.name[5:])
    half = job.ckpt / f"ckpt-{newest + 1:08d}"
    half.mkdir()
    (half / "state.json.tmp").write_text("{")
    result = job.run("--resume")
    assert result.rc == 0, result.err
    assert not (half / "state.json.tmp").exists()
    assert all((folder / "MANIFEST.json").exists() for folder in job.ckpt.glob("ckpt-*"))
    assert _lines(job.out) == job.expected()


# -- resuming against another input ------------------------------------------------------
def test_resume_on_another_input_is_refused(job):
    job.partial()
    _write_input(job.inp, seed=2)  # same length, other values
    kept = snapshot(job.ckpt, job.out, job.inp)
    assert_refused(job.run("--resume"), str(job.inp), "checkpoint was taken on", "--force", rc=1)
    assert_kept(kept)


def test_resume_with_force_goes_on_and_warns(job, caplog):
    job.partial()
    _write_input(job.inp, seed=2)
    result = job.run("--resume", "--force")
    assert result.rc == 0, result.err
    assert "--force" in caplog.text and str(job.inp) in caplog.text
    assert len(_lines(job.out)) == ROWS


def test_resume_on_a_truncated_input_is_refused(job):
    job.partial()
    lines = job.inp.read_text().splitlines(keepends=True)
    job.inp.write_text("".join(lines[:-5]))
    assert_refused(job.run("--resume"), str(job.inp), "fewer than", rc=1)


def test_resume_on_an_input_modified_in_place_is_refused(job):
    job.partial()
    stat = job.inp.stat()
    os.utime(job.inp, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert_refused(job.run("--resume"), str(job.inp), "modified since the checkpoint", rc=1)


def test_resume_on_an_appended_input_reads_the_new_rows(job):
    job.partial()
    more = job.tmp / "more.csv"
    _write_input(more, rows=ROWS + 30)
    job.inp.write_text(more.read_text())  # the same first rows, 30 more at the end
    result = job.run("--resume")
    assert result.rc == 0, result.err
    assert _lines(job.out) == more.read_text().splitlines()[1:]


# -- a checkpoint that cannot be written ------------------------------------------------
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_checkpoint_write_error_is_one_line_and_resume_is_exact(job, monkeypatch, err):
    replace, calls = os.replace, []

    def failing(src, dst, *a, **kw):
        if str(job.ckpt) in str(dst):
            calls.append(dst)
            if len(calls) > 3:  # the first checkpoint completes, the second fails
                raise OSError(err, os.strerror(err), str(src))
        return replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", failing)
    result = job.run()
    monkeypatch.setattr(os, "replace", replace)
    assert_refused(result, "cannot write checkpoint 2", "ckpt-00000002/state.json", os.strerror(err), rc=1)
    assert len([line for line in result.err.splitlines() if line.strip()]) == 1
    resumed = job.run("--resume")
    assert resumed.rc == 0, resumed.err
    assert _lines(job.out) == job.expected()


def test_checkpoint_folder_under_a_file_is_refused(job):
    (job.tmp / "afile").write_text("x")
    toml = _pipeline(job.tmp, inp=job.inp, out=job.out, ckpt=job.tmp / "afile" / "ckpt")
    assert_refused(run_cli(["run", str(toml)]), str(job.tmp / "afile" / "ckpt"), "cannot create", rc=1)
    assert (job.tmp / "afile").read_text() == "x"
