"""Waiting in tests for something another thread or process does.

>>> wait_until(lambda: 42, "the answer")
42
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.05) -> Any:
    """Return ``check()``'s first true value; fail naming ``what`` after ``timeout`` seconds (it
    returns as soon as the condition holds, so the long default only costs a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting until {what}")
