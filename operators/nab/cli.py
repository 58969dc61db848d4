"""``hebbstream nab``: run a detector over the NAB corpus and score it, or score results.

    hebbstream nab --out RESULTS [--nab-dir NAB] [--detector NAME] [--seed N]
    hebbstream nab --out RESULTS --score-only [--nab-dir NAB]

The corpus defaults to the one bundled in the repository (``examples/data/nab``).

Without ``--score-only`` the detector named by ``--detector`` (default ``htm``; any
registered operator, see :mod:`operators.nab.detectors`) runs over every corpus file (all streams batched
together through the engine), its results are written in NAB's layout under
``RESULTS/<detector>/`` and scored. With ``--score-only``, ``RESULTS`` is an existing
detector folder (or a folder of them) and is only scored.

Thresholds: NAB's own ``run.py --score`` uses the thresholds stored in
``config/thresholds.json`` for the detectors listed there (NuPIC's published 70.10 /
63.12 / 74.32 come from those); any other detector gets the threshold that maximises
its score over the corpus, found by sweeping every distinct score. ``--thresholds
sweep`` sweeps for every detector; ``--thresholds stored`` insists on stored ones.

Example:
    >>> import os
    >>> from stream.cli import main
    >>> nab = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "nab")
    >>> main(["nab", "--nab-dir", nab, "--out", os.path.join(nab, "results"), "--score-only"])
    ... # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    numenta: 2 files, 3,506 rows, 3 windows; thresholds: config/thresholds.json
    profile             threshold  raw score  normalised  windows hit  TP rows  FP rows
    standard              0.54219     -0.582       40.30      2/3            2        5
    ...
    numenta: 40.30 / 0.10 / 49.09  (standard / reward_low_FP_rate / reward_low_FN_rate)
    0
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from typing import Any

from stream.errors import HebbstreamError

from .corpus import BUNDLED_CORPUS, corpus_files, find_detector_dirs, read_windows
from .detectors import known_detectors, load_object, nab_factory
from .runner import read_nab_thresholds, run_corpus, scoring_table
from .scorer import PROFILES, Profile, ProfileReport, ScoringTable, evaluate, load_profiles

DESCRIPTION = """\
Run an anomaly detector over the Numenta Anomaly Benchmark and score it with NAB's
rules (anomaly windows, scaled sigmoid, the standard / low-FP / low-FN profiles, one
threshold per profile for the whole corpus, normalised so that a null detector scores 0
and a perfect one 100).
"""

EPILOG = """\
examples:
  hebbstream nab --out results                  # HTM over the bundled corpus
  hebbstream nab --out results --detector NAME  # another registered detector
  hebbstream nab --out results --workers 2      # on two processes
  hebbstream nab --out results --seed 1 --files 'realKnownCause/*'
  hebbstream nab --out examples/data/nab/results/numenta --score-only   # NuPIC's published results
  hebbstream nab --nab-dir ../NAB --out results # another copy of the corpus
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``hebbstream nab`` (the ``hebbstream.commands`` entry point)."""
    p = subparsers.add_parser("nab", help="run and score a detector on the NAB benchmark",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    bundled = os.path.isdir(BUNDLED_CORPUS)
    p.add_argument("--nab-dir", required=not bundled, default=BUNDLED_CORPUS if bundled else None, metavar="DIR",
                   help="NAB checkout: data/, labels/combined_windows.json, config/ (default: the corpus "
                        "bundled in the repository, examples/data/nab)")
    p.add_argument("--out", required=True, metavar="RESULTS_DIR",
                   help="where result files go (with --score-only: the folder to score)")
    p.add_argument("--detector", default=None, metavar="NAME",
                   help="the detector to run, by name (default: htm; one of: "
                        f"{', '.join(known_detectors())}), also the results sub-folder and file "
                        "prefix; with --factory only the folder name; with --score-only: the "
                        "detector folder to score (default: every one found)")
    p.add_argument("--factory", default=None, metavar="MODULE:FUNCTION",
                   help="builds the detector from {file: NABStream} instead of --detector's")
    p.add_argument("--seed", type=int, default=0, help="detector seed (default 0)")
    p.add_argument("--tm", choices=("plain", "backtracking"), default=None,
                   help="HTM detector's temporal memory: backtracking (NuPIC's BacktrackingTM, "
                        "as NuPIC's NAB detector; default) or plain (htm.core style, faster)")
    p.add_argument("--score-only", action="store_true", help="score existing results, run nothing")
    p.add_argument("--profiles", nargs="+", metavar="NAME",
                   help="profiles to report (default: all of config/profiles.json)")
    p.add_argument("--thresholds", choices=("auto", "sweep", "stored"), default="auto",
                   help="auto: NAB's stored thresholds for detectors in config/thresholds.json, "
                        "a corpus-wide sweep for the others (default); sweep: always sweep; "
                        "stored: only stored thresholds")
    p.add_argument("--score-column", default="anomaly_score", metavar="COLUMN",
                   help="result-file column to score (default anomaly_score; raw_score scores "
                        "the raw HTM score, without the likelihood; always swept)")
    p.add_argument("--files", nargs="+", metavar="PATTERN",
                   help="only corpus files matching these patterns, e.g. 'realKnownCause/*' "
                        "(scores are then normalised over their windows only)")
    p.add_argument("--batch-size", type=int, default=4096, help="micro-batch size (default 4096)")
    p.add_argument("--device", default=None, help="device for the detector (cpu, cuda)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes taking jobs of files (largest first) as they "
                        "finish the last; same result files as one (default 1)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    p.set_defaults(func=main)
    return p


#: Named NAB detectors built on the HTM detector (they take ``--tm`` and ``--device``).
HTM_DETECTORS = ("htm", "htm-rest")


def _named_factory(detector: str, args: argparse.Namespace) -> Any:
    if detector not in HTM_DETECTORS:
        return nab_factory(detector)
    from operators.htm.backend import resolve_device

    # the device made concrete here, once, not in every worker process
    return nab_factory(detector, tm=args.tm or "backtracking", device=resolve_device(args.device))


def _profiles(nab_dir: str, names: list[str] | None) -> dict[str, Profile]:
    path = os.path.join(nab_dir, "config", "profiles.json")
    profiles = load_profiles(path) if os.path.exists(path) else dict(PROFILES)
    if names:
        unknown = [n for n in names if n not in profiles]
        if unknown:
            raise HebbstreamError(f"unknown profile(s) {unknown}; known: {sorted(profiles)}")
        profiles = {n: profiles[n] for n in names}
    return profiles


def _select(names: list[str], patterns: list[str] | None) -> list[str]:
    if not patterns:
        return names
    chosen = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not chosen:
        raise HebbstreamError(f"--files {patterns} matches no corpus file")
    return chosen


def score_detector(table: ScoringTable, detector: str, profiles: dict[str, Profile],
                   stored: dict[str, float] | None, mode: str) -> dict[str, Any]:
    """Score one detector's table; returns the reports actually used and the sweep's."""
    if mode == "stored" and not stored:
        raise HebbstreamError(f"config/thresholds.json stores no thresholds for {detector!r}")
    use_stored = mode != "sweep" and bool(stored)
    if use_stored and any(p not in stored for p in profiles):
        raise HebbstreamError(f"config/thresholds.json has no threshold for {detector!r} and "
                              f"profile(s) {[p for p in profiles if p not in stored]}")
    swept = evaluate(table, profiles)
    reports = evaluate(table, profiles, stored) if use_stored else swept
    return {"reports": reports, "swept": swept, "stored": use_stored}


def _print(detector: str, table: ScoringTable, scored: dict[str, Any], out: Any = None) -> None:
    out = out or sys.stdout
    reports: dict[str, ProfileReport] = scored["reports"]
    source = "config/thresholds.json" if scored["stored"] else "swept over the corpus"
    print(f"{detector}: {len(table.names)} files, {int(table.file_rows.sum()):,} rows, "
          f"{int(table.n_windows.sum())} windows; thresholds: {source}", file=out)
    print(f"{'profile':<19} {'threshold':>9}  {'raw score':>9}  {'normalised':>10}  "
          f"{'windows hit':>11}  {'TP rows':>7}  {'FP rows':>7}", file=out)
    for name, r in reports.items():
        hit = _windows_hit(table, r.threshold)
        print(f"{name:<19} {r.threshold:>9.5f}  {r.raw:>9.3f}  {r.normalised:>10.2f}  "
              f"{hit:>5}/{int(table.n_windows.sum()):<5}  {r.result.tp:>7}  {r.result.fp:>7}",
              file=out)
    if scored["stored"]:
        swept = scored["swept"]
        print("a sweep over the corpus would choose: " + ", ".join(
            f"{n} {s.normalised:.2f} at {s.threshold:.5f}" for n, s in swept.items()), file=out)
    print(f"{detector}: " + " / ".join(f"{r.normalised:.2f}" for r in reports.values())
          + "  (" + " / ".join(reports) + ")", file=out)


def _windows_hit(table: ScoringTable, threshold: float) -> int:
    hits = table.window[(table.scores >= threshold) & (table.window >= 0)]
    return len(set(hits.tolist()))


def main(args: argparse.Namespace) -> int:
    """Handler of ``hebbstream nab``."""
    try:
        return _main(args)
    except ValueError as exc:  # bad files or labels: report, no traceback
        raise HebbstreamError(str(exc)) from exc


def _main(args: argparse.Namespace) -> int:
    nab_dir = args.nab_dir
    profiles = _profiles(nab_dir, args.profiles)
    windows = read_windows(nab_dir)
    stored_all = read_nab_thresholds(nab_dir)
    results: dict[str, Any] = {}
    if args.score_only:
        dirs = find_detector_dirs(args.out)
        if args.detector:
            if args.detector not in dirs:
                raise HebbstreamError(f"{args.out}: no results of detector {args.detector!r} "
                                      f"(found: {sorted(dirs)})")
            dirs = {args.detector: dirs[args.detector]}
    else:
        detector = args.detector or "htm"
        if args.tm and (args.factory or detector not in HTM_DETECTORS):
            raise HebbstreamError("--tm chooses the HTM detector's temporal memory; it applies "
                                  f"to --detector {' or '.join(HTM_DETECTORS)} only")
        factory = load_object(args.factory) if args.factory else _named_factory(detector, args)
        names = _select(corpus_files(nab_dir), args.files)
        t0 = time.perf_counter()
        if args.workers < 1:
            raise HebbstreamError(f"--workers must be >= 1, got {args.workers}")
        summary = run_corpus(factory, nab_dir, args.out, detector, files=names, seed=args.seed,
                             batch_size=args.batch_size, progress=args.progress,
                             device=args.device, workers=args.workers)
        seconds = time.perf_counter() - t0
        print(f"{detector}: ran {summary['events']:,} records of {len(names)} files in "
              f"{seconds:.1f} s ({summary['events'] / seconds:,.0f} records/s) on "
              f"{summary['workers']} worker(s), seed {args.seed}; "
              f"results in {summary['detector_dir']}", file=sys.stderr)
        results["run"] = {"seconds": seconds, "records": summary["events"], "seed": args.seed,
                          "workers": summary["workers"]}
        dirs = {detector: summary["detector_dir"]}
    for detector, folder in dirs.items():
        files = None
        if args.files:
            files = _select(sorted(windows), args.files)
        table = scoring_table(folder, nab_dir, files, detector, args.score_column)
        # NAB's stored thresholds belong to the detectors' anomaly_score columns
        likelihood_column = args.score_column == "anomaly_score"
        stored = stored_all.get(detector) if likelihood_column else None
        label = detector if likelihood_column else f"{detector}[{args.score_column}]"
        scored = score_detector(table, label, profiles, stored, args.thresholds)
        _print(label, table, scored)
        results[label] = {
            "thresholds": "stored" if scored["stored"] else "sweep",
            "profiles": {name: {"score": r.normalised, "raw": r.raw, "threshold": r.threshold,
                                "tp": r.result.tp, "fp": r.result.fp, "fn": r.result.fn,
                                "tn": r.result.tn}
                         for name, r in scored["reports"].items()}}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
