"""The Kafka source's lag (messages not yet processed, per partition) reaches the run's
observer and ``/metrics`` as ``hebbstream_source_lag{partition=...}``."""

from __future__ import annotations

from kafka.detector import ZScore
from kafka.topics import produce_json
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from streams import ListSink

from connectors.kafka import KafkaSource
from stream import run
from stream.serve import LiveObserver

N = 1000


class Lags(LiveObserver):
    """Also records the source's lag after every batch."""

    def __init__(self):
        super().__init__()
        self.seen: list[dict[str, int]] = []

    def batch(self, micro, out, latency, dead_letter):
        super().batch(micro, out, latency, dead_letter)
        self.seen.append(self._source.lag())


def test_lag_per_partition_falls_to_zero_and_is_exported(kafka, tmp_path):
    topic = kafka.topic("lag")
    produce_json(kafka.servers, topic, [{"key": f"k{i % 4}", "x": float(i)} for i in range(N)])
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers, idle_timeout=1.0,
                         batch_size=100)
    live = Lags()
    summary = run(source, ZScore(delay=0.02), ListSink(), checkpoint=str(tmp_path / "ckpt"), batch_size=100,
                  check_order=False, observer=live)
    assert summary["events"] == N
    totals = [sum(lag.values()) for lag in live.seen if lag]
    assert totals and max(totals) > 0  # messages waited on the broker while the first batches ran
    assert all(0 <= t <= N for t in totals)
    assert all(name.startswith(topic + "-") for lag in live.seen for name in lag)
    assert totals[-1] == 0  # after the last batch: everything on the broker was processed
    metrics = {f.name: f for f in text_string_to_metric_families(generate_latest(live.registry).decode())}
    samples = metrics["hebbstream_source_lag"].samples
    assert samples and {s.labels["partition"] for s in samples} <= {name for lag in live.seen for name in lag}
