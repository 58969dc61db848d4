"""Bad [[outputs]], alerts and webhook settings through the ``hebbstream`` command: one
message naming the file, section, key or column; nothing the user had is lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input import assert_kept, assert_refused, run_cli, snapshot, write_pipeline

HEAD = ('[source]\ntype = "csv"\npath = "data.csv"\nkey = "key"\ntime = "ts"\n'
        '[[operators]]\ntype = "alerts"\nscore = "x"\nenter = 0.6\nleave = 0.5\nwarmup = 0\n'
        '[sink]\ntype = "csv"\npath = "scores.csv"\n')
ALERTS = '[[outputs]]\ntype = "csv"\npath = "alerts.csv"\nwhere = "alert"\n'

CASES = {
    "outputs as one table": (HEAD + '[outputs]\ntype = "csv"\npath = "a.csv"\n',
                             ["pipeline.toml", "outputs must be an array of tables", "[[outputs]]"]),
    "output without type": (HEAD + '[[outputs]]\npath = "a.csv"\n',
                            ["pipeline.toml [[outputs]] #1", "needs a 'type' key"]),
    "where not a string": (HEAD + '[[outputs]]\ntype = "csv"\npath = "a.csv"\nwhere = 3\n',
                           ["[[outputs]] #1 key 'where'", "expected a string, got 3"]),
    "columns not names": (HEAD + '[[outputs]]\ntype = "csv"\npath = "a.csv"\ncolumns = [1]\n',
                          ["[[outputs]] #1 key 'columns'", "a list of strings"]),
    "unknown sink key": (HEAD + '[[outputs]]\ntype = "csv"\npth = "a.csv"\n',
                         ["[[outputs]] #1 (csv) key 'pth'", "did you mean 'path'"]),
    "output on the sink's path": (HEAD + '[[outputs]]\ntype = "csv"\npath = "scores.csv"\n',
                                  ["[[outputs]] #1 path", "[sink] path", "one file"]),
    "output on the source": (HEAD + '[[outputs]]\ntype = "csv"\npath = "data.csv"\n',
                             ["[[outputs]] #1 path", "[source] path"]),
    "two outputs on one path": (HEAD + ALERTS + ALERTS, ["[[outputs]] #2 path", "[[outputs]] #1 path"]),
    "where names no column": (HEAD + ALERTS.replace('"alert"', '"alrt"'),
                              ["[[outputs]] #1", "where = 'alrt' names no column", "alert_episode"]),
    "where not boolean": (HEAD + ALERTS.replace('"alert"', '"x"'), ["[[outputs]] #1", "'x'", "must be boolean"]),
    "columns not in the stream": (HEAD + ALERTS + 'columns = ["key", "episode"]\n',
                                  ["[[outputs]] #1", "['episode']"]),
    "leave above enter": (HEAD.replace("leave = 0.5", "leave = 0.7"),
                          ["[[operators]] #1 (alerts) key 'leave'", "at most the entering threshold (0.6)"]),
    "alert threshold out of range": (HEAD.replace("enter = 0.6", "enter = 60"),
                                     ["[[operators]] #1 (alerts) key 'enter'", "<= 1"]),
    "webhook without http": (HEAD + '[[outputs]]\ntype = "webhook"\nurl = "127.0.0.1:9000/hook"\n',
                             ["[[outputs]] #1 (webhook) key 'url'", "http:// or https://"]),
    "webhook queue of zero": (HEAD + '[[outputs]]\ntype = "webhook"\nurl = "http://127.0.0.1:9/h"\nqueue_size = 0\n',
                              ["[[outputs]] #1 (webhook) key 'queue_size'", ">= 1"]),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rows = [f"{'ab'[i % 2]},{i},{(i % 7) / 7:.3f}" for i in range(30)]
    (tmp_path / "data.csv").write_text("key,ts,x\n" + "\n".join(rows) + "\n")
    return tmp_path


@pytest.mark.parametrize("case", list(CASES))
def test_refused_naming_where(folder, case):
    text, names = CASES[case]
    write_pipeline(folder, text)
    before = snapshot(folder)
    result = run_cli(["run", "pipeline.toml"], cwd=folder)
    assert_refused(result, *names, rc=1)
    assert_kept(before)


def test_resume_without_an_output_the_checkpoint_has_is_refused(folder):
    ckpt = '[checkpoint]\npath = "ckpt"\nevery_batches = 1\n[run]\nbatch_size = 5\n'
    write_pipeline(folder, HEAD + ALERTS + ckpt)
    assert run_cli(["run", "pipeline.toml", "--max-events", "12"], cwd=folder).rc == 0
    before = snapshot(folder)
    write_pipeline(folder, HEAD + ckpt)
    result = run_cli(["run", "pipeline.toml", "--resume"], cwd=folder)
    assert_refused(result, "scores.csv", "outputs.1", "resume with the sinks and outputs", rc=1)
    del before[str(folder / "pipeline.toml")]
    assert_kept(before)
