"""`make gpu-check` (benchmarks/gpu_check.py) runs here too: without a GPU it reports
"no GPU" and takes the CPU path, writing one JSON with every step's outcome."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "benchmarks", "gpu_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, *args):
    mod = _gpu_check()
    out = tmp_path / "gpu_check.json"
    rc = mod.main([*args, "--out", str(out)])
    return rc, json.loads(out.read_text()), mod


def test_the_plumbing_reports_the_card_or_no_gpu_and_every_step(tmp_path):
    rc, report, mod = _run(tmp_path, "--smoke", "--only", "htm_keys_1000")
    assert rc == 0 and report["passed"]
    assert report["gpu"] == (mod.card() or "no GPU")
    assert [s["step"] for s in report["steps"]] == ["htm_keys_1000"]
    names = [s[0] for s in mod.steps(False)]
    assert {"tests_torch", "htm_keys_1000", "htm_keys_10000", "htm_scaling", "tta", "continual",
            "pruning"} == set(names)


def test_an_unknown_step_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        _run(tmp_path, "--only", "nope")


@pytest.mark.slow
def test_the_cpu_path_of_the_batched_keys_step_produces_figures(tmp_path):
    rc, report, _ = _run(tmp_path, "--only", "htm_keys_1000")
    assert rc == 0, report
    rows = report["steps"][0]["result"]["rows"]
    assert rows[0]["keys"] >= 10 and rows[0]["records_per_s"] > 0
