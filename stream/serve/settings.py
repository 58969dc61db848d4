"""The options of ``hebbstream run --serve`` and of a pipeline file's ``[serve]`` section.

.. code-block:: toml

    [serve]
    address = "127.0.0.1:9200"     # HOST:PORT; localhost unless you mean to expose it
    ready_within = 60.0            # /readyz: 503 when no batch was processed for this long (s)
    max_keys = 200                 # dashboard: keys kept in memory ...
    window = 600                   # ... and the last this many events of each
    score = "anomaly_likelihood"   # the column keys are ranked by and charted
    value = "value"                # the input value charted beside it
    budget = 0.01                  # largest share of the run's time the dashboard may take;
                                   # beyond it batches are sampled (metrics stay exact)

Example:
    >>> parse_address("127.0.0.1:9200", "--serve")
    ('127.0.0.1', 9200)
    >>> parse_address("[::1]:0", "--serve")
    ('::1', 0)
    >>> parse_address("9200", "p.toml [serve] key 'address'")
    Traceback (most recent call last):
    stream.errors.ConfigError: p.toml [serve] key 'address': expected HOST:PORT (e.g. 127.0.0.1:9200), got '9200'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..options import above, between, check_options

DEFAULT_ADDRESS = "127.0.0.1:9200"


@dataclass(frozen=True)
class ServeSettings:
    """What the HTTP server beside a run serves and how much it keeps (see the module docstring)."""

    address: str = DEFAULT_ADDRESS
    ready_within: float = 60.0
    max_keys: int = 200
    window: int = 600
    score: str = "anomaly_likelihood"
    value: str = "value"
    budget: float = 0.01
    option_checks = {"ready_within": above(0), "max_keys": between(1, 100_000), "window": between(2, 100_000),
                     "budget": between(0, 1)}



def check_serve(section: dict[str, Any], where: str) -> dict[str, Any]:
    """Check a ``[serve]`` table (``where`` names the file and section)."""
    values = check_options(ServeSettings, section, where)
    if "address" in values:
        parse_address(values["address"], f"{where} key 'address'")
    return values


def parse_address(text: str, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``(host, port)``; a ConfigError naming ``where`` otherwise."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535 or any(c in host for c in "/ "):
        raise ConfigError(f"{where}: expected HOST:PORT (e.g. {DEFAULT_ADDRESS}), got {text!r}")
    return host, int(port)
