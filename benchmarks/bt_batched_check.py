"""Batched vs per-key backtracking TM on NAB data: same result files, and the TM's time.

Two checks, both on the NAB detector (``htm_factory``, NuPIC's configuration):

1. ``--files`` run end to end through :func:`run_corpus` once with each TM (the batched
   one swapped into the detector's model); the result CSVs must be the same bytes, and
   the time spent in ``tm.compute`` is reported per key-record.
2. The first ``--calls`` lockstep TM calls of the whole corpus (all 58 keys, columns
   captured from the spatial pooler, which does not depend on the TM) replayed into
   both TMs: identical scores and state, seconds per key-record with ~58 keys a call.

    python benchmarks/bt_batched_check.py --files realKnownCause/nyc_taxi.csv --calls 200

Prints one JSON line; writes nothing outside ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import functools
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from operators.htm.backtracking_tm import BacktrackingTM  # noqa: E402
from operators.htm.bt_batched import BatchedBacktrackingTM  # noqa: E402
from operators.htm.nab_cli import htm_factory  # noqa: E402
from operators.htm.nab_runner import run_corpus  # noqa: E402

NAB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "nab")


class _Timed:
    """Wraps a TM: times ``compute`` and counts key-records; optionally records calls
    and stops the run after ``limit`` calls."""

    def __init__(self, tm: Any, record: list | None = None, limit: int | None = None):
        self.tm, self.record, self.limit = tm, record, limit
        self.seconds, self.key_records, self.calls = 0.0, 0, 0

    def compute(self, slots: Any, cols: Any, learn: bool = True) -> np.ndarray:
        if self.limit is not None and self.calls >= self.limit:
            raise _Enough
        if self.record is not None:
            self.record.append((np.array(slots, copy=True), np.array(cols, copy=True), learn))
        t0 = time.perf_counter()
        out = self.tm.compute(slots, cols, learn)
        self.seconds += time.perf_counter() - t0
        self.key_records += len(slots)
        self.calls += 1
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tm, name)


class _Enough(Exception):
    pass


def _factory(streams: Any, *, batched: bool, box: list, record: list | None = None,
             limit: int | None = None, **kw: Any) -> Any:
    det = htm_factory(streams, **kw)
    model = det.model
    tm = model.tm
    if batched:
        new = BatchedBacktrackingTM(**dataclasses.asdict(tm.params))
        new.load_state_dict(tm.state_dict())
        tm = new
    model.tm = _Timed(tm, record, limit)
    box.append(model.tm)
    return det


def _same_state(a: dict, b: dict) -> bool:
    for ma, mb in zip(a["models"], b["models"], strict=True):
        for name, va in ma.items():
            vb = mb[name]
            pairs = [(va[n], vb[n]) for n in va] if name == "segments" else [(va, vb)]
            for x, y in pairs:
                x, y = np.asarray(x), np.asarray(y)
                if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
                    return False
    return True


def files_check(nab_dir: str, files: list[str], out: str, seed: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    dirs = {}
    for name in ("per_key", "batched"):
        box: list = []
        fac = functools.partial(_factory, batched=name == "batched", box=box, tm="backtracking")
        t0 = time.perf_counter()
        rep = run_corpus(fac, nab_dir, os.path.join(out, name), "htm", files=files, seed=seed)
        tm = box[-1]
        dirs[name] = rep["detector_dir"]
        res[name] = dict(seconds=round(time.perf_counter() - t0, 2), tm_seconds=round(tm.seconds, 2),
                         key_records=tm.key_records, calls=tm.calls,
                         ms_per_key_record=round(1000 * tm.seconds / max(tm.key_records, 1), 4))
    cmp = filecmp.dircmp(dirs["per_key"], dirs["batched"])

    def differ(c: filecmp.dircmp) -> list[str]:
        out = list(c.diff_files) + list(c.left_only) + list(c.right_only)
        for sub in c.subdirs.values():
            out += differ(sub)
        return out

    # dircmp compares shallowly: compare every file's bytes
    bad = differ(cmp)
    for root, _, names in os.walk(dirs["per_key"]):
        for f in names:
            p = os.path.join(root, f)
            q = os.path.join(dirs["batched"], os.path.relpath(p, dirs["per_key"]))
            if not filecmp.cmp(p, q, shallow=False):
                bad.append(os.path.relpath(p, dirs["per_key"]))
    res["identical_result_files"] = not bad
    res["differing"] = sorted(set(bad))
    return res


def replay_check(nab_dir: str, calls: int, out: str, seed: int) -> dict[str, Any]:
    record: list = []
    box: list = []
    fac = functools.partial(_factory, batched=True, box=box, record=record, limit=calls,
                            tm="backtracking")
    try:
        run_corpus(fac, nab_dir, os.path.join(out, "capture"), "htm", seed=seed)
    except Exception as e:          # the engine may wrap _Enough
        if "_Enough" not in repr(e) and not isinstance(e, _Enough):
            raise
    params = dataclasses.asdict(box[-1].tm.params)
    keys = max(int(s.max()) for s, _, _ in record) + 1
    res: dict[str, Any] = {"calls": len(record), "keys": keys}
    tms = {"per_key": BacktrackingTM(**params), "batched": BatchedBacktrackingTM(**params)}
    secs = {}
    scores = {}
    for name, tm in tms.items():
        tm.add_slots(keys)
        t0 = time.perf_counter()
        scores[name] = [tm.compute(s, c, learn) for s, c, learn in record]
        secs[name] = time.perf_counter() - t0
    n = sum(len(s) for s, _, _ in record)
    res["key_records"] = n
    res["mean_keys_per_call"] = round(n / len(record), 1)
    for name in tms:
        res[f"{name}_seconds"] = round(secs[name], 2)
        res[f"{name}_ms_per_key_record"] = round(1000 * secs[name] / n, 4)
    res["identical_scores"] = all(np.array_equal(a, b) for a, b in zip(scores["per_key"], scores["batched"]))
    res["identical_state"] = _same_state(tms["per_key"].state_dict(), tms["batched"].state_dict())
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nab-dir", default=NAB_DIR)
    p.add_argument("--files", default="", help="comma-separated corpus files for check 1 ('' skips it)")
    p.add_argument("--calls", type=int, default=0, help="lockstep calls for check 2 (0 skips it)")
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="bt-batched-")
    figures: dict[str, Any] = {}
    if args.files:
        figures["files"] = files_check(args.nab_dir, args.files.split(","), out, args.seed)
    if args.calls:
        figures["replay"] = replay_check(args.nab_dir, args.calls, out, args.seed)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
