"""Side outputs: [[outputs]] in a pipeline file, row filters and column selections, one
checkpoint covering every sink, resume, locks, and the KafkaSource's transactional sink."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest
from bad_input import assert_kept, assert_refused, run_cli, snapshot, write_pipeline

from connectors.memory import MemorySink
from stream import Batch, config
from stream.errors import CheckpointError, SchemaError
from stream.outputs import Output, Outputs, members

N = 96
SCORES = np.round(np.abs(np.sin(np.arange(N) / 5.0)), 4)  # bursts over 0.9 every ~16 rows


def pipeline(folder: Path, outputs: str, *, sink: str | None = "scores.csv", every: int = 2) -> Path:
    keys = ["a" if i % 3 else "b" for i in range(N)]
    if not (folder / "data.csv").exists():
        pacsv.write_csv(pa.table({"key": keys, "ts": np.arange(N), "x": SCORES}), str(folder / "data.csv"))
    text = ('[source]\ntype = "csv"\npath = "data.csv"\nkey = "key"\ntime = "ts"\nbatch_size = 8\n'
            '[[operators]]\ntype = "alerts"\nscore = "x"\nenter = 0.9\nleave = 0.5\nwarmup = 0\n')
    if sink:
        text += f'[sink]\ntype = "csv"\npath = "{sink}"\n'
    text += outputs
    text += f'[checkpoint]\npath = "ckpt"\nevery_batches = {every}\n[run]\nbatch_size = 8\n'
    return write_pipeline(folder, text)


ALERTS_CSV = ('[[outputs]]\ntype = "csv"\npath = "alerts.csv"\nwhere = "alert"\n'
              'columns = ["key", "ts", "alert_episode"]\n')
EPISODES_PARQUET = '[[outputs]]\ntype = "parquet"\npath = "episodes.parquet"\nwhere = "alert_active"\n'


def read(path: Path, fmt: str = "csv") -> pa.Table:
    if fmt == "csv":  # a part whose alert_episode is empty would be read as a column of nulls: say its type
        types = {"alert_episode": pa.int64(), "alert": pa.bool_(), "alert_active": pa.bool_()}
        fmt = ds.CsvFileFormat(convert_options=pacsv.ConvertOptions(column_types=types))
    return ds.dataset(str(path), format=fmt).to_table()


def test_alert_rows_go_to_their_own_sink_and_the_whole_stream_to_the_sink(tmp_path):
    pipeline(tmp_path, ALERTS_CSV + EPISODES_PARQUET)
    result = run_cli(["run", "pipeline.toml"], cwd=tmp_path)
    assert result.rc == 0, result.err
    scores = read(tmp_path / "scores.csv")
    alerts = read(tmp_path / "alerts.csv")
    episodes = read(tmp_path / "episodes.parquet", "parquet")
    assert scores.num_rows == N
    assert alerts.column_names == ["key", "ts", "alert_episode"]
    opened = scores.filter(scores["alert"])
    assert alerts["ts"].to_pylist() == opened["ts"].to_pylist() and 0 < alerts.num_rows < 20
    assert episodes.num_rows == sum(scores["alert_active"].to_pylist())
    assert episodes.column_names == scores.column_names


def test_outputs_without_a_sink_section(tmp_path):
    pipeline(tmp_path, ALERTS_CSV, sink=None)
    assert run_cli(["run", "pipeline.toml"], cwd=tmp_path).rc == 0
    assert read(tmp_path / "alerts.csv").num_rows > 0 and not (tmp_path / "scores.csv").exists()


def test_resumed_run_writes_every_output_exactly_once(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir(), cut.mkdir()
    pipeline(full, ALERTS_CSV + EPISODES_PARQUET)
    pipeline(cut, ALERTS_CSV + EPISODES_PARQUET)
    assert run_cli(["run", "pipeline.toml"], cwd=full).rc == 0
    # stops after 44 events: the last checkpoint covers 40, 4 rows were written after it
    assert run_cli(["run", "pipeline.toml", "--max-events", "44"], cwd=cut).rc == 0
    assert run_cli(["run", "pipeline.toml", "--resume"], cwd=cut).rc == 0
    for name, fmt in (("scores.csv", "csv"), ("alerts.csv", "csv"), ("episodes.parquet", "parquet")):
        assert read(cut / name, fmt).equals(read(full / name, fmt)), name


def test_resume_with_an_output_added_since_the_checkpoint_is_refused(tmp_path):
    pipeline(tmp_path, ALERTS_CSV)
    assert run_cli(["run", "pipeline.toml", "--max-events", "40"], cwd=tmp_path).rc == 0
    before = snapshot(tmp_path / "alerts.csv", tmp_path / "scores.csv")
    pipeline(tmp_path, ALERTS_CSV + EPISODES_PARQUET)
    assert_refused(run_cli(["run", "pipeline.toml", "--resume"], cwd=tmp_path), "outputs.2", rc=1)
    assert_kept(before)


def test_a_fresh_run_over_an_outputs_earlier_output_is_refused_and_overwrite_replaces_it(tmp_path):
    pipeline(tmp_path, ALERTS_CSV, sink=None)
    assert run_cli(["run", "pipeline.toml"], cwd=tmp_path).rc == 0
    before = snapshot(tmp_path / "alerts.csv")
    (tmp_path / "ckpt").rename(tmp_path / "old-ckpt")  # only the output is in the way
    assert_refused(run_cli(["run", "pipeline.toml"], cwd=tmp_path), "alerts.csv", "--overwrite")
    assert_kept(before)
    assert run_cli(["run", "pipeline.toml", "--overwrite"], cwd=tmp_path).rc == 0


def test_where_and_columns_must_name_stream_columns():
    batch = Batch(pa.record_batch({"key": ["a"], "score": [0.5]}), source="s.csv")
    for output, message in ((Output(MemorySink(), where="alert", title="[[outputs]] #1"), "where = 'alert'"),
                            (Output(MemorySink(), where="score"), "must be boolean"),
                            (Output(MemorySink(), columns=["nope"]), "columns ['nope']")):
        with pytest.raises(SchemaError, match=re.escape(message)):
            output.select(batch)


def test_null_in_the_where_column_is_not_written():
    sink = MemorySink()
    Outputs([Output(sink, where="alert")]).write(Batch(pa.record_batch({"alert": [True, None, False]})))
    assert sink.to_table().num_rows == 1


def test_a_sink_failing_to_close_does_not_keep_the_others_open():
    class Failing(MemorySink):
        def close(self):
            raise OSError("disk gone")

    class Closing(MemorySink):
        closed = False

        def close(self):
            self.closed = True

    last = Closing()
    with pytest.raises(OSError, match="disk gone"):
        Outputs([Output(Failing()), Output(last, label="b")]).close()
    assert last.closed


def test_flush_points_round_trip_and_a_foreign_flush_point_is_refused():
    a, b = MemorySink(), MemorySink()
    out = Outputs([Output(a), Output(b, label="outputs.1")])
    out.open(None)
    out.write(Batch(pa.record_batch({"x": [1]})))
    point = out.flush()
    out.write(Batch(pa.record_batch({"x": [2]})))
    out.open(point)
    assert len(a.batches) == len(b.batches) == 1
    with pytest.raises(CheckpointError, match="resume with the outputs"):
        out.open({"batches": 1})  # a checkpoint of a run with one [sink]


def test_the_kafka_source_finds_the_transactional_output_and_refuses_two():
    pytest.importorskip("confluent_kafka")
    from connectors.kafka import KafkaSink, KafkaSource
    from stream import Pipeline
    from stream.checkpoint import CheckpointStore
    from stream.connector import RunContext
    from stream.errors import ConfigError

    conf = {"test.mock.num.brokers": 1}
    txn = KafkaSink("scores", exactly_once=True, config=conf)
    plain = KafkaSink("alerts", config=conf)
    src = KafkaSource("in", group_id="g", config=conf)
    store = CheckpointStore(str(Path(__import__("tempfile").mkdtemp())))
    src.bind(RunContext(Pipeline([]), Outputs([Output(txn), Output(plain, label="outputs.1")]), store, lambda: None))
    assert src._txn_sink is txn and members(Outputs([Output(txn)])) == [txn]
    two = Outputs([Output(txn), Output(KafkaSink("more", exactly_once=True, config=conf), label="outputs.1")])
    with pytest.raises(ConfigError, match="at most one output can be exactly-once"):
        KafkaSource("in", group_id="g", config=conf).bind(RunContext(Pipeline([]), two, store, lambda: None))


def test_config_builds_outputs_labelled_by_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toml = pipeline(tmp_path, ALERTS_CSV)
    spec = config.load(str(toml))
    assert isinstance(spec.sink, Outputs)
    assert [(o.label, o.title, o.where, o.columns) for o in spec.sink.outputs] == [
        ("sink", "[sink]", None, None), ("outputs.1", "[[outputs]] #1", "alert", ["key", "ts", "alert_episode"])]
