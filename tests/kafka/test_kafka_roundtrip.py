"""File → topic → stateful detector → topic → file equals the file-only run, per key."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest
from kafka.detector import ZScore
from kafka.topics import read_topic
from streams import ListSink

from connectors.arrow_ipc import ArrowSink, ArrowSource
from connectors.kafka import KafkaSink, KafkaSource
from stream import Batch, Operator, run
from stream.cli import main as cli
from stream.testing import check_operator


def recorded_stream(path: str, n: int = 3000, keys: int = 8, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[rng.integers(0, n, 20)] += 8.0  # a few anomalies
    table = pa.table({"key": [f"m{k}" for k in rng.integers(0, keys, n)], "ts": np.arange(n, dtype=np.int64),
                      "x": x, "seq": np.arange(n, dtype=np.int64)})
    with pa.ipc.new_file(path, table.schema) as w:
        w.write_table(table, max_chunksize=500)
    return path


def per_key(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        out.setdefault(r["key"], []).append((int(r["seq"]), float(r["score"])))
    return out


def test_detector_contract():
    rng = np.random.default_rng(1)
    batch = Batch(pa.record_batch({"key": list("abcab" * 8), "x": rng.normal(size=40)}))
    check_operator(ZScore, batch)


def river_detector() -> Operator:
    """River's Half-Space Trees, one model per key, writing its score to ``score``."""
    from operators.river import RiverOperator

    return RiverOperator.from_config(
        model=[{"model": "preprocessing.MinMaxScaler"},
               {"model": "anomaly.HalfSpaceTrees", "params": {"n_trees": 5, "height": 6, "window_size": 50,
                                                              "seed": 7}}],
        features=["x"], per_key=True, score="score")


def htm_detector() -> Operator:
    """The HTM detector, one model per key, raw anomaly score in ``score``."""
    from operators.htm import HTMDetector

    return HTMDetector(value_column="x", time_column="ts", raw_column="score", seed=1)


# the HTM detector through Kafka (11 s) runs in `make test-all`; the path is the same for all three
@pytest.mark.parametrize("detector", [ZScore, river_detector, pytest.param(htm_detector, marks=pytest.mark.slow)],
                         ids=["zscore", "river-hst", "htm"])
def test_file_topic_detector_topic_file_equals_file_only_run(kafka, tmp_path, detector):
    path = recorded_stream(str(tmp_path / "metrics.arrow"))
    reference = ListSink()
    run(ArrowSource(path, key="key", time="ts"), detector(), reference, batch_size=256)
    expected = per_key(reference.table().to_pylist())

    topic_in, topic_out = kafka.topic("metrics"), kafka.topic("scores")
    assert cli(["produce", path, "--topic", topic_in, "--bootstrap-servers", kafka.servers,
                "-X", "linger.ms=5"]) == 0

    source = KafkaSource(topic_in, group_id=kafka.topic("detect"), bootstrap_servers=kafka.servers,
                         idle_timeout=3.0)
    summary = run(source, detector(), KafkaSink(topic_out, bootstrap_servers=kafka.servers),
                  checkpoint=str(tmp_path / "ckpt"), checkpoint_every_seconds=0.5, batch_size=256)
    assert summary["events"] == 3000
    # every partition has its own checkpoint folder in the store
    assert sorted(os.listdir(tmp_path / "ckpt")) == [f"{topic_in}-{p}" for p in range(4)]

    out = [m.json() for m in read_topic(kafka.servers, topic_out)]
    # topic → file: the output topic written back to a file through a file sink
    back = tmp_path / "scores.arrow"
    sink = ArrowSink(str(back))
    sink.open(None)
    sink.write(Batch(pa.RecordBatch.from_pylist(out)))
    sink.close()
    got = per_key(pa.ipc.open_file(str(back)).read_all().to_pylist())
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert [s for s, _ in got[key]] == [s for s, _ in expected[key]], f"order of key {key}"
        np.testing.assert_allclose([v for _, v in got[key]], [v for _, v in expected[key]], rtol=1e-12,
                                   err_msg=f"scores of key {key}")


@pytest.mark.parametrize("fmt", ["arrow", "raw"])
def test_arrow_and_raw_payloads(kafka, tmp_path, fmt):
    topic = kafka.topic(f"payload-{fmt}")
    rows = pa.record_batch({"key": ["a", "b", "a"], "x": [1.0, 2.0, 3.0],
                            "value": [b"p", b"q", b"r"]})
    sink = KafkaSink(topic, bootstrap_servers=kafka.servers, format=fmt)
    sink.open(None)
    sink.write(Batch(rows))
    sink.flush()
    sink.close()
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers, format=fmt,
                         idle_timeout=1.5)
    got = ListSink()
    run(source, Identity(), got, checkpoint=str(tmp_path / "ckpt"), check_order=False)
    table = got.table()
    if fmt == "arrow":
        assert sorted(zip(table["key"].to_pylist(), table["x"].to_pylist(), strict=True)) == \
            [("a", 1.0), ("a", 3.0), ("b", 2.0)]
    else:
        assert sorted(zip(table["key"].to_pylist(), table["value"].to_pylist(), strict=True)) == \
            [("a", b"p"), ("a", b"r"), ("b", b"q")]
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")  # the message timestamp


class Identity(Operator):
    def process(self, batch):
        return batch


def test_produce_command_paces_by_rate(kafka, tmp_path):
    path = recorded_stream(str(tmp_path / "small.arrow"), n=60)
    topic = kafka.topic("paced")
    import time

    t0 = time.monotonic()
    assert cli(["produce", path, "--topic", topic, "--bootstrap-servers", kafka.servers,
                "--rate", "200", "--limit", "50"]) == 0
    assert time.monotonic() - t0 >= 0.2  # 50 events at 200/s take at least a quarter second
    got = read_topic(kafka.servers, topic)
    assert len(got) == 50 and {json.loads(m.value)["key"] for m in got} == {m.key for m in got}


def test_partitions_pause_when_the_pipeline_is_behind_and_nothing_is_lost(kafka, tmp_path):
    from kafka.topics import produce_json

    topic = kafka.topic("backlog")
    rows = [{"key": f"k{i % 4}", "seq": i, "x": float(i)} for i in range(2000)]
    produce_json(kafka.servers, topic, rows)
    source = KafkaSource(topic, group_id=kafka.topic("g"), bootstrap_servers=kafka.servers, time="",
                         max_inflight=300, batch_size=100, idle_timeout=2.0)
    out = ListSink()
    run(source, ZScore(delay=0.002), out, checkpoint=str(tmp_path / "ckpt"), batch_size=50, read_ahead=64)
    assert source.pauses > 0  # the reader ran 300 rows ahead and paused its partitions
    table = out.table()
    by_key: dict[str, list[int]] = {}
    for key, seq in zip(table["key"].to_pylist(), table["seq"].to_pylist(), strict=True):
        by_key.setdefault(key, []).append(seq)
    assert sorted(table["seq"].to_pylist()) == list(range(2000))  # each event once
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"key {key} out of order"
