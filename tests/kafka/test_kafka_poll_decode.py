"""A poll's messages → one Arrow batch, in bulk, equals the message-by-message reading.

No broker needed: confluent-kafka ``Message`` objects are built directly, with the cases
the bulk path has to get right (several topics and partitions in runs, offset gaps,
messages without key, keys that are not UTF-8, tombstones, undecodable payloads).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.kafka import KafkaSource
from stream.tasks import TASK_COLUMN

TOPICS = ["in-a", "in-b"]


def source(fmt: str) -> tuple[KafkaSource, list]:
    src = KafkaSource(TOPICS, group_id="g", bootstrap_servers="localhost:1", format=fmt, key="key",
                      time="ts", dead_letter_topic="rejected")
    rejected: list = []
    src._reject = lambda msgs, bad: rejected.extend((msgs[i].offset(), why) for i, why in bad)
    return src, rejected


@st.composite
def polls(draw):
    """Runs of messages per (topic, partition), offsets rising with gaps, some bad ones."""
    msgs, next_offset = [], {}
    for _ in range(draw(st.integers(1, 6))):
        tp = (draw(st.sampled_from(TOPICS)), draw(st.integers(0, 2)))
        for _ in range(draw(st.integers(1, 8))):
            offset = next_offset.get(tp, 0) + draw(st.sampled_from([0, 0, 0, 1, 5]))
            next_offset[tp] = offset + 1
            key = draw(st.sampled_from([b"k1", b"k2", None, b"\xff\xfe", "é".encode()]))
            value = draw(st.sampled_from([b"good", b"good", b"good", b"not json", b"", None]))
            if value == b"good":
                value = json.dumps({"x": draw(st.floats(-1e6, 1e6)), "n": offset}).encode()
            msgs.append(Message(topic=tp[0], partition=tp[1], offset=offset, key=key, value=value,
                                timestamp=(1, 1_700_000_000_000 + offset)))
    return msgs


def one_by_one(msgs: list) -> tuple[list[dict], list[int]]:
    """The rows and the rejected offsets, reading each message on its own."""
    rows, rejected = [], []
    for m in msgs:
        try:
            obj = json.loads(m.value()) if m.value() else None
        except ValueError:
            obj = None
        if obj is None or m.key() is None:
            rejected.append(m.offset())
            continue
        rows.append({**obj, "key": m.key().decode("utf-8", "replace"), "ts": m.timestamp()[1],
                     TASK_COLUMN: TOPICS.index(m.topic()) << 20 | m.partition(), "offset": m.offset()})
    return rows, rejected


@settings(max_examples=60, deadline=None)
@given(polls())
def test_bulk_decode_equals_message_by_message(msgs):
    src, rejected = source("json")
    got = list(src._to_batches(msgs))
    rows, want_rejected = one_by_one(msgs)
    assert sorted(o for o, _ in rejected) == sorted(want_rejected)
    if not rows:
        assert got == []
        return
    (batch,) = got
    table = batch.data.to_pydict()
    table["ts"] = [int(t.timestamp() * 1000) for t in table["ts"]]
    table["offset"] = batch.positions().tolist()
    assert [dict(zip(table, r, strict=True)) for r in zip(*table.values(), strict=True)] == rows
    # every partition of the poll is known by name (positions and checkpoints use it)
    assert {src._names[t] for t in table[TASK_COLUMN]} == \
        {f"{TOPICS[r[TASK_COLUMN] >> 20]}-{r[TASK_COLUMN] & 0xFFFFF}" for r in rows}


def test_raw_poll_keeps_bytes_keys_and_tombstones_out():
    msgs = [Message(topic="in-b", partition=3, offset=10 + i, key=b"k%d" % (i % 2), value=v,
                    timestamp=(1, 5)) for i, v in enumerate([b"\x00\x01", None, b"", b"xyz"])]
    src, rejected = source("raw")
    (batch,) = list(src._to_batches(msgs))
    assert batch.data.column("value").to_pylist() == [b"\x00\x01", b"", b"xyz"]
    assert batch.data.column("key").to_pylist() == ["k0", "k0", "k1"]
    assert batch.positions().tolist() == [10, 12, 13]
    assert np.unique(batch.numpy(TASK_COLUMN)).tolist() == [1 << 20 | 3]
    assert rejected == [(11, "the message has no value (a tombstone)")]
    assert batch.source == "in-b-3"
    assert batch.data.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
