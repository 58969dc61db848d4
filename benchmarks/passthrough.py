"""Engine overhead: Arrow IPC file → identity pipeline → Arrow IPC file.

10 M rows (1 M with ``--quick``) of a string key (1,000 keys) and four numeric columns
are generated once into a cached Arrow IPC file (record batches of 65,536 rows). The
same file is then copied by plain pyarrow (memory-mapped read, ``ipc.new_file`` write)
and by ``stream.run(ArrowSource, Identity, ArrowSink, batch_size=65536)``; each is timed
``--repeat`` times, alternating, and the best time counts (the machine is shared).

Figures: ``events_per_s`` (engine), ``pyarrow_events_per_s``, ``ratio_vs_pyarrow``
(engine / pyarrow). Targets: ≥ 5 M events/s on one core, ratio ≥ 0.5. Also
``events_per_s_time_checked``: the same run with ``time="seq"``, so the engine checks
per key that event time never goes backwards (per-row work the identity run skips:
its stream has no time column).

    python benchmarks/passthrough.py            # 10 M rows
    python benchmarks/passthrough.py --quick    # 1 M rows
    taskset -c 0 python benchmarks/passthrough.py   # on one core (cores_used says so)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
from common import finish, parse_args

from connectors.arrow_ipc import ArrowSink, ArrowSource
from stream import Operator, machine_info, run

CHUNK = 65536


class Identity(Operator):
    """Returns its input: all time measured is the engine's."""

    def process(self, batch):
        return batch


def make_input(rows: int, seed: int) -> str:
    """Write (once) and return the cached input file of ``rows`` rows."""
    folder = os.path.join(tempfile.gettempdir(), "hebbstream-bench")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"passthrough-{rows}-{seed}.arrow")
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    keys = np.array([f"metric-{i:04d}" for i in range(1000)])
    schema = pa.schema([("key", pa.string()), ("seq", pa.int64()), ("x", pa.float64()),
                        ("y", pa.float64()), ("n", pa.int32())])
    tmp = path + ".tmp"
    with pa.ipc.new_file(tmp, schema) as w:
        for lo in range(0, rows, CHUNK):
            n = min(CHUNK, rows - lo)
            w.write_batch(pa.record_batch({
                "key": keys[rng.integers(0, len(keys), n)], "seq": np.arange(lo, lo + n),
                "x": rng.normal(size=n), "y": rng.random(n),
                "n": rng.integers(0, 100, n, dtype=np.int32),
            }, schema=schema))
    os.replace(tmp, path)
    return path


def pyarrow_copy(src: str, dst: str) -> int:
    with pa.memory_map(src) as f:
        reader = pa.ipc.open_file(f)
        rows = 0
        with pa.ipc.new_file(dst, reader.schema) as w:
            for i in range(reader.num_record_batches):
                rb = reader.get_batch(i)
                w.write_batch(rb)
                rows += rb.num_rows
    return rows


def engine_copy(src: str, dst: str, time: str | None = None) -> int:
    summary = run(ArrowSource(src, key="key", time=time, batch_size=CHUNK), Identity(),
                  ArrowSink(dst), batch_size=CHUNK)
    return summary["events"]


def engine_copy_time_checked(src: str, dst: str) -> int:
    return engine_copy(src, dst, time="seq")


def main() -> None:
    args = parse_args("passthrough", __doc__.splitlines()[0],
                      lambda p: p.add_argument("--repeat", type=int, default=3))
    rows = 1_000_000 if args.quick else 10_000_000
    src = make_input(rows, args.seed)
    out = tempfile.mkdtemp(prefix="hebbstream-passthrough-")
    copies = {"pyarrow": pyarrow_copy, "engine": engine_copy,
              "time_checked": engine_copy_time_checked}
    best = dict.fromkeys(copies, float("inf"))
    machine_info()  # imports torch once, outside the timed runs (run() reports the machine)
    try:
        for _ in range(args.repeat):
            for name, copy in copies.items():
                dst = os.path.join(out, f"{name}.arrow")
                t0 = time.perf_counter()
                n = copy(src, dst)
                best[name] = min(best[name], time.perf_counter() - t0)
                assert n == rows, f"{name} copied {n} rows, expected {rows}"
                os.remove(dst)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    eps, base = rows / best["engine"], rows / best["pyarrow"]
    finish("passthrough", {"rows": rows, "batch_size": CHUNK, "events_per_s": eps,
                           "pyarrow_events_per_s": base, "ratio_vs_pyarrow": eps / base,
                           "events_per_s_time_checked": rows / best["time_checked"],
                           "engine_seconds": best["engine"], "pyarrow_seconds": best["pyarrow"],
                           "repeat": args.repeat, "cores_used": len(os.sched_getaffinity(0))},
           quick=args.quick)


if __name__ == "__main__":
    main()
