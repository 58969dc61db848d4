"""Many HTM streams at steady state: memory per key, throughput and latency of a fleet.

Live-like feeds are made from the NAB corpus: key ``i`` replays file ``i mod 58`` from a
random offset (wrapping around), with its own Gaussian noise (1 % of the file's spread),
and every key's records carry one shared 5-minute clock, so the feed arrives in event
time order as a fleet of metrics would. Each key's encoder resolution follows NuPIC's
min/max rule on its own records. Two configurations, either TM:

- **steady fleet** (default 1,000 keys x 2,000 records): all keys interleaved
  round-robin, one record per key per tick;
- **rolling fleet** (default 10,000 keys x 500 records): key ``i`` is active for one
  contiguous stretch of 500 ticks starting at tick ``i * 500 / 1000``, so about 1,000
  keys are active at any time (devices and containers come and go); the detector keeps
  ``max_resident_keys`` = 1,000 (``--max-resident-keys``; the number of active keys by
  default) and spills the least recently used keys to a temporary folder.

Every configuration prints ``keys``, ``records``, ``tm``, ``records_per_s`` (aggregate,
over all batches), ``rss_mb`` (the process's peak resident set so far: run one configuration per
process for its own figure), ``state_mb_per_key``
(mean and max over keys of the arrays a key owns: TM segments and index, spatial pooler
rows and bitmap, likelihood buffers; over the keys resident at the end when keys are spilled),
``p99_batch_latency_ms``, ``spilled_keys`` (keys on disk at the end), ``spills`` and
``restores_per_s`` (spilled keys brought back per second), ``spill_mb_per_key`` (mean size of
a spilled key's file), ``checkpoint_bytes_per_key``
(the detector's state through the checkpoint codec, per key; not for the largest fleets).
``--measure`` instead runs NAB's longest stream (machine_temperature_system_failure) as
one key and reports that key's state in bytes, by part, and its checkpoint size.

    python benchmarks/htm_keys.py                       # steady and rolling fleets, both TMs
    python benchmarks/htm_keys.py --fleet steady --tm backtracking
    python benchmarks/htm_keys.py --measure             # one key after machine_temperature
    python benchmarks/htm_keys.py --quick               # small fleets, under a minute
"""

from __future__ import annotations

import os
import resource
import sys
import time

import numpy as np
import pyarrow as pa
from common import finish, parse_args

NAB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "data", "nab")
LONGEST = "realKnownCause/machine_temperature_system_failure.csv"
TICK_NS = 300 * 10**9
START_NS = np.datetime64("2026-01-01T00:00:00", "ns").astype(np.int64)


def _extra(p):
    p.add_argument("--fleet", choices=("steady", "rolling", "both"), default="both")
    p.add_argument("--tm", choices=("plain", "backtracking", "both"), default="both")
    p.add_argument("--keys", type=int, default=None, help="keys (default: 1,000 steady, 10,000 rolling)")
    p.add_argument("--records", type=int, default=None, help="records per key (default: 2,000 / 500)")
    p.add_argument("--active", type=int, default=1000, help="rolling fleet: keys active at once")
    p.add_argument("--max-resident-keys", type=int, default=None,
                   help="rolling fleet: keys kept in memory, the rest spilled (default: --active)")
    p.add_argument("--batch", type=int, default=4096, help="records per micro-batch")
    p.add_argument("--measure", action="store_true", help="one key's state after NAB's longest stream")
    p.add_argument("--nab-dir", default=NAB_DIR)
    p.add_argument("--device", default="numpy", help="numpy, torch or cuda (the spatial pooler and plain TM)")


def key_state_bytes(det, slot: int) -> dict[str, int]:
    """Bytes of the arrays key ``slot`` owns in ``det`` (an ``HTMDetector``), by part."""
    model = det.model
    sp, be = model.sp, model.be
    learned = int((be.to_numpy(sp.row[slot]) >= 0).sum())
    row_bytes = be.nbytes(sp.rows) // max(sp.rows.shape[0], 1)
    out = {"sp": int(be.nbytes(sp.row[slot]) + learned * row_bytes + be.nbytes(sp.conn[slot]))}
    tm = model.tm
    if hasattr(tm, "models"):
        out["tm"] = int(tm.models[slot].nbytes())
    else:
        out["tm"] = int(sum(tm.be.nbytes(getattr(tm, n)) for n in (*tm._STATE, "used", "winpos")) // tm.slots)
    lik = det.scorers[slot].likelihood
    out["likelihood"] = int(lik._scores.nbytes + lik._values.nbytes)
    return out


def _corpus(nab_dir: str) -> list[tuple[np.ndarray, float]]:
    from operators.nab.corpus import corpus_files, read_corpus_file

    out = []
    for name in corpus_files(nab_dir):
        _, values = read_corpus_file(nab_dir, name)
        out.append((values.astype(float), float(values.std()) or 1.0))
    return out


def feeds(keys: int, records: int, nab_dir: str, seed: int) -> np.ndarray:
    """``(keys, records)`` values: file ``i mod files`` from a random offset, own noise."""
    corpus = _corpus(nab_dir)
    rng = np.random.default_rng(seed)
    out = np.empty((keys, records))
    for i in range(keys):
        values, spread = corpus[i % len(corpus)]
        at = (int(rng.integers(len(values))) + np.arange(records)) % len(values)
        out[i] = values[at] + rng.normal(0.0, 0.01 * spread, records)
    return out


def schedule(keys: int, records: int, fleet: str, active: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival order: key, record index and tick of every record, in event-time order."""
    start = np.zeros(keys, np.int64) if fleet == "steady" else (np.arange(keys) * records) // active
    key = np.repeat(np.arange(keys), records)
    j = np.tile(np.arange(records), keys)
    tick = start[key] + j
    order = np.lexsort((key, tick))
    return key[order], j[order], tick[order]


def run_fleet(fleet: str, tm: str, keys: int, records: int, active: int, batch: int, nab_dir: str,
              seed: int, checkpoint: bool, device: str = "numpy", max_resident_keys: int | None = None) -> dict:
    from operators.htm import HTMDetector
    from operators.htm.encoders import nab_resolution
    from operators.htm.model import HTMConfig
    from stream import Batch
    from stream.spill import spiller_of
    from stream.state import dumps

    values = feeds(keys, records, nab_dir, seed)
    names = np.array([f"m{i:05d}" for i in range(keys)])
    res = {n: nab_resolution(float(v.min()), float(v.max())) for n, v in zip(names.tolist(), values)}
    det = HTMDetector(config=HTMConfig(tm=tm), resolution=res, rows={n: records for n in res},
                      device=device, seed=seed, max_resident_keys=max_resident_keys)
    key, j, tick = schedule(keys, records, fleet, active)
    latencies = []
    t0 = time.perf_counter()
    for lo in range(0, key.shape[0], batch):
        k, jj, tt = key[lo:lo + batch], j[lo:lo + batch], tick[lo:lo + batch]
        data = pa.record_batch({"key": pa.array(names[k]),
                                "timestamp": pa.array(START_NS + tt * TICK_NS, pa.timestamp("ns")),
                                "value": values[k, jj]})
        b0 = time.perf_counter()
        det(Batch(data, source="fleet", offset=lo, time_column="timestamp"))
        latencies.append(time.perf_counter() - b0)
        if len(latencies) % 100 == 0:   # progress on stderr: a long run can be judged early
            done = lo + len(k)
            print(f"{fleet}/{tm}: {done:,} of {key.shape[0]:,} records, {done / (time.perf_counter() - t0):,.0f}/s, "
                  f"{len(det.slot):,} keys resident", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0
    per_key = np.array([sum(key_state_bytes(det, det.slot[n]).values()) for n in names.tolist()
                        if n in det.slot]) / 2**20
    spiller = spiller_of(det)
    spilled = list(spiller.spilled.values()) if spiller is not None else []
    out = {"fleet": fleet, "keys": keys, "records": int(key.shape[0]), "records_per_key": records, "tm": tm,
           "records_per_s": round(key.shape[0] / elapsed, 1), "seconds": round(elapsed, 1),
           "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "state_mb_per_key": {"mean": round(float(per_key.mean()), 3), "max": round(float(per_key.max()), 3)},
           "p99_batch_latency_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
           "batch_records": batch, "spilled_keys": len(spilled), "device": device,
           "max_resident_keys": max_resident_keys, "resident_keys": len(det.slot), "slots": det.model.slots,
           "spills": spiller.spills if spiller is not None else 0,
           "restores_per_s": round(spiller.restores / elapsed, 1) if spiller is not None else 0.0,
           "spill_mb_per_key": round(float(np.mean([r.size for r in spilled])) / 2**20, 3) if spilled else 0.0}
    if fleet == "rolling":
        out["active_keys"] = active
    if checkpoint:
        tree, npz = dumps(det.state_dict())
        out["checkpoint_bytes_per_key"] = round((len(tree) + len(npz)) / keys)
    return out


def measure_longest(tm: str, nab_dir: str, seed: int) -> dict:
    """One key's state after NAB's longest stream, as the NAB benchmark runs it."""
    from operators.htm import HTMDetector
    from operators.htm.model import HTMConfig
    from operators.nab.replay import NABCorpusSource
    from stream.state import dumps

    src = NABCorpusSource(nab_dir, [LONGEST])
    det = HTMDetector.for_nab(src.streams, seed=seed, config=HTMConfig(tm=tm), device="numpy")
    t0 = time.perf_counter()
    for b in src.batches():
        det(b)
    parts = key_state_bytes(det, 0)
    tree, npz = dumps(det.state_dict())
    out = {"measure": LONGEST, "tm": tm, "records": src.length(), "seconds": round(time.perf_counter() - t0, 1),
           "state_bytes": sum(parts.values()), "state_bytes_by_part": parts,
           "checkpoint_bytes": len(tree) + len(npz)}
    if hasattr(det.model.tm, "models"):
        out["tm_bytes_by_part"] = det.model.tm.models[0].nbytes_by_part()
    return out


def main() -> None:
    args = parse_args("htm_keys", "HTM fleets: memory per key, throughput, latency", _extra)
    tms = ["backtracking", "plain"] if args.tm == "both" else [args.tm]
    rows = []
    if args.measure:
        rows = [measure_longest(tm, args.nab_dir, args.seed) for tm in tms]
        for r in rows:
            print(r, flush=True)
        finish("htm_keys-measure", {"rows": rows}, quick=False)
        return
    fleets = ["steady", "rolling"] if args.fleet == "both" else [args.fleet]
    for fleet in fleets:
        keys, records, active = (1000, 2000, args.active) if fleet == "steady" else (10000, 500, args.active)
        batch = args.batch
        if args.quick:
            keys, records, active = (8, 120, 8) if fleet == "steady" else (32, 60, 8)
            batch = min(batch, 64)
        keys, records = args.keys or keys, args.records or records
        resident = (args.max_resident_keys or min(active, keys)) if fleet == "rolling" else None
        for tm in tms:
            row = run_fleet(fleet, tm, keys, records, min(active, keys), batch, args.nab_dir, args.seed,
                            checkpoint=keys <= 1000, device=args.device, max_resident_keys=resident)
            print(row, flush=True)
            rows.append(row)
    # one results file per configuration: htm_keys[-FLEET][-TM].json
    name = "-".join(["htm_keys", *[v for v in (args.fleet, args.tm) if v != "both"]])
    finish(name, {"rows": rows}, quick=args.quick)


if __name__ == "__main__":
    main()
