"""``hebbstream demo``: scored CSV, plot and alert report on the bundled NAB stream."""

from __future__ import annotations

import argparse
import os

import pyarrow.csv as pacsv

from operators.htm.model import HTMConfig
from operators.nab.demo import DEFAULT_DATA, DEFAULT_WINDOWS, add_parser, alert_episodes, run_demo


def test_bundled_data_and_windows_are_shipped():
    assert os.path.exists(DEFAULT_DATA) and os.path.exists(DEFAULT_WINDOWS)
    corpus = os.path.dirname(os.path.dirname(DEFAULT_WINDOWS))
    assert os.path.exists(os.path.join(corpus, "LICENSE.txt"))


def test_demo_writes_csv_and_png(tmp_path):
    report = run_demo(out_dir=str(tmp_path), rows=400, config=HTMConfig.small(), threshold=0.3)
    table = pacsv.read_csv(report["files"]["csv"])
    assert table.num_rows == 400
    assert {"timestamp", "value", "anomaly_score", "anomaly_likelihood", "alert",
            "label"} <= set(table.column_names)
    assert os.path.getsize(report["files"]["png"]) > 10_000
    assert report["alerts"] == sum(n for _, _, n, _ in report["episodes"])
    assert len(report["windows"]) == 4


def test_alert_episodes_merge_consecutive_rows():
    import numpy as np

    ts = np.arange(8).astype("datetime64[m]")
    eps = alert_episodes(ts, np.array([0, 1, 1, 0, 0, 1, 0, 1], bool))
    assert [(int(a.astype(int)), int(b.astype(int)), n) for a, b, n in eps] == [
        (1, 2, 2), (5, 5, 1), (7, 7, 1)]


def test_demo_command_is_registered():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_parser(sub)
    args = parser.parse_args(["demo", "--out", "x", "--threshold", "0.7"])
    assert args.out == "x" and args.threshold == 0.7 and callable(args.func)
