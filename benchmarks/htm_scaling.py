"""HTM throughput against the number of concurrent keys, and next to River's HalfSpaceTrees.

For 1, 10, 100 and 1,000 keys, every key replays NAB's ``nyc_taxi`` stream (shifted by a
per-key offset so the keys differ) through one ``HTMDetector``; the figure is aggregate
records/s over the measured steps (after a short warm-up), and memory per key = the
model's state tensors / keys. The single-stream rate is reported next to River's
``HalfSpaceTrees`` (score_one + learn_one) on the same stream, in the same run.
No GPU was available where the committed figures were measured (see ``machine``).

    python benchmarks/htm_scaling.py            # 1, 10, 100, 1000 keys
    python benchmarks/htm_scaling.py --quick    # 1, 10, 100 keys, fewer steps
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
from common import finish, parse_args

NAB_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "data", "nab",
                        "machine_temperature_system_failure.csv")


def _extra(p):
    p.add_argument("--device", default="auto")
    p.add_argument("--keys", type=int, nargs="+", default=None)


def _stream(path: str) -> tuple[np.ndarray, np.ndarray]:
    from operators.nab.corpus import read_csv_columns

    cols = read_csv_columns(path, ["timestamp", "value"])
    return cols["timestamp"].astype("datetime64[ns]").astype(np.int64), cols["value"].astype(float)


def htm_rate(keys: int, warm: int, steps: int, ts: np.ndarray, values: np.ndarray,
             device: str) -> dict:
    from operators.htm.detector import HTMDetector
    from stream import Batch

    names = [f"k{i}" for i in range(keys)]
    lo, hi = float(values.min()), float(values.max()) + keys
    det = HTMDetector(resolution="minmax", value_range={k: (lo, hi) for k in names},
                      device=device, seed=0)
    offsets = np.arange(keys, dtype=float)

    def batch(i0: int, n: int) -> Batch:
        rows = np.arange(i0, i0 + n)
        data = pa.record_batch({
            "key": pa.array(np.tile(names, n)),
            "timestamp": pa.array(np.repeat(ts[rows], keys), pa.timestamp("ns")),
            "value": (values[rows][:, None] + offsets[None, :]).reshape(-1)})
        return Batch(data, source="scaling", time_column="timestamp")

    det(batch(0, warm))
    t0 = time.perf_counter()
    det(batch(warm, steps))
    seconds = time.perf_counter() - t0
    state = det.model.memory_bytes()
    return {"keys": keys, "steps": steps, "seconds": round(seconds, 2),
            "records_per_s": round(keys * steps / seconds, 1),
            "state_mb_per_key": round(state / keys / 2**20, 2),
            "segments_per_column": det.model.tm.segments_per_column}


def hst_rate(values: np.ndarray, n: int) -> float:
    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=0))
    t0 = time.perf_counter()
    for v in values[:n]:
        x = {"value": float(v)}
        model.score_one(x)
        model.learn_one(x)
    return n / (time.perf_counter() - t0)


def main() -> None:
    args = parse_args("htm_scaling", __doc__.splitlines()[0], _extra)
    ts, values = _stream(NAB_FILE)
    keys = args.keys or ([1, 10, 100] if args.quick else [1, 10, 100, 1000])
    plan = {1: (200, 1500), 10: (100, 300), 100: (50, 60), 1000: (10, 10)}
    if args.quick:
        plan = {1: (100, 300), 10: (50, 60), 100: (20, 15), 1000: (5, 5)}
    rows = []
    for k in keys:
        warm, steps = plan.get(k, (20, 20))
        rows.append(htm_rate(k, warm, steps, ts, values, args.device))
        print(rows[-1], flush=True)
    single = next((r for r in rows if r["keys"] == 1), None)
    hst = hst_rate(values, 3000 if args.quick else 10000)
    import torch

    figures = {"scaling": rows, "device": args.device,
               "gpu_available": bool(torch.cuda.is_available()),
               "single_stream": {"htm_records_per_s": single["records_per_s"] if single else None,
                                 "half_space_trees_records_per_s": round(hst, 1)}}
    finish("htm_scaling", figures, quick=args.quick)


if __name__ == "__main__":
    main()
