"""NAB runner and ``hebbstream nab``: a toy detector through the engine, result files, scores."""

from __future__ import annotations

import csv
import os
import shutil
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from operators.nab.corpus import NABFormatError, read_corpus_file
from operators.nab.runner import NABCorpusSource, NABStream, run_corpus, score_results
from stream import Batch, Operator
from stream.cli import main
from stream.testing import check_operator

HERE = os.path.dirname(__file__)
EXCERPT = os.path.join(HERE, "data", "nab")
FILES = ["realAdExchange/exchange-2_cpc_results.csv", "realKnownCause/rogue_agent_key_hold.csv"]
CORPUS = os.path.normpath(os.path.join(HERE, "..", "examples", "data", "nab"))


class RunningZ(Operator):
    """Test-only detector: distance to the running mean of its key, in running sds, / 4."""

    requires = {"value": "number"}

    def __init__(self, scale: float = 4.0):
        self.scale = scale
        self.stats: dict[str, list[float]] = {}    # key -> [n, mean, m2]

    def process(self, batch: Batch) -> Batch:
        out = np.empty(batch.num_rows)
        for i, (key, x) in enumerate(zip(batch.keys(), batch.numpy("value"), strict=True)):
            n, mean, m2 = self.stats.get(key, [0, 0.0, 0.0])
            sd = (m2 / n) ** 0.5 if n > 1 else 0.0
            out[i] = min(1.0, abs(x - mean) / (self.scale * sd)) if sd > 0 else 0.0
            n += 1
            delta = x - mean
            mean += delta / n
            self.stats[key] = [n, mean, m2 + delta * (x - mean)]
        return batch.with_columns({"anomaly_score": out})

    def state_dict(self) -> dict[str, Any]:
        return {"stats": {k: list(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats = {k: list(v) for k, v in state["stats"].items()}


def make_detector(streams: dict[str, NABStream], seed: int = 0) -> RunningZ:
    """Factory for ``--factory test_nab_runner:make_detector``."""
    assert all(s.rows > 0 and s.min <= s.max for s in streams.values())
    return RunningZ(scale=4.0 + seed)


def alone_scores(name: str, scale: float = 4.0) -> list[float]:
    """The test detector's scores for one corpus file, fed one row at a time."""
    _, values = read_corpus_file(EXCERPT, name)
    alone = RunningZ(scale)
    return [float(alone(Batch(pa.record_batch({"key": [name], "value": [v]})))
                  .numpy("anomaly_score")[0]) for v in values]


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_test_detector_keeps_the_operator_contract():
    rng = np.random.default_rng(0)
    data = Batch(pa.record_batch({"key": [["a", "b", "c"][i % 3] for i in range(40)],
                                  "value": rng.normal(size=40)}))
    check_operator(RunningZ, data)


def test_source_interleaves_streams_and_resumes():
    source = NABCorpusSource(EXCERPT, batch_rows=100)
    assert source.files == FILES and source.length() == 1624 + 1882
    assert source.streams[FILES[0]].rows == 1624
    first = next(source.batches())
    assert first.column_names == ["key", "timestamp", "value", "row"]
    assert first.keys()[:4].tolist() == [FILES[0], FILES[1], FILES[0], FILES[1]]
    assert first.numpy("row")[:4].tolist() == [0, 0, 1, 1]
    rows = Batch.concat(list(source.batches())).data
    resumed = Batch.concat(list(source.batches(source.position_after(first)))).data
    assert resumed.equals(rows.slice(100))
    # the tail of the interleaving holds only the longer stream, in order
    assert rows.column("key")[-1].as_py() == FILES[1]
    assert rows.column("row")[-1].as_py() == 1881


def test_run_corpus_writes_nab_result_files(tmp_path):
    report = run_corpus(make_detector, EXCERPT, str(tmp_path), "zscore", batch_size=257)
    assert report["events"] == 1624 + 1882
    for name in FILES:
        category, file = name.split("/")
        ours = read_csv(tmp_path / "zscore" / category / f"zscore_{file}")
        nupic = read_csv(os.path.join(EXCERPT, "results", "numenta", category, f"numenta_{file}"))
        data = read_csv(os.path.join(EXCERPT, "data", category, file))
        assert list(ours[0]) == ["timestamp", "value", "anomaly_score", "label"]
        assert [r["timestamp"] for r in ours] == [r["timestamp"] for r in data]
        assert [float(r["value"]) for r in ours] == [float(r["value"]) for r in data]
        assert [r["label"] for r in ours] == [r["label"] for r in nupic]   # NAB's window labels
        # the interleaved, batched run scores each stream as if it ran alone, row by row
        assert [float(r["anomaly_score"]) for r in ours] == alone_scores(name)


def test_batching_does_not_change_results(tmp_path):
    run_corpus(make_detector, EXCERPT, str(tmp_path / "a"), "z", batch_size=4096, per_turn=1)
    run_corpus(make_detector, EXCERPT, str(tmp_path / "b"), "z", batch_size=10, per_turn=7)
    for name in FILES:
        category, file = name.split("/")
        a = (tmp_path / "a" / "z" / category / f"z_{file}").read_text()
        assert a == (tmp_path / "b" / "z" / category / f"z_{file}").read_text()


def test_detector_without_score_column_is_an_error(tmp_path):
    class Silent(Operator):
        def process(self, batch):
            return batch

    with pytest.raises(NABFormatError, match="no column 'anomaly_score'"):
        run_corpus(lambda streams: Silent(), EXCERPT, str(tmp_path))


def excerpt_nab_scores() -> str:
    """The normalised scores NAB's own per-file table implies for the excerpt."""
    # numenta_<profile>_scores.csv rows of the two files at NAB's stored thresholds
    raw = {"standard": 0.53195803375 - 1.11370102385,
           "reward_low_FP_rate": -1.66 - 1.33370102385,
           "reward_low_FN_rate": 0.53195803375 - 2.11370102385}
    null = {"standard": -3.0, "reward_low_FP_rate": -3.0, "reward_low_FN_rate": -6.0}
    return " / ".join(f"{100 * (raw[p] - null[p]) / (3.0 - null[p]):.2f}" for p in raw)


def test_cli_scores_nupic_results_like_nab(capsys):
    assert main(["nab", "--nab-dir", EXCERPT, "--out", os.path.join(EXCERPT, "results"),
                 "--score-only"]) == 0
    out = capsys.readouterr().out
    assert last_line(out).startswith(f"numenta: {excerpt_nab_scores()}  (standard / ")
    assert "thresholds: config/thresholds.json" in out
    # a sweep can only do as well or better on these two files
    assert main(["nab", "--nab-dir", EXCERPT, "--out", os.path.join(EXCERPT, "results", "numenta"),
                 "--score-only", "--thresholds", "sweep", "--profiles", "standard"]) == 0
    swept = float(last_line(capsys.readouterr().out).split()[1])
    assert swept >= float(excerpt_nab_scores().split(" / ")[0])
    # another column of the result files: NuPIC's raw HTM score, always swept
    assert main(["nab", "--nab-dir", EXCERPT, "--out", os.path.join(EXCERPT, "results", "numenta"),
                 "--score-only", "--score-column", "raw_score"]) == 0
    out = capsys.readouterr().out
    assert "numenta[raw_score]: 2 files" in out and "swept over the corpus" in out
    raw = score_results(os.path.join(EXCERPT, "results", "numenta"), EXCERPT, column="raw_score")
    assert last_line(out).startswith("numenta[raw_score]: " + " / ".join(
        f"{r.normalised:.2f}" for r in raw.values()))


def test_cli_runs_then_scores(tmp_path, capsys):
    out_dir = str(tmp_path / "results")
    args = ["nab", "--nab-dir", EXCERPT, "--out", out_dir, "--detector", "zscore",
            "--factory", "test_nab_runner:make_detector", "--seed", "1",
            "--json", str(tmp_path / "scores.json")]
    assert main(args) == 0
    printed = last_line(capsys.readouterr().out)
    expected = score_results(os.path.join(out_dir, "zscore"), EXCERPT)
    assert printed.startswith("zscore: " + " / ".join(f"{r.normalised:.2f}"
                                                      for r in expected.values()))
    # the seed reaches the factory: seed 1 means a scale of 5 for the test detector
    written = read_csv(os.path.join(out_dir, "zscore", "realKnownCause",
                                    "zscore_rogue_agent_key_hold.csv"))
    assert [float(r["anomaly_score"]) for r in written] == alone_scores(FILES[1], scale=5.0)
    # scoring the folder of detector folders again prints the same scores
    assert main(["nab", "--nab-dir", EXCERPT, "--out", out_dir, "--score-only"]) == 0
    assert last_line(capsys.readouterr().out) == printed


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["nab", "--nab-dir", EXCERPT, "--out", str(tmp_path), "--score-only"]) == 1
    assert "neither a detector folder" in capsys.readouterr().err
    broken = tmp_path / "numenta"
    shutil.copytree(os.path.join(EXCERPT, "results", "numenta"), broken)
    os.remove(broken / "realAdExchange" / "numenta_exchange-2_cpc_results.csv")
    assert main(["nab", "--nab-dir", EXCERPT, "--out", str(broken), "--score-only"]) == 1
    assert "1 result file(s) missing" in capsys.readouterr().err
    rogue = broken / "realKnownCause" / "numenta_rogue_agent_key_hold.csv"
    rogue.write_text("".join(rogue.read_text().splitlines(keepends=True)[:-5]))   # truncated
    shutil.copy(os.path.join(EXCERPT, "results", "numenta", "realAdExchange",
                             "numenta_exchange-2_cpc_results.csv"), broken / "realAdExchange")
    assert main(["nab", "--nab-dir", EXCERPT, "--out", str(broken), "--score-only"]) == 1
    assert "rogue_agent_key_hold.csv has 1877 rows, the corpus file 1882" in capsys.readouterr().err
    assert main(["nab", "--nab-dir", str(tmp_path), "--out", str(broken), "--score-only"]) == 1
    assert "combined_windows.json: no such file" in capsys.readouterr().err
    assert main(["nab", "--nab-dir", EXCERPT, "--out", str(tmp_path),
                 "--factory", "no_such_module:f"]) == 1
    assert "--factory" in capsys.readouterr().err


def test_cli_full_corpus_prints_nupic_scores(capsys):
    assert main(["nab", "--nab-dir", CORPUS, "--out", os.path.join(CORPUS, "results", "numenta"),
                 "--score-only"]) == 0
    assert last_line(capsys.readouterr().out).startswith("numenta: 70.10 / 63.12 / 74.32  ")


def test_nab_package_has_no_import_cycle_and_leaves_the_algorithm_alone():
    """Each module of operators.nab imports only modules before it (no cycle), and
    nothing in operators.htm imports the NAB tools beyond the shared probation rule."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / "operators"
    graph = {}
    for path in (root / "nab").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                deps.add(node.module.split(".")[0])
        graph[path.stem] = deps
    done: set[str] = set()

    def visit(name, trail):
        assert name not in trail, f"import cycle: {' -> '.join([*trail, name])}"
        if name not in done:
            for dep in graph.get(name, ()):
                visit(dep, [*trail, name])
            done.add(name)

    for name in graph:
        visit(name, [])
    htm_imports = {m for p in (root / "htm").glob("*.py") for m in
                   (n.module for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ImportFrom))
                   if m and m.startswith("operators.nab")}
    assert htm_imports <= {"operators.nab.scorer"}


def test_cli_unknown_detector_is_named(tmp_path, capsys):
    assert main(["nab", "--nab-dir", EXCERPT, "--out", str(tmp_path), "--detector", "no-such"]) == 1
    err = capsys.readouterr().err
    assert "unknown NAB detector 'no-such'" in err and "htm" in err
