"""Before/after in one run: a benchmark at a base revision and at the working tree, alternating.

A change that must not cost throughput is judged against the code before it, on the same
machine at the same time (this project's machines are shared and noisy: figures taken
hours apart differ by more than the 3 % being checked). The base revision is checked out
into a temporary ``git worktree``; each round runs ``benchmarks/NAME.py ARGS`` there and
here, in turn (the order flips every round), and reads each run's last stdout line, the
benchmark's JSON. The best figure of each side counts, as in the benchmarks themselves.

Figures: ``base`` and ``head`` (the best value of ``--figure`` on each side), ``ratio``
(head / base; for a time, lower is better, so ``--lower-is-better`` flips the sense of
``change``), ``change`` (relative gain of head, positive = better), per-round values.

    python benchmarks/compare.py passthrough --base HEAD~3 --figure events_per_s -- --quick
    python benchmarks/compare.py river_overhead --base main --figure seconds_engine \\
        --lower-is-better -- --quick --repeats 3

Results go to ``benchmarks/results/compare-NAME.json`` (``-quick`` when ``--quick`` is
passed through).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from common import finish

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_benchmark(root: str, name: str, args: list[str]) -> dict:
    """Run ``benchmarks/NAME.py`` of the checkout at ``root``; its last stdout line as JSON."""
    done = subprocess.run([sys.executable, os.path.join(root, "benchmarks", f"{name}.py"), *args],
                          cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} at {root} failed (rc {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(prog="benchmarks/compare.py", description=__doc__.splitlines()[0])
    p.add_argument("benchmark", help="NAME of benchmarks/NAME.py")
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--figure", required=True, help="key of the benchmark's JSON to compare")
    p.add_argument("--lower-is-better", action="store_true", help="the figure is a time")
    p.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    opts = p.parse_args(argv[:split])
    opts.args = argv[split + 1:]  # the benchmark's own arguments, after --
    base_rev = subprocess.run(["git", "rev-parse", "--short", opts.base], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    head_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="hebbstream-compare-")
    base_root = os.path.join(tmp, "base")
    subprocess.run(["git", "worktree", "add", "--detach", "-q", base_root, base_rev], cwd=REPO, check=True)
    values: dict[str, list[float]] = {"base": [], "head": []}
    # the benchmark writes its own results file here too: the comparison leaves it as it was
    own = os.path.join(REPO, "benchmarks", "results",
                       f"{opts.benchmark}{'-quick' if '--quick' in opts.args else ''}.json")
    kept = open(own, "rb").read() if os.path.exists(own) else None
    try:
        for r in range(opts.rounds):
            sides = [("base", base_root), ("head", REPO)]
            for side, root in sides if r % 2 == 0 else reversed(sides):
                values[side].append(float(run_benchmark(root, opts.benchmark, opts.args)[opts.figure]))
    finally:
        if kept is not None:
            with open(own, "wb") as f:
                f.write(kept)
        elif os.path.exists(own):
            os.remove(own)
        subprocess.run(["git", "worktree", "remove", "--force", base_root], cwd=REPO, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    pick = min if opts.lower_is_better else max
    base, head = pick(values["base"]), pick(values["head"])
    ratio = head / base
    finish(f"compare-{opts.benchmark}", {
        "compared": opts.benchmark, "figure": opts.figure, "benchmark_args": opts.args,
        "base_revision": base_rev, "head_revision": head_rev, "rounds": opts.rounds,
        "base": base, "head": head, "ratio": ratio,
        "change": (1 / ratio - 1) if opts.lower_is_better else (ratio - 1),
        "lower_is_better": opts.lower_is_better, "per_round": values,
    }, quick="--quick" in opts.args)


if __name__ == "__main__":
    main()
