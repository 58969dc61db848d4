"""NAB detectors by name: how ``hebbstream nab --detector NAME`` builds the operator for the corpus.

A NAB factory is called as ``factory(streams, seed=seed)`` with ``{file: NABStream}``
(what NAB lets a detector know up front: each file's length, min and max) and returns
an operator that adds an ``anomaly_score`` column. :func:`nab_factory` finds one by name:

- the names in :data:`NAB_DETECTORS` (the HTM detector; ``htm-rest``, the HTM detector
  with a rest period after each detection; the streaming detectors of
  :mod:`operators.anomaly` with their NAB settings);
- any other operator registered under the ``hebbstream.operators`` entry points: built
  with its ``for_nab(streams, seed=...)`` constructor when it has one, else with its
  constructor (``seed=`` when it takes one) and ``options``.

Every factory returned is a :func:`functools.partial` of a module-level function, so it
pickles and ``--workers`` can build it in other processes.

Example:
    >>> factory = nab_factory("htm", tm="plain")
    >>> factory.func.__name__, factory.keywords
    ('htm_factory', {'tm': 'plain'})
    >>> nab_factory("no-such-detector")
    Traceback (most recent call last):
      ...
    stream.errors.ConfigError: unknown NAB detector 'no-such-detector'; known: ...
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from stream import registry
from stream.errors import ConfigError

#: Detectors known by name without an entry point: ``name → "module:attribute"`` of a
#: NAB factory (a function of ``streams`` and ``seed``) or of an operator class.
NAB_DETECTORS = {
    "htm": "operators.nab.detectors:htm_factory",
    "htm-rest": "operators.nab.detectors:htm_rest_factory",
    "cad": "operators.anomaly:ContextualDetector",
    "art": "operators.anomaly:ARTDetector",
    "ensemble": "operators.anomaly:ScoreEnsemble",
}


def htm_factory(streams: Mapping[str, Any], seed: int = 0, tm: str = "backtracking", *,
                max_backtrack: int = 0, minmax: bool = True, device: Any = "auto") -> Any:
    """The HTM detector for the NAB corpus: ``HTMDetector.for_nab(streams, seed=seed)``,
    with the ``"plain"`` or NuPIC's ``"backtracking"`` temporal memory (``max_backtrack``:
    the plain TM's simplified backtracking), the encoder resolution from the file's min
    and max (NAB's rule) or, ``minmax=False``, from the first records."""
    from operators.htm.detector import HTMDetector  # the model is heavy: import it only to run it
    from operators.htm.model import HTMConfig

    return HTMDetector.for_nab(streams, seed=seed, minmax=minmax, device=device,
                               config=HTMConfig(tm=tm, max_backtrack=max_backtrack))


def htm_rest_factory(streams: Mapping[str, Any], seed: int = 0, *, rest_fraction: float | None = None,
                     **htm_options: Any) -> Any:
    """The HTM detector of :func:`htm_factory` followed by a rest period
    (:class:`operators.anomaly.rest.RestPeriod`): after a detection, a file's next
    ``rest_fraction`` of its rows (default ``NAB_REST_FRACTION``, 1 %) report at most
    NuPIC's yellow level. The HTM stage is unchanged: its raw scores and likelihoods are
    the default detector's."""
    from operators.anomaly.rest import NAB_REST_FRACTION, RestPeriod
    from stream import Pipeline

    fraction = NAB_REST_FRACTION if rest_fraction is None else float(rest_fraction)
    return Pipeline([htm_factory(streams, seed, **htm_options), RestPeriod.for_nab(streams, fraction=fraction)])


def load_object(spec: str, what: str = "--factory") -> Any:
    """``"package.module:attribute"`` → the object (``what`` names the option in errors)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"{what} {spec!r}: expected MODULE:FUNCTION")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what} {spec!r}: {exc}") from exc
    return obj


def resolve(name: str) -> Any:
    """The NAB factory or operator class called ``name``."""
    if name in NAB_DETECTORS:
        return load_object(NAB_DETECTORS[name], f"detector {name!r}")
    if name not in registry.names("operators"):
        raise ConfigError(f"unknown NAB detector {name!r}; known: {', '.join(known_detectors())}")
    return registry.lookup("operators", name)


def operator_factory(streams: Mapping[str, Any], seed: int = 0, *, detector: str,
                     options: Mapping[str, Any] | None = None) -> Any:
    """Build the operator class called ``detector`` for the corpus: ``cls.for_nab(streams,
    seed=seed, **options)`` when it has that constructor, else ``cls(**options)`` (plus
    ``seed=seed`` when the constructor takes a seed). By name, so the factory pickles."""
    cls = resolve(detector)
    options = dict(options or {})
    for_nab = getattr(cls, "for_nab", None)
    if for_nab is not None:
        return for_nab(streams, seed=seed, **options)
    if "seed" in inspect.signature(cls).parameters:
        options.setdefault("seed", seed)
    return cls(**options)


def known_detectors() -> list[str]:
    """Names :func:`nab_factory` accepts."""
    return sorted(set(NAB_DETECTORS) | set(registry.names("operators")))


def nab_factory(name: str, **options: Any) -> Callable[..., Any]:
    """The NAB factory of the detector called ``name`` (see the module docstring);
    ``options`` go to the factory (or the operator's constructor)."""
    target = resolve(name)
    if inspect.isclass(target):
        return functools.partial(operator_factory, detector=name, options=options)
    return functools.partial(target, **options)
