"""``EATA``: efficient anti-forgetting test-time adaptation (Niu et al., ICML 2022).

Tent's parameters (the normalisation affine γ, β) trained by SGD (momentum 0.9) on the
prediction entropy, but only on the samples worth learning from:

1. **Reliable**: entropy below ``E0 = entropy_margin · ln(classes)`` (the paper: 0.4).
2. **Non-redundant**: the cosine similarity of the sample's softmax to a moving average
   of the softmax of earlier selected samples (``0.9 · avg + 0.1 · batch mean``) is
   below ``ε`` (``redundancy_margin``). The paper uses ε = 0.05 with ImageNet's 1,000
   classes; a confident prediction's cosine similarity to a uniform average is
   ``1/√K``, so by default ε is rescaled with it: ``ε = min(1, 0.05 · √(1000 / K))``.
3. Each selected sample's entropy is weighted by ``exp(E0 − entropy)``, so the most
   confident count most.

**Anti-forgetting**: ``fisher_alpha · Σ F_i (θ_i − θ⁰_i)²`` is added to the loss, with
``θ⁰`` the source parameters and ``F`` the diagonal Fisher information estimated, as in
the paper, from the squared gradients of the cross-entropy against the model's own
predictions on clean samples, ``fisher_data`` (a few hundred are enough; the paper
uses 2,000 ImageNet images), in mini-batches of 64. Fully test-time adaptation has
no source data: without ``fisher_data`` the regulariser is off and the method is what
the paper calls **ETA** (its ablation; EATA's sample selection alone).

The loss is computed as Tent's (``loss_stats``; see :mod:`operators.tta.base`), the
step is skipped when no sample is selected, the learning rate is given at batch 64
and scaled with the batch size, and the default reset is the collapse detector.

Example:
    >>> import numpy as np, pyarrow as pa, torch
    >>> from stream import Batch
    >>> from stream.batch import to_arrow
    >>> from operators.tta import EATA
    >>> from operators.tta.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> clean = np.random.default_rng(1).random((32, 8, 8), dtype=np.float32)
    >>> op = EATA(build_model("small_cnn", width=4), batch_size=4, lr=0.05, fisher_data=clean)
    >>> images = np.random.default_rng(0).random((12, 8, 8), dtype=np.float32)
    >>> out = op(Batch(pa.record_batch({"image": to_arrow(images)})))
    >>> op.summary()["adapted_batches"], op.fisher_samples
    (3, 32)
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from stream.errors import ConfigError, SchemaError
from stream.options import above, at_least, between

from .base import TTAOperator, affine_parameters, check_loss_stats, entropy
from .norm_stats import batch_statistics


def default_redundancy_margin(num_classes: int) -> float:
    """The paper's ε = 0.05 at 1,000 classes, rescaled by ``1/√K``.

    >>> round(default_redundancy_margin(1000), 3), round(default_redundancy_margin(10), 3)
    (0.05, 0.5)
    """
    return min(1.0, 0.05 * math.sqrt(1000 / num_classes))


def sgd(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """SGD with momentum 0.9, the optimiser of EATA's and SAR's papers."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


class EATA(TTAOperator):
    """Entropy minimisation on reliable, non-redundant samples, Fisher-regularised.

    Args:
        model: the trained classifier (needs normalisation layers with affine
            parameters: BatchNorm, GroupNorm, LayerNorm, InstanceNorm).
        lr: SGD learning rate (momentum 0.9) at batch size 64, scaled with the batch
            size (the paper: 0.00025 on ImageNet).
        entropy_margin: ``E0`` as a fraction of ``ln(classes)`` (the paper: 0.4).
        redundancy_margin: ``ε``, the cosine-similarity bound (``None``: the paper's
            0.05 at 1,000 classes rescaled by ``1/√K``, see the module docstring).
        fisher_data: clean samples for the Fisher information: an array
            ``(N, *sample)`` or the path of a ``.npy`` file holding one (read without
            pickle), in the column's layout; ``None``: no regulariser (ETA).
        fisher_alpha: weight of the regulariser (the paper: 2,000).
        loss_stats: ``"batch"`` or ``"running"``, as for :class:`~operators.tta.tent.Tent`.
        **common: ``batch_size``, ``norm_window``, ``reset``, ... of
            :class:`~operators.tta.base.TTAOperator`.
    """

    needs_norm = "affine"
    default_reset = "collapse"
    option_checks = {"lr": at_least(0), "entropy_margin": above(0), "redundancy_margin": between(0, 1),
                     "fisher_alpha": at_least(0)}

    def __init__(self, model: nn.Module | None = None, *, lr: float = 0.00025, entropy_margin: float = 0.4,
                 redundancy_margin: float | None = None, fisher_data: str | np.ndarray | None = None,
                 fisher_alpha: float = 2000.0, loss_stats: str = "batch", **common: Any):
        if lr < 0 or entropy_margin <= 0 or fisher_alpha < 0:
            raise ConfigError("EATA: lr and fisher_alpha must be >= 0, entropy_margin > 0")
        if redundancy_margin is not None and not 0 <= redundancy_margin <= 1:
            raise ConfigError(f"EATA: redundancy_margin must be in [0, 1], got {redundancy_margin}")
        self.lr, self.entropy_margin, self.redundancy_margin = lr, entropy_margin, redundancy_margin
        self.fisher_alpha = fisher_alpha
        self.loss_stats = check_loss_stats("EATA", loss_stats)
        samples = _read_samples(fisher_data) if fisher_data is not None else None
        self.fisher_samples = 0 if samples is None else len(samples)
        self._probs: torch.Tensor | None = None    # moving average of selected softmax outputs
        self.selected = 0
        super().__init__(model, **common)
        params = self.trainable()
        self._anchor = [p.detach().clone() for p in params]
        self._fisher = self._estimate_fisher(samples) if samples is not None and fisher_alpha > 0 else None

    def trainable(self) -> list[nn.Parameter]:
        return affine_parameters(self.net)

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return sgd(params, self.scaled(self.lr))

    # -- Fisher information --------------------------------------------------------------
    def _estimate_fisher(self, samples: np.ndarray) -> list[torch.Tensor]:
        """Diagonal Fisher of the trainable parameters: mean over mini-batches of 64 of
        the squared gradient of the cross-entropy against the model's own predictions."""
        where = f"{self.name}: fisher_data"
        try:
            shape = self.sample_shape(samples.shape[1:], where)
        except SchemaError as exc:   # here a configuration mistake, not a bad stream
            raise ConfigError(str(exc)) from exc
        x = torch.from_numpy(samples.reshape(len(samples), *shape)).to(self.device)
        params = self.trainable()
        fisher = [torch.zeros_like(p) for p in params]
        chunks = x.split(self.reference_batch_size)
        for chunk in chunks:
            # a fresh context per chunk: a generator-based context manager enters only once
            stats = batch_statistics(self.norms) if self.loss_stats == "batch" else contextlib.nullcontext()
            with stats, torch.enable_grad():
                try:
                    logits = self.net(chunk)
                except RuntimeError as exc:
                    raise ConfigError(f"{where}: the model cannot take samples of shape {shape}: {exc}") from exc
                loss = nn.functional.cross_entropy(logits, logits.argmax(dim=1))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            for f, g in zip(fisher, grads):
                if g is not None:
                    f += g.detach() ** 2
        return [f / len(chunks) for f in fisher]

    def _penalty(self) -> torch.Tensor | None:
        if self._fisher is None:
            return None
        return self.fisher_alpha * sum((f * (p - a) ** 2).sum()
                                       for f, p, a in zip(self._fisher, self.trainable(), self._anchor))

    # -- adaptation ----------------------------------------------------------------------
    def margin(self, num_classes: int) -> float:
        """``E0`` in nats."""
        return self.entropy_margin * math.log(num_classes)

    def adapt(self, images: torch.Tensor, logits: torch.Tensor | None) -> None:
        if logits is None:
            return
        k = logits.shape[1]
        ent = entropy(logits)
        keep = ent.detach() < self.margin(k)
        probs = logits.detach().softmax(dim=1)
        if self._probs is not None and bool(keep.any()):
            eps = self.redundancy_margin if self.redundancy_margin is not None else default_redundancy_margin(k)
            cos = nn.functional.cosine_similarity(self._probs.unsqueeze(0), probs, dim=1)
            keep &= cos.abs() < eps
        if not bool(keep.any()):
            return
        chosen = probs[keep].mean(dim=0)
        self._probs = chosen if self._probs is None else 0.9 * self._probs + 0.1 * chosen
        self.selected += int(keep.sum())
        ent = ent[keep]
        loss = (ent * torch.exp(self.margin(k) - ent.detach())).mean()
        penalty = self._penalty()
        if penalty is not None:
            loss = loss + penalty
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def reset(self) -> None:
        self._probs = None
        super().reset()

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["eata"] = {"probs": None if self._probs is None else self._probs.detach().cpu().clone(),
                         "selected": self.selected}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        extra = state.get("eata") or {}
        probs = extra.get("probs")
        if probs is not None and (not isinstance(probs, torch.Tensor) or probs.dim() != 1):
            raise ValueError(f"{self.name}: checkpoint's moving average of predictions is not a vector")
        self._probs = None if probs is None else probs.float().to(self.device)
        self.selected = int(extra.get("selected", 0))

    def to(self, device: Any) -> EATA:
        super().to(device)
        self._anchor = [a.to(self.device) for a in self._anchor]
        if self._fisher is not None:
            self._fisher = [f.to(self.device) for f in self._fisher]
        if self._probs is not None:
            self._probs = self._probs.to(self.device)
        return self

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "selected_samples": self.selected}


def _read_samples(data: str | np.ndarray) -> np.ndarray:
    """Clean samples for the Fisher information, from an array or a ``.npy`` file."""
    if isinstance(data, (str, os.PathLike)):
        try:
            arr = np.load(data, allow_pickle=False)
        except FileNotFoundError as exc:
            raise ConfigError(f"EATA: fisher_data {data}: no such file") from exc
        except (ValueError, OSError) as exc:
            raise ConfigError(f"EATA: fisher_data {data}: not a .npy array file (no pickles): {exc}") from exc
        where = f"fisher_data {data}"
    else:
        arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        where = "fisher_data"
    if not isinstance(arr, np.ndarray) or arr.ndim < 2 or len(arr) == 0:
        raise ConfigError(f"EATA: {where} must hold samples as an array (N, *sample shape) with N >= 1, "
                          f"got shape {getattr(arr, 'shape', None)}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"EATA: {where} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ConfigError(f"EATA: {where} holds NaN or inf values")
    return arr
