"""Annealed checkpoints: the record of an annealed model, its file, and reading it back.

A record is a dict of plain values: ``format``, ``kind`` (``"branch"`` or ``"main"``),
``config`` (objective, column and model architecture), ``branched_at`` and ``step`` (main
run steps when the annealing began and ended), ``anneal_steps``, ``lr`` (the last rate),
``events``, ``model`` (state dict) and ``optimizer`` (state dict). A file holds one record
written with ``torch.save`` (under a temporary name, then renamed) and is read back with
``torch.load(weights_only=True)``: loading never runs code from the file.

Example:
    >>> import os, tempfile, torch
    >>> from operators.continual.annealed import make_record, save_record, load_annealed
    >>> from operators.continual.models import ByteLM
    >>> from operators.continual.training import Trainer
    >>> from operators.continual.schedules import ConstantLR
    >>> model = ByteLM(dim=8, layers=1)
    >>> opt = torch.optim.AdamW(model.parameters())
    >>> rec = make_record(Trainer(model, opt, ConstantLR(opt), None), "branch", {"objective": "next_token",
    ...                   "column": "text", **model.config()}, branched_at=0, step=5, events=80)
    >>> path = save_record(rec, tempfile.mkdtemp())
    >>> os.path.basename(path)
    'annealed-branch-step000000005.pt'
    >>> loaded, record = load_annealed(path)
    >>> record["anneal_steps"], type(loaded).__name__
    (5, 'ByteLM')
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from stream.errors import CheckpointError, ConfigError

from .models import StreamModel, build_model
from .training import Trainer

FORMAT = "hebbstream-annealed/1"


def make_record(
    trainer: Trainer, kind: str, config: dict[str, Any], branched_at: int | None, step: int, events: int
) -> dict[str, Any]:
    """The record of ``trainer``'s model and optimizer, on the CPU, detached from training."""
    return {
        "format": FORMAT,
        "kind": kind,
        "config": config,
        "branched_at": branched_at,
        "step": step,
        "anneal_steps": step - (branched_at or 0),
        "lr": trainer.lr,
        "events": events,
        "model": {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()},
        "optimizer": to_cpu(copy.deepcopy(trainer.optimizer.state_dict())),
    }


def save_record(record: dict[str, Any], folder: str) -> str:
    """Write ``record`` to ``folder/annealed-{kind}-step{step:09d}.pt`` atomically; returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"annealed-{record['kind']}-step{record['step']:09d}.pt")
    tmp = path + ".tmp"
    torch.save(record, tmp)
    os.replace(tmp, path)
    return path


def to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def model_from_record(record: dict[str, Any], device: Any = "cpu") -> StreamModel:
    config = {k: v for k, v in record["config"].items() if k not in ("objective", "column")}
    model = build_model(config)
    model.load_state_dict(record["model"])
    return model.to(device).eval()


def load_annealed(path: str, device: Any = "cpu") -> tuple[StreamModel, dict[str, Any]]:
    """Read an annealed checkpoint file: ``(model in eval mode, record)``.

    Loads with ``torch.load(weights_only=True)``: plain tensors and numbers, no code.
    """
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot read annealed checkpoint: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an annealed checkpoint ({FORMAT})")
    try:
        return model_from_record(record, device), record
    except (RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: annealed checkpoint does not fit its model: {exc}") from exc
