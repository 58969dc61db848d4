"""Anomaly likelihood and the spatial-range check: NuPIC's post-processing of raw scores.

A raw HTM anomaly score (the fraction of active columns that were not predicted) is
noisy; what made NuPIC score ~70 on NAB instead of ~54 is to ask how *unusual* the
recent raw scores are for this stream (Ahmad et al., Neurocomputing 2017):

1. Until ``P`` records are seen (probation) the likelihood is 0.5.
2. At record ``P`` and every ``reestimation_period`` records after, fit a normal
   distribution to the 10-point moving average of the raw scores kept in a window of
   the last ``historic_window`` records, skipping the first ``learning_period`` of them
   (floors: mean ≥ 0.03, variance ≥ 0.0003). If the input *values* barely vary
   (variance < 1.5e-5) a very wide "null" distribution is used instead.
3. Every record: Q = P(X > m) for the current moving average m under that normal
   distribution (upper tail, with NuPIC's erfc(z/1.4142)); a run of Q ≤ 1e-5 reports
   only its first record as such, the rest as 1e-3; likelihood = 1 - Q.
4. The reported score is ``log(1.0000000001 - likelihood) / log(1e-10)``, in [0, 1].

This module reproduces NuPIC's arithmetic operation by operation (running totals, the
1.4142 in the Q function, the red-run filter that compares with the previous
*unfiltered* Q re-evaluated under a new fit): fed the ``value`` and ``raw_score``
columns of NuPIC's published NAB result files, it gives their ``anomaly_score`` column
on all 365,558 rows (to the 12 digits the files keep). Those files use the upper tail
for averages below the mean (an unremarkable, low score gives a likelihood below 0.5);
the last nupic-legacy code instead mirrors them onto the upper side (two-sided), which
does not reproduce the published files. Cost per record: a few scalar operations;
a refit every 100 records is one pass of NumPy over at most 8,640 values.

:class:`SpatialAnomaly` is NAB's numenta detector's range check: a value more than 5 % of
the running range outside the running min/max scores 1.0. :class:`NumentaScore` puts
both together as NAB's numenta detector does.

Example:
    >>> from operators.htm.likelihood import AnomalyLikelihood, log_likelihood
    >>> lik = AnomalyLikelihood(learning_period=10, estimation_samples=10)
    >>> out = [lik.update(value=1.0 + 0.1 * (i % 3), raw_score=0.1 * (i % 2)) for i in range(40)]
    >>> out[0], out[19]                     # probation: 20 records at 0.5
    (0.5, 0.5)
    >>> lik.update(value=1.0, raw_score=1.0) > 0.99     # a burst of surprise stands out
    True
    >>> round(log_likelihood(0.5), 4), log_likelihood(1.0)
    (0.0301, 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: NAB's probationary period: this fraction of a file's rows, at most that of 5,000 rows
#: (the likelihood sizes its learning period by it, as NuPIC's NAB detector does; the NAB
#: scorer ignores those rows)
PROBATION_FRACTION = 0.15
PROBATION_CAP_ROWS = 5000


def probation_length(n_rows: int, fraction: float = PROBATION_FRACTION) -> int:
    """Rows at the start of a file that NAB ignores: ``min(floor(fraction·N), 750)``.

    >>> probation_length(4032), probation_length(22695), probation_length(1000)
    (604, 750, 150)
    """
    return int(min(math.floor(fraction * n_rows), math.floor(fraction * PROBATION_CAP_ROWS)))


#: NuPIC divides by log(1 - 0.9999999999) as computed in floating point.
_LOG_DENOMINATOR = math.log(1.0 - 0.9999999999)
#: Likelihood thresholds of NuPIC's red-run filter, as NuPIC computes them.
_RED = 1.0 - 0.99999
_YELLOW = 1.0 - 0.999
#: NuPIC's "null" distribution: makes every score between 0 and 1 likely.
NULL_MEAN, NULL_STDEV = 0.5, 1e3


def log_likelihood(likelihood: float) -> float:
    """NuPIC's log scale: 0.0301 for a likelihood of 0.5, 1.0 for 1.0, 0.5 for 1 - 1e-5."""
    return math.log(1.0000000001 - likelihood) / _LOG_DENOMINATOR


def tail_probability(x: float, mean: float, stdev: float) -> float:
    """Upper tail ``P(X > x)`` of a normal distribution, as in NuPIC's published NAB runs.

    Below the mean it is computed as ``1 - P(X > 2·mean - x)``. NuPIC divides by 1.4142
    rather than sqrt(2); kept for bit-exact scores.

    >>> tail_probability(0.5, 0.5, 0.1), round(tail_probability(0.3, 0.5, 0.1), 4)  # √2: .9772
    (0.5, 0.9773)
    """
    if x < mean:
        return 1.0 - tail_probability(2 * mean - x, mean, stdev)
    z = (x - mean) / stdev
    return 0.5 * math.erfc(z / 1.4142)


def _running_totals(scores: np.ndarray, window: int) -> np.ndarray:
    """NuPIC's moving-average running total after each score, rounding included.

    NuPIC keeps ``total`` incrementally (subtract the value leaving the window, then add
    the new one). Feeding the same additions, in the same order, to one ``cumsum``
    reproduces every intermediate rounding.
    """
    n = len(scores)
    if n <= window:
        return np.cumsum(scores)
    steps = np.empty(window + 2 * (n - window))
    steps[:window] = scores[:window]
    steps[window::2] = -scores[:n - window]
    steps[window + 1::2] = scores[window:]
    acc = np.cumsum(steps)
    return np.concatenate([acc[:window], acc[window + 1::2]])


class AnomalyLikelihood:
    """NuPIC's anomaly likelihood for one stream.

    Args:
        n_rows: length of the stream when known (NAB): sets the probation to
            ``P = min(floor(0.15·n_rows), 750)``, ``learning_period = floor(P/2)`` and
            ``estimation_samples = P - learning_period``, as NAB's numenta detector.
        learning_period / estimation_samples: set them directly instead (NuPIC's
            defaults, 288 and 100, when neither they nor ``n_rows`` are given).
        historic_window: raw scores kept for refitting (8,640: a month at 5 minutes).
        reestimation_period: records between refits.
        averaging_window: length of the moving average of raw scores.
    """

    def __init__(self, n_rows: int | None = None, *, learning_period: int | None = None,
                 estimation_samples: int | None = None, historic_window: int = 8640,
                 reestimation_period: int = 100, averaging_window: int = 10):
        if n_rows is not None and (learning_period is not None or estimation_samples is not None):
            raise ValueError("give either n_rows or learning_period/estimation_samples, not both")
        if n_rows is not None:
            probation = probation_length(int(n_rows))
            learning_period = probation // 2
            estimation_samples = probation - learning_period
        learning_period = 288 if learning_period is None else int(learning_period)
        estimation_samples = 100 if estimation_samples is None else int(estimation_samples)
        if min(learning_period, estimation_samples) < 0:
            raise ValueError("learning_period and estimation_samples must be >= 0")
        if historic_window < estimation_samples:
            raise ValueError(f"historic_window ({historic_window}) is shorter than "
                             f"estimation_samples ({estimation_samples})")
        if reestimation_period < 1 or averaging_window < 1:
            raise ValueError("reestimation_period and averaging_window must be >= 1")
        self.learning_period = learning_period
        self.estimation_samples = estimation_samples
        self.probation = learning_period + estimation_samples
        self.historic_window = int(historic_window)
        self.reestimation_period = int(reestimation_period)
        self.averaging_window = int(averaging_window)
        self.iteration = 0
        # ring buffers of the last `historic_window` raw scores and input values; until
        # the window is full they grow with the stream (a short or new stream holds little)
        self._scores = np.zeros(min(self._INITIAL, self.historic_window))
        self._values = np.zeros(min(self._INITIAL, self.historic_window))
        self._head = 0          # where the next record goes
        self._size = 0
        self._mean: float | None = None   # fitted distribution; None before the first fit
        self._stdev = 0.0
        self._recent: list[float] = []    # raw scores in the moving average
        self._total = 0.0
        self._prev_q: float | None = None  # previous unfiltered tail probability

    _INITIAL = 64    # buffer entries a new stream starts with

    def _reserve(self, n: int) -> None:
        """Room for ``n`` entries (at most the window): doubling, so appends stay cheap."""
        cap = self._scores.shape[0]
        if n <= cap:
            return
        new = min(max(n, 2 * cap), self.historic_window)
        for name in ("_scores", "_values"):
            grown = np.zeros(new)
            grown[:cap] = getattr(self, name)
            setattr(self, name, grown)

    # -- the algorithm --------------------------------------------------------------------
    def update(self, value: float, raw_score: float) -> float:
        """Likelihood (in [0, 1]) that ``raw_score`` is anomalous; then record the pair."""
        if self.iteration < self.probation:
            likelihood = 0.5
        else:
            if self._mean is None or self.iteration % self.reestimation_period == 0:
                self._fit()
            recent = self._recent
            if len(recent) == self.averaging_window:
                self._total -= recent.pop(0)
            recent.append(raw_score)
            self._total += raw_score
            q = tail_probability(self._total / len(recent), self._mean, self._stdev)
            shown = q
            if q <= _RED and self._prev_q is not None and self._prev_q <= _RED:
                shown = _YELLOW     # only the first record of a red run stays red
            self._prev_q = q
            likelihood = 1.0 - shown
        if self._size < self.historic_window:
            self._reserve(self._size + 1)      # appending: head == size until the window is full
        self._scores[self._head] = raw_score
        self._values[self._head] = value
        self._head = (self._head + 1) % self.historic_window
        self._size = min(self._size + 1, self.historic_window)
        self.iteration += 1
        return likelihood

    def _history(self) -> tuple[np.ndarray, np.ndarray]:
        """Recorded (raw scores, values), oldest first."""
        if self._size < self.historic_window:
            return self._scores[:self._size], self._values[:self._size]
        order = np.r_[self._head:self.historic_window, 0:self._head]
        return self._scores[order], self._values[order]

    def _fit(self) -> None:
        scores, values = self._history()
        shifted_out = max(0, self.iteration - self.historic_window)
        skip = min(self.iteration, max(0, self.learning_period - shifted_out))
        totals = _running_totals(scores, self.averaging_window)
        counts = np.minimum(np.arange(1, len(scores) + 1), self.averaging_window)
        averages = totals / counts
        if len(scores) <= skip or float(np.var(values[skip:])) < 1.5e-5:
            # nothing to fit, or a flat input: call nothing anomalous
            self._mean, self._stdev = NULL_MEAN, NULL_STDEV
        else:
            sample = averages[skip:]
            mean, var = float(np.mean(sample)), float(np.var(sample))
            self._mean = max(mean, 0.03)
            self._stdev = math.sqrt(max(var, 0.0003))
        self._recent = [float(s) for s in scores[-self.averaging_window:]] if len(scores) else []
        self._total = float(totals[-1]) if len(scores) else 0.0
        # the red-run filter compares with the previous record's Q under the new fit
        self._prev_q = (tail_probability(float(averages[-1]), self._mean, self._stdev)
                        if len(scores) else None)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        scores, values = self._history()
        return {
            "learning_period": self.learning_period,
            "estimation_samples": self.estimation_samples,
            "historic_window": self.historic_window,
            "reestimation_period": self.reestimation_period,
            "averaging_window": self.averaging_window,
            "iteration": self.iteration,
            "scores": scores.copy(), "values": values.copy(),
            "mean": self._mean, "stdev": self._stdev, "recent": list(self._recent),
            "total": self._total, "prev_q": self._prev_q,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("learning_period", "estimation_samples", "historic_window",
                    "reestimation_period", "averaging_window"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"likelihood state has {key}={state[key]}, this one "
                                 f"{getattr(self, key)}")
        scores = np.asarray(state["scores"], dtype=np.float64)
        values = np.asarray(state["values"], dtype=np.float64)
        if scores.shape != values.shape or len(scores) > self.historic_window:
            raise ValueError("likelihood state: scores and values must be equal-length arrays "
                             f"of at most {self.historic_window}")
        self.iteration = int(state["iteration"])
        self._scores = np.zeros(min(self._INITIAL, self.historic_window))
        self._values = np.zeros_like(self._scores)
        self._reserve(len(scores))
        self._size = len(scores)
        self._scores[:self._size] = scores
        self._values[:self._size] = values
        self._head = self._size % self.historic_window
        self._mean = None if state["mean"] is None else float(state["mean"])
        self._stdev = float(state["stdev"])
        self._recent = [float(x) for x in state["recent"]]
        self._total = float(state["total"])
        self._prev_q = None if state["prev_q"] is None else float(state["prev_q"])


class SpatialAnomaly:
    """Flags a value more than ``tolerance`` of the running range outside the running min/max.

    The check runs before the value updates the range; it needs two distinct values seen.

    >>> s = SpatialAnomaly()
    >>> [s.update(v) for v in (10.0, 20.0, 20.4, 21.0, 5.0)]
    [False, False, False, True, True]
    """

    def __init__(self, tolerance: float = 0.05):
        self.tolerance = tolerance
        self.min: float | None = None
        self.max: float | None = None

    def update(self, value: float) -> bool:
        anomalous = False
        if self.min is not None and self.min != self.max:
            margin = (self.max - self.min) * self.tolerance
            anomalous = value > self.max + margin or value < self.min - margin
        if self.max is None or value > self.max:
            self.max = value
        if self.min is None or value < self.min:
            self.min = value
        return anomalous

    def state_dict(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "min": self.min, "max": self.max}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tolerance = float(state["tolerance"])
        self.min = None if state["min"] is None else float(state["min"])
        self.max = None if state["max"] is None else float(state["max"])


class NumentaScore:
    """NAB's numenta detector's final score for one stream: log likelihood + spatial check.

    ``update(value, raw_score)`` returns ``(score, likelihood)``: ``score`` is 1.0 when
    the value leaves the running range by more than 5 %, else the log-scaled likelihood.
    Arguments are those of :class:`AnomalyLikelihood`; ``spatial_tolerance=None`` turns the
    range check off.

    >>> s = NumentaScore(learning_period=5, estimation_samples=5)
    >>> [round(s.update(v, 0.0)[0], 4) for v in (1.0, 2.0, 1.5, 9.0)]
    [0.0301, 0.0301, 0.0301, 1.0]
    """

    def __init__(self, n_rows: int | None = None, *, spatial_tolerance: float | None = 0.05,
                 **likelihood_args: Any):
        self.likelihood = AnomalyLikelihood(n_rows, **likelihood_args)
        self.spatial = SpatialAnomaly(spatial_tolerance) if spatial_tolerance is not None else None

    def update(self, value: float, raw_score: float) -> tuple[float, float]:
        out_of_range = self.spatial.update(value) if self.spatial is not None else False
        likelihood = self.likelihood.update(value, raw_score)
        return (1.0 if out_of_range else log_likelihood(likelihood)), likelihood

    def state_dict(self) -> dict[str, Any]:
        return {"likelihood": self.likelihood.state_dict(),
                "spatial": self.spatial.state_dict() if self.spatial is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.likelihood.load_state_dict(state["likelihood"])
        if (state["spatial"] is None) != (self.spatial is None):
            raise ValueError("likelihood state and scorer disagree on the spatial check")
        if self.spatial is not None:
            self.spatial.load_state_dict(state["spatial"])
