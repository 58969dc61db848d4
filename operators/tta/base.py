"""What every test-time adaptation operator shares: wrap a classifier, buffer the stream
into mini-batches of exactly ``batch_size``, predict, adapt, reset, checkpoint.

**Mini-batches and the prediction order.** Batch size changes these algorithms, so it
is an explicit parameter and never the runtime's micro-batch cut: the operator keeps its
own buffer and adapts on consecutive mini-batches of exactly ``batch_size`` samples.
A row's output cannot wait for rows that have not arrived, so every row is predicted on
arrival, one sample at a time in effect, with the model as adapted on all *complete*
earlier mini-batches (its weights and its running normalisation statistics); when a
mini-batch fills, the operator adapts on it. A partial mini-batch at the end of a
micro-batch therefore waits in the buffer (and in the checkpoint) until later rows fill
it. Outputs are a function of the stream alone, identical for every micro-batch cut.
The price is a lag of one mini-batch: Tent's "normalise with the current batch" and
NHL's "adapt on the batch, then predict it" become "…, then predict the next one"
(measured in benchmarks/tta.py: the lag is why batch 64 does worse than batch 1 there).

**The entropy loss** (Tent, NHL) is computed one of two ways, the ``loss_stats``
parameter:

- ``"batch"`` (the papers' formulation): a second forward pass of the full mini-batch
  with every normalisation layer using that mini-batch's own statistics, the gradient
  flowing through the batch mean and variance (``BatchNorm`` in train mode, see
  :func:`~operators.tta.norm_stats.batch_statistics`). Costs one more forward pass.
- ``"running"``: the forward pass that produced the rows' outputs is kept (autograd
  graph) and reused, so adapting costs one backward pass and no second forward; the
  gradient sees the running statistics as constants.

Either way the forward pass that predicted the rows also summed their normalisation
moments (and NHL's first-layer input), so statistics are never computed twice. A
checkpoint stores the buffered rows, not the graph; on resume their forward pass is
recomputed with the restored weights.

**Normalisation** uses :class:`~operators.tta.norm_stats.StreamingNorm` (running
statistics blended with momentum), so batch size 1 works and does not collapse.

**Outputs**: ``prediction`` (int64 class), ``confidence`` (max softmax probability)
and ``entropy`` (nats) per row. Stream keys are ignored: one model serves the stream.

Subclasses set ``needs_conv`` / ``needs_norm`` and implement :meth:`TTAOperator.adapt`
(plus :meth:`TTAOperator.prepare` and :meth:`TTAOperator.trainable` when they train).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from stream import Batch, Operator
from stream.device import torch_device
from stream.errors import BadEventError, ConfigError, SchemaError
from stream.testing import UnitTest

from .models import load_model
from .norm_stats import StreamingNorm, batch_statistics, momentum_for, swap_batchnorm
from .reset import make_policy


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits)``, per row."""
    logp = torch.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def entropy_loss(logits: torch.Tensor, keep_below: float | None = None) -> torch.Tensor | None:
    """Mean prediction entropy; with ``keep_below`` only rows whose entropy is below
    ``keep_below · ln(classes)`` count (EATA-style filtering). ``None`` if no row counts."""
    ent = entropy(logits)
    if keep_below is not None:
        ent = ent[ent.detach() < keep_below * math.log(logits.shape[1])]
        if ent.numel() == 0:
            return None
    return ent.mean()


LOSS_STATS = ("batch", "running")


def check_loss_stats(owner: str, value: str) -> str:
    if value not in LOSS_STATS:
        raise ConfigError(f"{owner}: loss_stats must be one of {', '.join(map(repr, LOSS_STATS))}, got {value!r}")
    return value


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first registered ``Conv2d`` (name, module), or ``None``."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            return name, mod
    return None


class TTAOperator(Operator):
    """Base of NHL, Tent, NormAdapt and Source.

    Args:
        model: the trained classifier (``nn.Module`` mapping ``(N, C, H, W)`` images to
            logits). It is copied; the caller's module is never changed.
        batch_size: samples per adaptation step (1 = sample by sample).
        column: the fixed-shape tensor column holding images ``(H, W)`` or
            ``(C, H, W)``, floating point.
        norm_window: memory of the running normalisation statistics, in samples
            (per-mini-batch momentum ``1 - (1 - 1/window)^batch_size``; 1 = current
            mini-batch only).
        reset: ``"none"``, ``"episodic"``, ``"every:N"`` or ``"collapse[:W:T]"``
            (see :mod:`operators.tta.reset`).
        model_path / arch / arch_params: instead of ``model``, load
            ``torch.save(state_dict)`` weights into a registered architecture
            (:mod:`operators.tta.models`), for TOML pipelines.
        image_shape: expected ``(C, H, W)`` (or ``(H, W)``); checked on the first batch.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``...
    """

    batch_size_dependent = True
    needs_conv = False
    needs_norm = False
    #: how the entropy loss's forward pass normalises (see the module docstring)
    loss_stats = "running"

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        from .models import build_model

        torch.manual_seed(0)
        model = build_model("small_cnn", width=4)
        for bn in (model.bn1, model.bn2, model.bn3):  # non-trivial statistics, as after training
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
        model.eval()
        return [UnitTest({"model": model, "device": "cpu", "batch_size": size}, _unit_test_stream, batch_size=size)
                for size in (1, 8)]

    def __init__(self, model: nn.Module | None = None, *, batch_size: int = 64, column: str = "image",
                 norm_window: float = 64, reset: str = "none", model_path: str | None = None,
                 arch: str | None = None, arch_params: dict[str, Any] | None = None,
                 image_shape: tuple[int, ...] | None = None, device: Any = "auto"):
        if model is None:
            if model_path is None or arch is None:
                raise ConfigError(f"{self.name} needs a model: pass an nn.Module, or model_path "
                                  "and arch (one of operators.tta.models.ARCHITECTURES)")
            model = load_model(model_path, arch, arch_params)
        elif not isinstance(model, nn.Module):
            raise ConfigError(f"{self.name}: model must be a torch nn.Module, got {type(model).__name__}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be an integer >= 1, got {batch_size!r}")
        if norm_window < 0:
            raise ConfigError(f"{self.name}: norm_window must be >= 0, got {norm_window}")
        self.batch_size = batch_size
        self.column = column
        self.norm_window = norm_window
        self.policy = make_policy(reset)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.device = torch_device(device)
        self.model_name = type(model).__name__
        self._check_model(model)

        net = copy.deepcopy(model).float().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.norms: list[StreamingNorm] = swap_batchnorm(net, self._momentum())
        self.net = net
        conv = first_conv(net)
        self.in_channels = conv[1].in_channels if conv else None
        self.prepare()
        self.net.to(self.device)
        self._initial = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.optimizer = self._make_optimizer()
        self._pending: list[torch.Tensor] = []
        self._pending_pred: list[np.ndarray] = []
        self.forget_pending()
        self.seen = self.adapted = self.resets = 0
        self._shape: tuple[int, ...] | None = None

    # -- what subclasses provide -------------------------------------------------------
    def _momentum(self) -> float:
        return momentum_for(self.batch_size, self.norm_window)

    def prepare(self) -> None:
        """Change ``self.net`` before adaptation starts (e.g. add a modulator)."""

    def trainable(self) -> list[nn.Parameter]:
        """Parameters trained by gradient; none by default."""
        return []

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        # fused: one kernel for all parameters; the step is otherwise per-tensor overhead
        # (0.3 ms of Python per mini-batch for the six small tensors of a SmallCNN)
        return torch.optim.Adam(params, lr=getattr(self, "lr", 1e-3), fused=True)

    def adapt(self, images: torch.Tensor, logits: torch.Tensor | None) -> None:
        """Adapt on one full mini-batch: ``batch_size`` images on the device and, when
        the operator trains parameters, their logits with the autograd graph attached.
        Normalisation statistics are committed afterwards by the base class."""

    # -- model checks ----------------------------------------------------------------------
    def _check_model(self, model: nn.Module) -> None:
        what = f"{self.name}: model {type(model).__name__}"
        if self.needs_conv:
            conv = first_conv(model)
            if conv is None:
                raise ConfigError(f"{what} has no Conv2d layer; {self.name} adapts the first convolution")
            if conv[1].groups != 1:
                raise ConfigError(f"{what}: first convolution {conv[0]!r} is grouped "
                                  f"(groups={conv[1].groups}); {self.name} needs groups=1")
        if self.needs_norm:
            bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if not bns:
                raise ConfigError(f"{what} has no BatchNorm layer; {self.name} adapts normalisation "
                                  "(use Source, or NHL with adapt_norm=False)")
            if getattr(self, "needs_affine", False) and not all(m.affine for m in bns):
                raise ConfigError(f"{what}: {self.name} trains BatchNorm affine parameters, "
                                  "but some BatchNorm layers have affine=False")

    def _make_optimizer(self) -> torch.optim.Optimizer | None:
        params = self.trainable()
        for p in params:
            p.requires_grad_(True)
        return self.make_optimizer(params) if params else None

    # -- input checks ------------------------------------------------------------------------
    def required_columns(self) -> dict[str, str]:
        return {self.column: "tensor"}

    def validate_schema(self, schema: pa.Schema, source: str = "") -> None:
        super().validate_schema(schema, source)
        where = f"{source or '<stream>'}: {self.name} column {self.column!r}"
        typ = schema.field(self.column).type
        if not isinstance(typ, pa.FixedShapeTensorType):
            raise SchemaError(f"{where} must be a fixed-shape tensor of images "
                              f"(stream.batch.to_arrow of an (N, H, W) array), got {typ}")
        if not pa.types.is_floating(typ.value_type):
            raise SchemaError(f"{where}: pixels must be floating point in [0, 1], got {typ.value_type}; "
                              "convert first, e.g. images.astype('float32') / 255")
        shape = tuple(typ.shape)
        if len(shape) not in (2, 3) or 0 in shape:
            raise SchemaError(f"{where}: images must have shape (H, W) or (C, H, W) with no empty "
                              f"dimension, got {shape}")
        chw = shape if len(shape) == 3 else (1, *shape)
        if self.image_shape is not None:
            want = self.image_shape if len(self.image_shape) == 3 else (1, *self.image_shape)
            if chw != want:
                raise SchemaError(f"{where}: images of shape {shape}, the operator expects {self.image_shape}")
        if self.in_channels is not None and chw[0] != self.in_channels:
            raise SchemaError(f"{where}: images have {chw[0]} channel(s), the model's first "
                              f"convolution takes {self.in_channels}")
        if self._shape is not None and chw != self._shape:
            raise SchemaError(f"{where}: image shape changed mid-stream from {self._shape} to {chw}")
        try:
            with torch.no_grad():
                out = self.net(torch.zeros((1, *chw), device=self.device))
        except RuntimeError as exc:
            raise SchemaError(f"{where}: the model cannot take images of shape {shape}: {exc}") from exc
        if out.dim() != 2:
            raise SchemaError(f"{where}: the model maps images to shape {tuple(out.shape)}, "
                              "expected (batch, classes) logits")
        self._shape = chw

    def check_rows(self, batch: Batch) -> tuple[np.ndarray, list[str]] | None:
        if batch.num_rows == 0:
            return None
        arr = batch.column(self.column)
        bad = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else \
            np.zeros(batch.num_rows, dtype=bool)
        reasons = {int(i): f"column {self.column!r} is missing (null)" for i in np.flatnonzero(bad)}
        if isinstance(arr.type, pa.FixedShapeTensorType) and pa.types.is_floating(arr.type.value_type):
            flat = batch.numpy(self.column).reshape(batch.num_rows, -1)
            finite = np.isfinite(flat)
            for i in np.flatnonzero(~finite.all(axis=1) & ~bad):
                k = int((~finite[i]).sum())
                first = int(np.flatnonzero(~finite[i])[0])
                reasons[int(i)] = (f"column {self.column!r} has {k} NaN/inf pixel(s) "
                                   f"(first at flat index {first})")
                bad[i] = True
        if not reasons:
            return None
        return bad, [reasons[int(i)] for i in np.flatnonzero(bad)]

    # -- the stream ------------------------------------------------------------------------
    def _images(self, batch: Batch) -> torch.Tensor:
        # a copy: Arrow memory is read-only, and float64 streams need converting anyway
        x = torch.from_numpy(np.array(batch.numpy(self.column), dtype=np.float32))
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return x.to(self.device)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the model as adapted so far; changes nothing."""
        return self.net(images)

    def _forward_pending(self, images: torch.Tensor) -> torch.Tensor:
        """Predict rows of the current mini-batch and keep what adapting on it will need.

        Every row of a mini-batch is predicted by the same model (it only changes when a
        mini-batch is complete), so this forward pass also serves the adaptation: the
        normalisation layers sum its moments and, with ``loss_stats="running"``, its
        graph is kept for the entropy gradient (no second forward).
        """
        for norm in self.norms:
            norm.collect = True
        self._collecting = True
        try:
            if self.optimizer is not None and self.loss_stats == "running":
                with torch.enable_grad():
                    logits = self.net(images)
                self._pending_logits.append(logits)
            else:
                with torch.no_grad():
                    logits = self.net(images)
        finally:
            for norm in self.norms:
                norm.collect = False
            self._collecting = False
        return logits.detach()

    _collecting = False

    def process(self, batch: Batch) -> Batch:
        if batch.num_rows == 0:
            raise BadEventError(f"empty batch: {self.name} needs at least one image in column "
                                f"{self.column!r}", source=batch.source, operator=self.name)
        x = self._images(batch)
        outs: list[torch.Tensor] = []
        start = 0
        while start < len(x):
            take = min(self.batch_size - self._pending_size(), len(x) - start)
            seg = x[start:start + take]
            logits = self._forward_pending(seg)
            outs.append(logits)
            self._pending.append(seg)
            self._pending_pred.append(logits.argmax(dim=1).cpu().numpy())
            if self._pending_size() == self.batch_size:
                self._step(logits.shape[1])
            start += take
        logits = torch.cat(outs)
        probs = torch.softmax(logits, dim=1)
        conf, pred = probs.max(dim=1)
        self.seen += len(x)
        return batch.with_columns({
            "prediction": pred.cpu().numpy().astype(np.int64),
            "confidence": conf.cpu().numpy().astype(np.float32),
            "entropy": entropy(logits).cpu().numpy().astype(np.float32),
        })

    def _pending_size(self) -> int:
        return sum(len(t) for t in self._pending)

    def _step(self, num_classes: int) -> None:
        """Adapt on the full mini-batch in the buffer, then empty the buffer."""
        if self.policy.episodic:
            self.reset()   # adapt this mini-batch from the source model (replays it)
        images = torch.cat(self._pending)
        logits = self._loss_logits(images)
        predictions = np.concatenate(self._pending_pred)
        self.adapt(images, logits)
        for norm in self.norms:
            norm.commit()
        self.adapted += 1
        self._pending, self._pending_pred = [], []
        self.forget_pending()
        if self.policy.after_batch(predictions, num_classes):
            self.reset()

    def _loss_logits(self, images: torch.Tensor) -> torch.Tensor | None:
        """Logits, with their graph, for the entropy loss of the full mini-batch."""
        if self.optimizer is None:
            return None
        if self.loss_stats == "running":
            return torch.cat(self._pending_logits)
        with batch_statistics(self.norms), torch.enable_grad():
            return self.net(images)

    def forget_pending(self) -> None:
        """Drop what the forward passes of the current mini-batch kept."""
        self._pending_logits: list[torch.Tensor] = []
        for norm in self.norms:
            norm.acc.zero_()

    def _replay_pending(self) -> None:
        """Redo the pending rows' forward pass (after a resume or a reset)."""
        self.forget_pending()
        if self._pending:
            pending = torch.cat(self._pending)
            self._pending = [pending]
            self._forward_pending(pending)

    def reset(self) -> None:
        """Back to the source model: weights, statistics, optimizer state, reset history."""
        self.net.load_state_dict(self._initial)
        self.optimizer = self._make_optimizer()
        self.policy.clear()
        self.resets += 1
        self._replay_pending()

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        pending = torch.cat(self._pending).cpu() if self._pending else None
        return {
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None,
            "pending": pending,
            "pending_pred": np.concatenate(self._pending_pred) if self._pending_pred else None,
            "seen": self.seen, "adapted": self.adapted, "resets": self.resets,
            "policy": self.policy.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.net.load_state_dict(state["net"])
        except RuntimeError as exc:
            raise ValueError(f"{self.name}: checkpoint is for another model: {exc}") from exc
        self.optimizer = self._make_optimizer()
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        pending = state["pending"]
        self._pending = [pending.to(self.device)] if pending is not None else []
        self._pending_pred = [np.asarray(state["pending_pred"])] if pending is not None else []
        self._replay_pending()
        self.seen, self.adapted, self.resets = int(state["seen"]), int(state["adapted"]), int(state["resets"])
        self.policy.load_state_dict(state["policy"])

    def to(self, device: Any) -> TTAOperator:
        device = torch_device(device)
        opt_state = self.optimizer.state_dict() if self.optimizer else None
        self.device = device
        self.net.to(device)
        self._initial = {k: v.to(device) for k, v in self._initial.items()}
        self._pending = [t.to(device) for t in self._pending]
        self.optimizer = self._make_optimizer()
        if opt_state is not None:
            self.optimizer.load_state_dict(opt_state)
        self._replay_pending()
        return self

    def summary(self) -> dict[str, Any]:
        return {"seen": self.seen, "adapted_batches": self.adapted, "resets": self.resets}


def _unit_test_stream(n: int = 24, seed: int = 0) -> Batch:
    """Small random images: input for the contract checks."""
    from stream.batch import to_arrow

    images = np.random.default_rng(seed).random((n, 8, 8), dtype=np.float32)
    return Batch(pa.record_batch({"image": to_arrow(images)}), source="contract")
