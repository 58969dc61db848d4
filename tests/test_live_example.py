"""examples/live_anomaly.toml: HTM → Alerts, the scored stream to one sink and the alert
rows to a side output, through the CLI."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest

from stream import config
from stream.cli import main
from stream.outputs import Outputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def example(folder) -> str:
    """The example with its outputs under ``folder`` and its input found from anywhere."""
    with open(os.path.join(REPO, "examples", "live_anomaly.toml"), encoding="utf-8") as f:
        text = f.read().replace('"examples/', f'"{REPO}/examples/').replace('"out/', f'"{folder}/out/')
    path = os.path.join(folder, "live_anomaly.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def read(folder: str) -> pa.Table:
    # a part file whose alert_episode is empty would be read as a column of nulls: say its type
    types = {"alert_episode": pa.int64(), "alert": pa.bool_(), "alert_active": pa.bool_()}
    return ds.dataset(folder, format=ds.CsvFileFormat(convert_options=pacsv.ConvertOptions(column_types=types)))\
        .to_table()


def test_the_example_builds_and_replays(tmp_path, capsys):
    path = example(tmp_path)
    spec = config.load(path)
    assert isinstance(spec.sink, Outputs) and [o.where for o in spec.sink.outputs] == [None, "alert"]
    assert spec.run_kwargs["speed"] == 3600
    assert main(["run", path, "--max-events", "300", "--speed", "0"]) == 0
    scores = read(f"{tmp_path}/out/live_anomaly/scores.csv")
    assert scores.num_rows == 300 and scores.column_names[-3:] == ["alert", "alert_active", "alert_episode"]


@pytest.mark.slow
def test_the_whole_recording_alerts_first_in_a_labelled_window(tmp_path, capsys):
    path = example(tmp_path)
    assert main(["run", path, "--speed", "0"]) == 0
    scores = read(f"{tmp_path}/out/live_anomaly/scores.csv")
    alerts = read(f"{tmp_path}/out/live_anomaly/alerts.csv")
    opened = scores.filter(pc.equal(scores["alert"], True))
    assert 3 <= alerts.num_rows == opened.num_rows <= 30
    assert alerts["alert_episode"].to_pylist() == list(range(1, alerts.num_rows + 1))
    # NAB's labelled window 2013-12-15 07:00 .. 2013-12-17 11:00 (combined_windows.json)
    first = alerts["timestamp"][0].as_py()
    assert "2013-12-15 07:00" <= str(first) <= "2013-12-17 11:00"
