"""Exactly-once takeover: a worker assigned a partition whose owner did not give it up cleanly
fences that owner's transactional id (aborting its open transaction at once); owners that
left cleanly are left alone, and the worker records itself as the owner.

The mock cluster cannot show the broker's part: its ``init_transactions`` neither fences the
old producer nor aborts its transaction (the dead producer can still commit there), and it
filters no transactions for ``read_committed`` readers. On a real cluster
(``KAFKA_BOOTSTRAP_SERVERS``) the test also checks that the dead producer is fenced."""

from __future__ import annotations

import json
import logging

import pytest
from confluent_kafka import KafkaException, Producer
from kafka.detector import ZScore
from kafka.topics import produce_json

from connectors.kafka import KafkaSink, KafkaSource
from stream import run


def test_takeover_fences_an_owner_that_died_and_spares_one_that_left(kafka, tmp_path, caplog):
    topic_in, topic_out, group = kafka.topic("fence-in"), kafka.topic("fence-out"), kafka.topic("g")
    produce_json(kafka.servers, topic_in, [{"key": f"k{i % 8}", "x": float(i)} for i in range(40)])
    # a worker that died in the middle of a transaction on partition 0
    dead = Producer({"bootstrap.servers": kafka.servers, "transactional.id": "hebbstream-dead-worker"})
    dead.init_transactions(10)
    dead.begin_transaction()
    dead.produce(topic_out, b'{"never": "committed"}')
    dead.flush(10)
    store = tmp_path / "store"
    for partition, (owner, released) in enumerate([("hebbstream-dead-worker", False),
                                                   ("hebbstream-left-cleanly", True)]):
        (store / f"{topic_in}-{partition}").mkdir(parents=True)
        (store / f"{topic_in}-{partition}" / "OWNER").write_text(json.dumps({"id": owner, "released": released}))

    sink = KafkaSink(topic_out, bootstrap_servers=kafka.servers, exactly_once=True, instance="w2")
    source = KafkaSource(topic_in, group_id=group, bootstrap_servers=kafka.servers, idle_timeout=1.5)
    with caplog.at_level(logging.WARNING, logger="hebbstream"):
        summary = run(source, ZScore(), sink, checkpoint=str(store), check_order=False)
    assert summary["events"] == 40
    fenced = [r.getMessage() for r in caplog.records if "fenced" in r.getMessage()]
    assert len(fenced) == 1 and "hebbstream-dead-worker" in fenced[0], fenced
    if not kafka.mock:
        with pytest.raises(KafkaException):  # the dead worker's producer is fenced: it cannot commit
            dead.commit_transaction(10)
    # every partition now names this worker, given up cleanly when the run ended
    for partition in range(4):
        record = json.loads((store / f"{topic_in}-{partition}" / "OWNER").read_text())
        assert record == {"id": f"hebbstream-{topic_out}-{group}-w2", "released": True}
