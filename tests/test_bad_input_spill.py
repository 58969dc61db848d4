"""Bad spill files (idle keys a ``max_resident_keys`` run wrote beside its checkpoints), through
the CLI as a user meets them: a missing, truncated, altered or crafted file, or a checkpoint
naming a path instead of a spill file, is refused with an error naming the file or the entry;
nothing is unpickled, no path outside the spill folder is opened, and the committed output and
checkpoints stay as they were."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from bad_input import assert_kept, assert_refused, run_cli, snapshot, write_pipeline

from stream.spill import encode_file

ROWS = 160


class Job:
    """CSV → CAD detector keeping 2 of 7 keys in memory → CSV parts, checkpointed; stopped part-way."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.inp, self.out, self.ckpt = tmp / "in.csv", tmp / "scored", tmp / "ckpt"
        rng = np.random.default_rng(5)
        keys = rng.integers(0, 7, ROWS)
        pacsv.write_csv(pa.table({"key": [f"k{i}" for i in keys], "ts": np.arange(ROWS),
                                  "value": np.round(rng.normal(size=ROWS) + keys, 4)}), str(self.inp))
        self.toml = write_pipeline(tmp, f"""
[source]
type = "csv"
path = "{self.inp}"
key = "key"
time = "ts"
batch_size = 20
[[operators]]
type = "cad"
warmup = 5
max_resident_keys = 2
[sink]
type = "csv"
path = "{self.out}"
[checkpoint]
path = "{self.ckpt}"
every_batches = 2
[run]
batch_size = 20
""")
        result = run_cli(["run", str(self.toml), "--max-events", "80"])
        assert result.rc == 0, result.err

    def resume(self):
        return run_cli(["run", str(self.toml), "--resume"])

    def newest(self) -> Path:
        return sorted(self.ckpt.glob("ckpt-*/MANIFEST.json"))[-1].parent

    def entries(self) -> list[list]:
        """The newest checkpoint's spilled-key entries ``[key, file, sha256, bytes]`` (as JSON)."""
        return _spilled(json.loads((self.newest() / "state.json").read_text()))

    def spill_file(self, entry: list) -> Path:
        return next(self.ckpt.glob(f"spill/*/{entry[1]}"))

    def rewrite_entry(self, i: int, **changes) -> None:
        """Change spilled entry ``i`` of the newest checkpoint, and its manifest to match (a crafted checkpoint)."""
        folder = self.newest()
        tree = json.loads((folder / "state.json").read_text())
        entry = _spilled(tree)[i]
        for field, value in changes.items():
            entry[["key", "name", "sha256", "size"].index(field)] = value
        data = json.dumps(tree, separators=(",", ":")).encode()
        (folder / "state.json").write_bytes(data)
        manifest = json.loads((folder / "MANIFEST.json").read_text())
        manifest["files"]["state.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (folder / "MANIFEST.json").write_text(json.dumps(manifest))


def _spilled(tree) -> list[list]:
    """The ``spilled`` list inside a checkpoint's state.json tree."""
    if isinstance(tree, dict):
        if tree.get("format") == "hebbstream-spill/1":
            return tree["spilled"]
        return next((found for v in tree.values() if (found := _spilled(v))), [])
    return []


@pytest.fixture()
def job(tmp_path) -> Job:
    job = Job(tmp_path)
    assert job.entries(), "the partial run left no spilled key in its newest checkpoint"
    return job


def test_a_missing_spill_file_is_refused_naming_it(job):
    path = job.spill_file(job.entries()[0])
    path.unlink()
    kept = snapshot(job.ckpt, job.out)
    assert_refused(job.resume(), str(path), "missing", rc=1)
    assert_kept(kept)


def test_a_truncated_spill_file_is_refused_naming_it(job):
    path = job.spill_file(job.entries()[0])
    path.write_bytes(path.read_bytes()[:100])
    kept = snapshot(job.ckpt, job.out)
    assert_refused(job.resume(), str(path), "bytes", rc=1)
    assert_kept(kept)


def test_an_altered_spill_file_of_the_same_size_is_refused_naming_it(job):
    path = job.spill_file(job.entries()[0])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    kept = snapshot(job.ckpt, job.out)
    assert_refused(job.resume(), str(path), "corrupt", "sha256", rc=1)
    assert_kept(kept)


def _pickled_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, __tree__=np.frombuffer(b'{"format":"hebbstream-spill/1"}', np.uint8),
             a0=np.array([{"run": "code"}], dtype=object))   # an object array: stored as a pickle
    return buf.getvalue()


@pytest.mark.parametrize("content, says", [
    (lambda key: encode_file(key, {"range": "wide", "model": 3}), "cannot load its state"),   # wrong types
    (lambda key: encode_file("another key", {"pending": [1.0]}), "holds key 'another key'"),
    (lambda key: _pickled_npz(), "cannot be decoded"),                                    # never unpickled
    (lambda key: b"not an npz at all", "cannot be decoded"),
], ids=["wrong-types", "another-key", "pickle", "not-npz"])
def test_a_crafted_spill_file_with_a_matching_checkpoint_is_refused(job, content, says):
    entry = job.entries()[0]
    path = job.spill_file(entry)
    data = content(entry[0])
    path.write_bytes(data)
    job.rewrite_entry(0, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    kept = snapshot(job.ckpt, job.out)
    assert_refused(job.resume(), str(path), says, rc=1)
    assert_kept(kept)


@pytest.mark.parametrize("name", ["../../in.csv", "/etc/passwd", "0" * 32 + "-" + "0" * 16 + ".spill"],
                         ids=["relative-path", "absolute-path", "another-key's-name"])
def test_a_checkpoint_naming_a_path_instead_of_a_spill_file_is_refused(job, name):
    job.rewrite_entry(0, name=name)
    kept = snapshot(job.ckpt, job.out, job.inp)
    assert_refused(job.resume(), str(job.ckpt), repr(name), "not the spill file name", rc=1)
    assert_kept(kept)
