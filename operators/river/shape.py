"""Does a River model read from a checkpoint have the shape the pipeline configures?

A checkpoint may only hold the learnt state of the model the pipeline builds: the same
class at every step, the same parameters (what ``__init__`` received, read as River's
``_get_params`` reads them), the same pipeline steps under the same names, recursively
through nested estimators (a pipeline's steps, a wrapper's model, an optimizer).
:func:`difference` names the first place where they differ; learnt state (weights,
counts, tree nodes) is not compared, nor the few parameters that River models update as
they learn (:data:`LEARNT_PARAMS`, found by training every River estimator).

Example:
    >>> from river import linear_model, optim, preprocessing
    >>> configured = preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.1))
    >>> restored = preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.5))
    >>> difference(configured, configured.clone()) is None
    True
    >>> difference(configured, restored)
    "model['LinearRegression'].optimizer.lr.learning_rate is 0.5 in the checkpoint, 0.1 in the pipeline"
    >>> print(difference(configured, preprocessing.MinMaxScaler() | linear_model.LinearRegression()))
    ... # doctest: +NORMALIZE_WHITESPACE
    model has steps ['MinMaxScaler', 'LinearRegression'] in the checkpoint,
    ['StandardScaler', 'LinearRegression'] in the pipeline
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from typing import Any

import numpy as np
from river import base, compose

_MAX_DEPTH = 50
_NAMED_TYPES = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodDescriptorType)
#: Parameters River estimators overwrite while learning: ``class: names`` (and subclasses).
LEARNT_PARAMS = {
    "river.anomaly.hst:HalfSpaceTrees": ("limits",),
    "river.feature_extraction.kernel_approx:RandomTreesEmbedding": ("limits",),
    "river.facto.base:BaseFM": ("intercept",),
    "river.forest.adaptive_random_forest:BaseForest": ("max_features",),
    "river.tree.mondrian.mondrian_tree:MondrianTree": ("iteration",),
    "river.metrics.confusion:ConfusionMatrix": ("classes",),
}


def _learnt(cls: type) -> set[str]:
    return {n for c in cls.__mro__ for n in LEARNT_PARAMS.get(f"{c.__module__}:{c.__qualname__}", ())}


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _params(obj: Any) -> list[tuple[str, Any]]:
    """``(name, value)`` of each parameter of a River object, as ``Base._get_params`` reads them
    (the signature of the class's ``__init__``, looked up on the class, not the instance)."""
    out = []
    for name, param in inspect.signature(type(obj).__init__).parameters.items():
        if name == "self":
            continue
        if param.kind == param.VAR_POSITIONAL:
            out.append((name, getattr(obj, name, [])))
        elif param.kind == param.VAR_KEYWORD:
            out.extend(getattr(obj, name, {}).items())
        else:
            out.append((name, getattr(obj, name)))
    return out


def _members(obj: Any) -> dict[str, Any]:
    slots = [n for c in type(obj).__mro__ for n in c.__dict__.get("__slots__", ()) if hasattr(obj, n)]
    return {**getattr(obj, "__dict__", {}), **{n: getattr(obj, n) for n in slots}}


def difference(expected: Any, got: Any, where: str = "model", depth: int = 0) -> str | None:
    """``None`` when ``got`` has the classes, parameters and structure of ``expected``, else
    a sentence naming the first difference (``model['Step'].param ...``)."""
    if depth > _MAX_DEPTH:
        return f"{where} nests deeper than {_MAX_DEPTH} levels"
    if type(got) is not type(expected):
        return f"{where} is a {_name(type(got))} in the checkpoint, a {_name(type(expected))} in the pipeline"
    if isinstance(expected, (compose.Pipeline, compose.TransformerUnion)):
        mine, theirs = (list(m.steps if isinstance(m, compose.Pipeline) else m.transformers)
                        for m in (expected, got))
        if mine != theirs:
            return f"{where} has steps {theirs} in the checkpoint, {mine} in the pipeline"
        members = expected.steps if isinstance(expected, compose.Pipeline) else expected.transformers
        other = got.steps if isinstance(got, compose.Pipeline) else got.transformers
        for name in mine:
            found = difference(members[name], other[name], f"{where}[{name!r}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(expected, base.Base):
        try:
            theirs = dict(_params(got))
        except (AttributeError, TypeError) as exc:
            return f"{where} lacks its parameters in the checkpoint: {exc}"
        learnt = _learnt(type(expected))
        for name, value in _params(expected):
            if name in learnt:
                continue
            if name not in theirs:
                return f"{where}.{name} is missing in the checkpoint"
            found = difference(value, theirs[name], f"{where}.{name}", depth + 1)
            if found:
                return found
        return None
    return _value_difference(expected, got, where, depth)


def _value_difference(expected: Any, got: Any, where: str, depth: int) -> str | None:
    if isinstance(expected, dict):
        if list(expected) != list(got):
            return f"{where} has keys {list(got)[:10]} in the checkpoint, {list(expected)[:10]} in the pipeline"
        for k in expected:
            found = difference(expected[k], got[k], f"{where}[{k!r}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(expected, (list, tuple)):
        if len(expected) != len(got):
            return f"{where} has {len(got)} items in the checkpoint, {len(expected)} in the pipeline"
        for k, (a, b) in enumerate(zip(expected, got)):
            found = difference(a, b, f"{where}[{k}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(expected, functools.partial):
        return difference(expected.func, got.func, f"{where}.func", depth + 1) or \
            difference(expected.args, got.args, f"{where}.args", depth + 1) or \
            difference(expected.keywords, got.keywords, f"{where}.keywords", depth + 1)
    if isinstance(expected, np.ndarray):
        same = expected.shape == got.shape and expected.dtype == got.dtype and \
            np.array_equal(expected, got, equal_nan=expected.dtype.kind in "fc")
        return None if same else f"{where} differs between the checkpoint and the pipeline"
    if isinstance(expected, float) and math.isnan(expected) and math.isnan(got):
        return None
    if isinstance(expected, types.MethodType):  # a method of the model itself (PAClassifier.calc_tau)
        same = expected.__func__ is got.__func__ and type(expected.__self__) is type(got.__self__)
        return None if same else f"{where} is another method in the checkpoint than in the pipeline"
    if isinstance(expected, _NAMED_TYPES):
        # functions and classes: the very same object (registered by name)
        return None if expected is got else \
            f"{where} is {_short(got)} in the checkpoint, another function or class in the pipeline"
    if type(expected).__module__.startswith("river."):  # a River helper (neighbors.base.FunctionWrapper)
        return difference(_members(expected), _members(got), where, depth + 1)
    try:
        same = bool(expected == got)
    except Exception:  # noqa: BLE001 - an unorderable or ambiguous comparison is a difference
        same = False
    return None if same else f"{where} is {_short(got)} in the checkpoint, {_short(expected)} in the pipeline"
