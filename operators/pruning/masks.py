"""Self-supervised mask targets ("mass of heatmaps") and the mask predictor.

Fire Together Wire Together (Elkerdawy et al., CVPR 2022) gives every conv layer a
small predictor that looks at the layer's *input* and guesses which output filters
matter for this sample. Its training target comes from the layer's own output: score
each filter by the spatial maximum of ``|activation|``, normalise the scores to sum to
one, sort them in descending order and keep filters while the cumulative mass stays
``≤ r``; the rest, and any filter whose normalised score is ``≤ 1e-5``, are targets 0.
The number of kept filters therefore varies with the input.

Example:
    >>> import torch
    >>> act = torch.zeros(1, 4, 2, 2)
    >>> act[0, 0, 0, 0], act[0, 1, 1, 1], act[0, 2, 0, 1] = 5.0, -3.0, 2.0  # channel 3 silent
    >>> heatmap_mass_targets(act, r=0.8).tolist()    # masses .5 .3 .2 0 -> cumsum .5 .8 1
    [[1.0, 1.0, 0.0, 0.0]]
    >>> heatmap_mass_targets(act, r=1.0).tolist()    # the silent filter never counts
    [[1.0, 1.0, 1.0, 0.0]]
"""

from __future__ import annotations

import torch
from torch import nn

from stream.errors import ConfigError

#: A filter whose normalised score is at or below this is never a target 1.
MIN_SCORE = 1e-5
#: Slack on the cumulative sum so that ``r = 1.0`` keeps the last filter despite rounding.
_CUMSUM_SLACK = 1e-6


def check_ratio(r: float, what: str = "r") -> float:
    """Validate a heatmap-mass threshold: a number in (0, 1]."""
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < float(r) <= 1.0:
        raise ConfigError(f"{what} must be a number in (0, 1], got {r!r}")
    return float(r)


def filter_scores(act: torch.Tensor) -> torch.Tensor:
    """Normalised filter scores ``[N, C]``: spatial max of ``|act|``, rows summing to one.

    A sample whose activations are all zero gets all-zero scores (so no target 1).
    """
    if act.dim() != 4:
        raise ValueError(f"activations must be [N, C, H, W], got shape {tuple(act.shape)}")
    peak = act.detach().abs().amax(dim=(2, 3))
    total = peak.sum(dim=1, keepdim=True)
    return torch.where(total > 0, peak / total.clamp_min(torch.finfo(peak.dtype).tiny), 0.0)


def heatmap_mass_targets(act: torch.Tensor, r: float) -> torch.Tensor:
    """Binary keep targets ``[N, C]`` (float 0/1) from a layer's output activations."""
    r = check_ratio(r)
    scores = filter_scores(act)
    ordered, order = scores.sort(dim=1, descending=True)
    keep_sorted = (ordered.cumsum(dim=1) <= r + _CUMSUM_SLACK) & (ordered > MIN_SCORE)
    targets = torch.zeros_like(scores)
    return targets.scatter(1, order, keep_sorted.to(scores.dtype))


class MaskPredictor(nn.Module):
    """Global average pooling → one linear layer ``C_in → C_out`` of keep logits.

    ``logit > 0`` (sigmoid > 0.5) keeps a filter. The bias starts at ``init_bias`` (> 0
    keeps every filter at first, so fine-tuning starts from the dense network).

    Example:
        >>> import torch
        >>> p = MaskPredictor(3, 5, generator=torch.Generator().manual_seed(0))
        >>> p(torch.ones(2, 3, 4, 4)).shape, bool((p(torch.ones(1, 3, 4, 4)) > 0).all())
        (torch.Size([2, 5]), True)
    """

    def __init__(self, in_channels: int, out_channels: int, init_bias: float = 3.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels)
        bound = 1.0 / max(in_channels, 1) ** 0.5
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound, generator=generator)
            self.linear.bias.fill_(init_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))


def mask_loss(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Per-filter BCE, averaged over the batch, summed over filters, averaged over layers."""
    per_layer = [nn.functional.binary_cross_entropy_with_logits(lg, t, reduction="none").mean(0).sum()
                 for lg, t in zip(logits, targets, strict=True)]
    return torch.stack(per_layer).mean()
