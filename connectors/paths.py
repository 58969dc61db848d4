"""Turn a source ``path`` into an ordered list of files on a ``pyarrow.fs`` filesystem.

A path may be one file, a folder (its files with the format's extensions, hidden and
``_``-prefixed names skipped, like ``pyarrow.dataset``), a glob (``data/*.csv``,
``logs/**/*.parquet``) or any ``pyarrow.fs`` URI (``file:///...``, ``s3://bucket/...``).
Files are read in natural order, so ``part-2`` comes before ``part-10``.

Example:
    >>> import os, tempfile
    >>> from connectors.paths import resolve
    >>> d = tempfile.mkdtemp()
    >>> for name in ("part-10.csv", "part-2.csv", ".hidden.csv", "notes.txt"):
    ...     _ = open(os.path.join(d, name), "w").write("x\\n1\\n")
    >>> fs, files = resolve(d, (".csv",))
    >>> [os.path.basename(f) for f in files]
    ['part-2.csv', 'part-10.csv']
    >>> [os.path.basename(f) for f in resolve(os.path.join(d, "*.txt"), (".csv",))[1]]
    ['notes.txt']
"""

from __future__ import annotations

import fnmatch
import os
import re

import pyarrow.fs as pafs

from stream.errors import SourceError

_GLOB_CHARS = re.compile(r"[*?\[]")


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path on it: a URI through ``pyarrow.fs``, else the local disk."""
    if "://" in path:
        try:
            return pafs.FileSystem.from_uri(path)
        except (ValueError, OSError) as exc:
            raise SourceError(f"{path}: cannot open this filesystem URI: {exc}") from exc
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def natural_key(path: str) -> list:
    """Sort key that orders embedded numbers by value (``part-2`` before ``part-10``)."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path)]


def _visible(path: str) -> bool:
    return not os.path.basename(path).startswith((".", "_"))


def resolve(path: str, extensions: tuple[str, ...]) -> tuple[pafs.FileSystem, list[str]]:
    """Files named by ``path`` (file, folder, glob or URI), in natural order.

    Raises :class:`SourceError` naming the path when nothing is there.
    """
    fs, where = filesystem(path)
    if _GLOB_CHARS.search(where):
        base = where[:_GLOB_CHARS.search(where).start()].rsplit("/", 1)[0] or "/"
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        files = [i.path for i in infos if i.type == pafs.FileType.File
                 and fnmatch.fnmatchcase(i.path, where) and _visible(i.path)]
        if not files:
            raise SourceError(f"{path}: no file matches this pattern")
        return fs, sorted(files, key=natural_key)
    info = fs.get_file_info(where)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"{path}: no such file or folder")
    if info.type == pafs.FileType.File:
        return fs, [where]
    infos = fs.get_file_info(pafs.FileSelector(where, recursive=True))
    everything = [i.path for i in infos if i.type == pafs.FileType.File and _visible(i.path)]
    files = [f for f in everything if f.lower().endswith(extensions)]
    if not files:
        found = ", ".join(os.path.basename(f) for f in everything[:10]) or "nothing"
        raise SourceError(f"{path}: folder holds no {'/'.join(extensions)} files (found: {found})")
    return fs, sorted(files, key=natural_key)
