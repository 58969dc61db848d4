"""What every file source shares: files, positions, key/time checks, batch sizes.

A format (Arrow IPC, Parquet, CSV) only says how to read one file from a row onwards
(:meth:`FileSource._read`) and, when its metadata knows, how many rows a file holds
(:meth:`FileSource._count`). This class walks the files of the path in order, checks
the configured key and time columns and that every file has the first file's schema,
cuts batches to ``batch_size`` rows (zero-copy slices) and keeps positions.

Positions: ``{"row": n}`` for a single file; ``{"file": i, "path": name, "row": n}``
when the path names several files (``row`` counts within file ``i``). Because the
runtime may join the end of one file and the start of the next into one micro-batch,
the source remembers the (file, rows) runs it handed out, and :meth:`position_after`
walks them by row count: the runtime asks for positions in the order it read.

Rows a format cannot read (a CSV cell that does not parse): when the run has a
dead-letter sink (:meth:`FileSource.bind`), the format yields a
:class:`~stream.errors.BadEventError` for the row instead of stopping, with its raw
text; this class adds the position just after it, so the run can write it to the
dead-letter sink and resume past it. Without one, the format raises
:class:`SourceError` naming the row.

Identity (stored in checkpoints, checked on resume; see :mod:`stream.identity`): for each
file its path, size, modification time and the SHA-256 of its first block (64 KiB, or
the whole file when smaller). A resume is refused when, among the files read up to the
checkpoint's position, a file is missing or another file name stands at its place (names
within the input: the input folder may have moved), its first
block differs, it shrank, or it kept its size but was modified. A file that *grew* with
the same first block is accepted (a live file appended to; its rows after the checkpoint
are read as new), as are changes to files the checkpoint had not reached yet. Every file
of a folder is recorded (one 64 KiB read per file when a checkpointing run starts), so a
resume can name the file that changed.

Example (a format whose files hold a row count, for brevity):
    >>> import os, tempfile, pyarrow as pa
    >>> from connectors.file_source import FileSource
    >>> class Counts(FileSource):
    ...     extensions = (".n",)
    ...     def _read(self, file, start_row):
    ...         rows = list(range(int(open(file).read())))
    ...         yield pa.record_batch({"x": rows[start_row:]}), start_row
    >>> d = tempfile.mkdtemp()
    >>> for name, n in (("a.n", "5"), ("b.n", "3")):
    ...     _ = open(os.path.join(d, name), "w").write(n)
    >>> src = Counts(d, batch_size=2)
    >>> got = list(src.batches({"file": 0, "row": 3}))
    >>> [(os.path.basename(b.source), b.offset, b.num_rows) for b in got]
    [('a.n', 3, 2), ('b.n', 0, 2), ('b.n', 2, 1)]
    >>> src.position_after(got[0]), src.position_after(got[1])
    ({'file': 0, 'path': 'a.n', 'row': 5}, {'file': 1, 'path': 'b.n', 'row': 2})
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from stream.batch import DEFAULT_KEY, DEFAULT_TIME, Batch
from stream.connector import RunContext, Source
from stream.errors import BadEventError, SchemaError, SourceError
from stream.options import at_least

from .paths import resolve

log = logging.getLogger("hebbstream")

#: bytes of each file hashed into the source's identity
HEAD_BYTES = 64 * 1024

_TIME_TYPES = (pa.types.is_timestamp, pa.types.is_date, pa.types.is_integer, pa.types.is_floating)


class FileSource(Source):
    """Base class of file sources.

    Args:
        path: a file, folder, glob or ``pyarrow.fs`` URI.
        key: column holding the stream key (required to exist when given).
        time: column holding the event time (required to exist when given).
        batch_size: largest batch handed to the runtime, in rows.
        columns: read only these columns (the key and time columns are added).
        files: the resolved file list (instead of resolving ``path``; for tests).
    """

    extensions: tuple[str, ...] = ()
    #: checked when a pipeline file is loaded (see :mod:`stream.options`)
    option_checks = {"batch_size": at_least(1)}

    def __init__(self, path: str, *, key: str | None = None, time: str | None = None,
                 batch_size: int = 65536, columns: list[str] | None = None,
                 files: list[str] | None = None):
        if batch_size < 1:
            raise ValueError(f"{path}: batch_size must be at least 1, got {batch_size}")
        self.path = path
        self.name = path
        self.key, self.time = key, time
        self.batch_size = int(batch_size)
        self.columns = None if columns is None else list(dict.fromkeys(
            [*columns, *(c for c in (key, time) if c)]))
        if files is None:
            self.fs, self.files = resolve(path, self.extensions)
        else:
            self.fs, self.files = pafs.LocalFileSystem(), list(files)
        self._index = {file: i for i, file in enumerate(self.files)}
        # (file, first row, rows) of batches handed out and not yet consumed
        self._runs: collections.deque[list[int]] = collections.deque()
        self._schema: pa.Schema | None = None
        self._schema_file = ""
        #: yield a BadEventError for a row that cannot be read (a dead-letter sink takes
        #: it) instead of raising SourceError; set by :meth:`bind`
        self.skip_bad_rows = False
        self._identity: dict[str, Any] | None = None

    # -- what a format implements ----------------------------------------------------
    def _read(self, file: str,
              start_row: int) -> Iterator[tuple[pa.RecordBatch, int] | BadEventError]:
        """Yield ``(record_batch, row_of_its_first_row)`` from ``start_row`` of ``file``.

        Rows before ``start_row`` must not be yielded; errors are raised as
        :class:`SourceError` naming the file and the row or byte offset. With
        :attr:`skip_bad_rows`, a row that cannot be read may be yielded as a
        :class:`BadEventError` (``offset`` its row, ``record`` its raw text) instead.
        """
        raise NotImplementedError

    def _count(self, file: str) -> int | None:
        """Rows in ``file`` when its metadata says so cheaply, else ``None``."""
        return None

    # -- Source ----------------------------------------------------------------------
    def bind(self, run: RunContext) -> RunContext:
        self.skip_bad_rows = run.dead_letter is not None
        return run

    def batches(self, position: dict[str, Any] | None = None) -> Iterator[Batch | BadEventError]:
        first, start = self._parse_position(position)
        self._runs.clear()
        key, tcol = self.key or DEFAULT_KEY, self.time or DEFAULT_TIME
        for index in range(first, len(self.files)):
            file = self.files[index]
            self._check_not_empty(file)
            checked = False
            for item in self._read(file, start if index == first else 0):
                if isinstance(item, BadEventError):
                    item.position = self._position(index, item.offset + 1)
                    yield item
                    continue
                rb, row = item
                if not checked:
                    self._check_schema(file, rb.schema)
                    checked = True
                for lo in range(0, rb.num_rows, self.batch_size):
                    part = rb.slice(lo, self.batch_size) if rb.num_rows > self.batch_size else rb
                    if part.num_rows == 0:
                        continue
                    self._runs.append([index, row + lo, part.num_rows])
                    yield Batch(part, source=file, offset=row + lo, key_column=key,
                                time_column=tcol)

    def position_after(self, batch: Batch) -> dict[str, Any]:
        if batch.num_rows == 0:
            return {}
        if batch.row_offsets is None and batch.source in self._index:
            # rows of one file, as read (a micro-batch never joins files contiguously)
            index, end = self._index[batch.source], batch.offset + batch.num_rows
        else:
            index, end = self._walk(batch.num_rows)
        runs = self._runs
        while runs and (runs[0][0], runs[0][1] + runs[0][2]) <= (index, end):
            runs.popleft()
        if self._runs and self._runs[0][0] == index and self._runs[0][1] < end:
            run = self._runs[0]
            run[1], run[2] = end, run[1] + run[2] - end
        return self._position(index, end)

    def _position(self, index: int, row: int) -> dict[str, Any]:
        if len(self.files) == 1:
            return {"row": row}
        return {"file": index, "path": os.path.basename(self.files[index]), "row": row}

    def _walk(self, rows: int) -> tuple[int, int]:
        """(file, row) just after the next ``rows`` rows handed out and not yet consumed."""
        for index, start, n in self._runs:
            if rows <= n:
                return index, start + rows
            rows -= n
        raise SourceError(f"{self.path}: asked for a position {rows} rows past what was read")

    def identity(self) -> dict[str, Any]:
        """Path, size, modification time and first-block hash of every file (see the module doc)."""
        if self._identity is None:
            self._identity = {"kind": "files", "path": self.path,
                              "files": [self._file_identity(f) for f in self.files]}
        return self._identity

    def _name(self, file: str) -> str:
        """A file's name within the input: where the input folder lies does not matter, so a
        project moved or copied with its checkpoints (times kept) still resumes."""
        if len(self.files) == 1:
            return os.path.basename(file)
        return os.path.relpath(file, os.path.commonpath(self.files))

    def _file_identity(self, file: str) -> dict[str, Any]:
        info = self.fs.get_file_info(file)
        if info.type != pafs.FileType.File:
            raise SourceError(f"{file}: no such file")
        head = self._head(file, min(info.size, HEAD_BYTES))
        return {"path": file, "name": self._name(file), "bytes": info.size, "mtime_ns": info.mtime_ns,
                "head_bytes": len(head), "head_sha256": hashlib.sha256(head).hexdigest()}

    def _head(self, file: str, n: int) -> bytes:
        try:
            with self.fs.open_input_stream(file, compression=None) as f:
                return f.read(n)
        except OSError as exc:
            raise SourceError(f"{file}: cannot be read: {exc}") from exc

    def identity_mismatch(self, saved: dict[str, Any], position: dict[str, Any] | None) -> str | None:
        """Compare with the files the checkpoint had read, by the policy of the module doc."""
        if saved.get("kind") != "files":
            return super().identity_mismatch(saved, position)
        upto = int(position.get("file", 0)) if position else 0
        now = self.identity()["files"]
        old_files = saved["files"]
        if upto >= len(old_files):
            return f"the checkpoint's position {position} is past the {len(old_files)} file(s) it recorded"
        for i, old in enumerate(old_files[:upto + 1]):
            path = old["path"]
            if i >= len(now):
                return f"{path}, file {i + 1} of the input the checkpoint was taken on, is no longer in {self.path}"
            cur = now[i]
            if cur["name"] != old.get("name"):
                return f"file {i + 1} of {self.path} is {cur['path']}, the checkpoint was taken on {path}"
            if cur["bytes"] < old["bytes"]:
                return (f"{path} has {cur['bytes']} bytes, fewer than the {old['bytes']} it had at the "
                        "checkpoint (replaced or truncated)")
            modified = None not in (cur["mtime_ns"], old["mtime_ns"]) and cur["mtime_ns"] != old["mtime_ns"]
            if cur["bytes"] == old["bytes"] and modified:
                return f"{path} was modified since the checkpoint (same size, another modification time)"
            n = max(0, min(int(old["head_bytes"]), HEAD_BYTES))
            head = cur["head_sha256"] if n == cur["head_bytes"] else hashlib.sha256(self._head(path, n)).hexdigest()
            if head != old["head_sha256"]:
                return (f"the first {n} bytes of {path} differ from the file the checkpoint was taken on "
                        f"(sha256 {head[:12]}…, checkpoint {str(old['head_sha256'])[:12]}…)")
            if cur["bytes"] > old["bytes"]:
                log.info("%s grew by %d bytes since the checkpoint (appended); resuming", path,
                         cur["bytes"] - old["bytes"])
        return None

    def length(self) -> int | None:
        total = 0
        for file in self.files:
            n = self._count(file)
            if n is None:
                return None
            total += n
        return total

    # -- checks ----------------------------------------------------------------------
    def _parse_position(self, position: dict[str, Any] | None) -> tuple[int, int]:
        if not position:
            return 0, 0
        index, row = int(position.get("file", 0)), int(position.get("row", 0))
        if index >= len(self.files) or row < 0:
            raise SourceError(f"{self.path}: cannot resume at {position}: the path holds "
                              f"{len(self.files)} file(s)")
        name = position.get("path")
        if name is not None and os.path.basename(self.files[index]) != name:
            raise SourceError(f"{self.path}: cannot resume at {position}: file {index} is now "
                              f"{os.path.basename(self.files[index])}, not {name} (files changed)")
        return index, row

    def _check_not_empty(self, file: str) -> None:
        info = self.fs.get_file_info(file)
        if info.type == pafs.FileType.NotFound:
            raise SourceError(f"{file}: no such file")
        if info.size == 0:
            raise SourceError(f"{file}: the file is empty (0 bytes)")

    def _check_schema(self, file: str, schema: pa.Schema) -> None:
        for role, col in (("key", self.key), ("time", self.time)):
            if col and schema.get_field_index(col) < 0:
                raise SchemaError(f"{file}: the {role} column {col!r} is missing "
                                  f"(columns: {', '.join(schema.names)})")
        if self.time:
            typ = schema.field(self.time).type
            if not any(check(typ) for check in _TIME_TYPES):
                raise SchemaError(f"{file}: the time column {self.time!r} holds {typ}, not "
                                  "timestamps or numbers (for CSV set timestamp_format or "
                                  "column_types)")
        if self._schema is None:
            self._schema, self._schema_file = schema, file
        elif not schema.equals(self._schema):
            raise SchemaError(f"{file}: schema differs from {self._schema_file}: "
                              f"{schema_difference(self._schema, schema)}")


def schema_difference(want: pa.Schema, got: pa.Schema) -> str:
    """Describe how ``got`` differs from ``want``: missing, extra or retyped columns.

    >>> import pyarrow as pa
    >>> want = pa.schema([("a", pa.int64())])
    >>> schema_difference(want, pa.schema([("a", pa.float64()), ("b", pa.string())]))
    "column 'a' is double, expected int64; new column 'b'"
    """
    parts = []
    for f in want:
        i = got.get_field_index(f.name)
        if i < 0:
            parts.append(f"column {f.name!r} is missing")
        elif got.field(i).type != f.type:
            parts.append(f"column {f.name!r} is {got.field(i).type}, expected {f.type}")
    parts += [f"new column {f.name!r}" for f in got if want.get_field_index(f.name) < 0]
    if not parts and want.names != got.names:
        parts.append(f"columns are in another order: {got.names}, expected {want.names}")
    return "; ".join(parts) or "field metadata or nullability differ"
