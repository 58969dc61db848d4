"""HTM sequence-memory anomaly detection (NuPIC's NAB detector, batched across keys).

Modules: :mod:`.encoders` (RDSE, time of day), :mod:`.spatial_pooler`,
:mod:`.temporal_memory`, :mod:`.model` (the three in lockstep over keys),
:mod:`.detector` (the ``HTMDetector`` operator), :mod:`.likelihood` (anomaly likelihood
and the spatial check), :mod:`.river_wrapper` (River anomaly detector). The NAB
benchmark tools are in :mod:`operators.nab`.

Example:
    >>> from operators.htm import HTMDetector
    >>> HTMDetector(seed=3)._get_params()["seed"]
    3
"""

from .detector import HTMDetector

__all__ = ["HTMDetector"]
