"""The ``hebbstream`` command.

    hebbstream run PIPELINE.toml [--resume [--force]] [--overwrite] [--summary FILE] [--progress]
                                 [--serve [HOST:PORT]]

Other sub-commands (``nab``, ``produce``, ``demo``, ...) come from the packages that
register them under the ``hebbstream.commands`` entry point: a function that receives
the sub-parsers object and adds its parser, with ``func`` set to its handler.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback

from . import registry
from .errors import HebbstreamError
from .shutdown import graceful_stop

EPILOG = """\
A pipeline file names a source, operators and a sink; see examples/*.toml. For example:

  hebbstream run examples/river_anomaly.toml            # score a recorded stream
  hebbstream run examples/river_anomaly.toml --resume   # continue after a crash
  hebbstream run examples/river_anomaly.toml --overwrite  # start over, replacing earlier output

Checkpoints, dead-letter sinks, more outputs and pacing are set in the file ([checkpoint],
[dead_letter], [[outputs]], [run]); command-line flags override [run].
"""


def _run(args: argparse.Namespace) -> int:
    from . import config
    from .runtime import run
    from .serve import serving_for

    spec = config.load(args.pipeline)
    kwargs = dict(spec.run_kwargs)
    for flag in ("batch_size", "max_events"):
        if getattr(args, flag) is not None:
            kwargs[flag] = getattr(args, flag)
    if args.speed is not None:
        kwargs["speed"] = args.speed or None
    if args.progress is not None:
        kwargs["progress"] = args.progress
    if args.resume and spec.checkpoint is None:
        raise HebbstreamError(f"{args.pipeline}: --resume needs a [checkpoint] section")
    if args.force and not args.resume:
        raise HebbstreamError("--force only applies with --resume")
    # SIGTERM/SIGINT: final checkpoint, then exit 143/130; --serve/[serve]: metrics and dashboard beside the run
    with graceful_stop(args.stop_timeout) as stop, serving_for(spec.serve, args.serve) as live:
        summary = run(spec.source, spec.pipeline, spec.sink, dead_letter=spec.dead_letter,
                      checkpoint=spec.checkpoint, resume=args.resume, summary_path=args.summary,
                      overwrite=args.overwrite, force=args.force, stop_requested=stop, observer=live, **kwargs)
    lat = summary["latency_s"]
    print(f"{summary['events']} events in {summary['seconds']:.2f} s "
          f"({summary['events_per_s']:,.0f} events/s); latency p50 {lat['p50'] * 1e3:.1f} ms, "
          f"p99 {lat['p99'] * 1e3:.1f} ms; dead-letter {summary['dead_letter']}; "
          f"checkpoints {summary['checkpoints']}", file=sys.stderr)
    if "metrics" in summary:
        print(json.dumps(summary["metrics"], indent=2, default=str))
    if stop.is_set():
        print(f"stopped by {stop.reason} after a final checkpoint", file=sys.stderr)
    return stop.exit_code


def _number(kind: type, low: float, strict: bool = False):
    """An argparse type: a ``kind`` number >= ``low`` (> ``low`` when ``strict``)."""
    bound = f"{'>' if strict else '>='} {low}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} "
                                             f"{bound}, got {text!r}") from None
        if not (value > low if strict else value >= low) or value != value:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'} "
                                             f"{bound}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hebbstream",
        description="Streaming online learning: run learning operators over recorded or live streams.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    known = "\n".join(f"  {group + ':':<11}{', '.join(registry.names(group))}"
                       for group in ("sources", "operators", "sinks"))
    r = sub.add_parser("run", help="run a pipeline file", description="Run the pipeline described by a TOML file.",
                       epilog=f"{EPILOG}\nTypes a pipeline file can name (type = ...):\n{known}\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("pipeline", help="pipeline TOML file")
    r.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    r.add_argument("--overwrite", action="store_true",
                   help="start over where an earlier run left checkpoints or sink output: delete and replace "
                        "them (without it such a run is refused)")
    r.add_argument("--force", action="store_true",
                   help="with --resume: resume even if the input is not the one the checkpoint was taken on "
                        "(logged as a warning)")
    r.add_argument("--summary", metavar="FILE", help="write the JSON run summary to FILE")
    r.add_argument("--batch-size", type=_number(int, 1), help="largest micro-batch (overrides [run])")
    r.add_argument("--speed", type=_number(float, 0),
                   help="pace by event time: 1 = as it happened, 0 = as fast as possible")
    r.add_argument("--max-events", type=_number(int, 0), help="stop after this many events")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: off)")
    r.add_argument("--serve", nargs="?", const="127.0.0.1:9200", metavar="HOST:PORT",
                   help="serve /metrics, /healthz, /readyz and the live dashboard (/) there while the run goes "
                        "(default 127.0.0.1:9200; overrides [serve] address)")
    r.add_argument("--stop-timeout", type=_number(float, 0, strict=True), default=25.0, metavar="S",
                   help="after SIGTERM/SIGINT, seconds to finish the batch and checkpoint before exiting "
                        "anyway (default: 25)")
    r.set_defaults(func=_run)
    for name in registry.names("commands"):
        try:
            registry.lookup("commands", name)(sub)
        except ImportError as exc:  # an optional extra is not installed
            logging.getLogger("hebbstream").debug("command %s unavailable: %s", name, exc)
    return p


def _os_error(exc: OSError) -> str:
    """One line for an OSError nothing wrapped: the path, the reason and the operation (innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    doing = f" (in {frames[-1].name})" if frames else ""
    return f"{paths + ': ' if paths else ''}{exc.strerror or exc}{doing}"


def main(argv: list[str] | None = None) -> int:
    """Run the command; a failure is one ``hebbstream: error:`` line (``-v``: with the traceback)."""
    p = parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("hebbstream: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the user gets one line, -v the traceback
        if args.verbose:
            traceback.print_exc()
        if isinstance(exc, HebbstreamError):
            message = str(exc)
        elif isinstance(exc, OSError):
            message = _os_error(exc)
        else:
            message = (f"internal error: {type(exc).__name__}: {exc} "
                       f"(this is a bug; run with -v for the traceback)")
        print(f"hebbstream: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
