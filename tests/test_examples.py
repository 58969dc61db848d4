"""The example pipelines run through the CLI, resume from their checkpoints, and give
River's own numbers."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.csv as pacsv
from river import datasets, evaluate, linear_model, metrics, preprocessing

from stream.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pipeline(name: str, folder) -> str:
    """The example, with its outputs under ``folder`` and its inputs found from anywhere."""
    with open(os.path.join(REPO, "examples", name), encoding="utf-8") as f:
        text = f.read()
    text = text.replace('"examples/', f'"{REPO}/examples/').replace('"out/', f'"{folder}/out/')
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _read_parts(folder: str) -> pa.Table:
    parts = sorted(p for p in os.listdir(folder) if p.startswith("part-"))
    return pa.concat_tables([pacsv.read_csv(os.path.join(folder, p)) for p in parts])


def test_river_anomaly_example_resumes_to_the_same_scores(tmp_path, capsys):
    os.makedirs(tmp_path / "whole", exist_ok=True)
    os.makedirs(tmp_path / "split", exist_ok=True)
    whole = _pipeline("river_anomaly.toml", tmp_path / "whole")
    split = _pipeline("river_anomaly.toml", tmp_path / "split")
    assert main(["run", whole, "--max-events", "1500", "--batch-size", "256"]) == 0
    assert main(["run", split, "--max-events", "700", "--batch-size", "256"]) == 0
    assert main(["run", split, "--max-events", "1500", "--batch-size", "256", "--resume"]) == 0
    a = _read_parts(str(tmp_path / "whole/out/river_anomaly/scores.csv"))
    b = _read_parts(str(tmp_path / "split/out/river_anomaly/scores.csv"))
    assert a.num_rows == 1500 and a.column_names == ["timestamp", "value", "anomaly_score"]
    assert a.equals(b)
    assert 0 < max(a.column("anomaly_score").to_pylist()) <= 1


def test_river_classification_example_equals_progressive_val_score(tmp_path, capsys):
    os.makedirs(tmp_path, exist_ok=True)
    path = _pipeline("river_classification.toml", tmp_path)
    summary_path = tmp_path / "summary.json"
    assert main(["run", path, "--summary", str(summary_path)]) == 0
    with open(summary_path) as f:
        summary = json.load(f)
    assert summary["events"] == 1250
    (found,) = [v for k, v in summary["metrics"].items() if k.endswith(".Evaluate")]
    printed = json.loads(capsys.readouterr().out)
    assert list(printed.values())[0]["overall"] == found["overall"]
    for name in ("Accuracy", "F1", "ROCAUC"):
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        expected = evaluate.progressive_val_score(datasets.Phishing(), model, getattr(metrics, name)())
        assert found["overall"][name] == expected.get(), name
    out = _read_parts(str(tmp_path / "out/river_classification/predictions.csv"))
    assert out.num_rows == 1250 and out.column_names[-2:] == ["prediction", "proba"]


def test_river_classification_metrics_survive_a_resume(tmp_path, capsys):
    os.makedirs(tmp_path, exist_ok=True)
    path = _pipeline("river_classification.toml", tmp_path)
    assert main(["run", path, "--max-events", "600"]) == 0
    capsys.readouterr()
    assert main(["run", path, "--resume", "--summary", str(tmp_path / "s.json")]) == 0
    with open(tmp_path / "s.json") as f:
        summary = json.load(f)
    assert summary["events_total"] == 1250 and summary["events"] == 1250 - 600
    (found,) = [v for k, v in summary["metrics"].items() if k.endswith(".Evaluate")]
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    assert found["overall"]["Accuracy"] == evaluate.progressive_val_score(
        datasets.Phishing(), model, metrics.Accuracy()).get()
    out = _read_parts(str(tmp_path / "out/river_classification/predictions.csv"))
    assert out.num_rows == 1250


def test_htm_example_resumes_to_the_same_scores(tmp_path, capsys):
    whole = _pipeline("htm_anomaly.toml", _folder(tmp_path / "whole"))
    split = _pipeline("htm_anomaly.toml", _folder(tmp_path / "split"))
    assert main(["run", whole, "--max-events", "400", "--batch-size", "64"]) == 0
    assert main(["run", split, "--max-events", "150", "--batch-size", "64"]) == 0
    assert main(["run", split, "--max-events", "400", "--batch-size", "64", "--resume"]) == 0
    a = _read_parts(str(tmp_path / "whole/out/htm_anomaly/scores.csv"))
    b = _read_parts(str(tmp_path / "split/out/htm_anomaly/scores.csv"))
    assert a.num_rows == 400 and {"anomaly_score", "anomaly_likelihood"} <= set(a.column_names)
    assert a.equals(b)
    raw = a.column("anomaly_score").to_pylist()
    assert 0 <= min(raw) and max(raw) <= 1 and len(set(raw)) > 1


def _folder(path) -> str:
    os.makedirs(path, exist_ok=True)
    return path
