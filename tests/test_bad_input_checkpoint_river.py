"""Bad input: a River checkpoint rewritten by an attacker (state.json and its manifest).

Each case runs a real pipeline (CSV → MinMaxScaler | HalfSpaceTrees → CSV, checkpoints
every batch), rewrites the newest checkpoint's ``state.json`` and recomputes the SHA-256
and size in ``MANIFEST.json`` as whoever can write the folder would, then resumes. The
resume must be refused (exit 1, a message naming the operator and the checkpoint folder,
no traceback), run nothing (no sentinel file, no command), and change no file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bad_input import assert_kept, assert_refused, run_cli, snapshot, write_pipeline
from river_exploits import eval_chain, g, ref

LABEL = "1.River[HalfSpaceTrees]"
PIPELINE = """
[source]
type = "csv"
path = "data.csv"
time = "t"

[[operators]]
type = "river"
model = [
    { model = "preprocessing.MinMaxScaler" },
    { model = "anomaly.HalfSpaceTrees", params = { n_trees = 3, height = 4, window_size = 10, seed = 42 } },
]
features = ["x"]

[sink]
type = "csv"
path = "out/scores.csv"

[checkpoint]
path = "out/ckpt"
every_batches = 1

[run]
batch_size = 20
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A folder with the pipeline, its data and the checkpoints of one complete run."""
    folder = tmp_path_factory.mktemp("river_ckpt")
    rng = np.random.default_rng(0)
    (folder / "data.csv").write_text("t,x\n" + "".join(f"{i},{rng.normal():.4f}\n" for i in range(60)))
    write_pipeline(folder, PIPELINE)
    result = run_cli(["run", "pipeline.toml"], cwd=folder)
    assert result.rc == 0, result.err
    return folder


def _entry(model: dict, cls: str) -> dict:
    return next(e for e in model["objects"] if isinstance(e, dict) and e.get("c") == cls)


MINMAX, HST = "river.preprocessing.scale:MinMaxScaler", "river.anomaly.hst:HalfSpaceTrees"


def copyreg_exploit(model: dict, sentinel: Path, fmt: str = "hebbstream-river-state/2") -> None:
    """Replace the model by the format-1 chain: FuncTransformer steps whose functions are
    ``partial(getattr, sigmoid, '__globals__')`` and ``operator.methodcaller`` objects made
    by ``copyreg.__newobj__`` (a class only checked as a value), walking to ``eval``. With
    the format-1 decoder this resumed and wrote ``sentinel`` on the first event."""
    funcs = eval_chain(sentinel)
    def plan(kind, i):
        return {"~": "t", "v": [kind, ref(i), False, {"~": "frozenset", "v": []}]}

    objects = [
        {"~": "new", "c": "river.compose.pipeline:Pipeline", "s": {
            "steps": ref(1), "_last_step_cached": ref(2), "_last_step_params": ref(11),
            "_plan": {"~": "t", "v": [*(plan("transformer", 3 + i) for i in range(4)), plan("final", 2)]},
            "_inference_transformers": {"~": "t", "v": [ref(3 + i) for i in range(4)]}}},
        {"~": "o", "f": "collections:OrderedDict", "d": [[f"F{i}", ref(3 + i)] for i in range(4)] +
         [["HalfSpaceTrees", ref(2)]]},
        {"~": "new", "c": HST, "s": {}},
        *({"~": "new", "c": "river.compose.func:FuncTransformer", "s": {"func": ref(7 + i)}} for i in range(4)),
        *funcs,
        {"score_one": {"~": "frozenset", "v": []}, "learn_one": {"~": "frozenset", "v": []}},
    ]
    model.clear()
    model.update(format=fmt, root=ref(0), objects=objects)


def _set_partial_func(model, name):
    next(e for e in model["objects"] if isinstance(e, dict) and e.get("~") == "partial")["f"] = g(name)


def _add_step(model):
    model["objects"][1]["v"].insert(1, ["MinMaxScaler2", model["objects"][1]["v"][0][1]])


# (case id, how to tamper the model tree (model, sentinel), what the message names)
CASES = [
    ("copyreg exploit", copyreg_exploit, "unknown entry type 'new'"),
    ("format 1 exploit", lambda m, s: copyreg_exploit(m, s, "hebbstream-river-state/1"),
     "another hebbstream version"),
    ("class os.system", lambda m, s: _entry(m, MINMAX).update(c="os:system"), "'os:system' is not allowed"),
    ("class outside the allowlist", lambda m, s: _entry(m, MINMAX).update(c="river.stream.cache:Cache"),
     "'river.stream.cache:Cache' is not allowed"),
    ("eval as a defaultdict factory", lambda m, s: next(
        e for e in m["objects"] if isinstance(e, dict) and e.get("~") == "defaultdict").update(f=g("builtins:eval")),
     "'builtins:eval' is not a registered function"),
    ("getattr in a partial", lambda m, s: _set_partial_func(m, "builtins:getattr"),
     "'builtins:getattr' is not a registered function"),
    ("call of a non-constructed class", lambda m, s: _entry(m, MINMAX).update({"~": "call", "a": []}),
     "may not be called"),
    ("a method named by the file", lambda m, s: _entry(m, HST)["s"].update(
        rng={"~": "r", "i": len(m["objects"])}) or m["objects"].append({"~": "m", "o": ref(3), "n": "__init__"}),
     "method '__init__' of a HalfSpaceTrees is not allowed"),
    ("a dunder attribute", lambda m, s: _entry(m, HST)["s"].update(__class__=g("builtins:dict")),
     "attribute names must be plain names"),
    ("another step class", lambda m, s: _entry(m, MINMAX).update(c="river.preprocessing.scale:StandardScaler"),
     "model['MinMaxScaler'] is a river.preprocessing.scale.StandardScaler in the checkpoint"),
    ("another parameter", lambda m, s: _entry(m, HST)["s"].update(seed=43),
     "model['HalfSpaceTrees'].seed is 43 in the checkpoint, 42 in the pipeline"),
    ("an extra step", lambda m, s: _add_step(m), "has steps ['MinMaxScaler', 'MinMaxScaler2', 'HalfSpaceTrees']"),
    ("a dangling reference", lambda m, s: _entry(m, HST)["s"].update(trees=ref(10**6)),
     "reference to object #1000000, which does not exist"),
    ("a format-1 opcode", lambda m, s: _entry(m, HST).update({"~": "o", "f": "builtins:eval"}),
     "unknown entry type 'o'"),
    ("not a tree", lambda m, s: m.clear(), "not a hebbstream-river-state/2 tree"),
]


def _tamper(folder: Path, mutate) -> None:
    """Rewrite the newest checkpoint's state.json and fix its manifest, like an attacker."""
    ckpt = sorted((folder / "out" / "ckpt").glob("ckpt-*"))[-1]
    state = json.loads((ckpt / "state.json").read_text())
    mutate(state["operators"][LABEL])
    data = json.dumps(state).encode()
    (ckpt / "state.json").write_bytes(data)
    manifest = json.loads((ckpt / "MANIFEST.json").read_text())
    manifest["files"]["state.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "MANIFEST.json").write_text(json.dumps(manifest))


@pytest.fixture
def resumable(finished_run, tmp_path, monkeypatch):
    """A copy of the finished run to tamper with; commands run meanwhile fail the test."""
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    # resume from the oldest checkpoint kept, so events remain to run through the model
    for newer in sorted((folder / "out" / "ckpt").glob("ckpt-*"))[1:]:
        shutil.rmtree(newer)
    ran: list = []
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a) or 0)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: ran.append(a))
    yield folder
    assert not ran, f"the checkpoint ran a command: {ran}"


@pytest.mark.parametrize("mutate, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tampered_river_checkpoint_is_refused(resumable, mutate, names):
    sentinel = resumable / "pwned"
    _tamper(resumable, lambda op: mutate(op["model"], sentinel))
    before = snapshot(resumable / "out", resumable / "data.csv")
    result = run_cli(["run", "pipeline.toml", "--resume"], cwd=resumable)
    assert not sentinel.exists(), "the checkpoint ran code"  # the format-1 decoder wrote it here
    assert_refused(result, "River[HalfSpaceTrees]", "out/ckpt", names, rc=1)
    assert_kept(before)


@pytest.mark.parametrize("features, names", [
    ({"__hs__": "dict", "v": []}, "features are not a list of column names"),
    (["t"], "features ['t'] are not the configured ['x']")], ids=["a dict", "other columns"])
def test_bad_features_in_the_checkpoint_are_refused(resumable, features, names):
    _tamper(resumable, lambda op: op.update(features=features))
    before = snapshot(resumable / "out")
    result = run_cli(["run", "pipeline.toml", "--resume"], cwd=resumable)
    assert_refused(result, "River[HalfSpaceTrees]", "out/ckpt", names, rc=1)
    assert_kept(before)


def test_untampered_checkpoint_resumes(resumable):
    """The same copy, untouched, resumes: the refusals above are the tampering's doing."""
    result = run_cli(["run", "pipeline.toml", "--resume"], cwd=resumable)
    assert result.rc == 0, result.err
    assert "20 events" in result.err + result.out
