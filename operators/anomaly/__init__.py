"""Streaming anomaly detectors: one model per key, each row scored and then learnt.

Modules: :mod:`.keyed` (what they share), :mod:`.cad` (``ContextualDetector``, in the
manner of CAD OSE), :mod:`.artime` (``ARTDetector``, in the manner of ARTime: Dual-Vigilance
Fuzzy ART), :mod:`.ensemble` (``ScoreEnsemble``: detectors side by side, scores combined), :mod:`.rest`
(``RestPeriod``: no second alarm for a while after a detection)
and :mod:`.river_wrapper` (``RiverDetector``: River-style ``learn_one`` / ``score_one``). Registered as the
pipeline operators ``cad``, ``art``, ``ensemble`` and ``rest_period``; ``hebbstream nab --detector cad``
runs one over the NAB corpus.

Example:
    >>> from operators.anomaly import ContextualDetector, ScoreEnsemble
    >>> ScoreEnsemble(members=["cad"])
    ScoreEnsemble(members=['cad'], calibrate='rank', combine='mean')
"""

from .artime import ARTDetector
from .cad import ContextualDetector
from .ensemble import ScoreEnsemble
from .rest import RestPeriod

__all__ = ["ARTDetector", "ContextualDetector", "RestPeriod", "ScoreEnsemble"]
