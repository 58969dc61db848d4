"""Bad pipeline files and flags: refused at load with the file, section and key, never a traceback."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from bad_input import assert_kept, assert_refused, run_cli, snapshot, write_pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CSV = "timestamp,value\n2020-01-01 00:00:00,1.0\n2020-01-01 00:05:00,2.0\n2020-01-01 00:10:00,3.0\n"
SOURCE = '[source]\ntype = "csv"\npath = "data.csv"\ntime = "timestamp"\n'
SINK = '[sink]\ntype = "csv"\npath = "out/scores.csv"\n'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "data.csv").write_text(CSV)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scores.csv").write_text("kept from an earlier run\n")
    return tmp_path


def op(kind: str, body: str = "") -> str:
    return f'[[operators]]\ntype = "{kind}"\n{body}\n'


# (id, the file after [source], what the message must name)
CASES = [
    # [run]
    ("run-batch-size-text", '[run]\nbatch_size = "big"\n',
     ["[run] key 'batch_size'", 'expected an integer >= 1, got "big"']),
    ("run-batch-size-zero", "[run]\nbatch_size = 0\n", ["[run] key 'batch_size'", ">= 1, got 0"]),
    ("run-batch-size-negative", "[run]\nbatch_size = -5\n", ["[run] key 'batch_size'", "got -5"]),
    ("run-batch-size-bool", "[run]\nbatch_size = true\n", ["[run] key 'batch_size'", "got true"]),
    ("run-speed-text", '[run]\nspeed = "fast"\n', ["[run] key 'speed'", 'expected a number >= 0, got "fast"']),
    ("run-speed-negative", "[run]\nspeed = -1\n", ["[run] key 'speed'"]),
    ("run-read-ahead-text", '[run]\nread_ahead = "x"\n', ["[run] key 'read_ahead'", "integer >= 1"]),
    ("run-max-delay-negative", "[run]\nmax_delay = -0.5\n", ["[run] key 'max_delay'", "number >= 0"]),
    ("run-max-events-float", "[run]\nmax_events = 1.5\n", ["[run] key 'max_events'", "got 1.5"]),
    ("run-check-order-text", '[run]\ncheck_order = "yes"\n', ["[run] key 'check_order'", "true or false"]),
    ("run-unknown-key", "[run]\nbatchsize = 8\n",
     ["[run] key 'batchsize'", "unknown key (did you mean 'batch_size'?)", "max_delay"]),
    # [checkpoint]
    ("checkpoint-every-text", '[checkpoint]\npath = "ck"\nevery_batches = "4"\n',
     ["[checkpoint] key 'every_batches'", 'expected an integer >= 1, got "4"']),
    ("checkpoint-keep-text", '[checkpoint]\npath = "ck"\nkeep = "3"\n', ["[checkpoint] key 'keep'", '"3"']),
    ("checkpoint-keep-zero", '[checkpoint]\npath = "ck"\nkeep = 0\n', ["[checkpoint] key 'keep'", ">= 1"]),
    ("checkpoint-seconds-zero", '[checkpoint]\npath = "ck"\nevery_seconds = 0\n',
     ["[checkpoint] key 'every_seconds'", "> 0"]),
    ("checkpoint-no-path", "[checkpoint]\nevery_batches = 4\n", ["[checkpoint]", "missing required key 'path'"]),
    ("checkpoint-unknown-key", '[checkpoint]\npath = "ck"\nevery = 4\n',
     ["[checkpoint] key 'every'", "every_batches"]),
    # [[operators]], every registered type
    ("htm-config-tm", op("htm", 'config = { tm = "fast" }'),
     ["[[operators]] #1 (htm) key 'config.tm'", 'expected one of "plain", "backtracking", got "fast"']),
    ("htm-config-unknown", op("htm", "config = { colums = 64 }"),
     ["(htm) key 'config.colums'", "did you mean 'columns'?"]),
    ("htm-config-range", op("htm", "config = { columns = 0 }"), ["(htm) key 'config.columns'", ">= 1"]),
    ("htm-config-not-table", op("htm", 'config = "big"'),
     ["(htm) key 'config'", "expected a table of HTMConfig options"]),
    ("htm-warmup", op("htm", "warmup = -1"), ["(htm) key 'warmup'", "got -1"]),
    ("htm-resolution", op("htm", 'resolution = "x"'), ["(htm) key 'resolution'", "auto"]),
    ("htm-alert-threshold", op("htm", "alert_threshold = 2"), ["(htm) key 'alert_threshold'", "<= 1"]),
    ("htm-value-range", op("htm", 'resolution = "minmax"\nvalue_range = { "" = [1, "x"] }'),
     ["(htm) key 'value_range.'", "a list of 2 numbers"]),
    ("river-no-model", op("river"), ["[[operators]] #1 (river)", "missing required key 'model'"]),
    ("river-unknown-model", op("river", 'model = "anomaly.Nope"'), ["(river)", "anomaly.Nope"]),
    ("river-per-key", op("river", 'model = "anomaly.HalfSpaceTrees"\nper_key = 1'),
     ["(river) key 'per_key'", "true or false"]),
    ("evaluate-no-metric", op("evaluate", 'target = "value"\nmetrics = []'), ["(evaluate)", "at least one metric"]),
    ("evaluate-unknown-metric", op("evaluate", 'target = "value"\nmetrics = ["Nope"]'),
     ["(evaluate)", "unknown River metric 'Nope'"]),
    ("nhl-rule", op("nhl", 'rule = "x"'), ["(nhl) key 'rule'", "oja"]),
    ("tent-lr", op("tent", 'lr = "fast"'), ["(tent) key 'lr'", "expected a number"]),
    ("norm-adapt-batch-size", op("norm_adapt", 'batch_size = "x"'), ["(norm_adapt) key 'batch_size'"]),
    ("source-model-no-model", op("source_model"), ["(source_model)", "needs a model"]),
    ("continual-betas", op("continual_pretrainer", "betas = [1]"),
     ["(continual_pretrainer) key 'betas'", "a list of 2 numbers"]),
    ("continual-objective", op("continual_pretrainer", 'objective = "x"'),
     ["(continual_pretrainer) key 'objective'"]),
    ("pruning-ratio", op("dynamic_pruning", 'model = "net.pt"\nr = 2'), ["(dynamic_pruning) key 'r'"]),
    ("pruning-no-model", op("dynamic_pruning"), ["(dynamic_pruning)", "missing required key 'model'"]),
    ("operator-unknown-type", op("htmm"), ["[[operators]] #1 key 'type'", "unknown operator type 'htmm'", "htm"]),
    ("operator-no-type", "[[operators]]\nseed = 1\n", ["[[operators]] #1", "'type'"]),
    ("operators-not-array", '[operators]\ntype = "htm"\n', ["operators", "[[operators]]"]),
    # [source], [sink], [dead_letter]
    ("sink-path-number", '[sink]\ntype = "csv"\npath = 3\n', ["[sink] (csv) key 'path'", "expected a string"]),
    ("sink-compression", '[sink]\ntype = "parquet"\npath = "o.parquet"\ncompression = "zzz"\n',
     ["[sink] (parquet) key 'compression'", '"snappy"']),
    ("sink-unknown-type", '[sink]\ntype = "xls"\n', ["[sink] key 'type'", "unknown sink type 'xls'", "parquet"]),
    ("sink-memory-key", '[sink]\ntype = "memory"\npath = "x"\n', ["[sink] (memory) key 'path'", "known: none"]),
    ("dead-letter-no-path", '[dead_letter]\ntype = "csv"\n', ["[dead_letter] (csv)", "missing required key 'path'"]),
    ("dead-letter-format", '[dead_letter]\ntype = "arrow"\npath = "dl.arrow"\nformat = "zzz"\n',
     ["[dead_letter] (arrow) key 'format'"]),
    ("kafka-source-no-group", "", ["[source] (kafka)", "missing required key 'group_id'"]),
    ("section-unknown", "[runn]\nbatch_size = 8\n", ["unknown section", "runn", "run"]),
]


@pytest.mark.parametrize("case_id, body, names", CASES, ids=[c[0] for c in CASES])
def test_a_bad_pipeline_file_is_refused_naming_file_section_and_key(folder, case_id, body, names):
    source = '[source]\ntype = "kafka"\ntopic = "t"\n' if case_id.startswith("kafka-source") else SOURCE
    toml = write_pipeline(folder, source + body + (SINK if "[sink]" not in body else ""))
    before = snapshot(folder)
    result = run_cli(["run", str(toml)], cwd=folder)
    assert_refused(result, str(toml), *names, rc=1)
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert_kept(before)


SOURCE_CASES = [
    ("source-unknown-type", '[source]\ntype = "xls"\n', ["[source] key 'type'", "unknown source type 'xls'", "csv"]),
    ("source-no-type", '[source]\npath = "data.csv"\n', ["[source]", "'type'"]),
    ("source-no-path", '[source]\ntype = "csv"\n', ["[source] (csv)", "missing required key 'path'"]),
    ("source-batch-size", '[source]\ntype = "csv"\npath = "data.csv"\nbatch_size = 0\n',
     ["[source] (csv) key 'batch_size'", ">= 1, got 0"]),
    ("source-columns", '[source]\ntype = "csv"\npath = "data.csv"\ncolumns = 3\n',
     ["[source] (csv) key 'columns'", "a list of strings"]),
    ("source-encoding", '[source]\ntype = "csv"\npath = "data.csv"\nencoding = "klingon"\n',
     ["[source] (csv) key 'encoding'", "klingon"]),
    ("source-typo", '[source]\ntype = "csv"\npth = "data.csv"\n', ["[source] (csv) key 'pth'", "did you mean 'path'?"]),
    ("source-not-table", 'source = "data.csv"\n', ["[source] must be a table"]),
    ("toml-syntax", SOURCE + "[run]\nbatch_size = = 3\n", ["not valid TOML", "line 6"]),
    ("empty-file", "", ["needs a [source] section"]),
]


@pytest.mark.parametrize("case_id, text, names", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_a_bad_source_or_file_is_refused(folder, case_id, text, names):
    toml = write_pipeline(folder, text)
    before = snapshot(folder)
    result = run_cli(["run", str(toml)], cwd=folder)
    assert_refused(result, str(toml), *names, rc=1)
    assert_kept(before)


def test_a_folder_given_as_the_pipeline_is_named(folder):
    assert_refused(run_cli(["run", str(folder)]), "cannot read pipeline file", str(folder), rc=1)


def test_a_pipeline_file_that_is_not_text_is_named(folder):
    toml = folder / "pipeline.toml"
    toml.write_bytes(b'[source]\ntype = "csv"\npath = "\xff\xfe.csv"\n')
    assert_refused(run_cli(["run", str(toml)]), str(toml), "not UTF-8", "byte offset", rc=1)


@pytest.mark.parametrize("flags, names", [
    (["--batch-size", "0"], ["--batch-size", "expected an integer >= 1, got '0'"]),
    (["--batch-size", "-3"], ["--batch-size", "got '-3'"]),
    (["--batch-size", "big"], ["--batch-size", "got 'big'"]),
    (["--speed", "-1"], ["--speed", "a number >= 0"]),
    (["--speed", "nan"], ["--speed"]),
    (["--max-events", "x"], ["--max-events"]),
])
def test_bad_flags_are_usage_errors(folder, flags, names):
    toml = write_pipeline(folder, SOURCE + SINK)
    result = run_cli(["run", str(toml), *flags])
    assert_refused(result, "usage:", *names, rc=2)


def test_features_as_one_string_is_one_feature(folder):
    toml = write_pipeline(folder, SOURCE + op("river", 'model = "anomaly.HalfSpaceTrees"\nfeatures = "value"')
                          + '[sink]\ntype = "csv"\npath = "out/new.csv"\n')
    result = run_cli(["run", str(toml)], cwd=folder)
    assert result.rc == 0, result.err
    assert (folder / "out" / "new.csv").read_text().count("\n") == 4   # header + 3 scored rows


def test_the_pipeline_file_can_choose_the_backtracking_temporal_memory(folder):
    toml = write_pipeline(folder, SOURCE + op("htm", 'config = { tm = "backtracking", columns = 64, num_active = 4, '
                                                      'cells_per_column = 4, rdse_n = 50, rdse_w = 5 }')
                          + '[sink]\ntype = "csv"\npath = "out/htm.csv"\n')
    result = run_cli(["run", str(toml)], cwd=folder)
    assert result.rc == 0, result.err
    assert "anomaly_likelihood" in (folder / "out" / "htm.csv").read_text()


class _Broken:
    def __init__(self, exc: BaseException):
        self.exc = exc

    def __call__(self, *args, **kwargs):
        raise self.exc


@pytest.mark.parametrize("exc, names", [
    (ZeroDivisionError("division by zero"), ["internal error: ZeroDivisionError: division by zero", "-v"]),
    (PermissionError(13, "Permission denied", "/srv/out/scores.csv"), ["Permission denied", "/srv/out/scores.csv"]),
])
def test_an_unexpected_failure_is_one_line_and_v_adds_the_traceback(folder, monkeypatch, exc, names):
    import stream.config

    toml = write_pipeline(folder, SOURCE + SINK)
    monkeypatch.setattr(stream.config, "load", _Broken(exc))
    result = run_cli(["run", str(toml)])
    assert_refused(result, *names, rc=1)
    assert len(result.err.strip().splitlines()) == 1, result.err
    verbose = run_cli(["-v", "run", str(toml)])
    assert verbose.rc == 1 and "Traceback" in verbose.err and verbose.err.strip().splitlines()[-1].startswith(
        "hebbstream: error:")


def test_ctrl_c_exits_130_without_a_traceback(folder, monkeypatch):
    import stream.config

    monkeypatch.setattr(stream.config, "load", _Broken(KeyboardInterrupt()))
    result = run_cli(["run", str(write_pipeline(folder, SOURCE))])
    assert result.escaped is None and result.rc == 130 and "Traceback" not in result.err


# -- any value of any [run] / [checkpoint] key: a clean run or a clean refusal --------------
def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"


_SCALARS = st.one_of(st.integers(-3, 3), st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(),
                     st.text("abcxyz019 .-", max_size=6))
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3),
                    st.dictionaries(st.sampled_from(["a", "b"]), _SCALARS, max_size=2))
_RUN_KEYS = ["batch_size", "max_delay", "speed", "read_ahead", "check_order", "device", "progress", "max_events"]
_CKPT_KEYS = ["every_batches", "every_seconds", "keep"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run=st.dictionaries(st.sampled_from(_RUN_KEYS), _VALUES, max_size=4),
       ckpt=st.dictionaries(st.sampled_from(_CKPT_KEYS), _VALUES, max_size=3))
def test_any_run_or_checkpoint_value_gives_a_clean_run_or_a_clean_refusal(run, ckpt):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # no time column: a paced replay is refused at once instead of taking event time
        (folder / "data.csv").write_text("value\n1.0\n2.0\n3.0\n")
        text = '[source]\ntype = "csv"\npath = "data.csv"\n' + SINK.replace("scores", "s") \
            + '[checkpoint]\npath = "ck"\n' + "".join(f"{k} = {_toml(v)}\n" for k, v in ckpt.items()) \
            + "[run]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in run.items())
        toml = write_pipeline(folder, text)
        result = run_cli(["run", str(toml)], cwd=folder)
        assert result.escaped is None and "Traceback" not in result.err, result.err
        assert result.rc in (0, 1), result.err
        if result.rc == 1:
            message = result.err.strip().splitlines()[-1]
            assert message.startswith(f"hebbstream: error: {toml} [run] key ") or \
                message.startswith(f"hebbstream: error: {toml} [checkpoint] key ") or \
                "paced replay needs a time column" in message, message
