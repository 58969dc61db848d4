"""Bad ``[serve]`` sections and ``--serve`` values: refused before anything runs, naming
the file, the section and the key (or the option), with no input or output lost."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from bad_input import assert_kept, assert_refused, run_cli, snapshot, write_pipeline

PIPELINE = '''[source]
type = "csv"
path = "in.csv"
time = "timestamp"

[sink]
type = "csv"
path = "out/scores.csv"
'''


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "in.csv").write_text("timestamp,value\n2024-01-01 00:00:00,1.0\n2024-01-01 00:05:00,2.0\n")
    return tmp_path


CASES = [
    ("address-no-port", 'address = "localhost"', ["[serve]", "'address'", "HOST:PORT"]),
    ("address-bad-port", 'address = "127.0.0.1:99999"', ["[serve]", "'address'", "99999"]),
    ("address-not-string", "address = 9200", ["[serve]", "'address'"]),
    ("unknown-key", 'adress = "127.0.0.1:9200"', ["[serve]", "'adress'", "address"]),
    ("ready-within-zero", "ready_within = 0", ["[serve]", "'ready_within'"]),
    ("max-keys-zero", "max_keys = 0", ["[serve]", "'max_keys'"]),
    ("window-huge", "window = 10000000", ["[serve]", "'window'"]),
    ("score-not-string", "score = 1", ["[serve]", "'score'"]),
]


@pytest.mark.parametrize("case_id, body, names", CASES, ids=[c[0] for c in CASES])
def test_a_bad_serve_section_is_refused_naming_file_section_and_key(folder, case_id, body, names):
    toml = write_pipeline(folder, PIPELINE + "\n[serve]\n" + body + "\n")
    before = snapshot(folder)
    result = run_cli(["run", str(toml)], cwd=folder)
    assert_refused(result, "pipeline.toml", *names, rc=1)
    assert_kept(before)
    assert not (folder / "out").exists()


def test_a_serve_section_that_is_not_a_table_is_refused(folder):
    toml = write_pipeline(folder, 'serve = "yes"\n' + PIPELINE)
    assert_refused(run_cli(["run", str(toml)], cwd=folder), "pipeline.toml", "[serve]", rc=1)


@pytest.mark.parametrize("address", ["9200", "127.0.0.1:", "127.0.0.1:port", "a b:80"])
def test_a_bad_serve_option_is_refused_naming_it(folder, address):
    toml = write_pipeline(folder, PIPELINE)
    before = snapshot(folder)
    result = run_cli(["run", str(toml), f"--serve={address}"], cwd=folder)
    assert_refused(result, "--serve", "HOST:PORT", rc=1)
    assert_kept(before)
    assert not (folder / "out").exists()


def test_a_port_in_use_is_refused_naming_the_address(folder):
    toml = write_pipeline(folder, PIPELINE)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["run", str(toml), "--serve", f"127.0.0.1:{port}"], cwd=folder)
    assert_refused(result, "--serve", f"127.0.0.1:{port}", "cannot listen", rc=1)
    assert not (folder / "out").exists()


def test_serve_runs_the_pipeline_and_says_where(folder):
    toml = write_pipeline(folder, PIPELINE + '\n[serve]\naddress = "127.0.0.1:0"\n')
    result = run_cli(["run", str(toml)], cwd=folder)
    assert result.rc == 0, result.err
    assert "serving metrics and the dashboard at http://127.0.0.1:" in result.err
    assert "2 events" in result.err
