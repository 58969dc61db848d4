"""ContinualPretrainer: self-supervised pre-training on a stream, infinite LR schedule.

The operator trains a small model on the samples of one column as they pass: next-byte
prediction for text (a string or binary column; the tokens are the UTF-8 bytes) or masked
reconstruction for vectors and images (a list, fixed-size-list or fixed-shape-tensor
column). It trains in micro-batches of its own ``batch_size``: incoming events are
buffered until a micro-batch is full, so how the runtime cuts the stream never changes
what is learned (``batch_size_dependent = True`` only tells the contract check to keep
that size; outputs agree for any runtime cut).

Outputs per event, prequentially (computed before the model learns from the event):
``loss`` (nats per byte, or mean squared error on the hidden entries) and ``lr`` (the
rate of the update that will learn from the event).

The schedule is :class:`~operators.continual.schedules.InfiniteLR` by default: warmup
once, cooldown, then constant for ever; new data never re-warms it. Annealed
checkpoints, the deployable low-loss models, come two ways:

- **branch** (Ibrahim et al.): a deep copy of model and optimizer is annealed from the
  current rate to η_min over ``anneal_steps`` micro-batches, trained on the same
  micro-batches as the main run, while the main run stays at η_const. The branch has
  its own random generator, so the main run's next steps are bit-identical to a run that
  took no checkpoint. Start one every ``anneal_every_steps`` steps, every
  ``anneal_every_seconds`` seconds (wall clock, so not reproducible), or by calling
  :meth:`ContinualPretrainer.request_annealed_checkpoint`.
- **main run** (end of a task): :meth:`ContinualPretrainer.anneal_main` anneals the main
  run itself over ``anneal_steps`` steps, then it continues at η_const.

A finished annealed model is kept in memory (:meth:`~ContinualPretrainer.annealed_model`)
and, when ``checkpoint_dir`` is set, written there as
``annealed-{branch|main}-step{NNNNNNNNN}.pt`` (the main run's step count when it was
finished; written atomically): a ``torch.save`` of plain state dicts, read back with
:func:`load_annealed` (``torch.load(weights_only=True)``, no code runs).

Example:
    >>> import pyarrow as pa
    >>> from stream import Batch
    >>> from operators.continual import ContinualPretrainer
    >>> op = ContinualPretrainer("text", dim=16, layers=1, batch_size=4, lr=1e-2,
    ...                          warmup_steps=2, cooldown_steps=4, anneal_steps=3, seed=0)
    >>> texts = ["the cat sat on the mat", "def f(x): return x", "#include <stdio.h>"] * 8
    >>> out = op(Batch(pa.record_batch({"text": texts})))
    >>> out.column_names, op.steps
    (['text', 'loss', 'lr'], 6)
    >>> round(float(out.numpy("loss")[0]), 1)          # untrained: about ln 257
    5.5
    >>> op.request_annealed_checkpoint()               # branch now; ready 3 steps later
    >>> _ = op(Batch(pa.record_batch({"text": texts})))
    >>> op.annealed["kind"], op.annealed["branched_at"], op.annealed["anneal_steps"]
    ('branch', 6, 3)
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from stream import Batch, Operator
from stream.device import torch_device
from stream.errors import CheckpointError, ConfigError, SchemaError
from stream.tensors import tensor_numpy
from stream.testing import UnitTest

from .annealed import load_annealed, make_record, model_from_record, save_record
from .columns import as_sample, is_text, text_bytes, text_lengths, vector_type
from .models import ByteLM, Item, MaskedAutoencoder, StreamModel
from .replay import ReplayBuffer
from .schedules import SCHEDULES, InfiniteLR, make_schedule
from .training import Branch, Trainer, branch_seed, held_out_loss, pack_items, unpack_items

log = logging.getLogger("hebbstream.continual")

OBJECTIVES = ("next_token", "masked")


class ContinualPretrainer(Operator):
    """Continual self-supervised pre-training of a small model on a stream column.

    Args:
        column: the input column: text (string or binary) for ``next_token``; vectors or
            tensors for ``masked``.
        objective: ``"next_token"`` (byte-level LM) or ``"masked"`` (masked reconstruction).
        input_dim: entries per sample for ``masked`` (an image is flattened).
        model: ``"gru"`` or ``"transformer"`` for the byte LM (ignored for ``masked``).
        dim, layers: model width and depth.
        max_tokens: LM context length; longer texts are cut to their first bytes.
        mask_ratio: fraction of entries hidden per sample for ``masked``.
        batch_size: samples per training micro-batch (new samples, replay comes on top).
        lr: η_max; weight_decay, betas: AdamW's.
        clip_grad_norm: gradient-norm clipping (``None`` for none).
        schedule: ``"infinite"`` (default), ``"constant"``, ``"repeated_cosine"`` or ``"wsd"``.
        warmup_steps, cooldown_steps, cooldown, const_ratio, min_ratio, anneal_steps:
            the infinite schedule (see :class:`~operators.continual.schedules.InfiniteLR`);
            ``warmup_steps`` and ``min_ratio`` also serve the other schedules.
        schedule_args: more arguments for the schedule (``cycle_steps`` for repeated
            cosine, ``total_steps`` and ``decay_steps`` for WSD, ``alpha``).
        anneal_every_steps / anneal_every_seconds: start an annealed branch that often.
        checkpoint_dir: folder for annealed checkpoints (``None``: keep the last in memory).
        replay_capacity: reservoir size of the replay buffer (0: no replay).
        replay_per_batch: replayed samples added to every micro-batch.
        seed: seeds model initialisation, masks and replay.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        loss_column, lr_column: names of the output columns.
    """

    batch_size_dependent = True

    @classmethod
    def _unit_test_params(cls) -> list[UnitTest]:
        tiny = {"dim": 16, "layers": 1, "max_tokens": 24, "batch_size": 4, "lr": 1e-2, "warmup_steps": 2,
                "cooldown_steps": 3, "anneal_steps": 3, "seed": 3, "device": "cpu"}
        return [UnitTest({"column": "text", **tiny}, _unit_test_texts, batch_size=4, rtol=1e-5, atol=1e-6),
                UnitTest({"column": "x", "objective": "masked", "input_dim": 6, **tiny, "max_tokens": 8,
                          "replay_capacity": 8, "replay_per_batch": 2}, _unit_test_vectors,
                         batch_size=4, rtol=1e-5, atol=1e-6)]

    def __init__(
        self,
        column: str = "text",
        objective: str = "next_token",
        *,
        input_dim: int | None = None,
        model: str = "gru",
        dim: int = 64,
        layers: int = 2,
        max_tokens: int = 128,
        mask_ratio: float = 0.5,
        batch_size: int = 16,
        lr: float = 3e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        clip_grad_norm: float | None = 1.0,
        schedule: str = "infinite",
        warmup_steps: int = 100,
        cooldown_steps: int = 400,
        cooldown: str = "cosine",
        const_ratio: float = 0.25,
        min_ratio: float = 0.01,
        anneal_steps: int = 100,
        schedule_args: dict[str, Any] | None = None,
        anneal_every_steps: int | None = None,
        anneal_every_seconds: float | None = None,
        checkpoint_dir: str | None = None,
        replay_capacity: int = 0,
        replay_per_batch: int = 0,
        seed: int = 0,
        device: str = "auto",
        loss_column: str = "loss",
        lr_column: str = "lr",
    ):
        me = "ContinualPretrainer"
        if objective not in OBJECTIVES:
            raise ConfigError(f"{me}: unknown objective {objective!r}; choose one of {OBJECTIVES}")
        if objective == "masked" and input_dim is None:
            raise ConfigError(f"{me}: objective 'masked' needs input_dim (entries per sample)")
        for name, v, low in (
            ("batch_size", batch_size, 1),
            ("replay_capacity", replay_capacity, 0),
            ("replay_per_batch", replay_per_batch, 0),
            ("anneal_steps", anneal_steps, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{me}: {name} must be a whole number ≥ {low}, got {v!r}")
        if replay_per_batch and not replay_capacity:
            raise ConfigError(f"{me}: replay_per_batch={replay_per_batch} needs replay_capacity > 0")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ConfigError(f"{me}: lr must be > 0, got {lr!r}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"{me}: unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
        if schedule != "infinite" and (anneal_every_steps or anneal_every_seconds):
            raise ConfigError(f"{me}: annealed checkpoints need schedule='infinite', not {schedule!r}")
        if anneal_every_steps is not None and (not isinstance(anneal_every_steps, int) or anneal_every_steps < 1):
            raise ConfigError(f"{me}: anneal_every_steps must be a whole number ≥ 1, got {anneal_every_steps!r}")
        if anneal_every_seconds is not None and not anneal_every_seconds > 0:
            raise ConfigError(f"{me}: anneal_every_seconds must be > 0, got {anneal_every_seconds!r}")
        self.column, self.objective, self.input_dim = column, objective, input_dim
        self.model_kind, self.dim, self.layers = model, dim, layers
        self.max_tokens, self.mask_ratio = max_tokens, mask_ratio
        self.batch_size, self.lr, self.weight_decay = batch_size, float(lr), float(weight_decay)
        self.betas = tuple(float(b) for b in betas)
        self.clip_grad_norm = clip_grad_norm
        self.schedule = schedule
        self.schedule_kwargs = self._schedule_kwargs(
            schedule,
            dict(
                warmup_steps=warmup_steps,
                cooldown_steps=cooldown_steps,
                cooldown=cooldown,
                const_ratio=const_ratio,
                min_ratio=min_ratio,
                anneal_steps=anneal_steps,
            ),
            schedule_args or {},
        )
        self.anneal_steps = anneal_steps
        self.anneal_every_steps, self.anneal_every_seconds = (
            anneal_every_steps,
            anneal_every_seconds,
        )
        self.checkpoint_dir = checkpoint_dir
        self.replay_per_batch, self.seed = replay_per_batch, seed
        self.loss_column, self.lr_column = loss_column, lr_column
        self.device = torch_device(device)

        self.model = self._new_model()
        self.main = self._new_trainer(self.model)  # validates the schedule arguments now
        self.replay = ReplayBuffer(replay_capacity)
        self._rng = torch.Generator().manual_seed(seed)
        self._pending: list[Item] = []
        self.branches: list[Branch] = []
        self.steps = self.events = self.samples_trained = 0
        self.weight_trained = 0.0  # tokens (LM) or hidden entries (masked) trained on
        self.branch_count = 0
        self.main_annealing = False
        self.annealed: dict[str, Any] | None = None
        self.annealed_paths: list[str] = []
        self.train_seconds = 0.0
        self._last_branch_time = time.monotonic()

    # -- construction -----------------------------------------------------------------
    @staticmethod
    def _schedule_kwargs(schedule: str, infinite: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        if schedule == "infinite":
            return {**infinite, **extra}
        base = {"warmup_steps": infinite["warmup_steps"]}
        if schedule != "constant":
            base["min_ratio"] = infinite["min_ratio"]
        return {**base, **extra}

    def _new_model(self) -> StreamModel:
        # seed a private copy of the global RNG: building a model consumes no one else's draws
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.objective == "next_token":
                model: StreamModel = ByteLM(
                    dim=self.dim,
                    layers=self.layers,
                    max_tokens=self.max_tokens,
                    kind=self.model_kind,
                )
            else:
                model = MaskedAutoencoder(self.input_dim, dim=self.dim, layers=self.layers, mask_ratio=self.mask_ratio)
        return model.to(self.device)

    def _new_trainer(self, model: StreamModel) -> Trainer:
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        return Trainer(
            model,
            opt,
            make_schedule(self.schedule, opt, **self.schedule_kwargs),
            self.clip_grad_norm,
        )

    def config(self) -> dict[str, Any]:
        """What a checkpoint must match: the objective and the model architecture."""
        return {"objective": self.objective, "column": self.column, **self.model.config()}

    # -- input --------------------------------------------------------------------------
    def required_columns(self) -> dict[str, str]:
        return {self.column: "any"}

    def validate_schema(self, schema: pa.Schema, source: str = "") -> None:
        super().validate_schema(schema, source)
        typ = schema.field(self.column).type
        where = f"{source or '<stream>'}: {self.name}"
        if self.objective == "next_token":
            if not is_text(typ):
                raise SchemaError(
                    f"{where} (next_token) needs column {self.column!r} of text (string or binary), got {typ}"
                )
            return
        value_type, size = vector_type(typ)
        if value_type is None or not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
            raise SchemaError(
                f"{where} (masked) needs column {self.column!r} of numeric vectors "
                f"(list, fixed-size list or fixed-shape tensor), got {typ}"
            )
        if size is not None and size != self.input_dim:
            raise SchemaError(
                f"{where}: column {self.column!r} holds vectors of {size} values, "
                f"the model takes input_dim={self.input_dim}"
            )

    def check_rows(self, batch: Batch) -> tuple[np.ndarray, list[str]] | None:
        found = super().check_rows(batch)
        reasons: dict[int, str] = {}
        if found is not None:
            reasons = dict(zip(np.flatnonzero(found[0]).tolist(), found[1], strict=True))
        col = self.column
        if self.objective == "next_token":
            lengths = text_lengths(batch.column(col))
            for i in np.flatnonzero(lengths == 0).tolist():
                reasons.setdefault(i, f"column {col!r} is empty: a text sample needs at least one byte")
        else:
            arr = batch.column(col)
            if not isinstance(arr.type, pa.FixedShapeTensorType) and not pa.types.is_fixed_size_list(arr.type):
                lengths = pa.compute.list_value_length(arr).to_numpy(zero_copy_only=False)
                for i in np.flatnonzero(lengths != self.input_dim).tolist():
                    reasons.setdefault(
                        i,
                        f"column {col!r} has {lengths[i]} values, the model takes input_dim={self.input_dim}",
                    )
            if not reasons:
                values = self._vectors(batch)
                for i in np.flatnonzero(~np.isfinite(values).all(axis=1)).tolist():
                    reasons.setdefault(i, f"column {col!r} holds a value that is not a finite number")
        if not reasons:
            return None
        bad = np.zeros(batch.num_rows, dtype=bool)
        bad[list(reasons)] = True
        return bad, [reasons[i] for i in np.flatnonzero(bad).tolist()]

    def _vectors(self, batch: Batch) -> np.ndarray:
        arr = batch.column(self.column)
        if isinstance(arr.type, pa.FixedShapeTensorType):
            values = tensor_numpy(arr)  # honours a permuted layout from another producer
        else:
            values = arr.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=np.float32).reshape(batch.num_rows, -1)

    def _samples(self, batch: Batch) -> list[np.ndarray]:
        """Each row as a 1-D array: UTF-8 bytes of a text, or the float32 values of a vector."""
        if self.objective == "next_token":
            return text_bytes(batch.column(self.column))
        return list(self._vectors(batch))

    # -- the stream ----------------------------------------------------------------------
    def process(self, batch: Batch) -> Batch:
        samples = self._samples(batch)
        n = len(samples)
        losses = np.empty(n, dtype=np.float64)
        lrs = np.empty(n, dtype=np.float64)
        i = 0
        while i < n:
            take = min(self.batch_size - len(self._pending), n - i)
            items = [self.model.prepare(s, self._rng) for s in samples[i : i + take]]
            lrs[i : i + take] = self.main.lr
            if len(self._pending) + take == self.batch_size:
                before = len(self._pending)
                losses[i : i + take] = self._train(self._pending + items)[before:]
                self._pending = []
            else:
                with torch.no_grad():
                    losses[i : i + take] = self.model.losses(items)[0].cpu().numpy()
                self._pending.extend(items)
            i += take
        self.events += n
        return batch.with_columns({self.loss_column: losses, self.lr_column: lrs})

    def _train(self, items: list[Item]) -> np.ndarray:
        """One micro-batch: main step, branch steps, replay update, checkpoint triggers."""
        t0 = time.perf_counter()
        k = self.replay_per_batch
        replay = [self.model.prepare(s, self._rng) for s in self.replay.sample(k, self._rng)]
        losses = self.main.step(items + replay)[: len(items)].cpu().numpy()
        for br in self.branches:
            br_replay = [self.model.prepare(s, br.generator) for s in self.replay.sample(k, br.generator)]
            br.trainer.step(items + br_replay)
            br.steps_left -= 1
        self.replay.add([it[0] for it in items], self._rng)
        self.steps += 1
        self.samples_trained += len(items)
        self.weight_trained += float(
            sum(len(it[-1]) if self.objective == "next_token" else int(it[1].sum()) for it in items)
        )
        for br in [b for b in self.branches if b.steps_left == 0]:
            self.branches.remove(br)
            self._finish("branch", br.trainer, br.branched_at)
        if self.main_annealing and not self.main.scheduler.annealing:
            self.main_annealing = False
            self._finish("main", self.main, self.main.scheduler.anneal_start)
        if self.anneal_every_steps and self.steps % self.anneal_every_steps == 0:
            self._start_branch(strict=False)
        if self.anneal_every_seconds and time.monotonic() - self._last_branch_time >= self.anneal_every_seconds:
            self._start_branch(strict=False)
        self.train_seconds += time.perf_counter() - t0
        return losses

    # -- annealing ----------------------------------------------------------------------
    def _need_infinite(self, what: str) -> InfiniteLR:
        if not isinstance(self.main.scheduler, InfiniteLR):
            raise ConfigError(f"{self.name}: {what} needs schedule='infinite', this one is {self.schedule!r}")
        return self.main.scheduler

    def request_annealed_checkpoint(self) -> None:
        """Branch now: anneal a copy of model and optimizer over the next ``anneal_steps``
        micro-batches while the main run stays at its rate. The result lands in
        :attr:`annealed` (and ``checkpoint_dir``) when the branch has taken its steps."""
        self._start_branch(strict=True)

    def anneal_main(self, steps: int | None = None) -> None:
        """Anneal the main run itself over ``steps`` (default ``anneal_steps``) micro-batches,
        for the end of a task; it then continues at η_const (no re-warming)."""
        self._need_infinite("anneal_main").anneal(steps, then="constant")
        self.main_annealing = True

    def _start_branch(self, strict: bool) -> None:
        sched = self._need_infinite("an annealed checkpoint")
        self._last_branch_time = time.monotonic()
        if sched.annealing:
            msg = (
                f"{self.name}: the main run is annealing (since step {sched.anneal_start}); "
                "its end is the annealed checkpoint, no branch taken"
            )
            if strict:
                raise ConfigError(msg)
            log.info(msg)
            return
        trainer = self._fork()
        trainer.scheduler.anneal(self.anneal_steps, then="hold")
        self.branch_count += 1
        gen = torch.Generator().manual_seed(branch_seed(self.seed, self.branch_count))
        self.branches.append(Branch(trainer, gen, self.steps, self.anneal_steps))

    def _fork(self) -> Trainer:
        """A deep copy of the main run (model, optimizer state, schedule position)."""
        model = copy.deepcopy(self.model)
        trainer = self._new_trainer(model)
        trainer.load_state_dict(copy.deepcopy(self.main.state_dict()))
        return trainer

    def _finish(self, kind: str, trainer: Trainer, branched_at: int | None) -> None:
        record = make_record(trainer, kind, self.config(), branched_at, self.steps, self.events)
        self.annealed = record
        if self.checkpoint_dir:
            path = save_record(record, self.checkpoint_dir)
            self.annealed_paths.append(path)
            log.info("annealed checkpoint %s", path)

    def annealed_model(self) -> StreamModel | None:
        """The latest annealed model (in eval mode), or ``None`` before the first one."""
        return None if self.annealed is None else model_from_record(self.annealed, self.device)

    def evaluate(self, samples: list[Any], model: StreamModel | None = None, batch_size: int = 64) -> float:
        """Held-out loss (weighted by tokens or hidden entries) of texts or vectors, without
        learning; the masked objective uses masks from a fixed seed so calls are comparable."""
        return held_out_loss(
            model or self.model,
            [as_sample(s, self.objective) for s in samples],
            batch_size=batch_size,
        )

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config(),
            "main": self.main.state_dict(),
            "rng": self._rng.get_state(),
            "pending": pack_items(self._pending),
            "replay": self.replay.state_dict(),
            "branches": [
                {
                    "trainer": b.trainer.state_dict(),
                    "rng": b.generator.get_state(),
                    "branched_at": b.branched_at,
                    "steps_left": b.steps_left,
                }
                for b in self.branches
            ],
            "counters": {
                "steps": self.steps,
                "events": self.events,
                "samples_trained": self.samples_trained,
                "weight_trained": self.weight_trained,
                "branch_count": self.branch_count,
                "main_annealing": self.main_annealing,
            },
            "annealed_paths": list(self.annealed_paths),
        }

    def _check_config(self, saved: Any, where: str) -> None:
        mine = self.config()
        if saved != mine:
            saved = saved if isinstance(saved, dict) else {}
            diff = sorted(k for k in set(mine) | set(saved) if saved.get(k) != mine.get(k))
            raise CheckpointError(
                f"{where}: checkpoint is for another model: differs in {diff} (checkpoint {saved}, operator {mine})"
            )

    def init_from(self, path: str) -> None:
        """Start the main run from the weights of an annealed checkpoint file of the same
        model (optimizer and schedule start fresh); another model's file is refused."""
        _, record = load_annealed(path)
        self._check_config(record["config"], f"{self.name} init_from {path}")
        self.model.load_state_dict(record["model"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_config(state.get("config") if isinstance(state, dict) else None, self.name)
        self.main.load_state_dict(state["main"])
        self._rng.set_state(state["rng"])
        self._pending = unpack_items(state["pending"])
        self.replay.load_state_dict(state["replay"])
        self.branches = []
        for b in state["branches"]:
            trainer = self._new_trainer(copy.deepcopy(self.model))
            trainer.load_state_dict(b["trainer"])
            gen = torch.Generator()
            gen.set_state(b["rng"])
            self.branches.append(Branch(trainer, gen, int(b["branched_at"]), int(b["steps_left"])))
        c = state["counters"]
        self.steps, self.events = int(c["steps"]), int(c["events"])
        self.samples_trained, self.weight_trained = (
            int(c["samples_trained"]),
            float(c["weight_trained"]),
        )
        self.branch_count, self.main_annealing = int(c["branch_count"]), bool(c["main_annealing"])
        self.annealed_paths = list(state["annealed_paths"])

    def to(self, device: Any) -> ContinualPretrainer:
        self.device = torch.device(device)
        for trainer in [self.main, *(b.trainer for b in self.branches)]:
            trainer.model.to(self.device)
            # reloading the optimizer state moves it next to the parameters
            trainer.optimizer.load_state_dict(trainer.optimizer.state_dict())
        return self

    def summary(self) -> dict[str, Any]:
        """Figures for the run summary."""
        unit = "tokens" if self.objective == "next_token" else "masked_values"
        return {
            "steps": self.steps,
            "events": self.events,
            "samples_trained": self.samples_trained,
            unit: self.weight_trained,
            "lr": self.main.lr,
            "train_seconds": self.train_seconds,
            f"{unit}_per_s": self.weight_trained / self.train_seconds if self.train_seconds else None,
            "annealed_checkpoints": self.annealed_paths,
            "branches_running": len(self.branches),
        }


def _unit_test_texts(n: int = 40) -> Batch:
    """Short texts of several kinds: input for the contract checks."""
    texts = ["the cat sat on the mat.", "def f(x):\n    return x + 1", "#include <stdio.h>", "import os", "a",
             "ünïcödé text"]
    return Batch(pa.record_batch({"text": [texts[i % len(texts)] + str(i) for i in range(n)]}), source="contract")


def _unit_test_vectors(n: int = 40, dim: int = 6, seed: int = 0) -> Batch:
    """Random vectors as a fixed-shape tensor column: input for the contract checks."""
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return Batch(pa.record_batch({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(x)}), source="contract")
