"""One training run (model + AdamW + LR schedule), annealing branches, held-out loss.

Example:
    >>> import numpy as np, torch
    >>> from operators.continual.models import ByteLM
    >>> from operators.continual.schedules import ConstantLR
    >>> from operators.continual.training import Trainer, held_out_loss
    >>> torch.manual_seed(0) and None
    >>> model = ByteLM(dim=16, layers=1)
    >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    >>> run = Trainer(model, opt, ConstantLR(opt), clip=1.0)
    >>> items = [model.prepare(np.frombuffer(b"abcabcabc", np.uint8), None)] * 4
    >>> first = float(run.step(items)[0])
    >>> for _ in range(20):
    ...     _ = run.step(items)
    >>> held_out_loss(model, [np.frombuffer(b"abcabcabc", np.uint8)]) < first
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .models import Item, StreamModel
from .replay import pack_arrays, unpack_arrays


class Trainer:
    """One training run: model, AdamW optimizer and LR scheduler, stepped together."""

    def __init__(
        self,
        model: StreamModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        clip: float | None,
    ):
        self.model, self.optimizer, self.scheduler, self.clip = model, optimizer, scheduler, clip

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def step(self, items: list[Item]) -> torch.Tensor:
        """One update on ``items``; returns their losses computed before the update."""
        self.model.train()
        loss, weight = self.model.losses(items)
        objective = (loss * weight).sum() / weight.sum()
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the scheduler's state does not touch the optimizer: set the rate it implies
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_lr(), strict=True):
            group["lr"] = lr


@dataclass
class Branch:
    """An annealing copy of the main run, with its own random generator."""

    trainer: Trainer
    generator: torch.Generator
    branched_at: int
    steps_left: int


def pack_items(items: list[Item]) -> dict[str, Any]:
    fields = len(items[0]) if items else 0
    return {
        "count": len(items),
        "fields": [pack_arrays([it[j] for it in items], items[0][j].dtype) for j in range(fields)],
    }


def unpack_items(packed: dict[str, Any]) -> list[Item]:
    columns = [unpack_arrays(f) for f in packed["fields"]]
    return list(zip(*columns, strict=True)) if columns else []


def held_out_loss(model: StreamModel, samples: list[np.ndarray], batch_size: int = 64, seed: int = 12345) -> float:
    """Loss of ``model`` on held-out samples, weighted by tokens (or hidden entries).

    Uses its own generator (masks of the masked objective), never a training run's.
    """
    if not samples:
        raise ValueError("held_out_loss: no samples")
    gen = torch.Generator().manual_seed(seed)
    total = weight = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(samples), batch_size):
            items = [model.prepare(s, gen) for s in samples[lo : lo + batch_size]]
            loss, w = model.losses(items)
            total += float((loss * w).sum())
            weight += float(w.sum())
    model.train(was_training)
    return total / weight


def branch_seed(seed: int, n: int) -> int:
    # a different stream from the main generator's (seed) for every branch
    return (seed * 1_000_003 + 7_919 * n) % (2**63)
