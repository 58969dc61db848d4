"""The HTTP server beside a run: metrics, health, readiness and the live dashboard.

A standard-library ``ThreadingHTTPServer`` on a daemon thread. It is read-only (``GET``
and ``HEAD``; anything else is 405) and serves only its own pages, from a fixed table
of routes — no file is ever looked up by a name taken from the request, so there is
nothing to traverse:

=============================  =================================================================
``/``                          the dashboard (``static/dashboard.html`` and its script and style)
``/metrics``                   Prometheus text format (:mod:`stream.serve.live` lists the names)
``/healthz``                   200 while the process serves
``/readyz``                    200 when the source is open, the state restored and a batch was
                               processed within ``ready_within`` seconds; 503 with the reason
``/api/summary``               JSON: the figures at the top of the dashboard
``/api/keys``                  JSON: keys ranked by their recent score
``/api/series?key=K``          JSON: key K's recent window (x, value, score, alert indices)
=============================  =================================================================

It binds to 127.0.0.1 unless told otherwise.

Example:
    >>> import json, urllib.request
    >>> from stream.serve.live import LiveObserver
    >>> server = LiveServer(LiveObserver(), "127.0.0.1", 0).start()
    >>> urllib.request.urlopen(server.url + "/healthz").read()
    b'ok\\n'
    >>> json.load(urllib.request.urlopen(server.url + "/api/keys"))
    []
    >>> server.stop()
"""

from __future__ import annotations

import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import HebbstreamError
from .live import LiveObserver

#: the dashboard's files: route -> (file in stream/serve/static, content type)
STATIC = {"/": ("dashboard.html", "text/html; charset=utf-8"),
          "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}

#: every page is the server's own: no scripts, styles or images from anywhere else
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def _static(name: str) -> bytes:
    return resources.files("stream.serve").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "hebbstream"
    sys_version = ""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value, allow_nan=False, default=str).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        live = self.server.live
        url = urlsplit(self.path)
        path = url.path
        if path in STATIC:
            name, kind = STATIC[path]
            self._send(200, _static(name), kind)
        elif path == "/metrics":
            self._send(200, generate_latest(live.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready, why = live.ready()
            self._send(200 if ready else 503, f"{why}\n".encode(), "text/plain; charset=utf-8")
        elif path == "/api/summary":
            self._json(_finite(live.summary()))
        elif path == "/api/keys":
            self._json(live.rings.ranking())
        elif path == "/api/series":
            key = parse_qs(url.query).get("key", [""])[0]
            series = live.rings.series(key)
            self._json(series if series is not None else {"error": f"no recent events of key {key!r}"},
                       200 if series is not None else 404)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET  # noqa: N815

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815 - read-only

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: a poll a second is no news
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    live: LiveObserver


class _Server6(_Server):
    address_family = socket.AF_INET6


def _finite(summary: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in summary.items()}


class LiveServer:
    """Serves ``live`` on ``host:port`` (port 0: any free port; see :attr:`url`)."""

    def __init__(self, live: LiveObserver, host: str = "127.0.0.1", port: int = 9200) -> None:
        try:
            self.httpd = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        except OSError as exc:
            raise HebbstreamError(f"--serve {host}:{port}: cannot listen there: {exc.strerror or exc}") from None
        self.httpd.live = live
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="hebbstream-serve", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> LiveServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
