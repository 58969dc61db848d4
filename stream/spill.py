"""Idle keys out of memory: a per-key operator keeps at most ``max_resident_keys`` keys resident.

Like Flink's RocksDB state backend for keyed state larger than memory: when more than
``max_resident_keys`` keys are in memory after a micro-batch, the least recently used ones
are *spilled* (their state written to a file, then dropped from the operator), and a spilled
key is *restored* before the operator sees its next record. Outputs are the same as with
every key resident, event for event.

An operator takes part by implementing four hooks (declared on
:class:`~stream.operator.Operator`): ``resident_keys()``, ``key_state(key)`` (the state of
one resident key, a state dict), ``evict_key(key)`` and ``restore_key(key, state)``.
:class:`KeySpiller` does the rest: the LRU order, the files and the checkpoints.

Files. A spilled key's state goes through the pickle-free codec of :mod:`stream.state`
into one ``.npz`` file named ``<sha256 of the key>-<random token>.spill`` (never the key's
text), written on the checkpoint store's ``pyarrow.fs`` filesystem under
``<store>/spill/<operator index>/``, or, in a run without a checkpoint store, in a
temporary folder the operator owns (removed when it is garbage collected or the process
exits). Each spill writes a new file: a file, once written, never changes.

Checkpoints. An operator's checkpoint state is its resident keys' state plus, for each
spilled key, a reference ``[key, file name, sha256, bytes]`` to an immutable file written
(and, on a local disk, fsynced) before the checkpoint. A file stays on disk while a
checkpoint the store keeps may reference it, so resuming from any of them (after SIGKILL
too) restores exactly the state that checkpoint saw. Where the folder is temporary (a run
without a checkpoint store, or a store without a folder of its own, as Kafka's per-partition
one), the spilled keys' states are folded into the state instead. Loading a spill file checks its
name, size, SHA-256 and the key inside it, reads arrays with ``allow_pickle=False``, and
refuses anything else with a :class:`~stream.errors.CheckpointError` naming the file.

Example:
    >>> import numpy as np, pyarrow as pa
    >>> from stream import Batch, Operator
    >>> class Counts(Operator):
    ...     def __init__(self, max_resident_keys=None):
    ...         self.max_resident_keys, self.n = max_resident_keys, {}
    ...     def process(self, batch):
    ...         out = []
    ...         for k in batch.keys().tolist():
    ...             self.n[k] = self.n.get(k, 0) + 1
    ...             out.append(self.n[k])
    ...         return batch.with_columns({"count": np.array(out)})
    ...     def resident_keys(self): return list(self.n)
    ...     def key_state(self, key): return {"n": self.n[key]}
    ...     def evict_key(self, key): del self.n[key]
    ...     def restore_key(self, key, state): self.n[key] = state["n"]
    >>> op = Counts(max_resident_keys=1)
    >>> for keys in (["a", "b"], ["a"], ["b", "b"]):
    ...     out = op(Batch(pa.record_batch({"key": keys})))
    >>> out.numpy("count").tolist(), op.resident_keys(), spiller_of(op).spilled_keys()
    ([2, 3], ['b'], ['a'])
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from . import state as state_codec
from .checkpoint import SPILL_FOLDER
from .errors import CheckpointError, ConfigError

log = logging.getLogger("hebbstream")

FORMAT = "hebbstream-spill/1"
#: a spill file's name: 32 hex digits of the key's SHA-256, a dash, 16 hex digits of a random token
_NAME = re.compile(r"[0-9a-f]{32}-[0-9a-f]{16}\.spill")
_SHA = re.compile(r"[0-9a-f]{64}")
_TREE = "__tree__"


def check_limit(value: Any, owner: str) -> int | None:
    """``max_resident_keys`` as given to an operator: ``None`` (off) or an integer >= 1.

    >>> check_limit(2, "X"), check_limit(None, "X")
    (2, None)
    >>> check_limit(0, "X")
    Traceback (most recent call last):
    stream.errors.ConfigError: X: max_resident_keys must be an integer >= 1 (or None: every key stays in memory), got 0
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{owner}: max_resident_keys must be an integer >= 1 (or None: every key stays "
                          f"in memory), got {value!r}")
    return int(value)


def plain_key(key: Any) -> Any:
    """A key as the spiller keeps it: NumPy scalars as Python values (``np.int64(3)`` is ``3``)."""
    return key.item() if isinstance(key, np.generic) else key


def key_digest(key: Any) -> str:
    """32 hex digits of the SHA-256 of the key's codec encoding: a spill file's name, never the key text.

    >>> key_digest("a") == key_digest(np.str_("a")), len(key_digest(("host", 7)))
    (True, 32)
    """
    tree, arrays = state_codec.encode_state(plain_key(key))
    if arrays:
        raise TypeError(f"a stream key must be a string, number or tuple of those, got {type(key).__name__}")
    return hashlib.sha256(json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def encode_file(key: Any, state: dict[str, Any]) -> bytes:
    """One key's state as the bytes of a spill file (an ``.npz``: the codec's arrays and JSON tree)."""
    tree, arrays = state_codec.encode_state({"format": FORMAT, "key": plain_key(key), "state": state})
    buf = io.BytesIO()
    np.savez(buf, **{_TREE: np.frombuffer(json.dumps(tree, separators=(",", ":")).encode(), np.uint8)}, **arrays)
    return buf.getvalue()


def decode_file(data: bytes, key: Any, where: str) -> dict[str, Any]:
    """The state in spill file bytes ``data``, which must hold ``key``; never unpickles."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        tree = json.loads(arrays.pop(_TREE).tobytes())
        content = state_codec.decode_state(tree, arrays)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, EOFError) as exc:
        raise CheckpointError(f"spill file {where} cannot be decoded: {exc}") from exc
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise CheckpointError(f"spill file {where} is not a {FORMAT} file")
    if content.get("key") != plain_key(key):
        raise CheckpointError(f"spill file {where} holds key {content.get('key')!r}, expected {plain_key(key)!r}")
    if not isinstance(content.get("state"), dict):
        raise CheckpointError(f"spill file {where}: its state is a {type(content.get('state')).__name__}, "
                              "not a mapping")
    return content["state"]


@dataclass(frozen=True)
class SpillRef:
    """Where a spilled key's state is: a file name in the spill folder, its SHA-256 and size."""

    name: str
    sha256: str
    size: int


class SpillFolder:
    """A folder of spill files on a ``pyarrow.fs`` filesystem.

    ``durable``: files are fsynced before they count as written (a checkpoint may refer to
    them); ``owned``: a temporary folder, removed with the spiller that made it.
    """

    def __init__(self, fs: pafs.FileSystem, root: str, *, durable: bool, owned: bool = False):
        self.fs, self.root, self.durable, self.owned = fs, root.rstrip("/"), durable, owned
        self._local = isinstance(fs, pafs.LocalFileSystem)
        self._made = False   # created on the first write: a run that never spills leaves no folder

    @classmethod
    def temporary(cls) -> SpillFolder:
        return cls(pafs.LocalFileSystem(), tempfile.mkdtemp(prefix="hebbstream-spill-"), durable=False, owned=True)

    def path(self, name: str) -> str:
        if not _NAME.fullmatch(name):   # never a path: no separator, no "..", nothing but the pattern
            raise CheckpointError(f"spill folder {self.root}: {name!r} is not a spill file name")
        return f"{self.root}/{name}"

    def write(self, name: str, data: bytes) -> None:
        path = self.path(name)
        tmp = path + ".tmp"
        try:
            if not self._made:
                self.fs.create_dir(self.root, recursive=True)
                self._made = True
            if self._local:
                with open(tmp, "wb") as f:
                    f.write(data)
                    if self.durable:
                        f.flush()
                        os.fsync(f.fileno())
                os.replace(tmp, path)
                if self.durable:
                    fd = os.open(self.root, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            else:
                with self.fs.open_output_stream(tmp) as f:
                    f.write(data)
                self.fs.move(tmp, path)
        except OSError as exc:
            raise CheckpointError(f"cannot write spill file {path}: {getattr(exc, 'strerror', None) or exc}") \
                from exc

    def read(self, ref: SpillRef) -> bytes:
        path = self.path(ref.name)
        try:
            with self.fs.open_input_stream(path) as f:
                data = f.read()
        except OSError as exc:
            raise CheckpointError(f"spill file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") \
                from exc
        got = hashlib.sha256(data).hexdigest()
        if len(data) != ref.size or got != ref.sha256:
            raise CheckpointError(f"spill file {path} is corrupt: {len(data)} bytes with sha256 {got[:12]}…, "
                                  f"expected {ref.size} bytes with sha256 {ref.sha256[:12]}…")
        return data

    def delete(self, name: str) -> None:
        try:
            self.fs.delete_file(self.path(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("spill folder %s: cannot delete %s: %s", self.root, name, exc)


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class KeySpiller:
    """Keeps one operator's resident keys at most ``limit`` (see the module docstring).

    Args:
        op: the operator (it implements the four per-key hooks).
        limit: ``max_resident_keys``; ``None``: no key is spilled (keys a checkpoint left
            spilled are still restored on their next record).
    """

    def __init__(self, op: Any, limit: int | None) -> None:
        self.op, self.limit = op, limit
        self.lru: OrderedDict[Any, None] = OrderedDict()   # resident keys, least recently used first
        self.spilled: dict[Any, SpillRef] = {}
        self.folder: SpillFolder | None = None
        self.store: Any = None   # the checkpoint store the folder belongs to
        #: (newest complete checkpoint then, files named) at each checkpoint state taken; see _kept()
        self.history: list[tuple[int, frozenset[str]]] = []
        self.written: set[str] = set()      # files this process wrote: the only ones it deletes
        self.superseded: set[str] = set()   # written files whose key was restored since
        #: counters for metrics
        self.spills = self.restores = 0
        for key in op.resident_keys():
            self.lru[plain_key(key)] = None

    # -- where files go ------------------------------------------------------------------
    def bind(self, folder: SpillFolder, store: Any) -> None:
        """Spill into ``folder``, which belongs to checkpoint store ``store``."""
        if self.spilled:   # spilled elsewhere (an earlier run of this operator): bring them back first
            self.restore_keys(list(self.spilled))
        self.folder, self.store = folder, store
        self.history, self.written, self.superseded = [], set(), set()

    def _folder(self) -> SpillFolder:
        if self.folder is None:
            self.folder = SpillFolder.temporary()
            weakref.finalize(self, _remove_tree, self.folder.root)
        return self.folder

    # -- around a micro-batch -------------------------------------------------------------
    def before(self, batch: Any) -> None:
        """Restore the batch's spilled keys and mark its keys used, in order of their last row."""
        if self.limit is None and not self.spilled:
            return
        if batch.key_column not in batch:
            keys: list[Any] = [""]
        else:
            uniq, inverse = batch.key_codes()
            last = np.full(len(uniq), -1, dtype=np.int64)
            np.maximum.at(last, inverse, np.arange(len(inverse)))
            keys = [plain_key(k) for k in uniq[np.argsort(last, kind="stable")]]
        self.restore_keys([k for k in keys if k in self.spilled])
        lru = self.lru
        for key in keys:
            lru[key] = None
            lru.move_to_end(key)

    def after(self) -> None:
        """Spill the least recently used keys while more than ``limit`` are resident."""
        if self.limit is None:
            return
        while len(self.lru) > self.limit:
            key, _ = self.lru.popitem(last=False)
            self.spill(key)

    # -- one key ---------------------------------------------------------------------------
    def spill(self, key: Any) -> None:
        """Write ``key``'s state to a new file and drop it from the operator."""
        key = plain_key(key)
        data = encode_file(key, self.op.key_state(key))
        name = f"{key_digest(key)}-{os.urandom(8).hex()}.spill"
        self._folder().write(name, data)
        self.written.add(name)
        self.spilled[key] = SpillRef(name, hashlib.sha256(data).hexdigest(), len(data))
        self.lru.pop(key, None)
        self.op.evict_key(key)
        self.spills += 1

    def restore_keys(self, keys: Iterable[Any]) -> None:
        """Bring spilled ``keys`` back into the operator (their files are checked first)."""
        for key in keys:
            key = plain_key(key)
            ref = self.spilled[key]
            folder = self._folder()
            where = folder.path(ref.name)
            state = decode_file(folder.read(ref), key, where)
            try:
                self.op.restore_key(key, state)
            except CheckpointError as exc:
                raise CheckpointError(f"spill file {where} (key {key!r}): {exc}") from exc
            except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
                raise CheckpointError(f"spill file {where} (key {key!r}): {type(self.op).__name__} cannot load "
                                      f"its state: {type(exc).__name__}: {exc}") from exc
            del self.spilled[key]
            self.lru[key] = None
            self.restores += 1
            self._retire(ref.name)

    def _retire(self, name: str) -> None:
        """A file no longer current: delete it now unless a kept checkpoint may still name it."""
        if name not in self.written:
            return   # written before this process (a resumed checkpoint's): kept, never guessed about
        if any(name in refs for _, refs in self.history):
            self.superseded.add(name)
        else:
            self.folder.delete(name)
            self.written.discard(name)

    def _kept(self, complete: list[int]) -> list[tuple[int, frozenset[str]]]:
        """The history entries whose checkpoint may still be loaded.

        Entry ``j`` was taken when the newest complete checkpoint was ``base_j``; if it was
        saved, its number is in ``(base_j, base_j+1]``. So it was never saved when
        ``base_j+1 == base_j``, and it is pruned once ``base_j+1`` is older than every kept
        checkpoint. This holds however often the state is taken without being saved.
        """
        oldest = complete[0] if complete else None
        kept = [(b, refs) for (b, refs), (nb, _) in zip(self.history, self.history[1:])
                if nb != b and oldest is not None and nb >= oldest]
        return [*kept, self.history[-1]]

    def spilled_keys(self) -> list[Any]:
        return list(self.spilled)

    # -- checkpoints ------------------------------------------------------------------------
    def state(self, resident: dict[str, Any]) -> dict[str, Any]:
        """The operator's checkpoint state: ``resident`` (its own state_dict) plus the spilled keys.

        Spilled keys are references to their files when the folder belongs to a checkpoint
        store; in a temporary folder (no store: the state may go anywhere) their states are
        folded in (``inline``).
        """
        out = {"format": FORMAT, "resident": resident, "order": list(self.lru), "spilled": [], "inline": []}
        if self.store is None:
            folder = self.folder
            out["inline"] = [[key, decode_file(folder.read(r), key, folder.path(r.name))]
                             for key, r in self.spilled.items()]
            return out
        complete = self.store.complete()
        self.history.append((complete[-1] if complete else 0, frozenset(r.name for r in self.spilled.values())))
        self.history = self._kept(complete)
        still = set().union(*(refs for _, refs in self.history))
        for name in [n for n in self.superseded if n not in still]:
            self.superseded.discard(name)
            self.written.discard(name)
            self.folder.delete(name)
        out["spilled"] = [[key, r.name, r.sha256, r.size] for key, r in self.spilled.items()]
        return out

    def load(self, state: dict[str, Any], where: str) -> None:
        """Take the spilled keys of checkpoint state ``state`` (the resident ones are loaded already)."""
        entries, inline = state.get("spilled"), state.get("inline")
        if not isinstance(entries, list) or not isinstance(inline, list):
            raise CheckpointError(f"{where}: 'spilled' or 'inline' is not a list")
        if entries and self.store is None:
            raise CheckpointError(f"{where}: the checkpoint has spilled keys; they load only from the spill "
                                  "folder of its checkpoint store")
        for i, entry in enumerate(inline):   # folded-in keys: resident again
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict)):
                raise CheckpointError(f"{where}: inline entry {i} is not [key, state]")
            try:
                self.op.restore_key(plain_key(entry[0]), entry[1])
            except (KeyError, ValueError, TypeError, IndexError, AttributeError, CheckpointError) as exc:
                raise CheckpointError(f"{where}: inline entry {i} (key {entry[0]!r}): {type(exc).__name__}: "
                                      f"{exc}") from exc
        spilled: dict[Any, SpillRef] = {}
        resident = {plain_key(k) for k in self.op.resident_keys()}
        for i, entry in enumerate(entries):
            if not (isinstance(entry, list) and len(entry) == 4):
                raise CheckpointError(f"{where}: spilled entry {i} is not [key, file, sha256, bytes]")
            key, name, sha, size = entry
            try:
                digest = key_digest(key)
            except TypeError as exc:
                raise CheckpointError(f"{where}: spilled entry {i}: {exc}") from exc
            if not (isinstance(name, str) and _NAME.fullmatch(name) and name.startswith(digest)):
                raise CheckpointError(f"{where}: spilled entry {i} (key {key!r}): {name!r} is not the spill file "
                                      "name of this key")
            if not (isinstance(sha, str) and _SHA.fullmatch(sha)) or not isinstance(size, int) \
                    or isinstance(size, bool) or size < 0:
                raise CheckpointError(f"{where}: spilled entry {i} (key {key!r}): bad sha256 or size")
            key = plain_key(key)
            if key in resident or key in spilled:
                raise CheckpointError(f"{where}: key {key!r} is both resident and spilled, or spilled twice")
            spilled[key] = SpillRef(name, sha, size)
        self._check_present(spilled, where)
        order = state.get("order")
        self.lru = OrderedDict((plain_key(k), None) for k in order if plain_key(k) in resident) \
            if isinstance(order, list) else OrderedDict()
        for key in resident:
            self.lru[key] = None
        self.spilled = spilled

    def _check_present(self, spilled: dict[Any, SpillRef], where: str) -> None:
        """Refuse a checkpoint whose spill files are missing or of another size now, not at the key's next record
        (the contents are checked against their SHA-256 when read)."""
        folder = self.folder
        paths = [folder.path(r.name) for r in spilled.values()]
        try:
            infos = folder.fs.get_file_info(paths) if paths else []
        except OSError as exc:
            raise CheckpointError(f"{where}: spill folder {folder.root} cannot be read: {exc}") from exc
        for (key, ref), path, info in zip(spilled.items(), paths, infos):
            if info.type != pafs.FileType.File:
                raise CheckpointError(f"{where}: spill file {path} of key {key!r} is missing")
            if info.size != ref.size:
                raise CheckpointError(f"{where}: spill file {path} of key {key!r} is {info.size} bytes, "
                                      f"the checkpoint says {ref.size}")

    def reset(self) -> None:
        """The operator loaded a state without spilled keys: every key it holds is resident."""
        for name in [r.name for r in self.spilled.values()]:
            self._retire(name)
        self.spilled = {}
        self.lru = OrderedDict((plain_key(k), None) for k in self.op.resident_keys())


# -- what the engine calls -------------------------------------------------------------------
def supports_spill(op: Any) -> bool:
    """Whether ``op`` implements the per-key hooks (overrides ``Operator.key_state``, which is marked)."""
    method = getattr(type(op), "key_state", None)
    return callable(method) and not getattr(method, "not_per_key", False)


def spiller_of(op: Any, create: bool = False) -> KeySpiller | None:
    """``op``'s spiller: made on first use when ``op.max_resident_keys`` is set (or ``create``)."""
    spiller = op.__dict__.get("_spiller")
    if spiller is None and (create or getattr(op, "max_resident_keys", None) is not None) and supports_spill(op):
        spiller = op._spiller = KeySpiller(op, getattr(op, "max_resident_keys", None))
        home = op.__dict__.get("_spill_home")
        if home is not None:
            spiller.bind(*home)
    return spiller


def bind(operators: Iterable[Any], store: Any) -> None:
    """Spill the per-key ``operators`` of a run into ``store``'s folder ``spill/<index>``.

    ``store``: the run's :class:`~stream.checkpoint.CheckpointStore` (``None``, or a store
    without one folder of its own: each operator spills into a temporary folder, and its
    checkpoint state folds the spilled keys in). The store deletes the folder with its
    checkpoints (``clear``) or when it holds none (``clean``).
    """
    if store is None or not isinstance(getattr(store, "root", None), str) or not hasattr(store, "fs"):
        return
    for i, op in enumerate(operators):
        if supports_spill(op):
            spiller = op.__dict__.get("_spiller")
            if spiller is not None and spiller.spilled:   # an earlier run's keys, maybe in this very folder
                spiller.restore_keys(list(spiller.spilled))
            folder = SpillFolder(store.fs, f"{store.root}/{SPILL_FOLDER}/{i}", durable=True)
            op._spill_home = (folder, store)
            if spiller is not None:
                spiller.bind(folder, store)


def state_of(op: Any) -> Any:
    """``op``'s checkpoint state: its ``state_dict()``, wrapped with its spilled keys when it has some."""
    resident = op.state_dict()
    spiller = op.__dict__.get("_spiller")
    if spiller is None:
        return resident
    state = spiller.state(resident)
    return state if state["spilled"] or state["inline"] else resident


def is_spill_state(state: Any) -> bool:
    return isinstance(state, dict) and state.get("format") == FORMAT and set(state) == {
        "format", "resident", "order", "spilled", "inline"}


def load_into(op: Any, state: Any, where: str = "checkpoint") -> None:
    """Load :func:`state_of`'s ``state`` into ``op``: its resident keys now, spilled ones on their next record."""
    if not is_spill_state(state):
        op.load_state_dict(state)
        spiller = op.__dict__.get("_spiller")
        if spiller is not None:
            spiller.reset()
        return
    if not supports_spill(op):
        raise CheckpointError(f"{where}: {getattr(op, 'name', type(op).__name__)} keeps no per-key state, "
                              "but the checkpoint holds spilled keys for it")
    op.load_state_dict(state["resident"])
    spiller = spiller_of(op, create=True)
    spiller.reset()
    spiller.load(state, where)
