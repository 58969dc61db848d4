"""Harness for the bad-input tests: run ``hebbstream`` as a user would and judge the failure.

A case writes its files under a temporary folder, runs the command in-process (the same
``stream.cli.main`` the console script calls, so a case costs milliseconds, not an
interpreter start) and checks what a user sees:

- the exit code is non-zero (1 for a refused run, 2 for a command-line mistake);
- standard error holds one ``hebbstream: error:`` message and no Python traceback;
- the message names where the problem is (file, section, key, column, row or offset);
- nothing the user had is gone: :func:`snapshot` before, :func:`assert_kept` after.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> toml = write_pipeline(folder, '[source]\\ntype = "csv"\\npath = "missing.csv"\\n')
    >>> result = run_cli(["run", str(toml)])
    >>> result.rc, "missing.csv" in result.err, "Traceback" in result.err
    (1, True, False)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

from stream.cli import main


@dataclass
class Result:
    rc: int
    out: str
    err: str
    escaped: BaseException | None = None  # an exception main() let through: always a bug


def run_cli(argv: list[str], cwd: str | os.PathLike | None = None) -> Result:
    """Run ``hebbstream ARGV`` in this process; never raises."""
    out, err = io.StringIO(), io.StringIO()
    escaped = None
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse's own exit for command-line mistakes
                rc = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                escaped = exc
                rc = -1
                err.write("".join(traceback.format_exception(exc)))
    finally:
        os.chdir(before)
    return Result(rc, out.getvalue(), err.getvalue(), escaped)


def assert_refused(result: Result, *names: str, rc: int | None = None) -> None:
    """A clean refusal: non-zero exit, one error message, no traceback, naming each of ``names``."""
    assert result.escaped is None, f"an exception escaped the command:\n{result.err}"
    assert result.rc != 0, f"the command succeeded (rc 0); stderr:\n{result.err}"
    if rc is not None:
        assert result.rc == rc, f"exit code {result.rc}, expected {rc}; stderr:\n{result.err}"
    assert "Traceback" not in result.err, f"a traceback reached the user:\n{result.err}"
    assert "hebbstream: error:" in result.err or "usage:" in result.err, result.err
    for name in names:
        assert name in result.err, f"the message does not name {name!r}:\n{result.err}"


def write_pipeline(folder: str | os.PathLike, text: str, name: str = "pipeline.toml") -> Path:
    path = Path(folder) / name
    path.write_text(text, encoding="utf-8")
    return path


def snapshot(*roots: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every regular file under ``roots`` (files or folders that exist)."""
    digests: dict[str, str] = {}
    for root in map(Path, roots):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) \
            if root.is_dir() else []
        for p in files:
            digests[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return digests


def assert_kept(before: dict[str, str]) -> None:
    """Every file of an earlier :func:`snapshot` is still there, byte for byte."""
    for path, digest in before.items():
        assert os.path.isfile(path), f"{path} was deleted"
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest, f"{path} was changed"
