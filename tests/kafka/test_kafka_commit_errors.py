"""A consumer group that moves while a worker commits (``REBALANCE_IN_PROGRESS``, typically
when workers stop together) ends the run cleanly; other commit failures stop it with an
error naming the source.

The mock cluster rebalances too quickly to meet the final commit reliably, so the group's
refusal is injected: a consumer whose synchronous commits fail with the broker's error."""

from __future__ import annotations

import logging

import confluent_kafka
import pyarrow as pa
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from kafka.detector import ZScore
from kafka.topics import produce_json
from streams import ListSink

from connectors.kafka import KafkaSink, KafkaSource
from stream import Batch, HebbstreamError, SourceError, run


class RebalancingConsumer(confluent_kafka.Consumer):
    """Synchronous commits fail as in a group that is rebalancing."""

    code = KafkaError.REBALANCE_IN_PROGRESS

    def commit(self, *args, **kwargs):
        if not kwargs.get("asynchronous", True):
            raise KafkaException(KafkaError(self.code))
        return super().commit(*args, **kwargs)


def test_final_commit_refused_by_a_rebalancing_group_ends_the_run_cleanly(kafka, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(confluent_kafka, "Consumer", RebalancingConsumer)
    topic = kafka.topic("stop-together")
    produce_json(kafka.servers, topic, [{"key": f"k{i % 4}", "x": float(i)} for i in range(200)])
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers, idle_timeout=1.0)
    with caplog.at_level(logging.WARNING, logger="hebbstream"):
        summary = run(source, ZScore(), ListSink(), checkpoint=str(tmp_path / "ckpt"), check_order=False)
    assert summary["events"] == 200
    assert any("consumer group is rebalancing" in r.getMessage() for r in caplog.records)


def test_other_commit_failures_stop_the_run_naming_the_source(kafka, tmp_path, monkeypatch):
    class Broken(RebalancingConsumer):
        code = KafkaError.OFFSET_METADATA_TOO_LARGE

    monkeypatch.setattr(confluent_kafka, "Consumer", Broken)
    topic = kafka.topic("broken-commit")
    produce_json(kafka.servers, topic, [{"key": "a", "x": 1.0}])
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers, idle_timeout=1.0)
    with pytest.raises(SourceError, match=f"kafka:{topic}: offset commit failed"):
        run(source, ZScore(), ListSink(), checkpoint=str(tmp_path / "ckpt"), check_order=False)


class TxnProducer:
    """A transactional producer whose commit is refused by the group coordinator."""

    def __init__(self):
        self.aborted = 0

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, txn_requires_abort=True))

    def abort_transaction(self, timeout):
        self.aborted += 1

    def flush(self, timeout):
        return 0


def test_exactly_once_commit_refused_by_the_group_aborts_and_blocks_further_output():
    sink = KafkaSink("scores", bootstrap_servers="localhost:1", exactly_once=True)
    sink.producer, sink._in_txn = TxnProducer(), True
    assert sink.commit_transaction([TopicPartition("in", 0, 5)], object()) is False
    assert sink.producer.aborted == 1 and sink.transactions == 0
    sink.close()  # the end of the run: clean, nothing left open
    sink.producer = TxnProducer()
    with pytest.raises(HebbstreamError, match="aborted .*restart it"):
        sink.write(Batch(pa.record_batch({"key": ["a"], "x": [1.0]})))
