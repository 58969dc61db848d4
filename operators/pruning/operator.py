"""The ``dynamic_pruning`` engine operator: pruned inference plus online mask learning.

Each event's image runs through the :class:`~operators.pruning.executor.SparseExecutor`
(only the filters its masks keep are computed); the operator outputs ``prediction``,
``confidence`` (max softmax probability) and ``flops`` (the multiply-accumulates that
event used, mask predictors included). A seeded fraction of events are *shadow*
samples: after their pruned prediction (test, then train) they are run densely, the
heatmap-mass targets of every layer are computed, the mask predictors take one Adam
step on the BCE mask loss, and the operator counts how many filters the mask dropped
although the dense target kept them (``missed_filters``; the running rate is in
:attr:`DynamicPruning.stats`). The backbone is not trained online.

Which events are shadows is a hash of the event's index in the stream and the seed, so
the micro-batch cut never changes the outputs: a micro-batch is processed in segments
that end at each shadow event, and the predictors learn before the next segment.

Example:
    >>> import numpy as np, pyarrow as pa, torch
    >>> from torch import nn
    >>> from stream import Batch
    >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
    ...                       nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    >>> op = DynamicPruning(model, input_shape=(1, 6, 6), r=0.9, shadow_fraction=0.5,
    ...                     device="cpu")
    >>> images = np.random.default_rng(0).normal(size=(10, 6, 6)).astype(np.float32)
    >>> out = op(Batch(pa.record_batch({"image": pa.FixedShapeTensorArray.from_numpy_ndarray(images)})))
    >>> out.column_names
    ['image', 'prediction', 'confidence', 'flops', 'shadow', 'missed_filters']
    >>> bool((out.numpy("flops") <= op.network.flops.count([[8, 8]], predictors=True)[0]).all())
    True
    >>> op.stats["shadow_events"] == int(out.numpy("shadow").sum())
    True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from stream import Batch, Operator
from stream.device import torch_device
from stream.errors import ConfigError, SchemaError
from stream.splitmix import GOLDEN, mix64, unit_interval
from stream.tensors import tensor_numpy
from stream.testing import UnitTest

from .executor import MODES, SparseExecutor
from .masks import check_ratio, mask_loss
from .network import PrunableNetwork
from .spec import load_network

_STATS = ("events", "shadow_events", "dropped_filters", "missed_filters")


def shadow_draw(seed: int, index: np.ndarray) -> np.ndarray:
    """Uniform numbers in [0, 1) from (seed, event index): SplitMix64, counter-based."""
    z = np.asarray(index, dtype=np.uint64) + np.uint64((seed & 0xFFFFFFFF) * GOLDEN % 2**64)
    return unit_interval(mix64(z))


class DynamicPruning(Operator):
    """Classify image events with a dynamically pruned CNN, learning its masks online.

    Args:
        model: a :class:`PrunableNetwork`, an ``nn.Sequential`` CNN (then ``input_shape``
            is needed), or the path of a file written by
            :func:`~operators.pruning.spec.save_network`.
        input_shape: ``(channels, height, width)`` when ``model`` is an ``nn.Sequential``.
        r: heatmap-mass threshold of the online targets, in (0, 1].
        column: the image column (fixed-shape tensor ``[H, W]`` or ``[C, H, W]``, or a
            list of ``C·H·W`` numbers per row).
        shadow_fraction: fraction of events also run densely to train the predictors.
        lr: Adam learning rate of the online predictor updates.
        seed: seeds the shadow draw (and the predictors of a freshly wrapped model).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        batch_mode: how a micro-batch runs, one of ``union``, ``grouped``, ``loop``.
    """

    batch_size_dependent = False

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4))
        net = PrunableNetwork(model, (1, 8, 8), init_bias=0.5, seed=0)
        return [UnitTest({"model": net, "r": 0.85, "shadow_fraction": 0.3, "seed": 7, "device": "cpu",
                          "batch_mode": mode}, _unit_test_stream, rtol=1e-5, atol=1e-6)
                for mode in ("union", "grouped")]

    def __init__(self, model: PrunableNetwork | nn.Module | str, input_shape: Sequence[int] | None = None,
                 r: float = 0.9, column: str = "image", shadow_fraction: float = 0.05,
                 lr: float = 1e-2, seed: int = 0, device: str = "auto", batch_mode: str = "union"):
        self.r = check_ratio(r)
        if not 0.0 <= float(shadow_fraction) <= 1.0:
            raise ConfigError(f"shadow_fraction must be in [0, 1], got {shadow_fraction!r}")
        if batch_mode not in MODES or batch_mode == "dense":
            raise ConfigError(f"batch_mode must be one of union, grouped, loop; got {batch_mode!r}")
        self.column, self.shadow_fraction, self.seed = column, float(shadow_fraction), int(seed)
        self.lr, self.batch_mode = float(lr), batch_mode
        if isinstance(model, str):
            net = load_network(model)
        elif isinstance(model, PrunableNetwork):
            net = copy.deepcopy(model)
        elif isinstance(model, nn.Module):
            if input_shape is None:
                raise ConfigError("wrapping an nn.Module needs input_shape=(channels, height, width)")
            net = PrunableNetwork(copy.deepcopy(model), input_shape, seed=seed)
        else:
            raise TypeError(f"model must be a PrunableNetwork, an nn.Sequential or a path, "
                            f"got {type(model).__name__}")
        if input_shape is not None and tuple(input_shape) != net.input_shape:
            raise ConfigError(f"input_shape {tuple(input_shape)} does not match the network's "
                             f"{net.input_shape}")
        self.network = net.eval()
        self.network.backbone.requires_grad_(False)   # online learning trains the predictors only
        self.device = torch_device(device)
        self.network.to(self.device)
        self.optimizer = torch.optim.Adam(self.network.predictors.parameters(), lr=self.lr)
        self.executor = SparseExecutor(self.network, batch_mode)
        self.stats: dict[str, int | float] = {k: 0 for k in _STATS}

    def required_columns(self) -> dict[str, str]:
        return {self.column: "tensor"}

    # -- input checks -------------------------------------------------------------------
    def validate_schema(self, schema: pa.Schema, source: str = "") -> None:
        super().validate_schema(schema, source)
        typ = schema.field(self.column).type
        want = self.network.input_shape
        allowed = [want] + ([want[1:]] if want[0] == 1 else [])
        where = f"{source or '<stream>'}: {self.name} column {self.column!r}"
        if isinstance(typ, pa.FixedShapeTensorType):
            perm = typ.permutation
            if perm is not None and list(perm) != sorted(perm):
                raise SchemaError(f"{where} holds permuted tensors (permutation {list(perm)}); "
                                  "write row-major tensors")
            if tuple(typ.shape) not in allowed:
                raise SchemaError(f"{where} holds tensors of shape {tuple(typ.shape)}; the network "
                                  f"takes {' or '.join(str(a) for a in allowed)}")
            value = typ.value_type
        else:
            if pa.types.is_fixed_size_list(typ) and typ.list_size != int(np.prod(want)):
                raise SchemaError(f"{where} holds lists of {typ.list_size} numbers; the network "
                                  f"takes {int(np.prod(want))} ({want})")
            value = typ.value_type
        if not (pa.types.is_integer(value) or pa.types.is_floating(value)):
            raise SchemaError(f"{where} holds {value} values, not numbers")

    def check_rows(self, batch: Batch) -> tuple[np.ndarray, list[str]] | None:
        found = super().check_rows(batch)
        bad = found[0] if found else np.zeros(batch.num_rows, dtype=bool)
        reasons = dict(zip(np.flatnonzero(bad).tolist(), found[1], strict=True)) if found else {}
        arr = batch.column(self.column)
        size = int(np.prod(self.network.input_shape))
        if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            lengths = pc.fill_null(pc.list_value_length(arr), size).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero((lengths != size) & ~bad):
                reasons[int(i)] = f"column {self.column!r} holds {lengths[i]} numbers, the network takes {size}"
                bad[i] = True
        if not bad.all():
            values = self._array(batch.filter(~bad))
            nonfinite = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
            rows = np.flatnonzero(~bad)[nonfinite]
            for i in rows:
                reasons[int(i)] = f"column {self.column!r} holds NaN or infinite values"
            bad[rows] = True
        if not reasons:
            return None
        return bad, [reasons[int(i)] for i in np.flatnonzero(bad)]

    def _array(self, batch: Batch) -> np.ndarray:
        arr = batch.column(self.column)
        if isinstance(arr.type, pa.FixedShapeTensorType):
            values = tensor_numpy(arr)  # honours a permuted layout from another producer
        else:
            values = pc.list_flatten(arr).to_numpy(zero_copy_only=False)
        return values.reshape(batch.num_rows, *self.network.input_shape)

    # -- processing -------------------------------------------------------------------------
    def process(self, batch: Batch) -> Batch:
        n = batch.num_rows
        x = torch.from_numpy(np.array(self._array(batch), dtype=np.float32)).to(self.device)
        index = self.stats["events"] + np.arange(n)
        shadow = shadow_draw(self.seed, index) < self.shadow_fraction
        pred = np.empty(n, dtype=np.int64)
        conf = np.empty(n, dtype=np.float64)
        flops = np.empty(n, dtype=np.int64)
        missed = np.zeros(n, dtype=np.int64)
        ends = [*(np.flatnonzero(shadow) + 1).tolist(), n]
        lo = 0
        for hi in ends:
            if hi <= lo:
                continue
            learn = bool(shadow[hi - 1])
            res = self.executor(x[lo:hi], return_masks=learn)
            prob = torch.softmax(res.logits.float(), dim=1)
            best = prob.max(dim=1)
            pred[lo:hi] = best.indices.cpu().numpy()
            conf[lo:hi] = best.values.cpu().numpy()
            flops[lo:hi] = self.network.flops.count(res.kept.cpu().numpy(), predictors=True)
            if learn:
                missed[hi - 1] = self._learn(x[hi - 1:hi], [m[-1:] for m in res.masks])
            lo = hi
        self.stats["events"] += n
        return batch.with_columns({"prediction": pred, "confidence": conf, "flops": flops,
                                   "shadow": shadow, "missed_filters": missed})

    def _learn(self, x: torch.Tensor, masks: list[torch.Tensor]) -> int:
        """Dense pass on one shadow event: targets, one predictor step, missed filters."""
        with torch.enable_grad():
            out = self.network(x, r=self.r, masks="none")
            loss = mask_loss(out.mask_logits, out.targets)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        missed = sum(int(((t > 0.5) & ~m).sum()) for t, m in zip(out.targets, masks, strict=True))
        self.stats["shadow_events"] += 1
        self.stats["dropped_filters"] += sum(int((~m).sum()) for m in masks)
        self.stats["missed_filters"] += missed
        return missed

    @property
    def miss_rate(self) -> float:
        """Of the filters dropped on shadow events, the fraction the dense target kept."""
        return self.stats["missed_filters"] / max(self.stats["dropped_filters"], 1)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"network": {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "stats": dict(self.stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"network", "optimizer", "stats"} - set(state)
        if missing:
            raise ValueError(f"{self.name}: checkpoint lacks {sorted(missing)}")
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stats = {k: int(state["stats"][k]) for k in _STATS}
        self.executor = SparseExecutor(self.network, self.batch_mode)

    def to(self, device: Any) -> DynamicPruning:
        self.device = torch.device(device)
        opt_state = self.optimizer.state_dict()
        self.network.to(self.device)
        self.optimizer.load_state_dict(opt_state)     # moves the Adam moments too
        self.executor = SparseExecutor(self.network, self.batch_mode)
        return self


def _unit_test_stream(n: int = 40, seed: int = 0) -> Batch:
    """Small random images as a tensor column: input for the contract checks."""
    images = np.random.default_rng(seed).normal(size=(n, 8, 8)).astype(np.float32)
    return Batch(pa.record_batch({"image": pa.FixedShapeTensorArray.from_numpy_ndarray(images)}), source="contract")
