"""Atomic checkpoints on any ``pyarrow.fs`` filesystem.

A checkpoint is a folder ``ckpt-<seq>`` holding ``state.json`` and ``arrays.npz``
(see :mod:`stream.state`; no pickle) and a ``MANIFEST.json`` with the size and SHA-256
of each file. Files are written under temporary names, fsynced (local disks) and
renamed; the manifest is written last, so a checkpoint without a valid manifest was
never complete and is ignored. Loading verifies every checksum.

Example:
    >>> import tempfile
    >>> from stream.checkpoint import CheckpointStore
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> store.save({"operators": {"n": 3}, "source": {"row": 10}})
    1
    >>> store.load_latest()["source"]
    {'row': 10}
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import pyarrow.fs as pafs

from . import state as state_codec
from .errors import CheckpointError

FORMAT = "hebbstream-checkpoint/1"
_FILES = ("state.json", "arrays.npz")


class CheckpointStore:
    """Checkpoints in a folder or URI (``/path``, ``file:///path``, ``s3://bucket/p``).

    Args:
        uri: where checkpoints live.
        keep: how many complete checkpoints to keep (older ones are deleted).
        fingerprint: a description of the pipeline; a checkpoint written for another
            pipeline is refused on load.
    """

    def __init__(self, uri: str, keep: int = 3, fingerprint: Any = None):
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.uri = uri
        self.keep = keep
        self.fingerprint = fingerprint
        self.fs.create_dir(self.root, recursive=True)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)

    # -- writing ---------------------------------------------------------------------
    def save(self, state: dict[str, Any]) -> int:
        """Write a new checkpoint of ``state``; returns its sequence number."""
        seq = (self._sequences() or [0])[-1] + 1
        folder = f"{self.root}/ckpt-{seq:08d}"
        self.fs.create_dir(folder, recursive=True)
        tree, npz = state_codec.dumps(state)
        files = {}
        for name, data in zip(_FILES, (tree, npz)):
            self._write_atomic(f"{folder}/{name}", data)
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest = {"format": FORMAT, "seq": seq, "created": time.time(),
                    "fingerprint": self.fingerprint, "files": files}
        self._write_atomic(f"{folder}/MANIFEST.json", json.dumps(manifest, indent=1).encode())
        if self._local:
            fsync_path(self.root)
        self._prune()
        return seq

    def _write_atomic(self, path: str, data: bytes) -> None:
        tmp = path + ".tmp"
        if self._local:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_path(os.path.dirname(path))
        else:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)

    def _prune(self) -> None:
        complete = [s for s in self._sequences() if self._has_manifest(s)]
        for seq in complete[:-self.keep] if self.keep > 0 else []:
            self.fs.delete_dir(f"{self.root}/ckpt-{seq:08d}")

    # -- reading ---------------------------------------------------------------------
    def _sequences(self) -> list[int]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        seqs = []
        for info in infos:
            name = info.base_name
            if info.type == pafs.FileType.Directory and name.startswith("ckpt-") and name[5:].isdigit():
                seqs.append(int(name[5:]))
        return sorted(seqs)

    def _has_manifest(self, seq: int) -> bool:
        info = self.fs.get_file_info(f"{self.root}/ckpt-{seq:08d}/MANIFEST.json")
        return info.type == pafs.FileType.File

    def latest(self) -> int | None:
        """Sequence number of the newest complete checkpoint, or ``None``."""
        complete = [s for s in self._sequences() if self._has_manifest(s)]
        return complete[-1] if complete else None

    def _read(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except (FileNotFoundError, OSError) as exc:
            raise CheckpointError(f"checkpoint file {path} cannot be read: {exc}") from exc

    def load(self, seq: int) -> dict[str, Any]:
        """Load and verify checkpoint ``seq``; raises :class:`CheckpointError` when corrupt."""
        folder = f"{self.root}/ckpt-{seq:08d}"
        try:
            manifest = json.loads(self._read(f"{folder}/MANIFEST.json"))
        except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for flipped bytes
            raise CheckpointError(f"{folder}/MANIFEST.json is not valid JSON: {exc}") from exc
        if manifest.get("format") != FORMAT:
            raise CheckpointError(f"{folder}/MANIFEST.json: unknown format {manifest.get('format')!r}")
        if self.fingerprint is not None and manifest.get("fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"{folder} was written by another pipeline:\n  checkpoint: {manifest.get('fingerprint')}"
                f"\n  this run:   {self.fingerprint}\nUse a new checkpoint folder or the matching pipeline.")
        blobs = {}
        for name in _FILES:
            data = self._read(f"{folder}/{name}")
            want = manifest["files"][name]
            got = hashlib.sha256(data).hexdigest()
            if len(data) != want["bytes"] or got != want["sha256"]:
                raise CheckpointError(
                    f"{folder}/{name} is corrupt: {len(data)} bytes with sha256 {got[:12]}…, "
                    f"manifest says {want['bytes']} bytes with sha256 {want['sha256'][:12]}…")
            blobs[name] = data
        try:
            return state_codec.loads(blobs["state.json"], blobs["arrays.npz"])
        except (ValueError, KeyError, OSError) as exc:
            raise CheckpointError(f"{folder}: state cannot be decoded: {exc}") from exc

    def load_latest(self) -> dict[str, Any] | None:
        seq = self.latest()
        return None if seq is None else self.load(seq)


def fsync_path(path: str) -> None:
    """fsync a file or a folder (a folder, so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
