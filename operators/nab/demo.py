"""``hebbstream demo``: HTM anomaly detection on a bundled NAB stream, with a plot.

Runs :class:`~operators.htm.detector.HTMDetector` through the engine over
``examples/data/nab/data/realKnownCause/machine_temperature_system_failure.csv`` (NAB, MIT
licence, bundled with the corpus and its labelled anomaly windows), writes the scored stream as CSV and a PNG (value
with the labelled windows and the alerts; anomaly likelihood with the alert threshold)
into ``out/demo/``, and prints where it raised alerts.

The stream goes through the connectors a pipeline file uses (:class:`connectors.csv.CSVSource`
in, :class:`connectors.memory.MemorySink` out); the file's min and max are read first, as
NAB lets its detectors know them (NuPIC's encoder range).

Example (a short run on the first rows, without the plot):
    >>> import tempfile
    >>> from operators.htm.model import HTMConfig
    >>> out = tempfile.mkdtemp()
    >>> report = run_demo(out_dir=out, rows=300, plot=False, config=HTMConfig.small())
    >>> report["rows"], sorted(report["files"])
    (300, ['csv'])
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import pyarrow as pa

from connectors.csv import CSVSource
from connectors.memory import MemorySink
from operators.htm.detector import HTMDetector
from operators.htm.model import HTMConfig
from stream import run

from .corpus import read_csv_columns

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.normpath(os.path.join(HERE, "..", "..", "examples", "data", "nab"))
DEFAULT_DATA = os.path.join(EXAMPLES, "data", "realKnownCause", "machine_temperature_system_failure.csv")
DEFAULT_WINDOWS = os.path.join(EXAMPLES, "labels", "combined_windows.json")
#: NAB standard-profile threshold of this detector over the whole corpus (benchmarks/nab.py,
#: seed 0, plain TM, min/max resolution): the threshold NAB's sweep picked
DEFAULT_THRESHOLD = 0.5545


def read_windows_for(path: str, data_file: str) -> list[tuple[np.datetime64, np.datetime64]]:
    """Labelled windows of ``data_file`` from a NAB ``combined_windows.json``."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        windows = json.load(f)
    base = os.path.basename(data_file)
    for name, wins in windows.items():
        if os.path.basename(name) == base:
            return [(np.datetime64(a, "ns"), np.datetime64(b, "ns")) for a, b in wins]
    return []


def alert_episodes(ts: np.ndarray, alert: np.ndarray) -> list[tuple[np.datetime64, np.datetime64, int]]:
    """Runs of consecutive alert rows: (first time, last time, rows)."""
    idx = np.flatnonzero(alert)
    if not len(idx):
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]]
    return [(ts[a], ts[b], int(b - a + 1)) for a, b in zip(starts, ends)]


def run_demo(data: str = DEFAULT_DATA, windows: str = DEFAULT_WINDOWS, out_dir: str = "out/demo",
             threshold: float = DEFAULT_THRESHOLD, seed: int = 0, minmax: bool = True,
             rows: int | None = None, plot: bool = True, config: HTMConfig | None = None,
             quiet: bool = True) -> dict[str, Any]:
    """Score ``data`` with the HTM detector; write CSV (and PNG); return a report."""
    # what NAB tells a detector up front: the file's length, min and max
    cols = read_csv_columns(data, ["timestamp", "value"])
    ts, values = cols["timestamp"].astype("datetime64[ns]"), cols["value"].astype(np.float64)
    if rows is not None:
        ts, values = ts[:rows], values[:rows]
    name = os.path.splitext(os.path.basename(data))[0]
    key = ""   # a source without a key column is one stream, keyed ""
    kwargs: dict[str, Any] = dict(rows={key: len(values)}, alert_threshold=threshold, seed=seed,
                                  config=config)
    if minmax:
        kwargs.update(resolution="minmax", value_range={key: (values.min(), values.max())})
    detector = HTMDetector(**kwargs)
    source = CSVSource(data, time="timestamp", batch_size=2048, column_types={"value": "float64"})
    sink = MemorySink()
    t0 = time.perf_counter()
    # NAB files step back in time at clock changes (this one at row 10149); NAB scores rows
    # in file order, so the demo does not reject them as the engine would by default
    summary = run(source, detector, sink, batch_size=2048, check_order=False, max_events=rows)
    seconds = time.perf_counter() - t0
    table = sink.to_table()
    labelled = read_windows_for(windows, data)
    label = np.zeros(len(values), dtype=np.int8)
    for a, b in labelled:
        label[(ts >= a) & (ts <= b)] = 1
    table = table.append_column("label", pa.array(label))
    os.makedirs(out_dir, exist_ok=True)
    files = {"csv": os.path.join(out_dir, f"{name}_scored.csv")}
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, files["csv"])
    alert = table.column("alert").to_numpy(zero_copy_only=False)
    likelihood = table.column("anomaly_likelihood").to_numpy()
    episodes = alert_episodes(ts, alert)
    if plot:
        files["png"] = os.path.join(out_dir, f"{name}.png")
        probation = detector.scorers[0].likelihood.probation
        _plot(files["png"], name, ts, values, likelihood, alert, labelled, threshold, probation)
    report = {"rows": len(values), "seconds": seconds, "records_per_s": len(values) / seconds,
              "alerts": int(alert.sum()), "files": files, "threshold": threshold,
              "episodes": [(str(a), str(b), n, bool(label[np.searchsorted(ts, a)]))
                           for a, b, n in episodes],
              "windows": [(str(a), str(b)) for a, b in labelled],
              "events_per_s": summary["events_per_s"]}
    if not quiet:
        _print(report, name)
    return report


def _plot(path: str, name: str, ts: np.ndarray, values: np.ndarray, likelihood: np.ndarray,
          alert: np.ndarray, windows: list, threshold: float, probation: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(14, 7), sharex=True,
                                   gridspec_kw={"height_ratios": [2, 1]})
    for k, (a, b) in enumerate(windows):
        for ax in (ax1, ax2):
            ax.axvspan(a, b, color="tab:orange", alpha=0.25,
                       label="labelled anomaly window" if (k == 0 and ax is ax1) else None)
    if probation:
        ax1.axvspan(ts[0], ts[min(probation, len(ts)) - 1], color="0.85",
                    label="probation (likelihood not fitted, no alerts)")
    ax1.plot(ts, values, lw=0.6, color="tab:blue", label="value")
    ax1.scatter(ts[alert], values[alert], s=18, color="tab:red", zorder=3, label="alert")
    ax1.set_ylabel("value")
    ax1.set_title(f"HTM anomaly detection on NAB {name}")
    ax1.legend(loc="lower left", fontsize=8)
    ax2.plot(ts, likelihood, lw=0.6, color="tab:purple", label="anomaly likelihood (log scale)")
    ax2.axhline(threshold, color="tab:red", ls="--", lw=0.8, label=f"alert threshold {threshold:g}")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("likelihood")
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print(report: dict[str, Any], name: str) -> None:
    print(f"HTM demo: {name}: {report['rows']:,} records in {report['seconds']:.1f} s "
          f"({report['records_per_s']:,.0f} records/s)")
    print(f"labelled anomaly windows: {len(report['windows'])}")
    for a, b in report["windows"]:
        print(f"  {a[:16]} .. {b[:16]}")
    print(f"alerts (anomaly_likelihood >= {report['threshold']:g}): {report['alerts']} rows in "
          f"{len(report['episodes'])} episode(s)")
    for a, b, n, inside in report["episodes"]:
        where = "inside a labelled window" if inside else "outside the labelled windows"
        span = a[:16] if n == 1 else f"{a[:16]} .. {b[:16]}"
        print(f"  {span}  ({n} row{'s' if n > 1 else ''}, {where})")
    for path in report["files"].values():
        print(f"wrote {path}")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``hebbstream demo`` (the ``hebbstream.commands`` entry point)."""
    p = subparsers.add_parser("demo", help="HTM anomaly detection on a bundled NAB stream",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="CSV with timestamp,value columns")
    p.add_argument("--windows", default=DEFAULT_WINDOWS,
                   help="NAB combined_windows.json with the file's labelled windows")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"alert when anomaly_likelihood >= this (default {DEFAULT_THRESHOLD})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--auto-resolution", action="store_true",
                   help="choose the encoder resolution from the first 100 records instead of "
                        "the file's min/max (NAB's rule)")
    p.set_defaults(func=_main)
    return p


def _main(args: argparse.Namespace) -> int:
    run_demo(args.data, args.windows, args.out, args.threshold, args.seed,
             minmax=not args.auto_resolution, quiet=False)
    return 0
