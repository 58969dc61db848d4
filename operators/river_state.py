"""Checkpoint River estimators without pickle: objects become a tree of plain values.

River models are arbitrary Python objects (dicts of dicts, ``collections`` containers,
``random.Random``, NumPy arrays, Rust/Cython extension types). :func:`encode` walks one
the way pickle does (``__reduce_ex__(4)``: a constructor, its arguments, then the
state), but writes a tree of dicts, lists, numbers, strings and arrays that
:mod:`stream.state` stores as JSON + ``.npz``. :func:`decode` rebuilds it, calling only

- classes whose module is ``river`` or ``river.*`` (and River's Cython
  ``__pyx_unpickle_*`` reconstructors),
- an explicit allowlist: ``copyreg.__newobj__``/``_reconstructor``, ``collections``
  containers, builtin containers and scalars, ``functools.partial``, NumPy arrays,
  dtypes, scalars and random generators (through their state, never their pickle),
  ``random.Random`` (through ``getstate``/``setstate``, bit-exact).

Functions may appear as *values* (a ``defaultdict`` factory, a distance function in a
``functools.partial``) when they are River's, builtin, ``math`` or ``operator``
functions. Anything else (a lambda, a class from another module) fails on save with an
error naming where it sits in the model, and on load with :class:`CheckpointError`.
Shared references and cycles survive (a memo, like pickle's), so a pipeline's cached
last step stays the same object as the step itself. Every mutable object is one entry
of a flat table and refers to others by index, so the tree stays shallow however deep
the model nests (a Hoeffding tree's splitter grown from sorted data is hundreds deep).

Limits: a model that keys its state by ``id()`` of its own objects
(``feature_extraction.RandomTreesEmbedding``) cannot be restored, by this codec or by
pickle; unseeded models (``seed=None``) continue with fresh randomness.

Example:
    >>> from river import anomaly
    >>> from stream import state as codec
    >>> from operators.river_state import encode, decode
    >>> model = anomaly.HalfSpaceTrees(seed=7)
    >>> xs = [{"a": i % 7 / 7, "b": i % 3 / 3} for i in range(60)]
    >>> for x in xs[:40]:
    ...     model.learn_one(x)
    >>> restored = decode(codec.loads(*codec.dumps(encode(model))))
    >>> [model.score_one(x) for x in xs[40:]] == [restored.score_one(x) for x in xs[40:]]
    True
    >>> encode({"f": lambda x: x})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    stream.errors.CheckpointError: cannot checkpoint model['f']: function ...<lambda> cannot ...
"""

from __future__ import annotations

import copyreg
import importlib
import random
import types
from typing import Any

import numpy as np

from stream.errors import CheckpointError

_TAG = "~"
FORMAT = "hebbstream-river-state/1"
_SCALARS = (type(None), bool, int, float, str, bytes)
# Callables decode may call: "module:qualname".
_CALL_ALLOW = frozenset({
    "copyreg:__newobj__", "copyreg:__newobj_ex__", "copyreg:_reconstructor",
    "collections:defaultdict", "collections:deque", "collections:Counter",
    "collections:OrderedDict",
    "functools:partial", "random:Random", "statistics:NormalDist",
    # a bound method is rebuilt as getattr(instance, name); both come from the allowlist
    "builtins:getattr",
    *(f"builtins:{n}" for n in ("object", "list", "dict", "set", "frozenset", "tuple", "int",
                                "float", "complex", "str", "bytes", "bytearray", "bool", "slice",
                                "range", "iter")),
})
# Modules whose functions may be stored as values (never called on load).
_VALUE_MODULES = frozenset({"math", "operator", "_operator"})
_NUMPY_VALUES = frozenset({"ones", "zeros", "empty", "full", "eye", "identity", "arange", "array",
                           "asarray"})
_VALUE_ALLOW = frozenset({*(f"builtins:{n}" for n in ("abs", "max", "min", "sum", "len", "round",
                                                      "pow")),
                          "copy:copy", "copy:deepcopy"})
_MODULES = frozenset({"builtins", "collections", "functools", "copyreg", "random", "numpy",
                      "statistics", "copy", *_VALUE_MODULES})
_BIT_GENERATORS = frozenset({"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"})
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType)


def _is_river(module: str) -> bool:
    return module == "river" or module.startswith("river.")


def _allowed(module: str, qualname: str, obj: Any, call: bool) -> bool:
    name = f"{module}:{qualname}"
    if name in _CALL_ALLOW:
        return True
    if _is_river(module):
        return not call or isinstance(obj, type) \
            or qualname.rsplit(".", 1)[-1].startswith("__pyx_unpickle_")
    if call:
        return False
    if name in _VALUE_ALLOW or module in _VALUE_MODULES:
        return True
    if module == "numpy":  # scalar types, and array constructors such as a partial(numpy.ones)
        return (isinstance(obj, type) and issubclass(obj, np.generic)) or qualname in _NUMPY_VALUES
    return False


def _resolve(module: str, qualname: str) -> Any:
    """The object named ``module:qualname``, only where that is its own home.

    Walking through other modules (``river.x:os.system``) or finding an object that
    was imported into ``module`` from elsewhere is refused: the name must be the
    object's ``__module__`` and ``__qualname__``.
    """
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        if part.startswith("<") or not isinstance(obj, (type, types.ModuleType)):
            raise AttributeError(qualname)
        if isinstance(obj, types.ModuleType) and obj.__name__ != module:
            raise AttributeError(qualname)
        obj = getattr(obj, part)
    if getattr(obj, "__module__", None) != module or \
            getattr(obj, "__qualname__", getattr(obj, "__name__", None)) != qualname:
        raise AttributeError(f"{module}:{qualname} is not defined there")
    return obj


def _path(node: tuple | None) -> str:
    """Format a lazily built path: nested ``(parent, kind, part)`` tuples."""
    parts = []
    while node is not None:
        node, kind, part = node
        parts.append(f".{part}" if kind == "." else f"[{part!r}]")
    return "model" + "".join(reversed(parts))


def _ref(i: int) -> dict:
    return {_TAG: "r", "i": i}


class _Encoder:
    """Breadth-first walk: every mutable object becomes one entry of a flat table.

    Values inside an entry refer to other entries by index, so the tree's nesting (and
    the recursion needed to write or read it) stays shallow however deep the model is.
    """

    def __init__(self) -> None:
        # id -> (index, obj): the object is kept alive so its id is never reused meanwhile
        self.memo: dict[int, tuple[int, Any]] = {}
        self.entries: list[Any] = []
        self.queue: list[tuple[int, Any, tuple | None]] = []

    def fail(self, path: tuple | None, what: str) -> CheckpointError:
        return CheckpointError(f"cannot checkpoint {_path(path)}: {what}")

    def run(self, obj: Any) -> dict:
        root = self.value(obj, None)
        done = 0
        while done < len(self.queue):
            i, item, path = self.queue[done]
            self.entries[i] = self.entry(item, path)
            done += 1
        return {"format": FORMAT, "root": root, "objects": self.entries}

    def global_name(self, obj: Any, path: tuple | None, call: bool) -> str:
        module = getattr(obj, "__module__", None) or ""
        qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "")
        label = f"{type(obj).__name__} {module}.{qualname}"
        try:
            found = _resolve(module, qualname)
        except (ImportError, AttributeError, ValueError):
            found = None
        if found is not obj:
            raise self.fail(path, f"{label} cannot be found again by name (a lambda, a local "
                                  "or a dynamically made object); use a named, module-level one")
        if not _allowed(module, qualname, obj, call):
            raise self.fail(path, f"{label} is not allowed in a checkpoint (only river.* classes "
                                  "and functions, builtin containers, collections, numpy and math)")
        return f"{module}:{qualname}"

    def value(self, obj: Any, path: tuple | None) -> Any:
        """Immutable values inline; anything else becomes an entry, referred to by index."""
        t = type(obj)
        if t in _SCALARS:
            return obj
        seen = self.memo.get(id(obj))
        if seen is not None:
            return _ref(seen[0])
        if t is tuple:
            return {_TAG: "t", "v": [self.value(v, (path, "[", i)) for i, v in enumerate(obj)]}
        if t is frozenset:
            return {_TAG: "frozenset", "v": [self.value(v, (path, "[", "item")) for v in obj]}
        if isinstance(obj, np.generic):
            return {_TAG: "np", "v": np.asarray(obj)}
        if isinstance(obj, np.dtype):
            if obj.fields is not None:
                raise self.fail(path, f"structured dtype {obj} is not supported")
            return {_TAG: "dtype", "v": obj.str}
        if isinstance(obj, (type, *_FUNCTION_TYPES)):
            return {_TAG: "g", "v": self.global_name(obj, path, call=False)}
        i = len(self.entries)
        self.memo[id(obj)] = (i, obj)
        self.entries.append(None)
        self.queue.append((i, obj, path))
        return _ref(i)

    def pairs(self, items: Any, path: tuple | None) -> list:
        return [[self.value(k, (path, "[", "key")), self.value(v, (path, "[", k))]
                for k, v in items]

    def members(self, d: dict, path: tuple | None) -> Any:
        """A dict's members inline (for an object's ``__dict__``), as a dict or as pairs."""
        if _TAG not in d and all(type(k) is str for k in d):
            return {k: self.value(v, (path, ".", k)) for k, v in d.items()}
        return {_TAG: "d", "v": self.pairs(d.items(), path)}

    def entry(self, obj: Any, path: tuple | None) -> Any:
        t = type(obj)
        if t is list:
            return [self.value(v, (path, "[", i)) for i, v in enumerate(obj)]
        if t is dict:
            if _TAG not in obj and all(type(k) is str for k in obj):
                return {k: self.value(v, (path, "[", k)) for k, v in obj.items()}
            return {_TAG: "d", "v": self.pairs(obj.items(), path)}
        if t is set:
            return {_TAG: "set", "v": [self.value(v, (path, "[", "item")) for v in obj]}
        if t is np.ndarray:
            if obj.dtype.hasobject:
                return {_TAG: "oa", "shape": list(obj.shape),
                        "v": [self.value(v, (path, "[", i)) for i, v in enumerate(obj.ravel())]}
            # keep the memory layout (C or Fortran order): BLAS results depend on it
            return np.array(obj, copy=True, order="K")
        if t is random.Random:
            version, internal, gauss = obj.getstate()
            return {_TAG: "random", "version": version, "gauss": gauss,
                    "state": np.array(internal, dtype=np.uint32)}
        if t is np.random.Generator:
            bg = obj.bit_generator
            # generator states are dicts of ints and arrays, stored as they are
            return {_TAG: "generator", "bit_generator": type(bg).__name__, "state": bg.state}
        if t is np.random.RandomState:
            return {_TAG: "randomstate", "state": obj.get_state(legacy=False)}
        return self.reduce(obj, path)

    def reduce(self, obj: Any, path: tuple | None) -> dict:
        try:
            rv = obj.__reduce_ex__(4)
        except Exception as exc:
            raise self.fail(path, f"a {type(obj).__module__}.{type(obj).__qualname__} cannot be "
                                  f"saved: {exc}") from exc
        if isinstance(rv, str):  # a module-level singleton
            return {_TAG: "g", "v": self.global_name(obj, path, call=False)}
        func, args, state, listitems, dictitems, setter = (*rv, None, None, None, None)[:6]
        if func is copyreg.__newobj__:
            node: dict[str, Any] = {_TAG: "new", "c": self.global_name(args[0], path, call=True)}
            args = args[1:]
        else:
            node = {_TAG: "o", "f": self.global_name(func, path, call=True)}
        if args:
            node["a"] = [self.value(a, (path, "[", f"arg{i}")) for i, a in enumerate(args)]
        if type(state) is dict:
            node["s"] = self.members(state, path)
        elif type(state) is tuple and len(state) == 2 and all(
                s is None or type(s) is dict for s in state):  # (__dict__, slots)
            node["s"] = {_TAG: "t",
                         "v": [None if s is None else self.members(s, path) for s in state]}
        elif state is not None:
            node["s"] = self.value(state, (path, ".", "__state__"))
        if listitems is not None:
            node["l"] = [self.value(v, (path, "[", i)) for i, v in enumerate(listitems)]
        if dictitems is not None:
            node["d"] = self.pairs(dictitems, path)
        if setter is not None:
            node["ss"] = self.global_name(setter, path, call=True)
        return node


def encode(obj: Any) -> dict:
    """A tree of plain values (for :mod:`stream.state`) that :func:`decode` turns back into ``obj``.

    Raises :class:`CheckpointError` naming the attribute path of anything not allowed.
    """
    return _Encoder().run(obj)


class _Decoder:
    """Two passes over the flat table: make every object, then fill them in reverse order
    (an object's members were first met after it, so they are complete before it is)."""

    def __init__(self, entries: list) -> None:
        self.entries = entries
        self.objs: list[Any] = [None] * len(entries)
        self.stage = [0] * len(entries)  # 0 new, 1 creating, 2 created, 3 filling, 4 done

    def fail(self, i: int | None, what: str) -> CheckpointError:
        return CheckpointError(f"river state{'' if i is None else f' object #{i}'}: {what}")

    def lookup(self, name: Any, i: int | None, call: bool) -> Any:
        if not isinstance(name, str) or ":" not in name:
            raise self.fail(i, f"bad global reference {name!r}")
        module, qualname = name.split(":", 1)
        if not (_is_river(module) or module in _MODULES):
            raise self.fail(i, f"{module}.{qualname} is not allowed: checkpoints only rebuild "
                               "river.* classes and an allowlist of builtin types")
        try:
            obj = _resolve(module, qualname)
        except (ImportError, AttributeError) as exc:
            raise self.fail(i, f"{module}.{qualname} does not exist in this installation: "
                               f"{exc}") from exc
        if not _allowed(module, qualname, obj, call):
            raise self.fail(i, f"{module}.{qualname} is not allowed "
                               f"{'to be called ' if call else ''}in a checkpoint")
        return obj

    def run(self, root: Any) -> Any:
        for i in range(len(self.entries)):
            self.create(i)
        for i in reversed(range(len(self.entries))):
            self.fill(i, complete=False)
        return self.value(root, None, complete=False)

    # -- values inside entries --------------------------------------------------------
    def value(self, v: Any, i: int | None, complete: bool) -> Any:
        t = type(v)
        if t in _SCALARS:
            return v
        if t is not dict or _TAG not in v:
            raise self.fail(i, f"unexpected {t.__name__} where a value belongs")
        tag = v[_TAG]
        if tag == "r":
            j = v["i"]
            if type(j) is not int or not 0 <= j < len(self.entries):
                raise self.fail(i, f"reference to object #{j}, which does not exist")
            self.create(j)
            if complete and self.stage[j] == 2 and self.is_container(j):
                # a constructor copies the containers it is given (Counter(dict), VectorDict):
                # fill them first; objects are passed as made, as pickle's memo does
                self.fill(j, complete=True)
            return self.objs[j]
        if tag == "t":
            return tuple(self.value(x, i, complete) for x in v["v"])
        if tag == "frozenset":
            return frozenset(self.value(x, i, complete) for x in v["v"])
        if tag == "np":
            return np.asarray(v["v"])[()]
        if tag == "dtype":
            return np.dtype(str(v["v"]))
        if tag == "g":
            return self.lookup(v["v"], i, call=False)
        raise self.fail(i, f"unknown value type {tag!r}")

    def is_container(self, j: int) -> bool:
        e = self.entries[j]
        return type(e) is list or (type(e) is dict and e.get(_TAG) in (None, "d", "set", "oa"))

    # -- pass 1: make the objects ---------------------------------------------------------
    def create(self, i: int) -> None:
        if self.stage[i] >= 2:
            return
        if self.stage[i] == 1:
            raise self.fail(i, "refers to itself through its constructor arguments")
        self.stage[i] = 1
        e = self.entries[i]
        try:
            self.objs[i] = self.make(e, i)
        except CheckpointError:
            raise
        except Exception as exc:
            raise self.fail(i, f"cannot be rebuilt: {type(exc).__name__}: {exc}") from exc
        self.stage[i] = 2

    def make(self, e: Any, i: int) -> Any:
        t = type(e)
        if t is list:
            return []
        if t is np.ndarray:
            return e if e.flags.writeable else e.copy()
        if t is not dict:
            raise self.fail(i, f"unexpected {t.__name__} entry")
        tag = e.get(_TAG)
        if tag is None or tag == "d":
            return {}
        if tag == "set":
            return set()
        if tag == "oa":
            return np.empty(e["shape"], dtype=object)
        if tag == "random":
            rng = random.Random()
            internal = tuple(int(v) for v in np.asarray(e["state"]).tolist())
            rng.setstate((e["version"], internal, e["gauss"]))
            return rng
        if tag == "generator":
            name = e["bit_generator"]
            if name not in _BIT_GENERATORS:
                raise self.fail(i, f"unknown numpy bit generator {name!r}")
            gen = np.random.Generator(getattr(np.random, name)())
            gen.bit_generator.state = e["state"]
            return gen
        if tag == "randomstate":
            rs = np.random.RandomState()
            rs.set_state(e["state"])
            return rs
        if tag == "g":
            return self.lookup(e["v"], i, call=False)
        args = [self.value(a, i, complete=True) for a in e.get("a", [])]
        if tag == "new":
            cls = self.lookup(e["c"], i, call=True)
            if not isinstance(cls, type):
                raise self.fail(i, f"{e['c']} is not a class")
            return cls.__new__(cls, *args)
        if tag == "o":
            func = self.lookup(e["f"], i, call=True)
            if func is getattr:
                return self.bound_method(args, i)
            return func(*args)
        raise self.fail(i, f"unknown entry type {tag!r}")

    def bound_method(self, args: list, i: int) -> Any:
        """``getattr(obj, name)`` only as pickle uses it: to rebuild a bound method."""
        if len(args) != 2 or not isinstance(args[1], str) or args[1].startswith("__"):
            raise self.fail(i, "getattr is only allowed to rebuild a method")
        method = getattr(*args)
        if not isinstance(method, (types.MethodType, types.BuiltinMethodType)) or \
                getattr(method, "__self__", None) is not args[0]:
            raise self.fail(i, f"getattr(..., {args[1]!r}) is not a method of the object")
        return method

    # -- pass 2: fill them ------------------------------------------------------------------
    def fill(self, i: int, complete: bool) -> None:
        self.create(i)
        if self.stage[i] >= 3:
            return
        self.stage[i] = 3
        try:
            self.fill_entry(self.entries[i], self.objs[i], i, complete)
        except CheckpointError:
            raise
        except Exception as exc:
            raise self.fail(i, f"cannot be restored: {type(exc).__name__}: {exc}") from exc
        self.stage[i] = 4

    def pairs(self, target: Any, pairs: list, i: int, complete: bool) -> None:
        for k, v in pairs:
            target[self.value(k, i, complete)] = self.value(v, i, complete)

    def members(self, s: Any, i: int, complete: bool) -> dict:
        if type(s) is dict and _TAG not in s:
            return {k: self.value(v, i, complete) for k, v in s.items()}
        if type(s) is dict and s[_TAG] == "d":
            out: dict = {}
            self.pairs(out, s["v"], i, complete)
            return out
        raise self.fail(i, "bad object state")

    def fill_entry(self, e: Any, obj: Any, i: int, complete: bool) -> None:
        if type(e) is list:
            obj.extend(self.value(v, i, complete) for v in e)
            return
        if type(e) is not dict:
            return
        tag = e.get(_TAG)
        if tag is None:
            for k, v in e.items():
                obj[k] = self.value(v, i, complete)
        elif tag == "d":
            self.pairs(obj, e["v"], i, complete)
        elif tag == "set":
            obj.update(self.value(v, i, complete) for v in e["v"])
        elif tag == "oa":
            flat = obj.reshape(-1)
            for j, v in enumerate(e["v"]):
                flat[j] = self.value(v, i, complete)
        elif tag in ("new", "o"):
            self.build(e, obj, i, complete)

    def build(self, e: dict, obj: Any, i: int, complete: bool) -> None:
        """Pickle's BUILD, APPENDS and SETITEMS steps."""
        if "s" in e:
            s = e["s"]
            if type(s) is dict and s.get(_TAG) in (None, "d"):
                state: Any = self.members(s, i, complete)
            elif type(s) is dict and s.get(_TAG) == "t" and len(s["v"]) == 2 and all(
                    x is None or type(x) is dict for x in s["v"]):
                state = tuple(None if x is None else self.members(x, i, complete) for x in s["v"])
            else:
                state = self.value(s, i, complete)
            if "ss" in e:
                self.lookup(e["ss"], i, call=True)(obj, state)
            elif (setstate := getattr(obj, "__setstate__", None)) is not None:
                setstate(state)
            else:
                slots = None
                if isinstance(state, tuple) and len(state) == 2:
                    state, slots = state
                if state:
                    obj.__dict__.update(state)
                for k, v in (slots or {}).items():
                    setattr(obj, k, v)
        if "l" in e:
            items = [self.value(v, i, complete) for v in e["l"]]
            if hasattr(obj, "extend"):
                obj.extend(items)
            else:
                for v in items:
                    obj.append(v)
        if "d" in e:
            self.pairs(obj, e["d"], i, complete)


def decode(tree: Any) -> Any:
    """Rebuild the object encoded by :func:`encode`; raises :class:`CheckpointError` on
    anything outside the allowlist or a malformed tree. Never unpickles."""
    if not isinstance(tree, dict) or tree.get("format") != FORMAT or \
            not isinstance(tree.get("objects"), list):
        raise CheckpointError(f"river state: not a {FORMAT} tree")
    return _Decoder(tree["objects"]).run(tree["root"])
