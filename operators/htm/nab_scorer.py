"""NAB's probationary-period rule, as the anomaly likelihood uses it.

The NAB scorer lives in :mod:`operators.nab.scorer`; the likelihood sizes its learning
period by the same rule (NuPIC's NAB detector does), so it is re-exported here.

    >>> probation_length(4032)
    604
"""

from operators.nab.scorer import probation_length

__all__ = ["probation_length"]
