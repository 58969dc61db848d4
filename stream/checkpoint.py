"""Atomic checkpoints on any ``pyarrow.fs`` filesystem.

A checkpoint is a folder ``ckpt-<seq>`` holding ``state.json`` and ``arrays.npz``
(see :mod:`stream.state`; no pickle) and a ``MANIFEST.json`` with the size and SHA-256
of each file. Files are written under temporary names, fsynced (local disks) and
renamed; the manifest is written last, so a checkpoint without a valid manifest was
never complete and is ignored. Loading verifies every checksum.

One run writes a store at a time: :meth:`CheckpointStore.lock` gives the lock the runtime
takes before it touches the folder (see :mod:`stream.lock` and :mod:`stream.claim`). The
lock holder removes folders a crash left half-written (:meth:`CheckpointStore.clean`, and
on every save). A corrupt newest checkpoint is skipped for the newest valid one, with a
warning naming both (:meth:`CheckpointStore.load_latest`). A checkpoint that cannot be
written (permission denied, disk full, folder gone) raises :class:`CheckpointError`
naming the path and what was being written; the checkpoints before it stay loadable.

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
import logging
import os
import time
from typing import Any

import pyarrow.fs as pafs

from . import state as state_codec
from .errors import CheckpointError
from .lock import PathLock

log = logging.getLogger("hebbstream")

FORMAT = "hebbstream-checkpoint/1"
_FILES = ("state.json", "arrays.npz")
LOCK_NAME = "LOCK"
#: the folder of the store where per-key operators spill idle keys (stream.spill); checkpoints refer to its files
SPILL_FOLDER = "spill"


class CorruptCheckpointError(CheckpointError):
    """One checkpoint is damaged (bad checksum, malformed manifest, undecodable state).

    Unlike a checkpoint of another pipeline, an older checkpoint may still be good.
    """


class CheckpointStore:
    """Checkpoints in a folder or URI (``/path``, ``file:///path``, ``s3://bucket/p``).

    Args:
        uri: where checkpoints live.
        keep: how many complete checkpoints to keep (older ones are deleted).
        fingerprint: a description of the pipeline; a checkpoint written for another
            pipeline is refused on load.
    """

    def __init__(self, uri: str, keep: int = 3, fingerprint: Any = None):
        try:
            if "://" in uri:
                self.fs, self.root = pafs.FileSystem.from_uri(uri)
            else:
                self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
            self.fs.create_dir(self.root, recursive=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint folder {uri}: cannot create it: {_reason(exc)}") from exc
        self.uri = uri
        self.keep = keep
        self.fingerprint = fingerprint
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self.loaded: int | None = None  # the checkpoint load_latest returned

    def lock(self) -> PathLock:
        """The (not yet taken) lock that makes a run this store's only writer."""
        return PathLock(f"{self.root}/{LOCK_NAME}", f"checkpoint folder {self.uri}", self.fs)

    # -- writing ---------------------------------------------------------------------
    def save(self, state: dict[str, Any]) -> int:
        """Write a new checkpoint of ``state``; returns its sequence number.

        Raises :class:`CheckpointError` naming the file and what it held when the disk
        refuses (the half-written folder is removed by the next save or :meth:`clean`).
        """
        seq = (self._sequences() or [0])[-1] + 1
        folder = f"{self.root}/ckpt-{seq:08d}"
        tree, npz = state_codec.dumps(state)
        what = "its folder"
        try:
            self.fs.create_dir(folder, recursive=True)
            files = {}
            for name, data, label in zip(_FILES, (tree, npz), ("the operator state", "the state arrays")):
                what = label
                self._write_atomic(f"{folder}/{name}", data)
                files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            manifest = {"format": FORMAT, "seq": seq, "created": time.time(),
                        "fingerprint": self.fingerprint, "files": files}
            name, what = "MANIFEST.json", "the manifest"
            self._write_atomic(f"{folder}/MANIFEST.json", json.dumps(manifest, indent=1).encode())
            if self._local:
                fsync_path(self.root)
        except OSError as exc:
            where = folder if what == "its folder" else f"{folder}/{name}"
            raise CheckpointError(f"cannot write checkpoint {seq} ({what}) to {where}: {_reason(exc)}") from exc
        self._prune(seq)
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

    def _prune(self, newest: int) -> None:
        """Delete complete checkpoints beyond ``keep`` and half-written ones older than ``newest``.

        Folders that vanish meanwhile are skipped, never an error.
        """
        complete = self.complete()
        old = complete[:-self.keep] if self.keep > 0 else []
        old += [s for s in self._sequences() if s < newest and s not in complete]
        for seq in old:
            self._delete(seq)

    def _delete(self, seq: int) -> None:
        try:
            self.fs.delete_dir(f"{self.root}/ckpt-{seq:08d}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            if self.fs.get_file_info(f"{self.root}/ckpt-{seq:08d}").type != pafs.FileType.NotFound:
                log.warning("checkpoint folder %s: cannot delete ckpt-%08d: %s", self.uri, seq, _reason(exc))

    def clean(self) -> list[int]:
        """Remove the folders a crash left half-written (no manifest); returns their numbers.

        Only the run holding :meth:`lock` may call this: another writer's checkpoint in
        progress looks half-written too.
        """
        complete = set(self.complete())
        partial = [s for s in self._sequences() if s not in complete]
        for seq in partial:
            self._delete(seq)
        if not complete:   # spill files no checkpoint can refer to (a run that crashed before its first)
            self._delete_spilled()
        if partial:
            log.info("checkpoint folder %s: removed half-written checkpoint(s) %s", self.uri, partial)
        return partial

    def clear(self) -> None:
        """Delete every checkpoint (a run started over with ``overwrite``), and the spill files they refer to."""
        for seq in self._sequences():
            self._delete(seq)
        self._delete_spilled()

    def _delete_spilled(self) -> None:
        try:
            self.fs.delete_dir(f"{self.root}/{SPILL_FOLDER}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("checkpoint folder %s: cannot delete its spill folder: %s", self.uri, _reason(exc))

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
        try:
            info = self.fs.get_file_info(f"{self.root}/ckpt-{seq:08d}/MANIFEST.json")
        except OSError:  # the folder vanished or cannot be read
            return False
        return info.type == pafs.FileType.File

    def complete(self) -> list[int]:
        """Sequence numbers of the checkpoints whose manifest was written, oldest first."""
        return [s for s in self._sequences() if self._has_manifest(s)]

    def latest(self) -> int | None:
        """Sequence number of the newest complete checkpoint, or ``None``."""
        complete = self.complete()
        return complete[-1] if complete else None

    def _read(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except OSError as exc:
            raise CorruptCheckpointError(f"checkpoint file {path} cannot be read: {_reason(exc)}") from exc

    def load(self, seq: int) -> dict[str, Any]:
        """Load and verify checkpoint ``seq``.

        Raises :class:`CorruptCheckpointError` when it is damaged and
        :class:`CheckpointError` when it belongs to another pipeline.
        """
        folder = f"{self.root}/ckpt-{seq:08d}"
        manifest = self._manifest(f"{folder}/MANIFEST.json")
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
                raise CorruptCheckpointError(
                    f"{folder}/{name} is corrupt: {len(data)} bytes with sha256 {got[:12]}…, "
                    f"manifest says {want['bytes']} bytes with sha256 {want['sha256'][:12]}…")
            blobs[name] = data
        try:
            state = state_codec.loads(blobs["state.json"], blobs["arrays.npz"])
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
            raise CorruptCheckpointError(f"{folder}: state cannot be decoded: {exc}") from exc
        if not isinstance(state, dict):
            raise CorruptCheckpointError(f"{folder}/state.json: holds a {type(state).__name__}, not a mapping")
        return state

    def _manifest(self, path: str) -> dict[str, Any]:
        """Read and check a manifest: every problem names the file and the key."""
        try:
            manifest = json.loads(self._read(path))
        except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for flipped bytes
            raise CorruptCheckpointError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict):
            raise CorruptCheckpointError(f"{path}: holds a JSON {type(manifest).__name__}, not an object")
        if manifest.get("format") != FORMAT:
            raise CorruptCheckpointError(f"{path}: key 'format' is {manifest.get('format')!r}, not {FORMAT!r}")
        files = manifest.get("files")
        if not isinstance(files, dict):
            what = "is missing" if files is None else f"is a {type(files).__name__}, not an object"
            raise CorruptCheckpointError(f"{path}: key 'files' {what}")
        unknown = sorted(set(files) - set(_FILES))
        if unknown:
            raise CorruptCheckpointError(f"{path}: key 'files' has unknown entr{'ies' if len(unknown) > 1 else 'y'} "
                                         f"{', '.join(map(repr, unknown))}; a checkpoint holds {', '.join(_FILES)}")
        for name in _FILES:
            entry = files.get(name)
            if not isinstance(entry, dict):
                raise CorruptCheckpointError(f"{path}: key 'files.{name}' is "
                                             f"{'missing' if entry is None else 'not an object'}")
            if not isinstance(entry.get("bytes"), int) or isinstance(entry.get("bytes"), bool):
                raise CorruptCheckpointError(f"{path}: key 'files.{name}.bytes' is missing or not an integer")
            if not isinstance(entry.get("sha256"), str):
                raise CorruptCheckpointError(f"{path}: key 'files.{name}.sha256' is missing or not a string")
        return manifest

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that loads; ``None`` when there is none.

        A damaged newest checkpoint is skipped for the newest valid one, with a warning
        naming both; when none is valid the newest one's error is raised. A checkpoint of
        another pipeline is never skipped.
        """
        self.loaded = None
        complete = self.complete()
        first_error: CorruptCheckpointError | None = None
        for seq in reversed(complete):
            try:
                state = self.load(seq)
            except CorruptCheckpointError as exc:
                first_error = first_error or exc
                continue
            if first_error is not None:
                log.warning("checkpoint folder %s: the newest checkpoint ckpt-%08d cannot be used (%s); "
                            "resuming from ckpt-%08d, the newest valid one", self.uri, complete[-1],
                            first_error, seq)
            self.loaded = seq
            return state
        if first_error is not None:
            raise first_error
        return None


def _reason(exc: BaseException) -> str:
    """An OS error's reason without repeating the path (``Permission denied``)."""
    return getattr(exc, "strerror", None) or str(exc)


def fsync_path(path: str) -> None:
    """fsync a file or a folder (a folder, so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
