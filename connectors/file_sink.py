"""File sinks with exactly-once output across crashes: committed part files.

Without checkpoints a sink writes one plain file at ``path`` (under a temporary name
until the run ends, then renamed). As soon as the run checkpoints (the runtime calls
:meth:`FileSink.flush`), ``path`` becomes a folder of part files::

    out/scored.csv/part-00000.csv      committed at checkpoint 1
    out/scored.csv/part-00001.csv      committed at checkpoint 2
    out/scored.csv/.part-00002.csv.inprogress   being written

Each flush closes the in-progress part, fsyncs it, renames it to its final name and
fsyncs the folder; the flush point is the number of committed parts. On resume,
:meth:`FileSink.open` deletes parts beyond the checkpoint's flush point (written after
the checkpoint, so they will be written again) and in-progress leftovers. The folder
then holds exactly the output of every event up to the checkpoint, once, and the run
appends from there: a resumed run's output equals an uninterrupted one's.

Read the output back as one table with ``pyarrow.dataset`` (it skips the ``.``-names)::

    import pyarrow.dataset as ds
    table = ds.dataset("out/scored.parquet", format="parquet").to_table()
    table = ds.dataset("out/scored.arrow", format="arrow").to_table()   # IPC file format
    table = ds.dataset("out/scored.csv", format="csv", schema=schema).to_table()

(CSV holds text: pass the schema, or a float column whose values are whole numbers
comes back as integers.) ``pyarrow.dataset`` reads only the IPC *file* format: the parts
of an Arrow sink with ``format="stream"`` (``.arrows``) are read with ``ArrowSource`` or
one by one with ``pyarrow.ipc.open_stream``.

Every format also reads back with the matching hebbstream source
(``CSVSource("out/scored.csv")``, ``ArrowSource("out/scored.arrows")``), which reads the
parts in order. Within one part and across parts, rows keep the order they were written.

A path that is a FIFO, socket or device is written directly: no temporary name, no
rename, nothing deleted (renaming over ``/dev/null`` would replace the machine's null
device). ``/dev/null`` is a discard sink, with checkpoints too (its flush point records
nothing); another device or a FIFO cannot hold part files, so a run that checkpoints
refuses it (:func:`stream.sink_paths.check_sink_paths`, and :meth:`FileSink.flush`).

A write that fails (permission denied, disk full, a parent that is a file) raises
:class:`SinkError` naming the path and what was being written. The committed parts and
the checkpoint before it are untouched, so ``--resume`` continues from there.

A run owns its sink path: :meth:`FileSink.claim` (called by the runtime before anything is
opened) takes a lock next to it (``.<name>.lock``, see :mod:`stream.lock`), so a second run
writing the same path is refused, and refuses a fresh run over earlier output (a file, or
committed parts) unless the run allows ``overwrite``: earlier output is never deleted
silently. (Opening a sink directly, without a run, still starts over as documented below.)

The first batch fixes the schema; a batch with other columns or types raises
:class:`SchemaError` naming the sink, the batch's source row and the difference, and
nothing of it is written, so the file never mixes schemas.

Example (a format writing Arrow IPC; see :mod:`connectors.arrow_ipc`):
    >>> import os, tempfile, pyarrow as pa
    >>> from stream.batch import Batch
    >>> from connectors.arrow_ipc import ArrowSink
    >>> out = os.path.join(tempfile.mkdtemp(), "out.arrow")
    >>> sink = ArrowSink(out)
    >>> sink.open(None)
    >>> sink.write(Batch(pa.record_batch({"x": [1, 2]})))
    >>> sink.flush()
    {'parts': 1}
    >>> sink.write(Batch(pa.record_batch({"x": [3]})))
    >>> sink.close()
    >>> sorted(os.listdir(out))
    ['part-00000.arrow', 'part-00001.arrow']
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from stream.batch import Batch
from stream.checkpoint import fsync_path
from stream.connector import Sink
from stream.errors import CheckpointError, ConfigError, SchemaError, SinkError
from stream.lock import PathLock
from stream.sink_paths import is_discard, special_kind

from .file_source import schema_difference
from .paths import filesystem

_PART = re.compile(r"^part-(\d+)\.")


class FileSink(Sink):
    """Base class of file sinks; a format implements :meth:`_new_writer`.

    Args:
        path: output file (or folder of parts once the run checkpoints); local or a
            ``pyarrow.fs`` URI.
        parts: ``True`` always writes a folder of parts; ``None`` (default) switches to
            parts at the first checkpoint.
        durable: fsync each committed part and its folder (what makes a checkpoint
            survive a power cut; a process crash needs no fsync). ``False`` for scratch
            output and tests.
    """

    extension = ".dat"

    def __init__(self, path: str, *, parts: bool | None = None, durable: bool = True):
        self.path = path
        self.durable = durable
        self.name = path
        self.fs, self.where = filesystem(path)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self.parts = parts
        self._folder = bool(parts)
        self._committed = 0
        self._writer: Any = None
        self._stream: Any = None
        self._tmp = ""
        self._schema: pa.Schema | None = None
        self._direct = ""  # the kind of special file written in place ("FIFO", ...), or ""
        self.rows_written = 0

    # -- what a format implements ----------------------------------------------------
    def _new_writer(self, stream: Any, schema: pa.Schema) -> Any:
        """A pyarrow writer over ``stream`` with ``write_batch`` and ``close``."""
        raise NotImplementedError

    # -- Sink ------------------------------------------------------------------------
    def claim(self, *, fresh: bool, overwrite: bool) -> PathLock:
        """Lock the path; a fresh run over earlier output needs ``overwrite``."""
        if self._local and (special_kind(self.where) or "").endswith("device"):
            return None  # written in place, holds no output; a lock file would land in /dev
        parent, _, base = self.where.rpartition("/")
        lock = PathLock(f"{parent}/.{base}.lock" if parent else f".{base}.lock", f"sink {self.path}",
                        self.fs).acquire()
        if fresh and not overwrite:
            found = self._earlier_output()
            if found:
                lock.release()
                raise ConfigError(f"sink {self.path} holds the output of an earlier run ({found}); "
                                  "--overwrite (overwrite=True) replaces it, --resume continues that run "
                                  "from its checkpoint, or choose another path")
        return lock

    def _earlier_output(self) -> str:
        """What a fresh run would replace: '' when nothing, else a description."""
        info = self.fs.get_file_info(self.where)
        if info.type == pafs.FileType.File:
            return f"a file of {info.size} bytes"
        if info.type != pafs.FileType.Directory:
            return ""
        parts = [e for e in self.fs.get_file_info(pafs.FileSelector(self.where))
                 if _PART.match(e.base_name) and e.base_name.endswith(self.extension)]
        return f"{len(parts)} committed part file(s)" if parts else ""

    def open(self, flush_point: dict[str, Any] | None = None) -> None:
        """Start fresh (``None``: earlier output at ``path`` is replaced) or resume."""
        self._writer = None
        self._schema = None
        self._direct = (special_kind(self.where) or "") if self._local else ""
        if self._direct:
            if self.parts and not is_discard(self.where):
                raise ConfigError(f"{self.path}: is a {self._direct}; it cannot hold part files "
                                  "(parts=True)")
            return
        if flush_point is not None and "parts" not in flush_point:
            raise CheckpointError(f"{self.path}: the checkpoint wrote this sink to a device or as one of several "
                                  f"outputs ({', '.join(sorted(flush_point))}), not to part files here; its earlier "
                                  "output is not at this path: resume with the sinks and outputs the checkpoint "
                                  "was taken with")
        with self._io("prepare the output (remove leftovers of an earlier run)"):
            self._open(flush_point)

    def _open(self, flush_point: dict[str, Any] | None) -> None:
        self._committed = int(flush_point["parts"]) if flush_point else 0
        self._folder = bool(self.parts) or flush_point is not None
        self._remove(self._single_tmp())
        info = self.fs.get_file_info(self.where)
        if info.type == pafs.FileType.File:
            if flush_point is not None:
                raise CheckpointError(f"{self.path}: the checkpoint expects a folder of "
                                      f"{self._committed} part files here, found a plain file")
            self.fs.delete_file(self.where)
        elif info.type == pafs.FileType.Directory:
            present = set()
            for entry in self.fs.get_file_info(pafs.FileSelector(self.where)):
                name = entry.base_name
                m = _PART.match(name)
                if name.startswith(".part-") and name.endswith(".inprogress"):
                    self.fs.delete_file(entry.path)
                elif m and name.endswith(self.extension):
                    if int(m.group(1)) >= self._committed:
                        self.fs.delete_file(entry.path)  # written after the checkpoint
                    else:
                        present.add(int(m.group(1)))
            if not self._folder:
                # a fresh run without checkpoints writes a plain file where the folder was
                leftover = self.fs.get_file_info(pafs.FileSelector(self.where))
                if leftover:
                    raise ConfigError(f"{self.path}: is a folder holding other files "
                                      f"({leftover[0].base_name}, ...); choose another sink path")
                self.fs.delete_dir(self.where)
            missing = sorted(set(range(self._committed)) - present)
            if missing:
                raise CheckpointError(f"{self.path}: the checkpoint counts {self._committed} "
                                      f"committed part files, but part(s) {missing[:5]} are gone")
        elif flush_point is not None and self._committed:
            raise CheckpointError(f"{self.path}: the checkpoint counts {self._committed} committed "
                                  "part files, but the folder is gone")

    def write(self, batch: Batch) -> None:
        rb = batch.data
        if self._schema is None:
            self._schema = rb.schema
        elif not rb.schema.equals(self._schema):
            where = batch.where(0) if batch.num_rows else batch.source or "<stream>"
            diff = schema_difference(self._schema, rb.schema)
            raise SchemaError(f"{self.path}: the batch from {where} has another schema than the "
                              f"rows already written ({diff}); a file holds one schema, so nothing "
                              "of this batch was written")
        if self._writer is None:
            with self._io("create the output file"):
                self._start()
        with self._io(lambda: f"write {rb.num_rows} rows (from {batch.where(0)})"):
            self._writer.write_batch(rb)
        self.rows_written += rb.num_rows

    def flush(self) -> dict[str, Any]:
        """Commit what was written since the last flush as the next part file."""
        if self._direct:
            if not is_discard(self.where):
                raise ConfigError(f"{self.path}: is a {self._direct}: with checkpoints a file sink "
                                  "writes a folder of part files, which it cannot be")
            return {"device": self.where}  # discarded: nothing to commit or to cut on resume
        with self._io(f"commit part file {self._committed}"):
            return self._flush()

    def _flush(self) -> dict[str, Any]:
        if not self._folder:
            self._folder = True
            self.fs.create_dir(self.where, recursive=True)
        if self._writer is not None:
            self._commit(self._part_path(self._committed), durable=self.durable)
            self._committed += 1
        return {"parts": self._committed}

    def close(self) -> None:
        if self._writer is None:
            return
        if self._direct:
            with self._io("finish writing"):
                self._writer.close()
                self._stream.close()
            self._writer = self._stream = None
        elif self._folder:
            self.flush()
        else:
            with self._io("finish the output file"):
                self._commit(self.where, durable=False)

    @contextlib.contextmanager
    def _io(self, what: str | Callable[[], str]) -> Iterator[None]:
        """Turn an operating-system error into one line naming the path and the step."""
        try:
            yield
        except OSError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SinkError(f"{self.path}: cannot {what if isinstance(what, str) else what()}: "
                            f"{reason}") from exc

    # -- files -----------------------------------------------------------------------
    def _part_path(self, n: int) -> str:
        return f"{self.where}/part-{n:05d}{self.extension}"

    def _single_tmp(self) -> str:
        parent, base = self.where.rsplit("/", 1)
        return f"{parent}/.{base}.inprogress"

    def _start(self) -> None:
        if self._direct:
            self._tmp = self.where  # written in place: a FIFO or device is never renamed over
        elif self._folder:
            self.fs.create_dir(self.where, recursive=True)
            self._tmp = f"{self.where}/.part-{self._committed:05d}{self.extension}.inprogress"
        else:
            self.fs.create_dir(self.where.rsplit("/", 1)[0], recursive=True)
            self._tmp = self._single_tmp()
        # a discard device swallows the bytes anyway; counting them keeps writers that
        # need the position (Arrow IPC's footer) working, where the null device says 0
        if self._direct:
            self._stream = pa.MockOutputStream() if is_discard(self.where) else \
                pa.PythonFile(_Counted(self.where), mode="w")
        else:
            self._stream = self.fs.open_output_stream(self._tmp)
        try:
            self._writer = self._new_writer(self._stream, self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            self._stream.close()
            raise SchemaError(f"{self.path}: cannot write this schema as "
                              f"{self.extension[1:]}: {exc}") from exc

    def _commit(self, final: str, durable: bool = True) -> None:
        """Close the in-progress file and rename it to ``final``.

        ``durable`` fsyncs the file before and the folder after the rename: a part
        counted by a checkpoint must survive a power cut. A run without checkpoints
        promises no more than any file writer, and its single file skips the fsyncs.
        """
        self._writer.close()
        self._stream.close()
        self._writer = self._stream = None
        if durable and self._local:
            fsync_path(self._tmp)
        self.fs.move(self._tmp, final)
        if durable and self._local:
            fsync_path(os.path.dirname(final))

    def _remove(self, path: str) -> None:
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)


class _Counted:
    """A FIFO or device opened for writing that counts what was written: Parquet and Arrow
    IPC writers ask for the position, which ``lseek`` cannot give on a pipe."""

    def __init__(self, path: str):
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close(), like any stream
        self._written = 0

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed
