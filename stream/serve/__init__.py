"""Live operation: an HTTP server beside a run with metrics, health checks and a dashboard.

``hebbstream run PIPELINE.toml --serve 127.0.0.1:9200`` (or a ``[serve]`` section, see
:mod:`stream.serve.settings`) runs the pipeline with a :class:`LiveObserver` and serves
it with a :class:`LiveServer` (routes in :mod:`stream.serve.server`, metric names in
:mod:`stream.serve.live`, the page in :mod:`stream.serve.static`).

The dashboard is one HTML page, a small script (``static/dashboard.js``, about 150 lines)
and a style sheet, all shipped as package data: nothing is fetched from elsewhere, so it
works on a closed network. It draws plain SVG rather than vendoring a chart library: two
line charts with alert markers need a polyline, a few grid lines and circles — less code
than a library's configuration, nothing to keep patched, no licence to carry, and every
mark is an element a test can find (``#score-chart .alert-marker``). The page polls the
JSON endpoints once a second (no server-sent events: a poll is one short request, needs
no long-lived connection per open tab, and survives a server restart unchanged).

Example:
    >>> import numpy as np, pyarrow as pa, urllib.request
    >>> from stream import Operator, run
    >>> from connectors.memory import MemorySource
    >>> class Identity(Operator):
    ...     def process(self, batch):
    ...         return batch
    >>> with serving(ServeSettings(address="127.0.0.1:0")) as (live, url):
    ...     _ = run(MemorySource(pa.table({"x": np.arange(5.0)})), Identity(), observer=live)
    ...     b"hebbstream_events_read_total 5.0" in urllib.request.urlopen(url + "/metrics").read()
    True
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from .live import LiveObserver
from .server import LiveServer
from .settings import ServeSettings, parse_address

__all__ = ["LiveObserver", "LiveServer", "ServeSettings", "parse_address", "serving", "serving_for"]


@contextmanager
def serving(settings: ServeSettings, where: str = "--serve",
            observer: LiveObserver | None = None) -> Iterator[tuple[LiveObserver, str]]:
    """Serve ``observer`` (by default a fresh :class:`LiveObserver`) at ``settings.address`` for the
    ``with`` block: yields it and the URL."""
    host, port = parse_address(settings.address, where)
    live = observer if observer is not None else LiveObserver(settings)
    server = LiveServer(live, host, port).start()
    try:
        yield live, server.url
    finally:
        server.stop()


@contextmanager
def serving_for(settings: ServeSettings | None, address: str | None) -> Iterator[LiveObserver | None]:
    """For ``hebbstream run``: serve when the pipeline file has ``[serve]`` or ``--serve`` gave an
    ``address`` (which wins); yields the observer to hand to :func:`stream.run`, or ``None``."""
    if settings is None and address is None:
        yield None
        return
    settings = replace(settings or ServeSettings(), **({"address": address} if address is not None else {}))
    with serving(settings, "--serve" if address is not None else "[serve] key 'address'") as (live, url):
        print(f"hebbstream: serving metrics and the dashboard at {url}/", file=sys.stderr, flush=True)
        yield live
