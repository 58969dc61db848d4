"""Committing consumed offsets when the group may be moving under the worker.

An offset commit fails with ``REBALANCE_IN_PROGRESS``, ``ILLEGAL_GENERATION`` or
``UNKNOWN_MEMBER_ID`` when the consumer group is rebalancing or has already moved on,
typically when several workers stop at once and each one's final commit meets the
others leaving. In at-least-once mode that is harmless: the commit comes *after* the
checkpoint it covers is saved, and the next owner of a partition resumes from its newest
checkpoint, which is at or past any committed offset. So such a refusal is logged and
the run goes on (or ends cleanly); any other commit failure stops it with a clear error.

Example:
    >>> from confluent_kafka import KafkaError, KafkaException
    >>> class Moving:
    ...     def commit(self, offsets, asynchronous):
    ...         raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    >>> commit_offsets(Moving(), ["t-0@5"], "kafka:t")
    False
"""

from __future__ import annotations

import logging
from typing import Any

from stream.errors import SourceError

log = logging.getLogger("hebbstream.kafka")


def _group_moved_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError as E

    return frozenset((E.REBALANCE_IN_PROGRESS, E.ILLEGAL_GENERATION, E.UNKNOWN_MEMBER_ID, E.FENCED_INSTANCE_ID,
                      E._ASSIGNMENT_LOST, E._STATE, E.STALE_MEMBER_EPOCH, E.FENCED_MEMBER_EPOCH))


def commit_offsets(consumer: Any, offsets: list[Any], where: str, asynchronous: bool = False) -> bool:
    """Commit ``offsets``; False (logged) when the group refused them because it is moving."""
    from confluent_kafka import KafkaError, KafkaException

    try:
        consumer.commit(offsets=offsets, asynchronous=asynchronous)
        return True
    except KafkaException as exc:
        err = exc.args[0]
        code = err.code() if isinstance(err, KafkaError) else None
        if code == KafkaError._NO_OFFSET:
            return True  # nothing new to commit
        if code in _group_moved_codes():
            log.warning("%s: offsets not committed, the consumer group is rebalancing (%s); the next owner "
                        "of each partition resumes from its newest checkpoint", where, err.str())
            return False
        raise SourceError(f"{where}: offset commit failed: {err.str() if code is not None else err}") from exc
    except RuntimeError as exc:  # the consumer was closed meanwhile
        log.warning("%s: offsets not committed: %s", where, exc)
        return False
