"""Engine overhead on a River model: the same prequential run by River and by the engine.

``preprocessing.StandardScaler() | linear_model.LogisticRegression()`` over samples of
River's Agrawal generator (offline, seeded), materialised once: River runs
``evaluate.progressive_val_score`` over the list of ``(x, y)``; the engine runs
``MemorySource(table) → RiverOperator → Evaluate`` over the same rows as an Arrow table.
Both must give the same accuracy; ``time_ratio`` is engine time / River time (best of
``--repeats`` alternating runs, so background load hits both alike). Target ≤ 1.1.

    python benchmarks/river_overhead.py            # 200 k samples
    python benchmarks/river_overhead.py --quick    # 20 k samples
"""

from __future__ import annotations

import time

import pyarrow as pa
from common import finish, parse_args
from river import datasets, evaluate, linear_model, metrics, preprocessing

from connectors.memory import MemorySource
from operators.evaluate import Evaluate
from operators.river import RiverOperator
from stream import run


def _model():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def river_run(data: list) -> tuple[float, float]:
    t0 = time.perf_counter()
    acc = evaluate.progressive_val_score(data, _model(), metrics.Accuracy()).get()
    return acc, time.perf_counter() - t0


def engine_run(table: pa.Table, batch_size: int) -> tuple[float, float]:
    pipe = RiverOperator(_model(), target="y", proba=None) | Evaluate(target="y", metrics=["Accuracy"],
                                                                       per_key=False)
    t0 = time.perf_counter()
    summary = run(MemorySource(table, batch_size=batch_size), pipe, None, batch_size=batch_size)
    elapsed = time.perf_counter() - t0
    (ev,) = [v for k, v in summary["metrics"].items() if k.endswith(".Evaluate")]
    return ev["overall"]["Accuracy"], elapsed


def main() -> None:
    args = parse_args("river_overhead", __doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--samples", type=int, default=None),
        p.add_argument("--batch-size", type=int, default=1024),
        p.add_argument("--repeats", type=int, default=3)))
    n = args.samples or (20_000 if args.quick else 200_000)
    data = list(datasets.synth.Agrawal(seed=args.seed).take(n))
    table = pa.Table.from_pylist([{**x, "y": y} for x, y in data])
    river_times, engine_times = [], []
    for _ in range(args.repeats):
        metric_river, t = river_run(data)
        river_times.append(t)
        metric_engine, t = engine_run(table, args.batch_size)
        engine_times.append(t)
    if metric_engine != metric_river:
        raise SystemExit(f"accuracy differs: engine {metric_engine} != River {metric_river}")
    finish("river_overhead", {
        "samples": n, "model": "StandardScaler | LogisticRegression", "dataset": "synth.Agrawal",
        "batch_size": args.batch_size, "repeats": args.repeats,
        "metric": "Accuracy", "metric_river": metric_river, "metric_engine": metric_engine,
        "seconds_river": min(river_times), "seconds_engine": min(engine_times),
        "time_ratio": min(engine_times) / min(river_times), "target_time_ratio": 1.1,
        "events_per_s_engine": n / min(engine_times),
    }, quick=args.quick)


if __name__ == "__main__":
    main()
