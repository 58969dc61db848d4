"""Is a resumed run reading the input its checkpoint was taken on?

A checkpoint stores the source's identity (:meth:`stream.connector.Source.identity`: a
JSON-able dict with a ``kind``, e.g. file paths, sizes, modification times and a hash of
each file's first block; a Kafka topic and group) next to its position. On resume the
source compares it with what it reads now (:meth:`stream.connector.Source.identity_mismatch`;
by default two identities match when they are equal dicts) and :func:`check_resume`
refuses a mismatch with an error naming the difference, unless ``force`` is set, which
resumes anyway with a warning.

Example:
    >>> from stream.identity import difference
    >>> difference({"kind": "kafka", "topic": "a", "group": "g"},
    ...            {"kind": "kafka", "topic": "b", "group": "g"})
    "topic is 'b', the checkpoint was taken on 'a'"
    >>> difference({"kind": "kafka", "topic": "a"}, {"kind": "kafka", "topic": "a"}) is None
    True
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError

if TYPE_CHECKING:
    from .connector import Source

log = logging.getLogger("hebbstream")


def difference(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> str | None:
    """How ``current`` differs from ``saved``, key by key; ``None`` when they are equal."""
    if saved == current:
        return None
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return f"the source is {_short(current)}, the checkpoint was taken on {_short(saved)}"
    parts = []
    for key in sorted(set(saved) | set(current), key=str):
        if saved.get(key) != current.get(key):
            parts.append(f"{key} is {_short(current.get(key))}, the checkpoint was taken on {_short(saved.get(key))}")
    return "; ".join(parts)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def check_resume(source: Source, saved: Any, position: dict[str, Any] | None, *, where: str,
                 force: bool = False) -> None:
    """Refuse to resume ``source`` from a checkpoint taken on another input.

    Args:
        saved: the identity stored in the checkpoint (``None``: a checkpoint that records
            none, written before identities existed: not checked, with a warning).
        position: the checkpoint's source position (a file source checks only the files
            it has read up to there).
        where: the checkpoint folder, for messages.
        force: resume anyway; the mismatch is logged as a warning.
    """
    if saved is None:
        if source.identity() is not None:
            log.warning("checkpoint folder %s: the checkpoint records no source identity; the input is not checked",
                        where)
        return
    if not isinstance(saved, dict):
        problem = f"the checkpoint's source identity is a {type(saved).__name__}, not a mapping"
    else:
        try:
            problem = source.identity_mismatch(saved, position)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            problem = f"the checkpoint's source identity is malformed ({exc!r})"
    if problem is None:
        return
    if force:
        log.warning("checkpoint folder %s: resuming with --force although %s", where, problem)
        return
    raise CheckpointError(f"checkpoint folder {where}: cannot resume {source.name}: {problem}. Resume with "
                          "the input the checkpoint was taken on, start over with --overwrite, or pass "
                          "--force to resume anyway")
