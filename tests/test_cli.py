"""The hebbstream command: help a newcomer can follow, clear errors with exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stream.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_help_names_the_commands_and_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage: hebbstream" in text and "run" in text
    assert "examples/river_anomaly.toml" in text and "--resume" in text


def test_run_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("pipeline", "--resume", "--overwrite", "--force", "--summary", "--batch-size", "--speed",
                   "--max-events"):
        assert option in text, option


def test_console_script_runs():
    exe = os.path.join(os.path.dirname(sys.executable), "hebbstream")
    done = subprocess.run([exe, "run", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "PIPELINE" in done.stdout.upper()


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: hebbstream" in capsys.readouterr().out


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return str(path)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("hebbstream: error:"), err
    return err


def test_missing_pipeline_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 1
    assert "cannot read pipeline file" in _error(capsys)


def test_invalid_toml_names_the_file(tmp_path, capsys):
    path = _write(tmp_path, "[source\ntype = 'csv'\n")
    assert main(["run", path]) == 1
    err = _error(capsys)
    assert path in err and "not valid TOML" in err


def test_unknown_operator_type_names_the_known_ones(tmp_path, capsys):
    csv = os.path.join(REPO, "examples/data/phishing/phishing.csv")
    path = _write(tmp_path, f'[source]\ntype = "csv"\npath = "{csv}"\n[[operators]]\ntype = "rivr"\n')
    assert main(["run", path]) == 1
    err = _error(capsys)
    assert "unknown operator type 'rivr'" in err and "river" in err and "evaluate" in err


def test_bad_river_model_and_missing_target(tmp_path, capsys):
    csv = os.path.join(REPO, "examples/data/phishing/phishing.csv")
    head = f'[source]\ntype = "csv"\npath = "{csv}"\n[[operators]]\ntype = "river"\n'
    assert main(["run", _write(tmp_path, head + 'model = "anomaly.HalfSpaceTree"\n')]) == 1
    assert "river.anomaly.HalfSpaceTree does not exist" in _error(capsys)
    assert main(["run", _write(tmp_path, head + 'model = "linear_model.LogisticRegression"\n')]) == 1
    assert "needs target=" in _error(capsys)
    assert main(["run", _write(tmp_path, head + 'model = "anomaly.HalfSpaceTrees"\nparams = {depth = 3}\n')]) == 1
    assert "depth" in _error(capsys)


def test_missing_column_names_it(tmp_path, capsys):
    csv = os.path.join(REPO, "examples/data/phishing/phishing.csv")
    path = _write(tmp_path, f'[source]\ntype = "csv"\npath = "{csv}"\n[[operators]]\ntype = "river"\n'
                            'model = "linear_model.LogisticRegression"\ntarget = "label"\n')
    assert main(["run", path]) == 1
    err = _error(capsys)
    assert "'label'" in err and "phishing.csv" in err


def test_resume_without_checkpoint_section(tmp_path, capsys):
    csv = os.path.join(REPO, "examples/data/phishing/phishing.csv")
    path = _write(tmp_path, f'[source]\ntype = "csv"\npath = "{csv}"\n')
    assert main(["run", path, "--resume"]) == 1
    assert "--resume needs a [checkpoint]" in _error(capsys)
