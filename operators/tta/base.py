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
statistics blended with momentum), so a prediction never depends on the other samples
of its mini-batch, down to batch size 1.

**Learning rates scale with the batch size.** A method's ``lr`` (and NHL's
``hebbian_lr``) is its rate at the reference batch size 64; the step applied to each
mini-batch is ``lr · batch_size / 64`` (:meth:`TTAOperator.scaled`), the linear
scaling the TTA literature uses (Tent on ImageNet, EATA and SAR: 0.00025 · batch/64).
A batch-1 stream takes 64 times as many steps as a batch-64 one, each 64 times smaller.
With an unscaled rate, Tent at batch 1 on a 5,000-row stream of shifted 8×8 digits
ended at 82 % error on the last quarter, where the source model errs on 56 % (and
NormAdapt on 45 %); with the scaled rate, 45 %.

**Collapse.** Tent and NHL default to ``reset="collapse"``: the adapted model goes back
to the source weights when its predictions become much less diverse than the source
model's on the same rows (:mod:`operators.tta.reset`). Together with the scaled rate,
no method's error on the last quarter of tests/test_tta_collapse.py's batch-1 stream
exceeds the source model's.

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
from stream.tensors import logical_shape
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


#: convolutions whose input fixes the sample layout (see :meth:`TTAOperator.sample_shape`)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: normalisation layers with per-channel (or per-feature) affine parameters
NORMS: tuple[type[nn.Module], ...] = (StreamingNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
                                      nn.modules.instancenorm._InstanceNorm) + \
    ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def first_conv(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first registered ``Conv1d``/``Conv2d``/``Conv3d`` (name, module), or ``None``."""
    for name, mod in model.named_modules():
        if isinstance(mod, CONVS):
            return name, mod
    return None


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every normalisation layer of ``model`` (name, module), in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, NORMS)]


def affine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The affine parameters (scale, shift) of every normalisation layer: what Tent trains."""
    return [p for _, m in norm_layers(model) for p in (getattr(m, "weight", None), getattr(m, "bias", None))
            if isinstance(p, nn.Parameter)]


def describe(layers: list[tuple[str, nn.Module]]) -> str:
    return ", ".join(f"{n!r} ({type(m).__name__})" for n, m in layers[:4]) + (" ..." if len(layers) > 4 else "")


class TTAOperator(Operator):
    """Base of NHL, Tent, NormAdapt and Source.

    Args:
        model: the trained classifier (``nn.Module`` mapping a batch of samples,
            channels first, to ``(N, classes)`` logits: Conv1d or Conv2d networks,
            BatchNorm, GroupNorm or LayerNorm, or no convolution at all). It is copied;
            the caller's module is never changed.
        batch_size: samples per adaptation step (1 = sample by sample).
        column: the fixed-shape tensor column holding one sample per row, floating
            point, in the layout of :meth:`TTAOperator.sample_shape` (images ``(H, W)``
            or ``(C, H, W)``; signals ``(L,)`` or ``(C, L)`` for a Conv1d model).
        norm_window: memory of the running normalisation statistics, in samples
            (per-mini-batch momentum ``1 - (1 - 1/window)^batch_size``; 1 = current
            mini-batch only). The default, 256, spans several mini-batches of 64: with
            64 (most weight on the last mini-batch), a stream sorted by class (one or two
            classes per mini-batch) normalised every layer with one class's statistics,
            and on benchmarks/tta_wild.py's label-shifted stream every BatchNorm method
            erred 12 points more than the unadapted model (46.7 against 34.7 %).
        reset: ``"none"``, ``"episodic"``, ``"every:N"`` or ``"collapse[:W:T]"``
            (see :mod:`operators.tta.reset`); ``None``: the method's default
            (``"collapse"`` for Tent and NHL, ``"none"`` otherwise).
        model_path / arch / arch_params: instead of ``model``, load
            ``torch.save(state_dict)`` weights into a registered architecture
            (:mod:`operators.tta.models`), for TOML pipelines.
        image_shape: expected sample shape, e.g. ``(C, H, W)`` or ``(H, W)``; checked on
            the first batch.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``...
    """

    batch_size_dependent = True
    #: what normalisation the method needs: ``False``, ``"batch"`` (BatchNorm statistics)
    #: or ``"affine"`` (any normalisation layer's affine parameters)
    needs_norm: bool | str = False
    #: the batch size at which ``lr`` (and NHL's ``hebbian_lr``) is the step applied
    reference_batch_size = 64
    #: the reset policy when the caller passes none
    default_reset = "none"
    #: rows per mini-batch that the source model predicts for a reset policy's comparison
    reference_rows = 16
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
                 norm_window: float = 256, reset: str | None = None, model_path: str | None = None,
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
        self.policy = make_policy(self.default_reset if reset is None else reset)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.device = torch_device(device)
        self.model_name = type(model).__name__
        self._check_model(model)

        net = copy.deepcopy(model).float().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.norms: list[StreamingNorm] = swap_batchnorm(net, self._momentum())
        self.net = net
        # the untouched source model, for reset policies that compare against it
        self._source = self._frozen(model) if self.policy.needs_reference else None
        conv = first_conv(net)
        self.in_channels = conv[1].in_channels if conv else None
        #: rank of one sample as the model takes it (channels first), from the first conv
        self.sample_rank = conv[1].weight.dim() - 1 if conv else None
        self.prepare()
        self.net.to(self.device)
        self._initial = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.optimizer = self._make_optimizer()
        self._pending: list[torch.Tensor] = []
        self._pending_pred: list[np.ndarray] = []
        self.forget_pending()
        self.seen = self.adapted = self.resets = 0
        self._shape: tuple[int, ...] | None = None

    def _frozen(self, model: nn.Module) -> nn.Module:
        source = copy.deepcopy(model).float().eval().to(self.device)
        for p in source.parameters():
            p.requires_grad_(False)
        return source

    def scaled(self, rate: float) -> float:
        """The step applied per mini-batch for a rate given at the reference batch size
        (``rate · batch_size / 64``, see the module docstring)."""
        return rate * self.batch_size / self.reference_batch_size

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
        return torch.optim.Adam(params, lr=self.scaled(getattr(self, "lr", 1e-3)), fused=True)

    def adapt(self, images: torch.Tensor, logits: torch.Tensor | None) -> None:
        """Adapt on one full mini-batch: ``batch_size`` images on the device and, when
        the operator trains parameters, their logits with the autograd graph attached.
        Normalisation statistics are committed afterwards by the base class."""

    # -- model checks ----------------------------------------------------------------------
    def _check_model(self, model: nn.Module) -> None:
        what = f"{self.name}: model {type(model).__name__}"
        if self.needs_conv:
            conv = first_conv(model)
            if conv is None or isinstance(conv[1], nn.Conv3d):
                found = f"its first convolution {conv[0]!r} is a Conv3d" if conv else "it has no convolution"
                raise ConfigError(f"{what}: {self.name} adapts the first Conv1d or Conv2d layer, and {found}")
            if conv[1].groups != 1:
                raise ConfigError(f"{what}: first convolution {conv[0]!r} is grouped "
                                  f"(groups={conv[1].groups}); {self.name} needs groups=1")
        norms = norm_layers(model)
        if self.needs_norm == "batch" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for _, m in norms):
            if norms:
                raise ConfigError(f"{what} has no BatchNorm layer; {self.name} re-estimates BatchNorm "
                                  f"statistics, and its normalisation layers {describe(norms)} normalise each "
                                  "sample by itself (use Tent, which adapts their affine parameters)")
            raise ConfigError(f"{what} has no BatchNorm layer; {self.name} re-estimates BatchNorm statistics "
                              "(use Source)")
        if self.needs_norm == "affine" and not affine_parameters(model):
            raise ConfigError(f"{what} has no normalisation layer with affine parameters (BatchNorm, "
                              f"GroupNorm, LayerNorm, InstanceNorm with affine=True); {self.name} trains them"
                              + (f"; found only {describe(norms)} without them" if norms else ""))

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
            raise SchemaError(f"{where} must be a fixed-shape tensor of samples "
                              f"(stream.batch.to_arrow of an (N, H, W) or (N, C, H, W) array), got {typ}")
        if not pa.types.is_floating(typ.value_type):
            raise SchemaError(f"{where}: values must be floating point (pixels in [0, 1]), got {typ.value_type}; "
                              "convert first, e.g. images.astype('float32') / 255")
        shape = logical_shape(typ)
        chw = self.sample_shape(shape, where)
        if self.image_shape is not None and chw != self.sample_shape(self.image_shape, where):
            raise SchemaError(f"{where}: samples of shape {shape}, the operator expects {self.image_shape}")
        if self._shape is not None and chw != self._shape:
            raise SchemaError(f"{where}: image shape changed mid-stream from {self._shape} to {chw}")
        try:
            with torch.no_grad():
                out = self.net(torch.zeros((1, *chw), device=self.device))
        except RuntimeError as exc:
            raise SchemaError(f"{where}: the model cannot take samples of shape {chw} (from the column's "
                              f"{shape}): {exc}") from exc
        if out.dim() != 2:
            raise SchemaError(f"{where}: the model maps images to shape {tuple(out.shape)}, "
                              "expected (batch, classes) logits")
        self._shape = chw

    def sample_shape(self, shape: tuple[int, ...], where: str = "") -> tuple[int, ...]:
        """One sample's shape as the model takes it, from a column's tensor shape.

        **The layout, stated once**: channels first, as PyTorch layers take them. With a
        first convolution ``ConvNd`` a sample is ``(C, *N spatial)``: ``(C, L)`` for
        ``Conv1d``, ``(C, H, W)`` for ``Conv2d``; the channel axis may be left out when
        ``C`` is 1 (an ``(N, H, W)`` image column, an ``(N, L)`` signal column). A model
        without convolution (an MLP, a transformer on vectors) takes the column's
        tensors as they are. Raises :class:`SchemaError` naming the layer and layout.
        """
        shape = tuple(int(s) for s in shape)
        where = where or f"{self.name} column {self.column!r}"
        if 0 in shape or not shape:
            raise SchemaError(f"{where}: samples of shape {shape}; every dimension must be non-empty")
        if self.sample_rank is None:
            return shape
        name, conv = first_conv(self.net)
        layout = {2: "(C, L)", 3: "(C, H, W)", 4: "(C, D, H, W)"}[self.sample_rank]
        if len(shape) == self.sample_rank - 1 and self.in_channels == 1:
            return (1, *shape)
        if len(shape) != self.sample_rank:
            short = f" or {layout.replace('C, ', '')} with one channel" if self.in_channels == 1 else ""
            raise SchemaError(f"{where}: samples of shape {shape} do not fit the model's first convolution "
                              f"{name!r} ({type(conv).__name__}, {self.in_channels} input channel(s)), which "
                              f"takes samples {layout}{short}")
        if shape[0] != self.in_channels:
            raise SchemaError(f"{where}: samples of shape {shape} have {shape[0]} channel(s), the model's first "
                              f"convolution {name!r} ({type(conv).__name__}) takes {self.in_channels} "
                              f"(layout {layout}, channels first)")
        return shape

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
        shape = self._shape or self.sample_shape(tuple(x.shape[1:]))
        return x.reshape(len(x), *shape).to(self.device)

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
        reference = None
        if self._source is not None:
            # the detector compares class histograms over hundreds of rows; a few
            # evenly spaced rows per mini-batch estimate them at a fraction of a forward pass
            rows = np.unique(np.linspace(0, len(images) - 1, min(len(images), self.reference_rows)).round()
                             .astype(np.int64))
            predictions = predictions[rows]
            with torch.no_grad():
                reference = self._source(images[torch.from_numpy(rows).to(images.device)]).argmax(dim=1).cpu().numpy()
        self.adapt(images, logits)
        for norm in self.norms:
            norm.commit()
        self.adapted += 1
        self._pending, self._pending_pred = [], []
        self.forget_pending()
        if self.policy.after_batch(predictions, num_classes, reference):
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
        if self._source is not None:
            self._source.to(device)
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
