"""River estimators as operators, their checkpoints, and River metrics over a stream.

- :class:`RiverOperator` (:mod:`operators.river.operator`): any River estimator or
  pipeline, prequential, optionally one model per key; :func:`build_model` builds one from
  a pipeline file's ``model = "anomaly.HalfSpaceTrees"`` spelling.
- :class:`Evaluate` (:mod:`operators.river.evaluate`): River metrics per key and overall.
- :mod:`operators.river.state`: pickle-free checkpoints of River models
  (:func:`~operators.river.state.encode`, :func:`~operators.river.state.decode`,
  :func:`~operators.river.state.register_callable` for your own functions).
- :mod:`operators.river.shape`: a restored model must have the configured model's classes,
  parameters and steps.

Example:
    >>> from operators.river import RiverOperator, Evaluate
    >>> RiverOperator.from_config(model="anomaly.HalfSpaceTrees", params={"seed": 1}).name
    'River[HalfSpaceTrees]'
    >>> Evaluate(target="y", metrics=["MAE"]).required_columns()
    {'y': 'any'}
"""

from .evaluate import Evaluate, build_metric
from .operator import RiverOperator, build_model
from .state import register_callable

__all__ = ["RiverOperator", "build_model", "Evaluate", "build_metric", "register_callable"]
