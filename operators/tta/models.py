"""Small CNN classifiers for test-time adaptation, and loading one from a file.

A TOML pipeline cannot hold a Python ``nn.Module``, so TTA operators also accept
``model_path`` (a ``torch.save(model.state_dict())`` file) plus ``arch``, a name in
:data:`ARCHITECTURES`. Weights are read with ``torch.load(weights_only=True)``, which
never executes code from the file.

Example:
    >>> import os, tempfile, torch
    >>> from operators.tta.models import build_model, load_model
    >>> net = build_model("small_cnn", width=4)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save(net.state_dict(), path)
    >>> load_model(path, "small_cnn", {"width": 4})(torch.zeros(1, 1, 8, 8)).shape
    torch.Size([1, 10])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stream.errors import ConfigError

from .resnet import SmallResNet


class SmallCNN(nn.Module):
    """conv-BN-ReLU ×3 (one 2× max-pool), global average pool, linear head.

    Works for any image size ≥ 2×2 (8×8 digits, 28×28 MNIST): the pool is global.

    Args:
        in_channels: image channels (1 for grayscale).
        num_classes: outputs of the linear head.
        width: channels of the first convolution (then 2×, 4×).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * w)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.head(x.mean(dim=(2, 3)))


#: name -> constructor; keyword arguments come from ``arch_params``.
ARCHITECTURES: dict[str, type[nn.Module]] = {"small_cnn": SmallCNN, "small_resnet": SmallResNet}


def build_model(arch: str, **params: Any) -> nn.Module:
    """An untrained model of architecture ``arch`` (see :data:`ARCHITECTURES`)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown model architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    try:
        return ARCHITECTURES[arch](**params)
    except TypeError as exc:
        raise ConfigError(f"architecture {arch!r} cannot be built from {params}: {exc}") from exc


def load_model(path: str, arch: str, arch_params: dict[str, Any] | None = None) -> nn.Module:
    """Build ``arch`` and load the state dict saved at ``path`` (no code is executed)."""
    model = build_model(arch, **(arch_params or {}))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"model_path {path}: no such file") from exc
    except Exception as exc:  # torch raises several types for a file that is not a state dict
        raise ConfigError(f"model_path {path}: not a torch.save(state_dict) file: {exc}") from exc
    if not isinstance(state, dict):
        raise ConfigError(f"model_path {path}: holds a {type(state).__name__}, expected a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"model_path {path}: weights do not fit architecture {arch!r} "
                          f"{arch_params or {}}: {exc}") from exc
    return model.eval()


def train_classifier(model: nn.Module, x: Any, y: Any, *, epochs: int, seed: int, lr: float = 3e-3,
                     batch_size: int = 64) -> nn.Module:
    """Train ``model`` on images ``x`` (N, H, W) with labels ``y``: Adam, cross-entropy, shuffled
    mini-batches from a generator seeded with ``seed``; returns it in eval mode. (The caller
    seeds the weights' initialisation: ``torch.manual_seed`` before building the model.)

    The source model of the benchmarks and tests: what a deployment would have trained on
    clean data before test-time adaptation starts.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((32, 8, 8), dtype=np.float32), rng.integers(0, 10, 32)
    >>> train_classifier(build_model("small_cnn", width=4), x, y, epochs=1, seed=0).training
    False
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.as_tensor(x).unsqueeze(1), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()
