"""The job the spill tests run (and kill) in a subprocess: a keyed detector that spills idle keys.

    python tests/spill_job.py INPUT.csv OUTPUT CHECKPOINTS [--resume] [--pause S] [--max-resident-keys N]

A recorded CSV stream of several keys → CAD detector (``ContextualDetector``, its range
learnt from each key's first values) with at most N keys in memory → CSV sink, with a
checkpoint every few small batches. ``--pause`` slows each batch down so the test can kill
the run part-way. Prints the run summary as JSON.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from crash_job import Pause, job_parser  # noqa: E402

from connectors.csv import CSVSink, CSVSource  # noqa: E402
from operators.anomaly.cad import ContextualDetector  # noqa: E402
from stream import run  # noqa: E402


def main() -> None:
    p = job_parser()
    p.add_argument("--max-resident-keys", type=int, default=None)
    args = p.parse_args()
    detector = ContextualDetector(warmup=20, rest=5, max_resident_keys=args.max_resident_keys)
    summary = run(CSVSource(args.input, key="key", time="ts", batch_size=30), detector | Pause(args.pause),
                  CSVSink(args.output), batch_size=30, checkpoint=args.checkpoints, checkpoint_every_batches=5,
                  resume=args.resume)
    print(json.dumps({k: summary[k] for k in ("events", "events_total", "checkpoints", "resumed_from")}),
          flush=True)


if __name__ == "__main__":
    main()
