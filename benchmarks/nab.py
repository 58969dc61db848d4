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

Any detector by name, under the protocol of :mod:`operators.nab.protocol` (parameters
chosen on the tuning half: the odd-numbered files of each category; reported on the
held-out half at the tuning half's thresholds, and on the full corpus): fields
``standard``, ``reward_low_FP_rate``, ``reward_low_FN_rate`` (full corpus, mean over
seeds), ``held_out`` and ``tuning`` (the same on each half), ``per_seed``, ``seconds``:

    python benchmarks/nab.py --detector cad              # results/nab-cad.json
    python benchmarks/nab.py --detector art --options '{"quantile": 0.02}' --tag q02
    python benchmarks/nab.py --detector cad --half tuning    # the tuning half only (tuning runs)
    python benchmarks/nab.py --detector htm --seeds 3 --workers 2   # one seed: results/nab-htm-seed3.json

``--seeds 0,1,2`` runs each seed and reports the mean (each seed's figures under
``per_seed``); a detector whose second seed writes the same files as its first is
deterministic and stops there. ``--stored DIR`` (``{seed}`` in the path) uses the result
folders of earlier runs instead: a pipeline detector (``htm-rest``: the HTM detector, then
a rest period) runs only its later stages over its first stage's stored results
(:mod:`operators.nab.stored`: the files of a full run); any other detector's folders are
scored as they are, e.g. to average seeds run one at a time:

    python benchmarks/nab.py --detector htm --seeds 0,1,2,3,4 --stored 'OUT/seed{seed}/htm' --out OUT
    python benchmarks/nab.py --detector htm-rest --seeds 0,1,2,3,4 --stored 'OUT/seed{seed}/htm' --out OUT
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
    p.add_argument("--detector", default=None,
                   help="run this detector by name under the tuning/held-out protocol")
    p.add_argument("--options", default="{}", help="JSON object of the detector's parameters")
    p.add_argument("--seeds", default="0,1,2", help="seeds of a --detector run (default 0,1,2)")
    p.add_argument("--half", choices=("all", "tuning"), default="all",
                   help="--detector runs: every file, or only the tuning half")
    p.add_argument("--tag", default="", help="suffix of a --detector run's results file")
    p.add_argument("--stored", default=None, metavar="DIR",
                   help="--detector runs: result folders of earlier runs, one per seed ({seed} in the "
                        "path): a pipeline detector (htm-rest) runs its later stages over its first "
                        "stage's stored results; any other detector's folder is scored as it is")


def run_protocol(args) -> None:
    """``--detector NAME``: per seed, one run over the corpus (or the tuning half), scored
    by the protocol; deterministic detectors (same result files for every seed) say so."""
    import filecmp
    import json

    import numpy as np

    from operators.nab.corpus import corpus_files
    from operators.nab.detectors import nab_factory
    from operators.nab.protocol import protocol_scores, tuning_half
    from operators.nab.runner import run_corpus, score_results

    options = json.loads(args.options)
    factory = nab_factory(args.detector, **options)
    files = corpus_files(args.nab_dir)
    if args.half == "tuning":
        files = tuning_half(files)
    seeds = [int(x) for x in args.seeds.split(",")]
    per_seed, dirs, seconds = {}, [], []
    identical = None   # whether the second seed wrote the first seed's files (None: not compared)
    for seed in seeds:
        out = os.path.join(args.out or tempfile.mkdtemp(prefix="hebbstream-nab-"), f"seed{seed}")
        t0 = time.perf_counter()
        if args.stored is None:
            report = run_corpus(factory, args.nab_dir, out, args.detector, files=files, seed=seed,
                                workers=args.workers)
        else:
            report = stored_run(factory, args, out, files, seed)
        seconds.append(time.perf_counter() - t0)
        if args.stored is not None:   # add the stored run's own time, when its results file says
            seconds[-1] += stored_seconds(args.stored.format(seed=seed), seed, report)
        dirs.append(report["detector_dir"])
        if args.half == "tuning":
            scored = {"tuning": {p: r.normalised for p, r in score_results(
                report["detector_dir"], args.nab_dir, files=files).items()}}
        else:
            scored = protocol_scores(report["detector_dir"], args.nab_dir, files)
        per_seed[seed] = {**scored, "seconds": round(seconds[-1], 1), "results_dir": report["detector_dir"]}
        if "stored_seconds" in report:
            per_seed[seed]["stored_seconds"] = report["stored_seconds"]
        if len(dirs) == 2:
            names = [os.path.relpath(f, dirs[1]) for f in report["files"]]
            _, differ, errors = filecmp.cmpfiles(dirs[0], dirs[1], names, shallow=False)
            identical = not differ and not errors
            if identical:   # deterministic: every seed gives the same files
                break
    runs = list(per_seed.values())

    def mean(part):
        return {p: round(float(np.mean([r[part][p] for r in runs])), 2) for p in runs[0][part]}

    if args.stored is not None:
        figures_stored = {"stored": _placeholder(args.stored, args.out),
                          "seconds_note": "each seed: the stored run's seconds (from its results file "
                                          "nab-NAME-seedN.json; 0 when there is none) plus the later "
                                          "stages' (or the scoring's)"}
    else:
        figures_stored = {}
    figures = {"detector": args.detector, "options": options, "half": args.half, **figures_stored,
               "seeds": list(per_seed),
               # proven by a second seed's identical files; None: one seed run, not checked
               "deterministic": identical}
    if args.half == "all":
        figures.update(mean("full"), held_out=mean("held_out"), tuning=mean("tuning"))
    else:
        figures.update(tuning=mean("tuning"))
    figures.update(seconds=round(float(np.mean(seconds)), 1), records=report["events"], files=len(files),
                   workers=args.workers, per_seed=per_seed)
    name = f"nab-{args.detector}" + (f"-{args.tag}" if args.tag else "") + (
        f"-seed{seeds[0]}" if len(seeds) == 1 else "") + ("-tuning" if args.half == "tuning" else "")
    finish(name, figures, quick=args.quick)


def stored_run(factory, args, out: str, files, seed: int) -> dict:
    """One seed of a ``--stored`` run: the later stages of a pipeline detector over the
    stored folder of its first stage, or the stored folder of the detector itself."""
    from operators.nab.corpus import corpus_files, result_path
    from operators.nab.stored import run_after_stored
    from stream import Pipeline

    folder = args.stored.format(seed=seed)
    if isinstance(factory({}, seed=seed), Pipeline):
        return run_after_stored(factory, args.nab_dir, folder, out, args.detector, files=files, seed=seed)
    names = list(files) if files is not None else corpus_files(args.nab_dir)
    detector = os.path.basename(os.path.normpath(folder))
    return {"detector_dir": folder, "files": [result_path(folder, detector, n) for n in names], "events": None}


def stored_seconds(folder: str, seed: int, report: dict) -> float:
    """Seconds of the run that wrote ``folder`` (``.../htm``): ``results/nab-htm-seed<seed>.json``'s,
    0.0 when there is no such file. Noted in ``report["stored_seconds"]``."""
    import json

    from common import RESULTS

    path = os.path.join(RESULTS, f"nab-{os.path.basename(os.path.normpath(folder))}-seed{seed}.json")
    found = 0.0
    if os.path.exists(path):
        with open(path) as f:
            found = json.load(f)["seconds"]
    report["stored_seconds"] = found
    return float(found)


def _placeholder(path: str, out: str | None) -> str:
    """A stored folder as the results file shows it: under ``--out``, as ``OUT/...``."""
    if out and os.path.abspath(path).startswith(os.path.abspath(out) + os.sep):
        return "OUT/" + os.path.relpath(os.path.abspath(path), os.path.abspath(out))
    return path


def main() -> None:
    args = parse_args("nab", __doc__.splitlines()[0], _extra)
    if args.detector:
        return run_protocol(args)
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
