"""NAB score and speed of the HTM detector, all corpus streams batched as keys of one operator.

Runs ``HTMDetector.for_nab`` over the Numenta Anomaly Benchmark through the engine
(:func:`operators.nab.runner.run_corpus`: the 58 files interleaved as one keyed
stream, so every micro-batch advances all live streams in one tensor program), writes
NAB result files, and scores them with the project's NAB scorer: the three profiles
with the detector's reported score (likelihood + spatial check), and the standard
profile with the raw HTM score ("without likelihood").

    python benchmarks/nab.py                 # full corpus, NuPIC's min/max resolution and
                                             # NuPIC's backtracking TM (results/nab.json)
    python benchmarks/nab.py --tm plain      # the faster plain TM (results/nab-plain.json)
    python benchmarks/nab.py --auto-resolution   # resolution from the first 100 records
    python benchmarks/nab.py --quick         # four files
    python benchmarks/nab.py --workers 2     # the files shared out to two processes (same
                                             # results; results/nab-workers2.json)
"""

from __future__ import annotations

import os
import tempfile
import time

from common import finish, parse_args

NAB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "data", "nab")
QUICK_FILES = ["artificialWithAnomaly/art_daily_jumpsup.csv",
               "realAdExchange/exchange-2_cpc_results.csv",
               "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
               "realTraffic/occupancy_6005.csv"]


def _extra(p):
    p.add_argument("--nab-dir", default=NAB_DIR)
    p.add_argument("--out", default=None, help="results folder (default: a temporary one)")
    p.add_argument("--auto-resolution", action="store_true",
                   help="encoder resolution from the first 100 records, not the file's min/max")
    p.add_argument("--tm", choices=("plain", "backtracking"), default="backtracking",
                   help="temporal memory: NuPIC's BacktrackingTM (default; NuPIC's NAB "
                        "detector) or the faster htm.core-style plain TM")
    p.add_argument("--backtrack", type=int, default=0,
                   help="plain TM only: simplified backtracking depth (0: off)")
    p.add_argument("--files", default=None,
                   help="comma-separated corpus files (category/file.csv) instead of all")
    p.add_argument("--device", default="auto", help="auto, numpy, torch, cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads (per worker)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes taking jobs of files as they finish (default 1)")


def main() -> None:
    args = parse_args("nab", __doc__.splitlines()[0], _extra)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)   # what spawned workers' torch uses
    from operators.htm.backend import resolve_device
    from operators.nab.corpus import read_results, read_windows
    from operators.nab.detectors import nab_factory
    from operators.nab.runner import run_corpus, score_results
    from operators.nab.scorer import ScoringTable, evaluate

    files = QUICK_FILES if args.quick else (args.files.split(",") if args.files else None)
    # a partial of a module-level function: it pickles, so workers can build it; the
    # device made concrete here, once, not in every worker process
    factory = nab_factory("htm", tm=args.tm, max_backtrack=args.backtrack,
                          minmax=not args.auto_resolution, device=resolve_device(args.device))

    out = args.out or tempfile.mkdtemp(prefix="hebbstream-nab-")
    t0 = time.perf_counter()
    report = run_corpus(factory, args.nab_dir, out, "htm", files=files, seed=args.seed,
                        workers=args.workers)
    seconds = time.perf_counter() - t0
    scores = score_results(report["detector_dir"], args.nab_dir, files=files)
    windows = read_windows(args.nab_dir)
    names = files if files is not None else sorted(windows)
    raw = evaluate(ScoringTable.build(read_results(report["detector_dir"], names, "htm",
                                                   column="raw_score"), windows))
    figures = {name: round(r.normalised, 2) for name, r in scores.items()}
    figures["thresholds"] = {name: r.threshold for name, r in scores.items()}
    figures["without_likelihood"] = {name: round(r.normalised, 2) for name, r in raw.items()}
    figures.update(seconds=round(seconds, 1), records=report["events"],
                   records_per_s=round(report["events"] / seconds, 1), files=len(names),
                   workers=report["workers"],
                   worker_seconds=[round(w["seconds"], 1) for w in report.get("per_worker", [])],
                   worker_jobs=[w["jobs"] for w in report.get("per_worker", [])],
                   seed=args.seed, resolution="auto (first 100 records)" if args.auto_resolution
                   else "NAB min/max", tm=args.tm, backtrack=args.backtrack,
                   backend=report.get("metrics", {}).get("0.HTMDetector", {}).get("backend"),
                   results_dir=report["detector_dir"])
    name = "nab" + ("-auto" if args.auto_resolution else "") + (
        "-plain" if args.tm == "plain" else "") + (
        f"-backtrack{args.backtrack}" if args.backtrack else "") + (
        f"-workers{report['workers']}" if report["workers"] > 1 else "") + (
        f"-seed{args.seed}" if args.seed else "")
    finish(name, figures, quick=args.quick)


if __name__ == "__main__":
    main()
