"""Build a run from a pipeline TOML file.

.. code-block:: toml

    [source]                      # any registered source; other keys are its arguments
    type = "csv"
    path = "examples/data/machine_temperature.csv"
    key = "key"                   # optional: column holding the stream key
    time = "timestamp"            # optional: column holding event time

    [[operators]]                 # applied in order
    type = "river"
    model = "anomaly.HalfSpaceTrees"
    params = { n_trees = 10, seed = 42 }

    [sink]
    type = "csv"
    path = "out/scored.csv"

    [[outputs]]                   # optional, repeatable: more sinks (see stream.outputs)
    type = "csv"
    path = "out/alerts.csv"
    where = "alert"               # only rows whose boolean column is true
    columns = ["key", "value"]    # only these columns

    [dead_letter]                 # optional: bad events go here instead of stopping the run
    type = "csv"
    path = "out/dead_letter.csv"

    [checkpoint]                  # optional
    path = "out/checkpoints"      # folder or pyarrow.fs URI
    every_batches = 10
    every_seconds = 30
    keep = 3

    [run]                         # optional: arguments of stream.run
    batch_size = 1024
    max_delay = 0.05
    speed = 0                     # 0 = as fast as possible; 1 = as it happened

    [serve]                       # optional: metrics, health and the dashboard (stream.serve.settings)
    address = "127.0.0.1:9200"

Relative paths are relative to the working directory.

Every option is checked when the file is loaded, before anything runs: the keys of a
``[source]``, ``[[operators]]`` or ``[sink]`` table are the parameters of the registered
class (its ``from_config`` or constructor), and their values must fit its annotations and
declared ``option_checks`` (:mod:`stream.options`); ``[run]`` and ``[checkpoint]`` are
checked the same way. A mistake is a :class:`ConfigError` naming the file, the section
and the key, e.g. ``pipeline.toml [run] key 'batch_size': expected an integer >= 1, got
"big"``. One string where a list of names is expected is a list of one
(``features = "value"``).

Example:
    >>> from stream.config import parse
    >>> spec = parse('[source]\\ntype = "csv"\\npath = "x.csv"\\n[run]\\nbatch_size = 8\\n')
    >>> spec["source"], spec["run"]
    ({'type': 'csv', 'path': 'x.csv'}, {'batch_size': 8})
    >>> parse('[source]\\ntype = "csv"\\npath = "x.csv"\\n[run]\\nbatch_size = 0\\n', "p.toml")
    Traceback (most recent call last):
    stream.errors.ConfigError: p.toml [run] key 'batch_size': expected an integer >= 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tomllib

from .checkpoint import CheckpointStore
from .connector import Sink, Source
from .errors import ConfigError
from .operator import Operator, Pipeline
from .options import above, at_least, check_options
from .options import build as build_checked
from .outputs import build_outputs, labelled
from .registry import lookup
from .runtime import RUN_CHECKS, run
from .serve.settings import ServeSettings, check_serve
from .sink_paths import check_sink_paths

_SECTIONS = {"source", "operators", "sink", "outputs", "dead_letter", "checkpoint", "run", "serve"}
_TYPED = ("source", "sink", "dead_letter")      # tables naming a registered type
_RUN_KEYS = ("batch_size", "max_delay", "speed", "read_ahead", "check_order", "device", "progress",
             "max_events")
#: [run] speed = 0 means "as fast as possible" (run()'s speed=None)
_RUN_FILE_CHECKS = {**RUN_CHECKS, "speed": at_least(0)}


@dataclass(frozen=True)
class CheckpointSection:
    """The options of ``[checkpoint]``: the store's folder, how often, how many to keep."""

    path: str
    every_batches: int | None = None
    every_seconds: float | None = None
    keep: int = 3
    option_checks = {"every_batches": at_least(1), "every_seconds": above(0), "keep": at_least(1)}


def parse(text: str, where: str = "<pipeline>") -> dict[str, Any]:
    """Parse a pipeline file and check its sections, ``[checkpoint]`` and ``[run]``.

    The options of sources, operators and sinks are checked by :func:`build`, which
    knows their types.
    """
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(spec) - _SECTIONS
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    if "source" not in spec:
        raise ConfigError(f"{where}: a pipeline needs a [source] section")
    for name in (*_TYPED, "checkpoint", "run", "serve"):
        if name in spec and not isinstance(spec[name], dict):
            raise ConfigError(f"{where}: [{name}] must be a table ([{name}] followed by key = value lines)")
    ops = spec.get("operators", [])
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise ConfigError(f"{where}: operators must be an array of tables: write each one as [[operators]]")
    for name in _TYPED:
        if name in spec:
            _check_type(spec[name], f"{where} [{name}]")
    for i, op in enumerate(ops):
        _check_type(op, f"{where} [[operators]] #{i + 1}")
    outs = spec.get("outputs", [])
    if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
        raise ConfigError(f"{where}: outputs must be an array of tables: write each one as [[outputs]]")
    for i, out in enumerate(outs):
        _check_type(out, f"{where} [[outputs]] #{i + 1}")
    if "run" in spec:
        spec["run"] = check_options(run, spec["run"], f"{where} [run]", checks=_RUN_FILE_CHECKS, only=_RUN_KEYS)
    if "checkpoint" in spec:
        spec["checkpoint"] = check_options(CheckpointSection, spec["checkpoint"], f"{where} [checkpoint]")
    if "serve" in spec:
        spec["serve"] = check_serve(spec["serve"], f"{where} [serve]")
    return spec


def _check_type(section: dict[str, Any], where: str) -> None:
    if "type" not in section:
        raise ConfigError(f"{where}: needs a 'type' key")
    if not isinstance(section["type"], str):
        raise ConfigError(f"{where} key 'type': expected a string, got {section['type']!r}")


def _build(group: str, section: dict[str, Any], where: str) -> Any:
    kwargs = dict(section)
    kind = kwargs.pop("type")
    try:
        cls = lookup(group, kind)
    except ConfigError as exc:
        raise ConfigError(f"{where} key 'type': {exc}") from None
    except ImportError as exc:  # an optional extra that is not installed
        raise ConfigError(f"{where} key 'type': {group[:-1]} type {kind!r} cannot be loaded: {exc}") from exc
    return build_checked(cls, kwargs, f"{where} ({kind})")


@dataclass
class RunSpec:
    """Everything :func:`stream.run` needs, built from a pipeline file."""

    source: Source
    pipeline: Operator
    sink: Sink | None = None
    dead_letter: Sink | None = None
    checkpoint: CheckpointStore | None = None
    run_kwargs: dict[str, Any] = field(default_factory=dict)
    serve: ServeSettings | None = None


def build(spec: dict[str, Any], where: str = "<pipeline>") -> RunSpec:
    """Instantiate the source, operators, sinks and checkpoint store of a parsed spec."""
    source = _build("sources", spec["source"], f"{where} [source]")
    ops = [_build("operators", op, f"{where} [[operators]] #{i + 1}")
           for i, op in enumerate(spec.get("operators", []))]
    pipeline = Pipeline(ops)
    sink = build_outputs(spec, where, lambda table, at: _build("sinks", table, at))
    dead = _build("sinks", spec["dead_letter"], f"{where} [dead_letter]") if "dead_letter" in spec else None
    check_sink_paths({"[source] path": source, **labelled(sink, "[sink]"), "[dead_letter] path": dead}, where,
                     checkpoints=bool(spec.get("checkpoint")))
    run_kwargs = dict(spec.get("run", {}))
    if run_kwargs.get("speed") == 0:
        run_kwargs["speed"] = None
    store = None
    ck = spec.get("checkpoint")
    if ck:
        ck = CheckpointSection(**ck)
        try:
            store = CheckpointStore(ck.path, keep=ck.keep, fingerprint=repr(pipeline))
        except ValueError as exc:  # a URI pyarrow.fs does not understand
            raise ConfigError(f"{where} [checkpoint] key 'path': {exc}") from exc
        run_kwargs["checkpoint_every_batches"] = ck.every_batches
        run_kwargs["checkpoint_every_seconds"] = ck.every_seconds
    serve = ServeSettings(**spec["serve"]) if "serve" in spec else None
    return RunSpec(source, pipeline, sink, dead, store, run_kwargs, serve)


def load(path: str) -> RunSpec:
    """Read, check and build the pipeline file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    return build(parse(text, path), path)
