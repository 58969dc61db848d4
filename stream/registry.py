"""Find operators, sources, sinks and CLI commands by name through entry points.

``stream`` never imports ``operators`` or ``connectors``; they (and third-party
packages) declare themselves in their ``pyproject.toml``:

.. code-block:: toml

    [project.entry-points."hebbstream.operators"]
    river = "operators.river:RiverOperator"

Example:
    >>> from stream.registry import names
    >>> "csv" in names("sources")
    True
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Any

from .errors import ConfigError

GROUPS = ("operators", "sources", "sinks", "commands")


@cache
def _entries(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=f"hebbstream.{group}")}


def names(group: str) -> list[str]:
    """Registered names in ``group`` (one of :data:`GROUPS`)."""
    return sorted(_entries(group))


def lookup(group: str, name: str) -> Any:
    """The class or function registered as ``name`` in ``group``."""
    entries = _entries(group)
    if name not in entries:
        raise ConfigError(f"unknown {group[:-1]} type {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name].load()
