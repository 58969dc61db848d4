"""``idle_timeout`` counts time without new messages, not time spent waiting for a slow
pipeline (back-pressure): a slow run reads its whole input."""

from __future__ import annotations

from kafka.detector import ZScore
from kafka.topics import produce_json
from streams import ListSink

from connectors.kafka import KafkaSource
from stream import run

N = 2000


def test_idle_timeout_does_not_count_back_pressure(kafka, tmp_path):
    topic = kafka.topic("slow")
    produce_json(kafka.servers, topic, [{"key": f"k{i % 8}", "x": float(i)} for i in range(N)])
    # each micro-batch of 100 takes 50 ms, so the whole input takes ~1 s: several idle
    # timeouts' worth of back-pressure (a read-ahead of one batch, partitions paused at 100)
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers, idle_timeout=0.3,
                         batch_size=100, max_inflight=100)
    out = ListSink()
    summary = run(source, ZScore(delay=0.05), out, checkpoint=str(tmp_path / "ckpt"), batch_size=100,
                  read_ahead=1, check_order=False)
    assert summary["events"] == N and out.table().num_rows == N
    assert source.pauses > 0  # the partitions were paused: back-pressure happened
