"""The benchmark convention shared by every script in this folder.

``python benchmarks/NAME.py`` runs at full size, ``--quick`` at a size that takes under
a minute on a 2-core machine. The last stdout line is one JSON object with the figures
and the machine; the same object is written to ``benchmarks/results/NAME.json``
(``NAME-quick.json`` for quick runs, so they never overwrite a full run's figures).

Example (in a benchmark script)::

    from common import parse_args, finish
    args = parse_args("passthrough", "10 M rows Arrow IPC through the identity pipeline")
    ...
    finish("passthrough", {"events_per_s": eps}, quick=args.quick)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stream.runtime import machine_info  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(name: str, description: str, extra=None) -> argparse.Namespace:
    """Standard flags: ``--quick`` and ``--seed``; ``extra(parser)`` may add more."""
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    p.add_argument("--quick", action="store_true", help="small size: under a minute on 2 cores")
    p.add_argument("--seed", type=int, default=0)
    if extra:
        extra(p)
    return p.parse_args()


def finish(name: str, figures: dict, quick: bool = False) -> dict:
    """Add machine and command, write ``results/NAME[-quick].json``, print it as the last line."""
    out = {"benchmark": name, "quick": quick, **figures, "machine": machine_info(),
           "command": "python " + " ".join(sys.argv),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}{'-quick' if quick else ''}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=float)
    print(json.dumps(out, default=float), flush=True)
    return out
