"""When an adapting model goes back to the source weights.

Long unlabeled streams make most TTA methods drift and eventually do worse than no
adaptation (RDumb, 2023); a reset is the strong, simple remedy. A policy sees each
adapted mini-batch's predictions and answers whether to reset before the next one.

- ``"none"``: never.
- ``"episodic"``: before every mini-batch (each one is adapted from the source model).
- ``"every:N"``: after every ``N`` adapted samples (RDumb uses N = 1000 batches' worth).
- ``"collapse"`` / ``"collapse:W:T"``: when, over the last ``W`` compared samples
  (default 256), the adapted model's predicted classes are less diverse than the
  source model's predictions of the same samples: the entropy of the adapted model's
  class histogram is below the source model's by more than ``T`` (default 0.1) times
  ``ln(num_classes)``. The source model predicts up to 16 evenly spaced samples of each
  adapted mini-batch for this (every sample below batch 17): at batch 64 on 8×8 digits,
  Tent costs 12 % more than with ``"none"``.

Why relative to the source model: a drifting entropy-minimiser degrades long before
it predicts one class for everything. On digits at batch 1 with Tent's former
defaults the error rose from 23 % to 70 % while the adapted model still predicted
4 to 6 classes (histogram entropy 1.2 to 1.85 nats of ln 10 = 2.30); an absolute
threshold (once 0.3 · ln 10, about two classes) fired only after most of the damage.
The source model's own histogram on the same samples carries the stream's class
balance and the shift's effect on it, so a stream ordered by class, or a shift that
makes the source model itself favour a few classes, does not look like a collapse.

Example:
    >>> import numpy as np
    >>> from operators.tta.reset import make_policy
    >>> p = make_policy("collapse:8:0.1")
    >>> diverse = np.arange(8) % 4
    >>> p.after_batch(diverse, 10, reference=diverse)          # as diverse as the source
    False
    >>> p.after_batch(np.zeros(8, dtype=int), 10, reference=diverse)   # one class for all
    True
    >>> p.clear(); p.after_batch(np.zeros(8, dtype=int), 10, reference=np.zeros(8, dtype=int))
    False
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
    #: whether :meth:`after_batch` needs the source model's predictions of the same rows
    needs_reference = False

    def after_batch(self, predictions: np.ndarray, num_classes: int,
                    reference: np.ndarray | None = None) -> bool:
        """Record an adapted mini-batch's predictions (and, when :attr:`needs_reference`,
        the source model's predictions of the same rows); ``True`` means reset now."""
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

    def after_batch(self, predictions: np.ndarray, num_classes: int,
                    reference: np.ndarray | None = None) -> bool:
        self.count += len(predictions)
        return self.count >= self.every

    def clear(self) -> None:
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])


def histogram_entropy(classes: np.ndarray, num_classes: int) -> float:
    """Entropy (nats) of the histogram of predicted ``classes``."""
    p = np.bincount(classes, minlength=num_classes) / max(len(classes), 1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


class OnCollapse(ResetPolicy):
    """Reset when the adapted predictions are much less diverse than the source model's
    (see the module docstring)."""

    needs_reference = True

    def __init__(self, window: int = 256, threshold: float = 0.1):
        if window < 1 or not 0 < threshold < 1:
            raise ConfigError(f"reset 'collapse:W:T' needs W >= 1 and 0 < T < 1, got {window}, {threshold}")
        self.window, self.threshold = window, threshold
        self.spec = f"collapse:{window}:{threshold}"
        self.clear()

    def after_batch(self, predictions: np.ndarray, num_classes: int,
                    reference: np.ndarray | None = None) -> bool:
        if reference is None or len(reference) != len(predictions):
            raise ValueError("reset 'collapse' needs the source model's predictions of the same rows")
        self.recent = np.concatenate([self.recent, predictions.astype(np.int64)])[-self.window:]
        self.reference = np.concatenate([self.reference, reference.astype(np.int64)])[-self.window:]
        if len(self.recent) < self.window:
            return False
        drop = histogram_entropy(self.reference, num_classes) - histogram_entropy(self.recent, num_classes)
        return bool(drop > self.threshold * math.log(num_classes))

    def clear(self) -> None:
        self.recent = np.zeros(0, dtype=np.int64)
        self.reference = np.zeros(0, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"recent": self.recent.copy(), "reference": self.reference.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = np.asarray(state["recent"], dtype=np.int64)
        # checkpoints written before the reference existed: start its window afresh
        self.reference = np.asarray(state.get("reference", self.recent[:0]), dtype=np.int64)
        if len(self.reference) != len(self.recent):
            self.recent = self.recent[len(self.recent) - len(self.reference):]


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
