"""The job the reliability test runs (and kills) in a subprocess.

    python tests/reliability_job.py INPUT.csv OUTPUT CHECKPOINTS [--resume] [--pause S] [--alerts PATH]

A recorded CSV stream → per-key running sum → CSV sink (committed part files), with a
checkpoint every few small batches. With ``--alerts``, an ``Alerts`` operator on ``x``
follows and a side output writes the rows that open an alert to a Parquet folder at PATH
(:class:`stream.outputs.Outputs`: two sinks under one checkpoint). ``--pause`` slows each batch down so the test can
kill the run part-way. Prints the run summary as JSON.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from crash_job import Pause, job_parser  # noqa: E402
from running_sum import RunningSum  # noqa: E402

from connectors.csv import CSVSink, CSVSource  # noqa: E402
from connectors.parquet import ParquetSink  # noqa: E402
from operators.alerts import Alerts  # noqa: E402
from stream import run  # noqa: E402
from stream.outputs import Output, Outputs  # noqa: E402


def main() -> None:
    p = job_parser()
    p.add_argument("--batch-size", type=int, default=40)
    p.add_argument("--every", type=int, default=20, help="checkpoint every N batches")
    p.add_argument("--alerts", help="also write the rows that open an alert here (Parquet)")
    args = p.parse_args()
    pipeline = RunningSum() | Pause(args.pause)
    sink = CSVSink(args.output)
    if args.alerts:
        pipeline = pipeline | Alerts("x", enter=1.5, leave=0.5, cooldown=3, warmup=0)
        sink = Outputs([Output(sink), Output(ParquetSink(args.alerts), where="alert",
                                             columns=["key", "ts", "sum", "alert_episode"], label="alerts")])
    summary = run(CSVSource(args.input, key="key", time="ts", batch_size=args.batch_size),
                  pipeline, sink,
                  batch_size=args.batch_size, checkpoint=args.checkpoints,
                  checkpoint_every_batches=args.every, resume=args.resume)
    print(json.dumps({k: summary[k] for k in ("events", "events_total", "checkpoints",
                                              "resumed_from")}), flush=True)


if __name__ == "__main__":
    main()
