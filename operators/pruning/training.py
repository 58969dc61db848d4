"""Offline training: the dense classifier, then the mask predictors and the pruned backbone.

:func:`fit_masks` follows Fire Together Wire Together's decoupled recipe: predictors see
a detached input and are trained only by the mask loss (per-filter BCE against the
heatmap-mass targets); the binarised masks are applied without gradient while the
backbone is fine-tuned on the task loss; the mask loss weight drops to zero after half
the epochs, so the backbone spends the second half adapting to fixed predictors.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from operators.pruning.network import PrunableNetwork
    >>> g = torch.Generator().manual_seed(0)
    >>> X, y = torch.randn(64, 1, 6, 6, generator=g), torch.randint(0, 2, (64,), generator=g)
    >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    >>> train_classifier(model, X, y, epochs=1, seed=0) >= 0
    True
    >>> net = PrunableNetwork(model, (1, 6, 6))
    >>> log = fit_masks(net, X, y, r=0.8, epochs=2, seed=0)
    >>> sorted(log[0]), 0.0 <= accuracy(net, X, y) <= 1.0
    (['epoch', 'kept', 'mask_loss', 'target_kept', 'task_loss'], True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .masks import check_ratio, mask_loss
from .network import PrunableNetwork


def _batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for lo in range(0, n, batch_size):
        yield order[lo:lo + batch_size]


def train_classifier(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int = 10,
                     lr: float = 1e-3, batch_size: int = 64, seed: int = 0) -> float:
    """Train a plain classifier with Adam and cross-entropy; returns the last epoch's loss."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    total = 0.0
    for _ in range(epochs):
        total, seen = 0.0, 0
        for idx in _batches(len(X), batch_size, gen):
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        total /= max(seen, 1)
    model.eval()
    return total


def fit_masks(net: PrunableNetwork, X: torch.Tensor, y: torch.Tensor, r: float, epochs: int = 6,
              lr: float = 1e-2, backbone_lr: float = 3e-4, batch_size: int = 64,
              finetune: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """Train the predictors (and fine-tune the backbone with masks applied) at threshold ``r``.

    Returns one log entry per epoch: mean task loss, mask loss and kept fraction.
    """
    check_ratio(r)
    gen = torch.Generator().manual_seed(seed)
    groups = [{"params": list(net.predictors.parameters()), "lr": lr}]
    if finetune:
        groups.append({"params": list(net.backbone.parameters()), "lr": backbone_lr})
    opt = torch.optim.Adam(groups)
    log = []
    net.train()
    for epoch in range(epochs):
        weight = 1.0 if epoch < max(1, epochs // 2) else 0.0
        sums = {"task_loss": 0.0, "mask_loss": 0.0, "kept": 0.0, "target_kept": 0.0}
        seen = 0
        for idx in _batches(len(X), batch_size, gen):
            out = net(X[idx], r=r)
            task = nn.functional.cross_entropy(out.logits, y[idx])
            masks_l = mask_loss(out.mask_logits, out.targets)
            loss = (task if finetune else 0.0) + weight * masks_l
            if loss.requires_grad:
                opt.zero_grad()
                loss.backward()
                opt.step()
            kept = torch.cat([m.float().mean(1) for m in out.masks]).mean()
            target_kept = torch.cat([t.mean(1) for t in out.targets]).mean()
            for k, v in (("task_loss", task), ("mask_loss", masks_l), ("kept", kept),
                         ("target_kept", target_kept)):
                sums[k] += float(v.detach()) * len(idx)
            seen += len(idx)
        log.append({"epoch": epoch, **{k: v / seen for k, v in sums.items()}})
    net.eval()
    return log


@torch.no_grad()
def accuracy(net: PrunableNetwork, X: torch.Tensor, y: torch.Tensor, masks: str = "predicted",
             batch_size: int = 256) -> float:
    """Top-1 accuracy of the network with predicted masks (``masks="none"``: dense)."""
    was = net.training
    net.eval()
    correct = 0
    for lo in range(0, len(X), batch_size):
        out = net(X[lo:lo + batch_size], masks=masks)
        correct += int((out.logits.argmax(1) == y[lo:lo + batch_size]).sum())
    net.train(was)
    return correct / max(len(X), 1)
