"""Refuse, before anything is opened, sink paths that would lose data.

A run reads its source and writes its sink and dead-letter sink; when their paths meet,
data is lost before the run can notice: a sink on the source's file deletes the input
before it is read, a sink folder holding the source's file deletes it with its
leftovers, a sink inside the source's folder feeds the output back as input on the next
run, and a sink and dead-letter sink on one path interleave two CSVs into one corrupt
file. :func:`check_sink_paths` compares the real paths (symbolic links and ``..``
resolved, hard links by inode) of every pair and raises :class:`ConfigError` naming
both.

It also refuses a sink path that is a FIFO, socket or device (other than a discard
device such as ``/dev/null``) when the run checkpoints: with checkpoints a file sink's
path becomes a folder of part files, which such a path cannot be. Without checkpoints a
file sink writes such a path directly (see :mod:`connectors.file_sink`); ``/dev/null``
is a discard sink with or without checkpoints.

Only local paths are compared (``file://`` URIs included); other filesystems are left
to the user. Objects without a ``path`` (memory sources, Kafka) are skipped.

Example:
    >>> import os, tempfile
    >>> from types import SimpleNamespace as Obj
    >>> d = tempfile.mkdtemp()
    >>> src = Obj(path=os.path.join(d, "in.csv"), files=[os.path.join(d, "in.csv")])
    >>> check_sink_paths({"source path": src, "sink path": Obj(path=os.path.join(d, "out.csv"))})
    >>> check_sink_paths({"source path": src, "sink path": Obj(path=os.path.join(d, "in.csv"))})
    Traceback (most recent call last):
      ...
    stream.errors.ConfigError: sink path '...in.csv' is the file source path '...in.csv' reads (...
    >>> special_kind("/dev/null"), is_discard("/dev/null"), special_kind(d)
    ('character device', True, None)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

_KINDS = ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))


def local_path(path: Any) -> str | None:
    """The real local path named by ``path``, or ``None`` for other filesystems."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif "://" in path:
        return None
    return os.path.realpath(os.path.expanduser(path))


def special_kind(path: str) -> str | None:
    """``"FIFO"``, ``"character device"``, ... when ``path`` exists and is one; else ``None``."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((name for test, name in _KINDS if test(mode)), None)


def is_discard(path: str) -> bool:
    """Whether writing ``path`` throws the bytes away: the null device (by device number)."""
    try:
        st, null = os.stat(path), os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _inside(inner: str, folder: str) -> bool:
    return inner.startswith(folder.rstrip(os.sep) + os.sep)


def _clash(a: tuple[str, str, str], b: tuple[str, str, str], reads: bool) -> str | None:
    """Why sink ``b`` must not write where ``a`` (a source file or folder, or a sink) is;
    each is ``(label, path as given, real path)``."""
    (name_a, given_a, real_a), (name_b, given_b, real_b) = a, b
    if _same(real_a, real_b):
        return f"{name_b} {given_b!r} is the file {name_a} {given_a!r} reads ({real_a})" if reads \
            else f"{name_b} {given_b!r} and {name_a} {given_a!r} are one file ({real_b})"
    if _inside(real_a, real_b):
        return f"{name_b} {given_b!r} is a folder holding {name_a} {given_a!r} ({real_a})"
    if _inside(real_b, real_a) and not os.path.isfile(real_a):  # under a file: the OS refuses it
        return f"{name_b} {given_b!r} is inside the folder {name_a} {given_a!r} ({real_a})"
    return None


def check_sink_paths(parts: Mapping[str, Any], where: str = "", checkpoints: bool = False) -> None:
    """Raise :class:`ConfigError` when the sinks of a run would overwrite what it reads.

    ``parts`` maps a label (``"source path"``, or for a pipeline file ``"[sink] path"``)
    to the object: the first entry is the source, the others the sinks it writes (``None``
    for none). ``where`` (the pipeline file) prefixes the message.
    """
    read: list[tuple[str, str, str]] = []
    written: list[tuple[str, str, str]] = []
    for i, (label, obj) in enumerate(parts.items()):
        given = getattr(obj, "path", None) if obj is not None else None
        path = local_path(given)
        if path is None:
            continue
        if i == 0:
            files = [local_path(f) for f in getattr(obj, "files", None) or []]
            read += [(label, str(given), p) for p in [*files, path] if p]  # files first: clearer
        else:
            written.append((label, str(given), path))
    prefix = f"{where}: " if where else ""
    for i, b in enumerate(written):
        if is_discard(b[2]):
            continue  # nothing is kept there to overwrite
        for a in [*read, *written[:i]]:
            why = _clash(a, b, reads=a in read)
            if why:
                raise ConfigError(f"{prefix}{why}; the run would overwrite data it needs. "
                                  f"Choose another {b[0]}.")
        kind = special_kind(b[2])
        if checkpoints and kind and not is_discard(b[2]):
            raise ConfigError(f"{prefix}{b[0]} {b[1]!r} is a {kind}: with checkpoints a file sink "
                              "writes a folder of part files there, which a "
                              f"{kind} cannot be; write a regular path or run without checkpoints")
