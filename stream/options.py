"""Check a pipeline file's options against the signature of what they build.

The options of a source, operator or sink are the parameters of its ``from_config``
(when it has one) or its constructor, followed through ``**kwargs`` to the next
``__init__`` in the class hierarchy; their annotations are the types a pipeline file must
give. :func:`check_options` names every mistake (unknown key, missing key, wrong type,
value out of range) with the file, section and key, before anything is built, and
:func:`build` turns a constructor's own refusal (``ValueError``, ...) into the same kind
of :class:`~stream.errors.ConfigError`.

Understood annotations: ``int``, ``float`` (a TOML integer is fine; ``nan`` and ``inf``
are not), ``bool`` (never an integer), ``str``, ``list[X]`` / ``Sequence[X]`` /
``tuple[X, ...]`` / ``tuple[X, Y]``, ``dict[K, V]`` / ``Mapping[K, V]``, ``Literal[...]``,
``X | None``, unions, a dataclass (built from a TOML table, its fields checked the same
way), ``Annotated[X, check]`` and ``Any`` (anything). A single string where a list of
strings (or of any values) is expected is taken as a list of one (``features = "value"`` is
``features = ["value"]``).

Ranges and choices the annotation cannot say are declared once, on the class::

    class MyOperator(Operator):
        option_checks = {"window": at_least(1), "rate": between(0, 1), "mode": one_of("fast", "exact")}

        def __init__(self, window: int = 10, rate: float = 0.5, mode: str = "fast"): ...

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Window:
    ...     size: int
    ...     columns: list[str] | None = None
    ...     option_checks = {"size": at_least(1)}
    >>> check_options(Window, {"size": 3, "columns": "value"}, "p.toml [window]")
    {'size': 3, 'columns': ['value']}
    >>> check_options(Window, {"size": "big"}, "p.toml [window]")
    Traceback (most recent call last):
    stream.errors.ConfigError: p.toml [window] key 'size': expected an integer >= 1, got "big"
    >>> check_options(Window, {"sise": 3}, "p.toml [window]")
    Traceback (most recent call last):
    stream.errors.ConfigError: p.toml [window] key 'sise': unknown key (did you mean 'size'?); known: columns, size
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import difflib
import functools
import inspect
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, HebbstreamError

__all__ = ["Range", "OneOf", "at_least", "above", "between", "one_of", "Option", "options_of",
           "check_options", "check_values", "build", "show"]


# -- declared checks ---------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """A numeric bound: ``ge``/``gt`` below, ``le``/``lt`` above (any may be ``None``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return True  # a bound on a number says nothing about the table or name a union also allows
        return all(ok for ok in (self.ge is None or value >= self.ge, self.gt is None or value > self.gt,
                                 self.le is None or value <= self.le, self.lt is None or value < self.lt))

    def describe(self, kind: str) -> str:
        bounds = [f"{op} {_num(b)}" for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                  if b is not None]
        return f"{kind} {' and '.join(bounds)}"


@dataclass(frozen=True)
class OneOf:
    """The value must be one of ``values``."""

    values: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def describe(self, kind: str) -> str:
        return "one of " + ", ".join(show(v) for v in self.values)


def at_least(low: float) -> Range:
    return Range(ge=low)


def above(low: float) -> Range:
    return Range(gt=low)


def between(low: float, high: float) -> Range:
    return Range(ge=low, le=high)


def one_of(*values: Any) -> OneOf:
    return OneOf(tuple(values))


Check = Range | OneOf


def show(value: Any) -> str:
    """A value as a pipeline file writes it: ``"text"``, ``true``, ``[1, 2]``.

    >>> show("big"), show(False), show([1, "a"]), show(2.5)
    ('"big"', 'false', '[1, "a"]', '2.5')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list, dict)):
        try:
            return json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            pass
    return repr(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# -- what a factory accepts ----------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One parameter of a factory: its name, annotation, whether it is required, its check."""

    name: str
    type: Any
    required: bool
    check: Check | None = None


@functools.lru_cache(maxsize=512)  # resolving annotations costs milliseconds; run() asks at every call
def _hints(func: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve checks nothing
        return {}


def _chain(factory: Any) -> list[tuple[Any, Any]]:
    """``(function, hints)`` pairs whose parameters make the options, in the order followed."""
    if not isinstance(factory, type):
        return [(factory, _hints(factory))]
    if dataclasses.is_dataclass(factory):
        return [(factory, _hints(factory))]
    chain = []
    if callable(getattr(factory, "from_config", None)):
        chain.append((factory.from_config, _hints(factory.from_config)))
    for klass in factory.__mro__:
        if klass is not object and "__init__" in vars(klass):
            chain.append((vars(klass)["__init__"], _hints(vars(klass)["__init__"])))
    return chain


def options_of(factory: Any, checks: dict[str, Check] | None = None) -> dict[str, Option]:
    """The options ``factory`` takes, by name.

    >>> sorted(options_of(Range))
    ['ge', 'gt', 'le', 'lt']
    """
    declared: dict[str, Check] = {}
    for klass in reversed(getattr(factory, "__mro__", ())):
        declared.update(vars(klass).get("option_checks", {}))
    declared.update(checks or {})
    found: dict[str, Option] = {}
    for func, hints in _chain(factory):
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            break
        more = False
        for i, p in enumerate(params):
            if i == 0 and p.name in ("self", "cls") or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                more = True
                continue
            if p.name not in found:
                found[p.name] = Option(p.name, hints.get(p.name, Any), p.default is p.empty,
                                       declared.get(p.name))
        if not more:
            break
    return found


# -- checking values -------------------------------------------------------------------------
class _Wrong(Exception):
    """A value does not fit: ``expected`` describes what would, ``path`` the sub-key."""

    def __init__(self, expected: str, value: Any, path: tuple[str, ...] = ()):
        super().__init__(expected)
        self.expected, self.value, self.path = expected, value, path


_NONE = type(None)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(show(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not _NONE)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} " + ("numbers" if all(a in (int, float) for a in args) else "values")
    if origin in (list, tuple, cabc.Sequence):
        inner = args[0] if args else Any
        return "a list" if inner is Any else f"a list of {_plural(inner)}"
    if origin in (dict, cabc.Mapping) or tp in (dict, cabc.Mapping):
        return "a table"
    if dataclasses.is_dataclass(tp):
        return f"a table of {tp.__name__} options"
    return f"a {getattr(tp, '__name__', str(tp))}"


def _plural(tp: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(tp, _describe(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as ``tp`` (int → float, list → tuple, table → dataclass), or raise :class:`_Wrong`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin is typing.Annotated:
        value = _coerce(value, args[0])
        for check in args[1:]:
            if isinstance(check, (Range, OneOf)) and value is not None and not check.accepts(value):
                raise _Wrong(check.describe(_describe(args[0])), value)
        return value
    if origin is typing.Literal:
        if OneOf(args).accepts(value):
            return value
        raise _Wrong(_describe(tp), value)
    if origin in (typing.Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        deepest = None
        for arm in args:
            if arm is _NONE:
                continue
            try:
                return _coerce(value, arm)
            except _Wrong as exc:
                if exc.path and deepest is None:
                    deepest = exc  # a table that fits one arm but has a bad entry: name the entry
        raise deepest or _Wrong(_describe(tp), value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            raise _Wrong("a finite number", value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple and args and args[-1] is not Ellipsis:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_item(v, a, tp) for v, a in zip(value, args))
    elif origin in (list, tuple, cabc.Sequence) or tp in (list, tuple):
        inner = args[0] if args else Any
        if isinstance(value, str) and inner in (str, Any):
            value = [value]  # one name where a list of names is expected
        if isinstance(value, (list, tuple)):
            items = [_item(v, inner, tp) for v in value]
            return tuple(items) if origin is tuple or tp is tuple else items
    elif origin in (dict, cabc.Mapping) or tp in (dict, cabc.Mapping):
        inner = args[1] if len(args) == 2 else Any
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                try:
                    out[k] = _coerce(v, inner)
                except _Wrong as exc:
                    raise _Wrong(exc.expected, exc.value, (str(k), *exc.path)) from None
            return out
    elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return _build_table(tp, value)
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:  # a typing construct this module does not know: do not guess
        return value
    raise _Wrong(_describe(tp), value)


def _item(value: Any, tp: Any, whole: Any) -> Any:
    """One element of a list or tuple; a bad one is reported as the whole list."""
    try:
        return _coerce(value, tp)
    except _Wrong:
        raise _Wrong(_describe(whole), value) from None


class _Nested(Exception):
    """A nested table's own error, with the sub-key it happened at."""

    def __init__(self, path: tuple[str, ...], message: str):
        super().__init__(message)
        self.path, self.message = path, message


def _build_table(tp: type, table: dict[str, Any]) -> Any:
    """A dataclass from a TOML table: its fields checked, then built."""
    try:
        kwargs = _check(tp, table, None)
        return tp(**kwargs)
    except _Nested:
        raise
    except Exception as exc:  # noqa: BLE001 - a dataclass's own check (__post_init__)
        raise _Nested(_blame(exc, table), str(exc)) from exc


def _check(factory: Any, values: dict[str, Any], checks: dict[str, Check] | None,
           only: Iterable[str] | None = None) -> dict[str, Any]:
    """Checked and converted ``values``; raises :class:`_Nested` naming the key."""
    known = options_of(factory, checks)
    if only is not None:
        known = {k: v for k, v in known.items() if k in set(only)}
    for key in values:
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            listed = ", ".join(sorted(known)) or "none"
            raise _Nested((key,), f"unknown key{hint}; known: {listed}")
    missing = [o.name for o in known.values() if o.required and o.name not in values]
    if missing:
        raise _Nested((), "missing required key " + ", ".join(repr(m) for m in missing))
    out = {}
    for key, value in values.items():
        opt = known[key]
        declared = opt.check.describe(_describe(_strip_none(opt.type))) if opt.check is not None else ""
        try:
            v = _coerce(value, opt.type)
            if opt.check is not None and v is not None and not opt.check.accepts(v):
                raise _Wrong(declared, value)
        except _Wrong as exc:
            expected = declared if declared and not exc.path else exc.expected
            raise _Nested((key, *exc.path), f"expected {expected}, got {show(exc.value)}") from None
        except _Nested as exc:
            raise _Nested((key, *exc.path), exc.message) from exc.__cause__
        out[key] = v
    return out


def _strip_none(tp: Any) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and _NONE in args:
        rest = [a for a in args if a is not _NONE]
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
    return tp


def _where(where: str, path: tuple[str, ...]) -> str:
    return f"{where} key {'.'.join(path)!r}" if path else where


def check_options(factory: Any, values: dict[str, Any], where: str, *,
                  checks: dict[str, Check] | None = None, only: Iterable[str] | None = None) -> dict[str, Any]:
    """``values`` checked against ``factory``'s options and converted to the annotated types.

    ``checks`` adds or replaces declared checks; ``only`` limits the known keys to those.
    Raises :class:`ConfigError` ``"{where} key 'name': expected ..., got ..."``.
    """
    try:
        return _check(factory, values, checks, only)
    except _Nested as exc:
        raise ConfigError(f"{_where(where, exc.path)}: {exc.message}") from None


def check_values(factory: Callable[..., Any], values: dict[str, Any], where: str,
                 checks: dict[str, Check] | None = None) -> None:
    """Check arguments already bound in Python (``run(batch_size=0)``) the same way.

    >>> def f(n: int = 1): ...
    >>> check_values(f, {"n": 0}, "f()", {"n": at_least(1)})
    Traceback (most recent call last):
    stream.errors.ConfigError: f() key 'n': expected an integer >= 1, got 0
    """
    check_options(factory, values, where, checks=checks, only=values)


def _blame(exc: BaseException, values: dict[str, Any]) -> tuple[str, ...]:
    """The key a constructor's error message names, if it names one of ``values``."""
    text = str(exc)
    for key in values:
        if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", text):
            return (key,)
    return ()


def build(factory: Any, values: dict[str, Any], where: str, *, checks: dict[str, Check] | None = None) -> Any:
    """Check ``values`` (:func:`check_options`), then call ``factory`` with them.

    A constructor's own refusal (``ValueError``, ``TypeError``, a ``ConfigError``, ...)
    becomes a :class:`ConfigError` naming ``where`` and, when its message names one, the
    key. Other :class:`HebbstreamError` (a missing source file) and ``OSError`` pass
    through: they already name their file.
    """
    kwargs = check_options(factory, values, where, checks=checks)
    call = getattr(factory, "from_config", factory) if isinstance(factory, type) else factory
    try:
        return call(**kwargs)
    except (OSError, KeyboardInterrupt):
        raise
    except HebbstreamError as exc:
        if not isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{_where(where, _blame(exc, values))}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - whatever the constructor refuses, say where
        what = "" if isinstance(exc, (ValueError, TypeError)) else f"{type(exc).__name__}: "
        raise ConfigError(f"{_where(where, _blame(exc, values))}: {what}{exc}") from exc
