"""Checkpoint River estimators without pickle: objects become a tree of plain values.

River models are arbitrary Python objects (dicts of dicts, ``collections`` containers,
``random.Random``, NumPy arrays, Rust extension types). :func:`encode` walks one and
writes a tree of dicts, lists, numbers, strings and arrays that :mod:`stream.state`
stores as JSON + ``.npz``; :func:`decode` rebuilds it.

The guarantee: **decoding never calls a callable named by the file and never runs code
that is not River's or this module's.** A checkpoint is untrusted input (whoever can write
the folder can rewrite its SHA-256 manifest too), so the decoder is not a pickle VM. It
only ever makes

- plain values: numbers, strings, bytes, lists, dicts, sets, tuples, frozensets,
  ``collections`` ``defaultdict``/``Counter``/``OrderedDict``/``deque``, NumPy arrays
  (never of ``object`` dtype from the ``.npz``), NumPy scalars and dtypes, ``random.Random``
  and NumPy generators (through their state), list iterators, ``functools.partial``;
- River objects, as ``cls.__new__(cls)`` and then their state (``__setstate__`` where
  River defines one, else the instance ``__dict__`` and ``__slots__``; no dunder names),
  for ``cls`` a class defined under ``river.*`` (not ``river.datasets``, ``river.stream``,
  ``river.compat``, ``river.api``, ``river.checks``) that is a subclass of
  ``river.base.Base`` or one of :data:`HELPER_TYPES`, the helper types River models hold
  (tree nodes, micro-clusters, Rust statistics, ...). Rust types get the constructor
  arguments their pickle form has; :data:`CONSTRUCTED` lists the few River types (Rust
  ``VectorDict``, Holt-Winters components) whose pickle form calls the class itself.

Functions, classes and methods are never looked up by a name from the file: a value
that is a function or class must be one of :data:`NAMED_VALUES` (River's own defaults
that River models store: ``defaultdict`` factories, distance functions, ``stats.Var``, ...)
or one registered in code with :func:`register_callable`; a bound method must be one of
:data:`METHODS` (``PAClassifier.calc_tau``, ``Random.gauss`` in a partial, ...). Anything
else fails on save with an error naming where it sits in the model
(``model['FuncTransformer'].func``) and on load with :class:`CheckpointError`.
:func:`operators.river.shape.difference` then compares the decoded model with the one the
pipeline configures, so the file cannot choose the classes or parameters of the model.

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
    >>> from operators.river.state import encode, decode
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
    stream.errors.CheckpointError: cannot checkpoint model['f']: function ...<lambda> is not registered...
"""

from __future__ import annotations

import collections
import copyreg
import functools
import importlib
import math
import random
import re
import types
from typing import Any

import numpy as np

from stream.errors import CheckpointError

_TAG = "~"
FORMAT = "hebbstream-river-state/2"
_SCALARS = (type(None), bool, int, float, str, bytes)

#: Functions and classes a checkpoint may hold as values, by ``module:qualname``: what
#: River models store (found by encoding every River estimator after learning). Names the
#: installed River lacks are skipped.
NAMED_VALUES = (
    *(f"builtins:{n}" for n in ("bool", "dict", "float", "int", "set", "str", "tuple", "list",
                                "frozenset", "str.lower", "min", "max")),
    "river.metrics.mutual_info:_average_geometric", "river.metrics.mutual_info:_average_arithmetic",
    "collections:Counter", "collections:defaultdict", "collections:OrderedDict", "collections:deque",
    "copy:copy", "copy:deepcopy", "numpy:array", "numpy:ones", "numpy:zeros",
    "river._river_rust.vectordict:euclidean_distance_dict",
    "river._river_rust.vectordict:euclidean_distance_tuple",
    "river.utils.math:minkowski_distance",
    *(f"river.feature_extraction.vectorize:{n}" for n in (
        "strip_accents_unicode", "tokenize_using_regex_pattern", "remove_stop_words", "find_ngrams",
        "find_all_ngrams")),
    *(f"river.forest.online_extra_trees:ExtraTrees._detection_mode_{n}" for n in ("all", "drop", "off")),
    "river.naive_bayes.gaussian:GaussianNB._make_gaussian",
    *(f"river.tree.splitter.{m}._update_estimator_{n}" for m in ("ebst_splitter:EBSTNode",
                                                                 "nominal_splitter_reg:NominalSplitterReg")
      for n in ("univariate", "multivariate")),
    *(f"river.stats.{n}" for n in ("mean:Mean", "var:Var", "minimum:Min", "maximum:Max", "maximum:AbsMax",
                                   "minimum:RollingMin", "maximum:RollingMax", "maximum:RollingAbsMax",
                                   "quantile:Quantile", "iqr:IQR", "ewmean:EWMean", "ewvar:EWVar",
                                   "pearson:PearsonCorr", "cov:Cov")),
    "river.sketch.histogram:Histogram", "river.utils.rolling:Rolling", "river.proba.beta:Beta",
    "river.ensemble.streaming_random_patches:BaseSRPClassifier",
    "river.ensemble.streaming_random_patches:BaseSRPRegressor",
)
#: Bound methods a checkpoint may hold: ``class: methods`` (for instances of the class and
#: its subclasses; a classmethod is bound to the class itself).
METHODS = {
    "random:Random": ("gauss",),
    "river.base.base:Base": ("clone",),  # a bandit's reward factory
    "river.linear_model.pa:BasePA": ("_calc_tau_0", "_calc_tau_1", "_calc_tau_2"),
    "river.ensemble.bagging:LeveragingBaggingClassifier": (
        "_leveraging_bag", "_leveraging_bag_me", "_leveraging_bag_half", "_leveraging_bag_wt",
        "_leveraging_subag"),
    "river.feature_extraction.kernel_approx:RBFSampler": ("_random_weights",),
    "river.multiclass.occ:OutputCodeClassifier": ("_next_code",),
    "river.preprocessing.random_projection:GaussianRandomProjector": ("_rand_gauss",),
    "river.preprocessing.random_projection:SparseRandomProjector": ("_rand_weights_for_feature",),
    "river.tree.splitter.qo_splitter:Slot": ("_update_estimator_univariate", "_update_estimator_multivariate"),
    "river.preprocessing.scale_target:TargetStandardScaler": ("_scale", "_unscale"),
    "river.preprocessing.scale_target:TargetMinMaxScaler": ("_scale", "_unscale"),
}
#: River types that are not estimators (``river.base.Base``) but live inside their state.
HELPER_TYPES = frozenset({
    *(f"river._river_rust.stats:{n}" for n in ("RsEWMean", "RsEWVar", "RsIQR", "RsKurtosis", "RsPeakToPeak",
                                               "RsQuantile", "RsRollingIQR", "RsRollingPRAUC",
                                               "RsRollingQuantile", "RsRollingROCAUC", "RsSkew")),
    "river._river_rust.drift:AdaptiveWindowing", "river._river_rust.vectordict:VectorDict",
    "river.cluster.clustream:CluStreamMicroCluster", "river.cluster.dbstream:DBSTREAMMicroCluster",
    "river.cluster.denstream:DenStream.BufferItem", "river.cluster.odac:ODACCluster",
    "river.cluster.textclust:TextClust.Distances", "river.cluster.textclust:TextClust.MicroCluster",
    "river.forest.online_extra_trees:SubBaggingSampler", "river.imblearn.hard_sampling:Triplet",
    "river.rules.amrules:RegRule", "river.sketch.histogram:Bin", "river.tree.utils:GradHessStats",
    "river.utils.sorted_window:SortedWindow", "river.tree.splitter.ebst_splitter:EBSTNode",
    "river.tree.splitter.exhaustive_splitter:ExhaustiveNode", "river.tree.splitter.qo_splitter:FeatureQuantizer",
    "river.tree.splitter.qo_splitter:Slot", "river.neighbors.ann.nn_vertex:Vertex",
    "river.neighbors.base:FunctionWrapper", "river.time_series.snarimax:Differencer",
    "river.ensemble.streaming_random_patches:BaseSRPClassifier",
    "river.ensemble.streaming_random_patches:BaseSRPRegressor",
    "river.tree.losses:BinaryCrossEntropyLoss", "river.tree.losses:SquaredErrorLoss",
    *(f"river.tree.split_criterion.{n}" for n in (
        "gini_split_criterion:GiniSplitCriterion", "info_gain_split_criterion:InfoGainSplitCriterion",
        "hellinger_distance_criterion:HellingerDistanceCriterion",
        "variance_reduction_split_criterion:VarianceReductionSplitCriterion",
        "variance_ratio_split_criterion:VarianceRatioSplitCriterion",
        "intra_cluster_variance_reduction_split_criterion:IntraClusterVarianceReductionSplitCriterion")),
    *(f"river.time_series.holt_winters:{n}" for n in ("AdditiveLevel", "MultiplicativeLevel", "Trend",
                                                      "AdditiveSeason", "MultiplicativeSeason")),
    "statistics:NormalDist",  # a plain value (two floats) in HoeffdingAdaptiveTreeRegressor
})
#: River types whose pickle form calls the class with arguments (they set up internal
#: state in ``__init__``): rebuilt the same way, with decoded arguments of the listed types.
CONSTRUCTED: dict[str, tuple[tuple[type | None, ...], ...]] = {
    # VectorDict(data, default_factory, mask, copy)
    "river._river_rust.vectordict:VectorDict": ((dict, None), (callable, None), ("VectorDict", None), (bool,)),
    **{f"river.time_series.holt_winters:{n}": ((float, int),) for n in ("AdditiveLevel", "MultiplicativeLevel",
                                                                         "Trend")},
    **{f"river.time_series.holt_winters:{n}": ((float, int), (int,)) for n in ("AdditiveSeason",
                                                                                 "MultiplicativeSeason")},
}
_EXCLUDED = ("river.datasets", "river.stream", "river.compat", "river.api", "river.checks",
             "river.benchmarks")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_BIT_GENERATORS = frozenset({"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"})
_DTYPE_KINDS = frozenset("biufcmMSU")
_CALLABLE_TYPES = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                   types.MethodDescriptorType, types.WrapperDescriptorType, types.ModuleType,
                   types.MethodWrapperType, types.ClassMethodDescriptorType)
_LIST_ITERATOR = type(iter([]))


def _dotted(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', None) or '?'}"


def _import_name(name: str) -> Any:
    """The object at ``module:qualname``, for names written in this module (trusted)."""
    module, qualname = name.split(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, staticmethod):
        obj = obj.__func__
    return obj


def _named_table() -> dict[str, Any]:
    table = {}
    for name in NAMED_VALUES:
        try:
            table[name] = _import_name(name)
        except (ImportError, AttributeError):
            continue  # not in this River version: nothing to save or load by that name
    return table


_NAMED: dict[str, Any] = _named_table()
_NAME_OF: dict[int, str] = {id(v): k for k, v in _NAMED.items()}


def register_callable(name: str, fn: Any) -> None:
    """Allow ``fn`` (a function or class of yours) in checkpoints, stored as ``name``.

    A model holding a callable (``compose.FuncTransformer(f)``, a custom distance) can only
    be checkpointed when the callable is registered, by the same name, in the code that
    saves and in the code that loads; a checkpoint names it and never holds code.

    >>> from operators.river.state import register_callable, encode, decode
    >>> def double(x):
    ...     return {k: 2 * v for k, v in x.items()}
    >>> register_callable("example.double", double)
    >>> decode(encode({"f": double}))["f"] is double
    True
    """
    if not isinstance(name, str) or not name or not callable(fn):
        raise TypeError("register_callable(name, fn) takes a non-empty name and a callable")
    known = _NAMED.get(name)
    if known is not None and known is not fn:
        raise ValueError(f"{name!r} is already registered for {_dotted(known)}")
    if id(fn) in _NAME_OF and _NAME_OF[id(fn)] != name:
        raise ValueError(f"{_dotted(fn)} is already registered as {_NAME_OF[id(fn)]!r}")
    _NAMED[name] = fn
    _NAME_OF[id(fn)] = name


def _is_river(module: str) -> bool:
    return (module == "river" or module.startswith("river.")) and not module.startswith(_EXCLUDED)


_CLASSES: dict[str, type | None] = {}


def _class(name: Any) -> type | None:
    """The allowed class called ``module:qualname``, or ``None``.

    Only River modules (and ``statistics`` for ``NormalDist``) are imported; the name must
    be the class's own ``__module__`` and ``__qualname__`` (not one imported from elsewhere).
    """
    if not isinstance(name, str):
        return None
    if name in _CLASSES:
        return _CLASSES[name]
    cls = None
    module, _, qualname = name.partition(":")
    if (_is_river(module) or name in HELPER_TYPES) and _MODULE_NAME.fullmatch(module) \
            and _MODULE_NAME.fullmatch(qualname) and "__" not in qualname:
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = obj.__dict__.get(part) if isinstance(obj, (type, types.ModuleType)) else None
        except ImportError:
            obj = None
        if isinstance(obj, type) and obj.__module__ == module and obj.__qualname__ == qualname \
                and _allowed_class(obj):
            cls = obj
    if len(_CLASSES) < 10_000:
        _CLASSES[name] = cls
    return cls


def _allowed_class(cls: type) -> bool:
    from river import base

    name = f"{cls.__module__}:{cls.__qualname__}"
    return name in HELPER_TYPES or (_is_river(cls.__module__) and issubclass(cls, base.Base))


def _method_allowed(owner: Any, name: str) -> bool:
    """``owner.name`` is a bound method listed in :data:`METHODS`."""
    classes = owner.__mro__ if isinstance(owner, type) else type(owner).__mro__
    return any(name in METHODS.get(f"{c.__module__}:{c.__qualname__}", ()) for c in classes)


def _slot_names(cls: type) -> set[str]:
    names: set[str] = set()
    for c in cls.__mro__:
        slots = c.__dict__.get("__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
    return names


def _is_kind(value: Any, kind: Any, cls: type) -> bool:
    if kind is None:
        return value is None
    if kind is callable:
        return callable(value)
    if kind == "VectorDict":
        return type(value) is cls
    return type(value) is kind


def _dunder(key: Any) -> bool:
    return not isinstance(key, str) or (key.startswith("__") and key.endswith("__"))


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

    def named(self, obj: Any, path: tuple | None) -> dict:
        name = _NAME_OF.get(id(obj))
        if name is not None and _NAMED.get(name) is obj:
            return {_TAG: "g", "v": name}
        what = f"{type(obj).__name__} {_dotted(obj)}"
        if isinstance(obj, type):
            raise self.fail(path, f"{what} is a class, not an allowed value")
        raise self.fail(path, f"{what} is not registered; a checkpoint holds no code, so name it "
                              "in the code that saves and loads: operators.river.state.register_callable"
                              f"('some.name', {getattr(obj, '__name__', 'fn')})")

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
            if obj.dtype.kind not in _DTYPE_KINDS:
                raise self.fail(path, f"a NumPy {obj.dtype} scalar is not supported")
            return {_TAG: "np", "v": np.asarray(obj)}
        if isinstance(obj, np.dtype):
            if obj.fields is not None or obj.kind not in _DTYPE_KINDS:
                raise self.fail(path, f"dtype {obj} is not supported")
            return {_TAG: "dtype", "v": obj.str}
        if t is not types.MethodType and (isinstance(obj, _CALLABLE_TYPES) or _NAME_OF.get(id(obj))):
            return self.named(obj, path)
        i = len(self.entries)
        self.memo[id(obj)] = (i, obj)
        self.entries.append(None)
        self.queue.append((i, obj, path))
        return _ref(i)

    def pairs(self, items: Any, path: tuple | None) -> list:
        return [[self.value(k, (path, "[", "key")), self.value(v, (path, "[", k))]
                for k, v in items]

    def members(self, d: dict, path: tuple | None, same_path: frozenset = frozenset()) -> Any:
        """An object's ``__dict__``; members in ``same_path`` keep the object's path (a
        pipeline's steps read as ``model['Step']``, not ``model.steps['Step']``)."""
        if any(_dunder(k) for k in d):
            raise self.fail(path, f"attribute names {sorted(map(str, d))} include a dunder name")
        return {k: self.value(v, path if k in same_path else (path, ".", k)) for k, v in d.items()}

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
        if t is collections.defaultdict:
            return {_TAG: "defaultdict", "f": self.value(obj.default_factory, (path, ".", "default_factory")),
                    "v": self.pairs(obj.items(), path)}
        if t is collections.Counter or t is collections.OrderedDict:
            return {_TAG: t.__name__, "v": self.pairs(obj.items(), path)}
        if t is collections.deque:
            return {_TAG: "deque", "maxlen": obj.maxlen,
                    "v": [self.value(v, (path, "[", i)) for i, v in enumerate(obj)]}
        if t is np.ndarray:
            if obj.dtype.hasobject:
                return {_TAG: "oa", "shape": list(obj.shape),
                        "v": [self.value(v, (path, "[", i)) for i, v in enumerate(obj.ravel())]}
            if obj.dtype.fields is not None or obj.dtype.kind not in _DTYPE_KINDS:
                raise self.fail(path, f"arrays of dtype {obj.dtype} are not supported")
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
        if t is functools.partial:
            if obj.__dict__:
                raise self.fail(path, "a functools.partial with attributes is not supported")
            return {_TAG: "partial", "f": self.value(obj.func, (path, ".", "func")),
                    "a": [self.value(a, (path, ".", f"args[{i}]")) for i, a in enumerate(obj.args)],
                    "k": self.members(obj.keywords, (path, ".", "keywords"))}
        if t is types.MethodType:
            return self.method(obj, path)
        if t is _LIST_ITERATOR:
            _, (seq,), index = obj.__reduce__()
            if type(seq) is not list:
                raise self.fail(path, "only iterators over lists are supported")
            return {_TAG: "iter", "l": self.value(seq, (path, ".", "list")), "i": index}
        return self.instance(obj, path)

    def method(self, obj: types.MethodType, path: tuple | None) -> dict:
        owner, name = obj.__self__, obj.__func__.__name__
        if not _method_allowed(owner, name) or getattr(owner, name, None) != obj:
            raise self.fail(path, f"method {_dotted(obj)} is not allowed in a checkpoint (see "
                                  "operators.river.state.METHODS)")
        if isinstance(owner, type):  # a classmethod
            if _class(f"{owner.__module__}:{owner.__qualname__}") is not owner:
                raise self.fail(path, f"method {_dotted(obj)} of a class that is not allowed")
            return {_TAG: "cm", "c": f"{owner.__module__}:{owner.__qualname__}", "n": name}
        return {_TAG: "m", "o": self.value(owner, (path, ".", "__self__")), "n": name}

    def instance(self, obj: Any, path: tuple | None) -> dict:
        cls = type(obj)
        known = _ENCODABLE.get(cls)
        if known is None:
            name = f"{cls.__module__}:{cls.__qualname__}"
            known = _ENCODABLE[cls] = (name, _class(name) is cls, _is_pipeline(cls))
        name, allowed, pipeline = known
        if not allowed:
            raise self.fail(path, f"a {cls.__module__}.{cls.__qualname__} is not allowed in a checkpoint "
                                  "(only River estimators, the helper types they hold and plain values)")
        try:
            rv = obj.__reduce_ex__(4)
        except Exception as exc:
            raise self.fail(path, f"a {cls.__module__}.{cls.__qualname__} cannot be saved: {exc}") from exc
        func, args, state, listitems, dictitems, setter = (*rv, None, None, None, None)[:6]
        if name in CONSTRUCTED and func is cls:
            node: dict[str, Any] = {_TAG: "call", "c": name}
        elif func is copyreg.__newobj__ and args and args[0] is cls:
            node = {_TAG: "obj", "c": name}
            args = args[1:]
            if args and not (issubclass(cls, tuple) or cls.__module__.startswith("river._river_rust")):
                raise self.fail(path, f"a {name} needs constructor arguments, which only tuples and "
                                      "River's Rust types may have")
        else:
            raise self.fail(path, f"a {name} pickles itself in an unsupported way")
        if setter is not None:
            raise self.fail(path, f"a {name} pickles itself with a state setter")
        if args:
            node["a"] = [self.value(a, (path, "[", f"arg{i}")) for i, a in enumerate(args)]
        same = _PIPELINE_MEMBERS if pipeline else frozenset()
        if type(state) is dict:
            node["s"] = self.members(state, path, same)
        elif type(state) is tuple and len(state) == 2 and all(
                s is None or type(s) is dict for s in state):  # (__dict__, slots)
            node["s"] = {_TAG: "slots", "v": [None if s is None else self.members(s, path) for s in state]}
        elif state is not None:
            node["s"] = self.value(state, (path, ".", "__state__"))
        if listitems is not None:
            node["l"] = [self.value(v, (path, "[", i)) for i, v in enumerate(listitems)]
        if dictitems is not None:
            node["d"] = self.pairs(dictitems, path)
        return node


_PIPELINE_MEMBERS = frozenset({"steps", "transformers"})
# type -> (name, allowed, is a pipeline), for the encoder
_ENCODABLE: dict[type, tuple[str, bool, bool]] = {}


def _is_pipeline(cls: type) -> bool:
    from river import compose

    return issubclass(cls, (compose.Pipeline, compose.TransformerUnion))


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

    def run(self, root: Any) -> Any:
        for i in range(len(self.entries)):
            self.create(i)
        for i in reversed(range(len(self.entries))):
            self.fill(i, complete=False)
        return self.value(root, None, complete=False)

    def cls(self, name: Any, i: int) -> type:
        cls = _class(name)
        if cls is None:
            raise self.fail(i, f"class {str(name)[:200]!r} is not allowed: checkpoints only rebuild River "
                               "estimators, the helper types they hold and plain values")
        return cls

    # -- values inside entries --------------------------------------------------------
    def value(self, v: Any, i: int | None, complete: bool) -> Any:
        t = type(v)
        if t in _SCALARS:
            return v
        if t is not dict or type(v.get(_TAG)) is not str:
            raise self.fail(i, f"unexpected {t.__name__} where a value belongs")
        tag = v[_TAG]
        if tag == "r":
            j = v.get("i")
            if type(j) is not int or not 0 <= j < len(self.entries):
                raise self.fail(i, f"reference to object #{j!r:.40}, which does not exist")
            self.create(j)
            if complete and self.stage[j] == 2 and self.is_container(j):
                # a constructor copies the containers it is given (VectorDict): fill them
                # first; objects are passed as made, as pickle's memo does
                self.fill(j, complete=True)
            return self.objs[j]
        if tag == "t":
            return tuple(self.value(x, i, complete) for x in self.items(v.get("v"), i))
        if tag == "frozenset":
            return frozenset(self.value(x, i, complete) for x in self.items(v.get("v"), i))
        if tag == "np":
            a = v.get("v")
            if type(a) is not np.ndarray or a.ndim != 0 or a.dtype.kind not in _DTYPE_KINDS:
                raise self.fail(i, "bad NumPy scalar")
            return a[()]
        if tag == "dtype":
            try:
                dtype = np.dtype(str(v.get("v")))
            except TypeError as exc:
                raise self.fail(i, f"bad dtype {str(v.get('v'))[:40]!r}") from exc
            if dtype.fields is not None or dtype.kind not in _DTYPE_KINDS:
                raise self.fail(i, f"dtype {dtype} is not allowed")
            return dtype
        if tag == "g":
            name = v.get("v")
            if type(name) is not str or name not in _NAMED:
                raise self.fail(i, f"{str(name)[:200]!r} is not a registered function or class "
                                   "(see operators.river.state.NAMED_VALUES and register_callable)")
            return _NAMED[name]
        raise self.fail(i, f"unknown value type {tag[:40]!r}")

    def items(self, v: Any, i: int | None) -> list:
        if type(v) is not list:
            raise self.fail(i, f"expected a list, got {type(v).__name__}")
        return v

    def pair_list(self, v: Any, i: int | None) -> list:
        v = self.items(v, i)
        if not all(type(p) is list and len(p) == 2 for p in v):
            raise self.fail(i, "expected [key, value] pairs")
        return v

    def is_container(self, j: int) -> bool:
        e = self.entries[j]
        return type(e) is list or (type(e) is dict and e.get(_TAG) in (
            None, "d", "set", "oa", "defaultdict", "Counter", "OrderedDict", "deque"))

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

    def callable_value(self, v: Any, i: int, what: str, none_ok: bool = False) -> Any:
        f = self.value(v, i, complete=True)
        if (f is None and none_ok) or callable(f):
            return f
        raise self.fail(i, f"{what} is a {type(f).__name__}, not a function")

    def make(self, e: Any, i: int) -> Any:
        t = type(e)
        if t is list:
            return []
        if t is np.ndarray:
            if e.dtype.hasobject or e.dtype.fields is not None or e.dtype.kind not in _DTYPE_KINDS:
                raise self.fail(i, f"arrays of dtype {e.dtype} are not allowed")
            return e if e.flags.writeable else e.copy()
        if t is not dict:
            raise self.fail(i, f"unexpected {t.__name__} entry")
        tag = e.get(_TAG)
        if tag is None or tag == "d":
            return {}
        if type(tag) is not str:
            raise self.fail(i, "bad entry type")
        if tag == "set":
            return set()
        if tag == "Counter":
            return collections.Counter()
        if tag == "OrderedDict":
            return collections.OrderedDict()
        if tag == "defaultdict":
            return collections.defaultdict(self.callable_value(e.get("f"), i, "a defaultdict factory",
                                                               none_ok=True))
        if tag == "deque":
            maxlen = e.get("maxlen")
            if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
                raise self.fail(i, "bad deque maxlen")
            return collections.deque(maxlen=maxlen)
        if tag == "oa":
            shape = e.get("shape")
            if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape) or \
                    math.prod(shape) != len(self.items(e.get("v"), i)):
                raise self.fail(i, "bad object array shape")
            return np.empty(shape, dtype=object)
        if tag == "random":
            rng = random.Random()
            internal = tuple(np.asarray(e["state"], dtype=np.uint32).tolist())  # Python ints
            gauss = e.get("gauss")
            if type(gauss) not in (float, type(None)):
                raise self.fail(i, "bad random state")
            rng.setstate((e["version"], internal, gauss))
            return rng
        if tag == "generator":
            name = e.get("bit_generator")
            if name not in _BIT_GENERATORS:
                raise self.fail(i, f"unknown numpy bit generator {str(name)[:40]!r}")
            gen = np.random.Generator(getattr(np.random, name)())
            gen.bit_generator.state = e["state"]
            return gen
        if tag == "randomstate":
            rs = np.random.RandomState()
            rs.set_state(e["state"])
            return rs
        if tag == "partial":
            func = self.callable_value(e.get("f"), i, "a partial's function")
            args = [self.value(a, i, complete=True) for a in self.items(e.get("a", []), i)]
            kw = e.get("k", {})
            if type(kw) is not dict or any(_dunder(k) or k == _TAG for k in kw):
                raise self.fail(i, "bad partial keywords")
            return functools.partial(func, *args, **{k: self.value(v, i, True) for k, v in kw.items()})
        if tag == "m":
            return self.method(self.value(e.get("o"), i, complete=False), e.get("n"), i)
        if tag == "cm":
            return self.method(self.cls(e.get("c"), i), e.get("n"), i)
        if tag == "iter":
            seq = self.value(e.get("l"), i, complete=False)
            if type(seq) is not list:
                raise self.fail(i, "an iterator over something other than a list")
            return iter(seq)
        if tag == "obj":
            cls = self.cls(e.get("c"), i)
            args = [self.value(a, i, complete=True) for a in self.items(e.get("a", []), i)]
            if args and not (issubclass(cls, tuple) or cls.__module__.startswith("river._river_rust")):
                raise self.fail(i, f"{e['c']} takes no constructor arguments")
            if issubclass(cls, tuple):
                return tuple.__new__(cls, args)
            return cls.__new__(cls, *args)
        if tag == "call":
            name = e.get("c")
            if name not in CONSTRUCTED:
                raise self.fail(i, f"{str(name)[:200]!r} may not be called to rebuild an object")
            cls = self.cls(name, i)
            args = [self.value(a, i, complete=True) for a in self.items(e.get("a", []), i)]
            kinds = CONSTRUCTED[name]
            if len(args) != len(kinds) or not all(any(_is_kind(a, k, cls) for k in ks) for a, ks in zip(args, kinds)):
                raise self.fail(i, f"bad constructor arguments for {name}")
            return cls(*args)
        raise self.fail(i, f"unknown entry type {tag[:40]!r}")

    def method(self, owner: Any, name: Any, i: int) -> Any:
        """A bound method listed in :data:`METHODS`, of an object this checkpoint made."""
        if type(name) is not str or _dunder(name) or not _method_allowed(owner, name):
            raise self.fail(i, f"method {str(name)[:100]!r} of a {type(owner).__name__} is not allowed "
                               "(see operators.river.state.METHODS)")
        cls = owner if isinstance(owner, type) else type(owner)
        func = getattr(cls, name, None)
        if isinstance(owner, type):
            if not isinstance(func, types.MethodType) or func.__self__ is not owner:
                raise self.fail(i, f"{name!r} is not a classmethod of {cls.__qualname__}")
            return func
        if not isinstance(func, types.FunctionType):
            raise self.fail(i, f"{name!r} is not a method of {cls.__qualname__}")
        return types.MethodType(func, owner)

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

    def pairs(self, target: Any, pairs: Any, i: int, complete: bool) -> None:
        for k, v in self.pair_list(pairs, i):
            target[self.value(k, i, complete)] = self.value(v, i, complete)

    def members(self, s: Any, i: int, complete: bool) -> dict:
        if type(s) is dict and _TAG not in s and not any(_dunder(k) for k in s):
            return {k: self.value(v, i, complete) for k, v in s.items()}
        raise self.fail(i, "bad object state (attribute names must be plain names)")

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
        elif tag in ("d", "defaultdict", "Counter", "OrderedDict"):
            self.pairs(obj, e.get("v"), i, complete)
        elif tag == "set":
            obj.update(self.value(v, i, complete) for v in self.items(e.get("v"), i))
        elif tag == "deque":
            obj.extend(self.value(v, i, complete) for v in self.items(e.get("v"), i))
        elif tag == "oa":
            flat = obj.reshape(-1)
            for j, v in enumerate(self.items(e.get("v"), i)):
                flat[j] = self.value(v, i, complete)
        elif tag == "iter":
            index = e.get("i")
            if type(index) is not int:
                raise self.fail(i, "bad iterator position")
            obj.__setstate__(index)
        elif tag in ("obj", "call"):
            self.build(e, obj, i, complete)

    def build(self, e: dict, obj: Any, i: int, complete: bool) -> None:
        """Pickle's BUILD, APPENDS and SETITEMS steps, for an allowed class only."""
        cls = type(obj)
        if "s" in e:
            s = e["s"]
            setstate = getattr(cls, "__setstate__", None)
            if type(s) is dict and _TAG not in s:
                state: Any = self.members(s, i, complete)
            elif type(s) is dict and s.get(_TAG) == "slots" and type(s.get("v")) is list and len(s["v"]) == 2:
                d, slots = (None if x is None else self.members(x, i, complete) for x in s["v"])
                if slots and not set(slots) <= _slot_names(cls):
                    raise self.fail(i, f"{cls.__qualname__} has no slots {sorted(set(slots) - _slot_names(cls))}")
                state = (d, slots)
            else:
                state = self.value(s, i, complete)
                if setstate is None:
                    raise self.fail(i, f"a {cls.__qualname__} takes its state as attributes")
            if setstate is not None:
                setstate(obj, state)
            else:
                d, slots = state if type(state) is tuple else (state, None)
                if d:
                    obj.__dict__.update(d)
                for k, v in (slots or {}).items():
                    setattr(obj, k, v)
        if "l" in e:
            items = [self.value(v, i, complete) for v in self.items(e["l"], i)]
            if not isinstance(obj, (list, collections.deque, collections.UserList)):
                raise self.fail(i, f"a {cls.__qualname__} holds no items")
            obj.extend(items)
        if "d" in e:
            if not isinstance(obj, (dict, collections.UserDict)):
                raise self.fail(i, f"a {cls.__qualname__} holds no dict items")
            self.pairs(obj, e["d"], i, complete)


def decode(tree: Any) -> Any:
    """Rebuild the object encoded by :func:`encode`; raises :class:`CheckpointError` on
    anything outside the allowlist or a malformed tree. Never unpickles, never calls a
    callable named by the tree."""
    if not isinstance(tree, dict) or not isinstance(tree.get("objects"), list):
        raise CheckpointError(f"river state: not a {FORMAT} tree")
    fmt = tree.get("format")
    if not isinstance(fmt, str) or fmt != FORMAT:  # an array from the file would compare element-wise
        raise CheckpointError(f"river state: format {str(fmt)[:60]!r} is not {FORMAT!r} (a "
                              "checkpoint written by another hebbstream version; start a new checkpoint folder)")
    try:
        return _Decoder(tree["objects"]).run(tree.get("root"))
    except CheckpointError:
        raise
    except RecursionError as exc:
        raise CheckpointError("river state: nested too deeply") from exc
    except Exception as exc:  # noqa: BLE001 - whatever a crafted tree trips, it is a bad checkpoint
        raise CheckpointError(f"river state: malformed ({type(exc).__name__}: {str(exc)[:200]})") from exc
