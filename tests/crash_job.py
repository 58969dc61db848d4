"""What the jobs that crash tests run (and kill part-way) in a subprocess share.

:class:`Pause` slows each batch down so a test can kill the run part-way;
:func:`job_parser` reads the arguments every such job takes:
``INPUT OUTPUT CHECKPOINTS [--resume] [--pause S]``.
"""

from __future__ import annotations

import argparse
import time

from stream import Operator


class Pause(Operator):
    """Sleeps per batch: stands in for a slow model."""

    runtime_params = ("seconds",)  # a resumed run need not be slow

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds

    def process(self, batch):
        time.sleep(self.seconds)
        return batch


def job_parser() -> argparse.ArgumentParser:
    """``INPUT OUTPUT CHECKPOINTS [--resume] [--pause S]``; a job adds its own options."""
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("checkpoints")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--pause", type=float, default=0.0, help="seconds to sleep per batch")
    return p
