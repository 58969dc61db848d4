"""Exactly-once takeover: fence the dead owner of a partition and abort its open transaction.

A worker killed in the middle of a transaction leaves it open, and on a real cluster every
``read_committed`` reader of the output partitions it wrote to stops at that transaction
until the broker times it out (``transaction.timeout.ms``, 60 s by default). Only a
producer with the *same* ``transactional.id`` can end it sooner: its ``init_transactions``
aborts the open transaction and fences the old producer.

So each partition's checkpoint folder holds an ``OWNER`` record: the transactional id of
the worker that owns it, and whether that worker gave it up cleanly (after committing,
on revocation or when stopping). A worker that is assigned a partition whose owner did
*not* give it up (it died, or lost the partition as a zombie) initialises a producer
with that owner's id once (:func:`fence`), which aborts the dead owner's transaction at
once, and then records itself as the owner. A worker that gave its partitions up cleanly
is never fenced, so live workers in a rebalance are left alone.

Example:
    >>> import tempfile
    >>> from stream.checkpoint import CheckpointStore
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> claim(store, "hebbstream-out-g-w1")
    >>> owner(store)
    {'id': 'hebbstream-out-g-w1', 'released': False}
    >>> release(store, "hebbstream-out-g-w1"); owner(store)["released"]
    True
    >>> release(store, "someone-else"); owner(store)["id"]      # only the owner releases
    'hebbstream-out-g-w1'
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("hebbstream.kafka")

_FILE = "OWNER"


def owner(store: Any) -> dict[str, Any] | None:
    """The ``OWNER`` record of a partition's checkpoint store, if any."""
    try:
        with store.fs.open_input_stream(f"{store.root}/{_FILE}") as f:
            record = json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None  # not ours to interpret: treat as no owner (nothing is fenced)
    return {"id": record["id"], "released": bool(record.get("released"))}


def claim(store: Any, txn_id: str) -> None:
    """Record ``txn_id`` as the owner (atomically: temporary file, then rename)."""
    _write(store, {"id": txn_id, "released": False})


def release(store: Any, txn_id: str) -> None:
    """Mark the partition given up cleanly by ``txn_id`` (if it is still the owner)."""
    current = owner(store)
    if current is not None and current["id"] == txn_id:
        _write(store, {"id": txn_id, "released": True})


def fence(conf: dict[str, Any], txn_id: str, timeout: float, where: str) -> bool:
    """Initialise a producer as ``txn_id``: the broker aborts that id's open transaction
    and fences any producer still using it. False (logged) when the broker refused."""
    from confluent_kafka import KafkaException, Producer

    settings = {k: v for k, v in conf.items() if k not in ("error_cb", "on_delivery")}
    settings["transactional.id"] = txn_id
    try:
        Producer(settings).init_transactions(timeout)
    except KafkaException as exc:
        log.warning("%s: could not fence %r (its open transaction ends when it times out): %s",
                    where, txn_id, exc.args[0].str())
        return False
    log.warning("%s: fenced %r, which did not give its partitions up cleanly; its open transaction "
                "is aborted", where, txn_id)
    return True


def _write(store: Any, record: dict[str, Any]) -> None:
    store.fs.create_dir(store.root, recursive=True)
    path = f"{store.root}/{_FILE}"
    with store.fs.open_output_stream(path + ".tmp") as f:
        f.write(json.dumps(record).encode())
    store.fs.move(path + ".tmp", path)
