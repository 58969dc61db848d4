"""The evaluation protocol: parameters chosen on one fixed half of the corpus, reported on the other.

The *tuning half* is the odd-numbered files of each category, counting from 1 in name
order (the 1st, 3rd, 5th... file of ``artificialWithAnomaly``, of ``realAWSCloudwatch``,
and so on); the *held-out half* is the rest. :func:`protocol_scores` scores one run's
result folder three ways:

- ``tuning``: the tuning half, thresholds swept over it (what parameters were chosen on);
- ``held_out``: the held-out half at the thresholds chosen on the tuning half (nothing of
  the held-out half chooses anything);
- ``full``: the whole corpus, thresholds swept over the corpus, as every entry of NAB's
  scoreboard is scored.

Example:
    >>> tuning_half(["b/x.csv", "a/2.csv", "a/1.csv", "a/3.csv", "b/y.csv"])
    ['a/1.csv', 'a/3.csv', 'b/x.csv']
    >>> held_out_half(["b/x.csv", "a/2.csv", "a/1.csv", "a/3.csv", "b/y.csv"])
    ['a/2.csv', 'b/y.csv']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .runner import score_results


def tuning_half(files: Sequence[str]) -> list[str]:
    """The odd-numbered files (1st, 3rd, ...) of each category, in name order."""
    by_category: dict[str, list[str]] = {}
    for name in sorted(files):
        by_category.setdefault(name.split("/")[0], []).append(name)
    return [n for names in by_category.values() for n in names[::2]]


def held_out_half(files: Sequence[str]) -> list[str]:
    """The files :func:`tuning_half` leaves out."""
    chosen = set(tuning_half(files))
    return [n for n in sorted(files) if n not in chosen]


def protocol_scores(detector_dir: str, nab_dir: str, files: Sequence[str]) -> dict[str, Any]:
    """``{"tuning", "held_out", "full"}`` → ``{profile: normalised score}`` for a result folder
    holding every one of ``files`` (see the module docstring)."""
    tune = score_results(detector_dir, nab_dir, files=tuning_half(files))
    held = score_results(detector_dir, nab_dir, files=held_out_half(files),
                         thresholds={p: r.threshold for p, r in tune.items()})
    full = score_results(detector_dir, nab_dir, files=list(files))
    return {"tuning": {p: r.normalised for p, r in tune.items()},
            "held_out": {p: r.normalised for p, r in held.items()},
            "full": {p: r.normalised for p, r in full.items()},
            "thresholds": {"tuning": {p: r.threshold for p, r in tune.items()},
                           "full": {p: r.threshold for p, r in full.items()}}}
