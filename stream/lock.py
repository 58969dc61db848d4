"""One writer per path: an owner file taken before a run touches a checkpoint folder or sink.

A lock is a small JSON file (the *owner file*) naming the process that holds it: pid,
host, when it started and its command line. Whoever finds it in place is refused with an
error naming that owner. A lock whose owner is gone is *stale* and is taken over (with a
warning), so a run killed with SIGKILL never blocks the next one.

On a local disk (``LocalFileSystem``):

- The owner file is written and fsynced under a unique temporary name created with
  ``O_CREAT | O_EXCL`` and published with ``link()``, which fails when the name exists:
  creation is atomic and nobody ever sees a half-written owner file. (Where ``link`` is
  not supported, the file is created in place with ``O_CREAT | O_EXCL``.)
- The holder keeps the file open with ``flock(LOCK_EX)`` for as long as it runs. The
  kernel drops that lock when the process dies however it dies, so a challenger that can
  take the ``flock`` knows the holder is gone; it then re-checks that the name still
  points at the file it locked before removing it, so two challengers never remove each
  other's fresh lock.
- Stale also requires the owner file's host to be this host and its pid to be gone (or
  reused: the recorded process start time differs, or the process is a zombie). A lock
  taken on another host is never broken automatically (its pid means nothing here); the
  error says which file to delete once that run is known to be over. Together these
  keep a lock safe on filesystems where ``flock`` does nothing.

On other ``pyarrow.fs`` filesystems (S3, GCS, HDFS) there is no exclusive create and no
lock that dies with its holder: the lock is best effort. It is written only when absent
and read back to check that this run's token is the one stored, which refuses a run
started after another has taken the lock, but two runs started within the same instant
on an object store may both proceed. A stale remote lock is taken over only when its
owner ran on this host and is gone; otherwise the error names the file to delete. Run
one writer per remote path by deployment (one job per checkpoint folder).

Example:
    >>> import os, tempfile
    >>> from stream.lock import PathLock, LockError
    >>> path = os.path.join(tempfile.mkdtemp(), "LOCK")
    >>> held = PathLock(path, "checkpoint folder demo").acquire()
    >>> try:
    ...     PathLock(path, "checkpoint folder demo").acquire()
    ... except LockError as exc:
    ...     print(str(exc).split(" is in use")[0])
    checkpoint folder demo
    >>> held.release()
    >>> PathLock(path, "checkpoint folder demo").acquire().release()
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from typing import Any

import pyarrow.fs as pafs

from .errors import HebbstreamError

try:
    import fcntl
except ImportError:  # Windows: the pid check alone decides
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("hebbstream")

FORMAT = "hebbstream-lock/1"
_TRIES = 20


class LockError(HebbstreamError):
    """A checkpoint folder or sink path is held by another run (or its lock cannot be taken)."""


def _proc_start(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) of ``pid`` from /proc, if readable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "; fields 3.. of proc(5)
    try:
        return int(fields[19]), fields[0]
    except (IndexError, ValueError):
        return None


def owner_record(token: str) -> dict[str, Any]:
    """What the owner file says about this process."""
    started = _proc_start(os.getpid())
    return {"format": FORMAT, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "proc_start": started[0] if started else None, "command": " ".join(sys.argv)[:300],
            "token": token}


def describe(owner: dict[str, Any] | None) -> str:
    """``pid 12 on host h, started 2026-12-03 15:40:49 UTC (hebbstream run x.toml)``."""
    if not owner:
        return "an unknown owner (the lock file is empty or unreadable)"
    when = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when)) if isinstance(when, (int, float)) else "?"
    command = f" ({_printable(owner['command'])})" if owner.get("command") else ""
    return f"pid {_printable(owner.get('pid'))} on host {_printable(owner.get('host'))}, started {when}{command}"


def _printable(value: Any, limit: int = 300) -> str:
    """An owner file is untrusted: no control characters reach the terminal."""
    return "".join(c if c.isprintable() else "?" for c in str(value))[:limit]


def is_stale(owner: dict[str, Any] | None) -> bool:
    """True when ``owner`` ran on this host and that process is gone (or its pid was reused)."""
    if not owner or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0 or os.name == "nt":  # os.kill(pid, 0) terminates on Windows
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    now = _proc_start(pid)
    if now is None:
        return False
    ticks, state = now
    if state in ("Z", "X"):  # killed, not yet reaped by its parent
        return True
    return owner.get("proc_start") is not None and ticks != owner["proc_start"]


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        owner = json.loads(data)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


class PathLock:
    """An exclusive claim on ``path`` (the owner file), local or on a ``pyarrow.fs`` filesystem.

    Args:
        path: the owner file to create (e.g. ``ckpt/LOCK``).
        what: what the lock guards, for messages (``"checkpoint folder out/ckpt"``).
        fs: the filesystem ``path`` is on; ``None`` for the local disk.
    """

    def __init__(self, path: str, what: str, fs: pafs.FileSystem | None = None):
        self.path = path
        self.what = what
        self.fs = fs or pafs.LocalFileSystem()
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self._fd: int | None = None
        self._token = ""
        self.held = False

    # -- public ----------------------------------------------------------------------
    def acquire(self) -> PathLock:
        """Take the lock or raise :class:`LockError` naming the holder; returns ``self``."""
        if self.held:
            return self
        self._token = uuid.uuid4().hex
        try:
            if self._local:
                self._acquire_local()
            else:
                self._acquire_remote()
        except OSError as exc:
            raise LockError(f"{self.what}: cannot create the lock file {self.path}: "
                            f"{exc.strerror or exc}") from exc
        self.held = True
        return self

    def release(self) -> None:
        """Remove the owner file if it is still ours; never raises for a file already gone."""
        if not self.held:
            return
        self.held = False
        try:
            if self._local:
                self._release_local()
            else:
                self._release_remote()
        except OSError as exc:
            log.warning("%s: could not remove the lock file %s: %s", self.what, self.path, exc)

    def __enter__(self) -> PathLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _refuse(self, owner: dict[str, Any] | None) -> LockError:
        hint = ("; if that run is over, delete the lock file" if owner and owner.get("host") != socket.gethostname()
                else "; wait for it to finish or stop it")
        return LockError(f"{self.what} is in use by another run: {describe(owner)} holds {self.path}{hint}")

    # -- local disk ------------------------------------------------------------------
    def _acquire_local(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        data = json.dumps(owner_record(self._token)).encode()
        for _ in range(_TRIES):
            if self._publish(data):
                return
            held_by = self._inspect()
            if held_by is not None:
                raise self._refuse(held_by)
        raise LockError(f"{self.what}: cannot take the lock {self.path}: other runs keep taking it over")

    def _publish(self, data: bytes) -> bool:
        """Create the owner file atomically, already written and locked; False when one exists."""
        tmp = f"{self.path}.{os.getpid()}.{self._token[:8]}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            os.write(fd, data)
            # no fsync: after a power cut an empty owner file is taken over like any stale one
            # (nobody holds its flock), and a run start should not wait for the disk
            _flock(fd)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                os.close(fd)
                return False
            except OSError:  # no hard links here: create in place (a tiny unlocked window)
                os.close(fd)
                fd = -1
                fd = self._create_in_place(data)
                if fd is None:
                    return False
        except BaseException:
            if fd >= 0:
                _close_quietly(fd)
            raise
        finally:
            _unlink_quietly(tmp)
        self._fd = fd
        return True

    def _create_in_place(self, data: bytes) -> int | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return None
        _flock(fd)
        os.write(fd, data)
        os.fsync(fd)
        return fd

    def _inspect(self) -> dict[str, Any] | None:
        """Look at the existing owner file: the owner when it is held (refuse), ``None`` to retry.

        Retry means: the file vanished, was replaced while we looked, or was stale and has
        been removed here.
        """
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            locked = _try_flock(fd)
            owner = _parse(_read_fd(fd))
            if locked is False:
                if is_stale(owner):  # its owner is gone and someone else is taking it over
                    time.sleep(0.05)
                    return None
                return owner or {}
            if not _same_file(fd, self.path):
                return None
            # the kernel says nobody holds it (or flock is unavailable): the pid decides
            if owner is not None and not is_stale(owner):
                return owner
            if owner is None and locked is None:
                return {}  # unreadable and no flock to tell: leave it to the user
            log.warning("%s: taking over the lock %s left by %s, which is no longer running",
                        self.what, self.path, describe(owner))
            os.unlink(self.path)
            return None
        finally:
            os.close(fd)

    def _release_local(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)
        finally:
            os.close(fd)

    # -- other pyarrow filesystems (best effort, see the module docstring) -----------
    def _read_remote(self) -> dict[str, Any] | None | bool:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return _parse(f.read())
        except FileNotFoundError:
            return False

    def _acquire_remote(self) -> None:
        if "/" in self.path:
            self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        for _ in range(_TRIES):
            owner = self._read_remote()
            if owner is not False:
                if not is_stale(owner):
                    raise self._refuse(owner)
                log.warning("%s: taking over the lock %s left by %s, which is no longer running",
                            self.what, self.path, describe(owner))
                self.fs.delete_file(self.path)
            with self.fs.open_output_stream(self.path) as f:
                f.write(json.dumps(owner_record(self._token)).encode())
            back = self._read_remote()
            if isinstance(back, dict) and back.get("token") == self._token:
                return
            if back is not False:
                raise self._refuse(back or None)
        raise LockError(f"{self.what}: cannot take the lock {self.path}")

    def _release_remote(self) -> None:
        back = self._read_remote()
        if isinstance(back, dict) and back.get("token") == self._token:
            self.fs.delete_file(self.path)


def _flock(fd: int) -> None:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if isinstance(exc, BlockingIOError):
                raise
            # no flock on this filesystem: the pid check alone protects the lock


def _try_flock(fd: int) -> bool | None:
    """True: locked here; False: someone holds it; None: flock is unavailable."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
        if sum(map(len, chunks)) > 1 << 20:  # an owner file is tiny; do not read a huge planted one
            break
    return b"".join(chunks)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
