"""Engine overhead on a River model: the same prequential run by River and by the engine.

``preprocessing.StandardScaler() | linear_model.LogisticRegression()`` over samples of
River's Agrawal generator (offline, seeded), materialised once: River runs
``evaluate.progressive_val_score`` over the list of ``(x, y)``; the engine runs
``MemorySource(table) → RiverOperator → Evaluate`` over the same rows as an Arrow table.
Both must give the same accuracy. The two run alternately ``--repeats`` times;
``time_ratio`` is the median of the paired wall-clock ratios engine / River (pairs run
back to back, so background load hits both alike); ``time_ratio_best_of`` compares the
fastest runs and ``cpu_time_ratio`` the process CPU time (all threads), which a busy
machine disturbs least. Target ``time_ratio`` ≤ 1.1.

    python benchmarks/river_overhead.py            # 200 k samples
    python benchmarks/river_overhead.py --quick    # 20 k samples
"""

from __future__ import annotations

import gc
import statistics
import time

import pyarrow as pa
from common import finish, parse_args
from river import datasets, evaluate, linear_model, metrics, preprocessing

from connectors.memory import MemorySource
from operators.river import RiverOperator
from operators.river.evaluate import Evaluate
from stream import machine_info, run


def _model():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def river_run(data: list) -> tuple[float, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    acc = evaluate.progressive_val_score(data, _model(), metrics.Accuracy()).get()
    return acc, time.perf_counter() - t0, time.process_time() - c0


def engine_run(table: pa.Table, batch_size: int) -> tuple[float, float, float]:
    pipe = RiverOperator(_model(), target="y", proba=None) | Evaluate(target="y", metrics=["Accuracy"],
                                                                       per_key=False)
    t0, c0 = time.perf_counter(), time.process_time()
    # the source hands over large zero-copy slices; the runtime cuts micro-batches of
    # batch_size from them (fewer reader-thread handoffs on a busy machine)
    source = MemorySource(table, batch_size=max(batch_size, 65536))
    summary = run(source, pipe, None, batch_size=batch_size)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    (ev,) = [v for k, v in summary["metrics"].items() if k.endswith(".Evaluate")]
    return ev["overall"]["Accuracy"], elapsed, cpu


def main() -> None:
    args = parse_args("river_overhead", __doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--samples", type=int, default=None),
        p.add_argument("--batch-size", type=int, default=1024),
        p.add_argument("--repeats", type=int, default=3),
        p.add_argument("--no-freeze", action="store_true", help="leave the data to the collector")))
    n = args.samples or (20_000 if args.quick else 200_000)
    data = list(datasets.synth.Agrawal(seed=args.seed).take(n))
    table = pa.Table.from_pylist([{**x, "y": y} for x, y in data])
    if not args.no_freeze:
        # The materialised samples live through both runs; keep the garbage collector
        # from re-scanning them, which would charge whichever run allocates more.
        gc.collect()
        gc.freeze()
    machine_info()  # the run summary asks for it: import what it needs before timing
    river_times, engine_times, river_cpu, engine_cpu = [], [], [], []
    for _ in range(args.repeats):
        metric_river, t, c = river_run(data)
        river_times.append(t)
        river_cpu.append(c)
        metric_engine, t, c = engine_run(table, args.batch_size)
        engine_times.append(t)
        engine_cpu.append(c)
    if metric_engine != metric_river:
        raise SystemExit(f"accuracy differs: engine {metric_engine} != River {metric_river}")
    ratios = [e / r for e, r in zip(engine_times, river_times)]
    finish("river_overhead", {
        "samples": n, "model": "StandardScaler | LogisticRegression", "dataset": "synth.Agrawal",
        "batch_size": args.batch_size, "repeats": args.repeats,
        "metric": "Accuracy", "metric_river": metric_river, "metric_engine": metric_engine,
        "seconds_river": min(river_times), "seconds_engine": min(engine_times),
        "time_ratio": float(statistics.median(ratios)), "target_time_ratio": 1.1,
        "time_ratio_best_of": min(engine_times) / min(river_times),
        "cpu_seconds_river": min(river_cpu), "cpu_seconds_engine": min(engine_cpu),
        "cpu_time_ratio": min(engine_cpu) / min(river_cpu),
        "time_ratios_per_repeat": ratios,
        "events_per_s_engine": n / min(engine_times),
    }, quick=args.quick)


if __name__ == "__main__":
    main()
