"""Errors that name what is wrong and where (file, column, key, row or offset)."""

from __future__ import annotations

from typing import Any


class HebbstreamError(Exception):
    """Base class of every error the engine raises on purpose."""


class SchemaError(HebbstreamError):
    """A stream's columns do not fit what an operator, source or sink needs."""


class BadEventError(HebbstreamError):
    """One event cannot be processed (NaN, wrong type, time going backwards, ...).

    Attributes name the place so a user can find the row: ``source`` (file or topic),
    ``offset`` (row or message offset), ``column`` and ``key``. A source that hands a
    row it cannot read to the run (see :meth:`stream.connector.Source.bind`) also sets
    ``record``, the row's raw text, and ``position``, where to resume after it.
    """

    def __init__(self, reason: str, *, source: str = "", offset: int | None = None,
                 column: str | None = None, key: Any = None, operator: str | None = None,
                 record: str | None = None, position: dict[str, Any] | None = None):
        self.reason = reason
        self.record = record
        self.position = position
        self.source = source
        self.offset = offset
        self.column = column
        self.key = key
        self.operator = operator
        where = [source or "<stream>"]
        if offset is not None:
            where.append(f"row {offset}")
        if column is not None:
            where.append(f"column {column!r}")
        if key is not None and key != "":
            where.append(f"key {key!r}")
        if operator:
            where.append(f"operator {operator}")
        super().__init__(f"{', '.join(where)}: {reason}")


class SourceError(HebbstreamError):
    """A source cannot be read (missing, empty, truncated or malformed file)."""


class SinkError(HebbstreamError):
    """A sink cannot write (permission denied, disk full, a path that cannot be created)."""


class CheckpointError(HebbstreamError):
    """A checkpoint is missing, corrupt or does not match the pipeline."""


class ConfigError(HebbstreamError, ValueError):
    """A pipeline file or operator parameter is wrong (a ``ValueError`` too, for callers that
    catch that)."""
