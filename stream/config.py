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

Relative paths are relative to the working directory.

Example:
    >>> from stream.config import parse
    >>> spec = parse('[source]\\ntype = "csv"\\npath = "x.csv"\\n[run]\\nbatch_size = 8\\n')
    >>> spec["source"], spec["run"]
    ({'type': 'csv', 'path': 'x.csv'}, {'batch_size': 8})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tomllib

from .checkpoint import CheckpointStore
from .connector import Sink, Source
from .errors import ConfigError
from .operator import Operator, Pipeline
from .registry import lookup
from .sink_paths import check_sink_paths

_SECTIONS = {"source", "operators", "sink", "dead_letter", "checkpoint", "run"}
_RUN_KEYS = {"batch_size", "max_delay", "speed", "read_ahead", "check_order", "device", "progress",
             "max_events"}
_CKPT_KEYS = {"path", "every_batches", "every_seconds", "keep"}


def parse(text: str, where: str = "<pipeline>") -> dict[str, Any]:
    """Parse and check the sections of a pipeline file."""
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    unknown = set(spec) - _SECTIONS
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    if "source" not in spec:
        raise ConfigError(f"{where}: a pipeline needs a [source] section")
    for name in ("source", "sink", "dead_letter"):
        if name in spec and "type" not in spec[name]:
            raise ConfigError(f"{where}: [{name}] needs a 'type' key")
    for i, op in enumerate(spec.get("operators", [])):
        if "type" not in op:
            raise ConfigError(f"{where}: [[operators]] number {i + 1} needs a 'type' key")
    bad = set(spec.get("run", {})) - _RUN_KEYS
    if bad:
        raise ConfigError(f"{where}: unknown [run] key(s) {sorted(bad)}; known: {sorted(_RUN_KEYS)}")
    bad = set(spec.get("checkpoint", {})) - _CKPT_KEYS
    if bad:
        raise ConfigError(f"{where}: unknown [checkpoint] key(s) {sorted(bad)}; known: {sorted(_CKPT_KEYS)}")
    return spec


def _build(group: str, section: dict[str, Any], where: str) -> Any:
    kwargs = dict(section)
    kind = kwargs.pop("type")
    cls = lookup(group, kind)
    factory = getattr(cls, "from_config", cls)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: cannot build {group[:-1]} {kind!r} from {sorted(kwargs)}: {exc}") from exc


@dataclass
class RunSpec:
    """Everything :func:`stream.run` needs, built from a pipeline file."""

    source: Source
    pipeline: Operator
    sink: Sink | None = None
    dead_letter: Sink | None = None
    checkpoint: CheckpointStore | None = None
    run_kwargs: dict[str, Any] = field(default_factory=dict)


def build(spec: dict[str, Any], where: str = "<pipeline>") -> RunSpec:
    """Instantiate the source, operators, sinks and checkpoint store of a parsed spec."""
    source = _build("sources", spec["source"], f"{where} [source]")
    ops = [_build("operators", op, f"{where} [[operators]] #{i + 1}")
           for i, op in enumerate(spec.get("operators", []))]
    pipeline = Pipeline(ops)
    sink = _build("sinks", spec["sink"], f"{where} [sink]") if "sink" in spec else None
    dead = _build("sinks", spec["dead_letter"], f"{where} [dead_letter]") if "dead_letter" in spec else None
    check_sink_paths({"[source] path": source, "[sink] path": sink, "[dead_letter] path": dead}, where,
                     checkpoints=bool(spec.get("checkpoint")))
    run_kwargs = dict(spec.get("run", {}))
    if run_kwargs.get("speed") == 0:
        run_kwargs["speed"] = None
    store = None
    ck = spec.get("checkpoint")
    if ck:
        if "path" not in ck:
            raise ConfigError(f"{where} [checkpoint]: needs a 'path'")
        fingerprint = repr(pipeline)
        store = CheckpointStore(ck["path"], keep=ck.get("keep", 3), fingerprint=fingerprint)
        run_kwargs["checkpoint_every_batches"] = ck.get("every_batches")
        run_kwargs["checkpoint_every_seconds"] = ck.get("every_seconds")
    return RunSpec(source, pipeline, sink, dead, store, run_kwargs)


def load(path: str) -> RunSpec:
    """Read, check and build the pipeline file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline file {path}: {exc}") from exc
    return build(parse(text, path), path)
