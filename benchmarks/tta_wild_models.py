"""Source models of benchmarks/tta_wild.py: a SmallResNet trained on clean renders,
cached outside the repository so reruns skip training.

The recipe: Adam, batch 64, a one-cycle schedule (15 % warm-up to ``max_lr``, cosine
decay to zero), a fixed number of steps, no augmentation (every render already draws
its font, size, rotation, offset, background and colours). The trained weights are
stored as a ``state_dict`` (read back with ``weights_only=True``) under
``$HEBBSTREAM_CACHE/tta_wild/``, keyed by the recipe, the architecture and the
training set's cache file, which itself names the rendering version, size, seed and
fonts.

Example (run from benchmarks/; tests/test_tta_wild_data.py checks the same)::

    from tta_wild_data import characters
    from tta_wild_models import source_model
    data = characters(256, seed=0)
    model, info = source_model(data, norm="group", width=4, stem_stride=2, steps=2, seed=0)
    info["cached"]        # False the first time, True afterwards
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import torch
from torch import nn
from tta_wild_data import CLASSES, cache_dir

from operators.tta.resnet import SmallResNet

VERSION = 1      # bump when the recipe changes (invalidates cached models)
MAX_LR = 3e-3
BATCH = 64


def train(x: torch.Tensor, y: torch.Tensor, norm: str, width: int, stem_stride: int, steps: int,
          seed: int) -> nn.Module:
    """Train a SmallResNet for ``steps`` Adam steps (see the module docstring); eval mode, CPU."""
    torch.manual_seed(seed)
    model = SmallResNet(3, len(CLASSES), width, norm, stem_stride)
    opt = torch.optim.Adam(model.parameters(), lr=MAX_LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, MAX_LR, total_steps=max(steps, 1), pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    done = 0
    while done < steps:
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
            done += 1
            if done == steps:
                break
    return model.eval()


def source_model(data: dict, norm: str, width: int, stem_stride: int, steps: int,
                 seed: int) -> tuple[nn.Module, dict]:
    """The model trained on ``data`` (a :func:`tta_wild_data.characters` set), from the
    cache when it holds one; ``info``: ``cached``, ``train_s`` (0 when cached), ``file``."""
    key = [VERSION, os.path.basename(data["cache"]), norm, width, stem_stride, steps, seed, MAX_LR, BATCH]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    path = os.path.join(cache_dir(), "tta_wild", f"source-{norm}-w{width}-s{stem_stride}-{steps}-{digest}.pt")
    model = SmallResNet(3, len(CLASSES), width, norm, stem_stride)
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval(), {"cached": True, "train_s": 0.0, "file": path}
    t0 = time.perf_counter()
    model = train(torch.from_numpy(data["images"]), torch.from_numpy(data["labels"]), norm, width, stem_stride,
                  steps, seed)
    seconds = time.perf_counter() - t0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model, {"cached": False, "train_s": seconds, "file": path}
