"""Dynamic pruning masks (Fire Together Wire Together) with real compute savings.

- :mod:`.masks`: heatmap-mass targets, the mask predictor, the mask loss.
- :mod:`.network`: wrap an ``nn.Sequential`` CNN; the training forward with masks.
- :mod:`.executor`: inference that computes only the kept filters.
- :mod:`.flops`: exact per-sample multiply-accumulate counts.
- :mod:`.conv1d`: run a 1-D CNN as its exact 2-D equivalent.
- :mod:`.training`: offline training of the classifier, the predictors, the fine-tune.
- :mod:`.spec`: save/load a network without pickle.
- :mod:`.operator`: the ``dynamic_pruning`` engine operator.
"""

from .executor import SparseExecutor
from .flops import FlopsCounter
from .masks import MaskPredictor, heatmap_mass_targets
from .network import PrunableNetwork
from .operator import DynamicPruning
from .spec import load_network, save_network

__all__ = ["DynamicPruning", "FlopsCounter", "MaskPredictor", "PrunableNetwork", "SparseExecutor",
           "heatmap_mass_targets", "load_network", "save_network"]
