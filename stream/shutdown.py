"""Graceful stop on SIGTERM / SIGINT: end the run like the end of the stream, in bounded time.

Orchestrators (Kubernetes, systemd, Docker, a shell's Ctrl-C) ask a process to stop with
SIGTERM or SIGINT first and kill it later. :func:`graceful_stop` turns the first signal
into a :class:`StopRequest` that :func:`stream.run` checks between micro-batches: the
run then processes what it has, takes its final checkpoint, closes the sink and the
source (a Kafka source commits its offsets and leaves its consumer group, the sink's
transaction is finished) and returns a summary with ``"stopped": "SIGTERM"``.

Bounded time: a second signal, or ``grace`` seconds without the run having ended, exits
the process at once with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT), as a kill
would. ``hebbstream run`` exits with that same code after a graceful stop: the run did
not reach the end of its input, so a script or a batch scheduler must not take it for a
finished one (a Kubernetes Job would count exit 0 as success); 143 is also what such
schedulers report for a SIGTERMed process and restart like any other exit. The
checkpoint is final either way, so ``--resume`` (or a new Kafka worker) continues exactly
where it stopped.

Handlers are installed only by the command-line tool, only in the main thread, and the
previous handlers are restored on exit.

Example:
    >>> import os, signal
    >>> with graceful_stop(grace=5) as stop:
    ...     os.kill(os.getpid(), signal.SIGTERM)
    ...     stop.wait(5), stop.reason, stop.exit_code
    (True, 'SIGTERM', 143)
    >>> signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger("hebbstream")

#: The signals an orchestrator sends to ask for a stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest(threading.Event):
    """Set when a stop was asked for; ``reason`` says by what (``"SIGTERM"``, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None
        self.signum: int | None = None

    def request(self, reason: str, signum: int | None = None) -> None:
        if not self.is_set():
            self.reason, self.signum = reason, signum
            self.set()

    @property
    def exit_code(self) -> int:
        """``128 + signal`` when a signal asked for the stop, else 0."""
        return 128 + self.signum if self.signum else 0


@contextlib.contextmanager
def graceful_stop(grace: float = 25.0, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Within the block, the first of ``signals`` sets the yielded :class:`StopRequest`;
    a second one, or ``grace`` seconds after the first, exits the process at once."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set in the main thread
        return
    timer: list[threading.Timer] = []

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.error("%s again: exiting now without a final checkpoint", name)
            os._exit(128 + signum)
        log.warning("%s: stopping after the current micro-batch (final checkpoint, commit, close); "
                    "a second signal exits at once, and so does the run if it takes over %g s", name, grace)
        stop.request(name, signum)
        t = threading.Timer(grace, _expire, (name, grace, 128 + signum))
        t.daemon = True
        t.start()
        timer.append(t)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for t in timer:
            t.cancel()


def _expire(name: str, grace: float, code: int) -> None:
    log.error("%s: the run did not stop within %g s; exiting without a final checkpoint", name, grace)
    os._exit(code)
