"""Every test and benchmark with a CUDA path, at small size, in one run: ``make gpu-check``.

On a machine with a CUDA card each step runs on it; without one the script says
``"gpu": "no GPU"`` and runs the same steps on the CPU path, so it is exercised (and
tested) anywhere. Steps (each a subprocess with its own time limit; the whole run is
sized to finish in under 8 minutes on a GPU machine):

- ``tests_torch``: the tests that compare the torch backend with NumPy (HTM model and
  detector), on the card when there is one (``HEBBSTREAM_TEST_DEVICE``);
- ``htm_keys_1000`` / ``htm_keys_10000``: HTM keys batched on the device (plain TM,
  steady fleet, 1,000 and 10,000 keys x a few records; 10 and 100 keys on the CPU path);
- ``htm_scaling``: ``benchmarks/htm_scaling.py --quick`` on the device;
- ``tta``, ``continual``, ``pruning``: those benchmarks at ``--quick`` size.

It writes one JSON (``benchmarks/results/gpu_check.json``, or ``--out``) with the card's
name, each step's exit status, seconds and last JSON line, and exits 1 when a step failed.
``--smoke`` only checks that every step's command starts (``--help``): seconds, for tests.

    python benchmarks/gpu_check.py            # or: make gpu-check
    python benchmarks/gpu_check.py --smoke    # the plumbing only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def card() -> str | None:
    """The CUDA card's name, or None (no torch, or no card)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def steps(gpu: bool) -> list[tuple[str, list[str], int]]:
    """``(name, command, time limit in s)`` of every step, for a GPU or the CPU path."""
    py = sys.executable
    dev = "cuda" if gpu else "numpy"
    small, large = (1000, 10000) if gpu else (10, 100)
    keys = [py, os.path.join(HERE, "htm_keys.py"), "--quick", "--fleet", "steady", "--tm", "plain", "--device", dev,
            "--records", "20", "--batch", "20000"]
    return [
        ("tests_torch", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_htm_model.py",
                         "-k", "torch or backends"], 120),
        ("htm_keys_1000", [*keys, "--keys", str(small)], 90),
        ("htm_keys_10000", [*keys, "--keys", str(large)], 150),
        ("htm_scaling", [py, os.path.join(HERE, "htm_scaling.py"), "--quick", "--device",
                         "cuda" if gpu else "numpy", "--keys", "1", "100"], 90),
        ("tta", [py, os.path.join(HERE, "tta.py"), "--quick"], 90),
        ("continual", [py, os.path.join(HERE, "continual.py"), "--quick", "--device", "cuda" if gpu else "cpu"], 90),
        ("pruning", [py, os.path.join(HERE, "pruning.py"), "--quick"], 90),
    ]


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def run_step(name: str, cmd: list[str], limit: int, env: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"timed out after {limit} s\n{e.stdout or ''}"
    result = {"step": name, "rc": rc, "seconds": round(time.perf_counter() - t0, 1), "result": _last_json(out)}
    if rc != 0:
        result["tail"] = out[-1500:]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="only check that every step starts (--help)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "gpu_check.json"))
    p.add_argument("--only", default=None, help="comma-separated step names")
    args = p.parse_args(argv)
    name = card()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if name:
        env["HEBBSTREAM_TEST_DEVICE"] = "cuda"
    plan = steps(name is not None)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s[0] for s in plan}
        if unknown:
            p.error(f"unknown step(s) {sorted(unknown)}; steps: {', '.join(s[0] for s in plan)}")
        plan = [s for s in plan if s[0] in wanted]
    results = []
    for step, cmd, limit in plan:
        if args.smoke:
            cmd = [*cmd[:2], "--help"] if cmd[1] != "-m" else [*cmd[:3], "--version"]
        results.append(run_step(step, cmd, limit, env))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    out = {"benchmark": "gpu_check", "gpu": name or "no GPU", "path": "cuda" if name else "cpu",
           "smoke": args.smoke, "passed": all(r["rc"] == 0 for r in results), "steps": results,
           "seconds": round(sum(r["seconds"] for r in results), 1)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({k: v for k, v in out.items() if k != "steps"}), flush=True)
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
