"""When an adapting model goes back to the source weights.

Long unlabeled streams make most TTA methods drift and eventually do worse than no
adaptation (RDumb, 2023); a reset is the strong, simple remedy. A policy sees each
adapted mini-batch's predictions and answers whether to reset before the next one.

- ``"none"``: never.
- ``"episodic"``: before every mini-batch (each one is adapted from the source model).
- ``"every:N"``: after every ``N`` adapted samples (RDumb uses N = 1000 batches' worth).
- ``"collapse"`` / ``"collapse:W:T"``: when the predicted classes of the last ``W``
  samples (default 256) have a histogram entropy below ``T`` (default 0.3) times
  ``ln(num_classes)``, the signature of a model that predicts a few classes for
  everything. A stream that is honestly ordered by class looks the same; use
  ``"every:N"`` for those.

Example:
    >>> import numpy as np
    >>> from operators.tta.reset import make_policy
    >>> p = make_policy("collapse:8:0.3")
    >>> p.after_batch(np.array([0, 1, 2, 3]), 10)
    False
    >>> p.after_batch(np.zeros(8, dtype=int), 10)
    True
    >>> make_policy("every:4").after_batch(np.zeros(4, dtype=int), 10)
    True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stream.errors import ConfigError


class ResetPolicy:
    """Never resets; base class of the others."""

    spec = "none"
    episodic = False

    def after_batch(self, predictions: np.ndarray, num_classes: int) -> bool:
        """Record an adapted mini-batch's predictions; ``True`` means reset now."""
        return False

    def clear(self) -> None:
        """Forget history (called after a reset)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Episodic(ResetPolicy):
    spec = "episodic"
    episodic = True


class Periodic(ResetPolicy):
    def __init__(self, every: int):
        if every < 1:
            raise ConfigError(f"reset 'every:N' needs N >= 1, got {every}")
        self.every, self.count = every, 0
        self.spec = f"every:{every}"

    def after_batch(self, predictions: np.ndarray, num_classes: int) -> bool:
        self.count += len(predictions)
        return self.count >= self.every

    def clear(self) -> None:
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])


class OnCollapse(ResetPolicy):
    def __init__(self, window: int = 256, threshold: float = 0.3):
        if window < 1 or not 0 < threshold < 1:
            raise ConfigError(f"reset 'collapse:W:T' needs W >= 1 and 0 < T < 1, got {window}, {threshold}")
        self.window, self.threshold = window, threshold
        self.recent = np.zeros(0, dtype=np.int64)
        self.spec = f"collapse:{window}:{threshold}"

    def after_batch(self, predictions: np.ndarray, num_classes: int) -> bool:
        self.recent = np.concatenate([self.recent, predictions.astype(np.int64)])[-self.window:]
        if len(self.recent) < self.window:
            return False
        p = np.bincount(self.recent, minlength=num_classes) / len(self.recent)
        h = -(p[p > 0] * np.log(p[p > 0])).sum()
        return bool(h < self.threshold * math.log(num_classes))

    def clear(self) -> None:
        self.recent = np.zeros(0, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"recent": self.recent.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = np.asarray(state["recent"], dtype=np.int64)


def make_policy(spec: str | ResetPolicy) -> ResetPolicy:
    """Parse a reset spec (see the module docstring) or pass a policy through."""
    if isinstance(spec, ResetPolicy):
        return spec
    name, *args = str(spec).split(":")
    try:
        if name == "none" and not args:
            return ResetPolicy()
        if name == "episodic" and not args:
            return Episodic()
        if name == "every" and len(args) == 1:
            return Periodic(int(args[0]))
        if name == "collapse" and len(args) in (0, 2):
            return OnCollapse(*(int(args[0]), float(args[1])) if args else ())
    except ValueError as exc:
        raise ConfigError(f"reset {spec!r}: {exc}") from exc
    raise ConfigError(f"unknown reset policy {spec!r}; use 'none', 'episodic', 'every:N' "
                      "or 'collapse[:W:T]'")
