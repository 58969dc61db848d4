"""Small self-supervised models for continual pre-training on a stream.

- :class:`ByteLM`: a byte-level language model (GRU or tiny causal transformer) trained by
  next-byte prediction; every byte of a sample is predicted (a start token precedes it),
  so a one-byte sample is a valid sample. Samples longer than ``max_tokens`` bytes are
  cut to their first ``max_tokens`` bytes (the context length).
- :class:`MaskedAutoencoder`: masked reconstruction of vectors (or flattened images): a
  fixed fraction of the entries is hidden, the MLP reconstructs them, the loss is the
  mean squared error on the hidden entries.

Both share one protocol so the pretrainer treats them alike: ``prepare(sample,
generator)`` turns a raw sample (a 1-D NumPy array) into a training item (a tuple of
1-D arrays; the masked model draws the sample's mask here, from the generator given),
``losses(items)`` returns one loss per item and its weight (tokens or masked entries),
and ``config()`` names the architecture so a checkpoint from another model is refused.

Example:
    >>> import numpy as np, torch
    >>> from operators.continual.models import ByteLM, MaskedAutoencoder
    >>> torch.manual_seed(0) and None
    >>> lm = ByteLM(dim=16, layers=1, max_tokens=8)
    >>> items = [lm.prepare(np.frombuffer(b"hello world", np.uint8), None)]
    >>> loss, weight = lm.losses(items)
    >>> round(float(loss[0].detach()), 1), int(weight[0])   # ≈ ln 257 untrained; cut to 8 bytes
    (5.6, 8)
    >>> mae = MaskedAutoencoder(input_dim=6, dim=16, mask_ratio=0.5)
    >>> x, mask = mae.prepare(np.ones(6, np.float32), torch.Generator().manual_seed(0))
    >>> int(mask.sum())
    3
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from stream.errors import ConfigError

Item = tuple[np.ndarray, ...]

BOS = 256  # the start token: byte values are 0..255


class StreamModel(nn.Module):
    """The protocol of a model the :class:`ContinualPretrainer` can train."""

    #: "next_token" or "masked"
    objective = ""

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def prepare(self, sample: np.ndarray, generator: torch.Generator | None) -> Item:
        raise NotImplementedError

    def losses(self, items: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class _CausalBlock(nn.Module):
    """Pre-norm transformer block with causal self-attention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ByteLM(StreamModel):
    """Byte-level language model: embedding → GRU or causal transformer → next-byte logits.

    Args:
        dim: width of the embedding and hidden state.
        layers: GRU layers or transformer blocks.
        max_tokens: context length; longer samples are cut to their first bytes.
        kind: ``"gru"`` or ``"transformer"`` (learned positions, 4 heads when dim allows).
    """

    objective = "next_token"
    KINDS = ("gru", "transformer")

    def __init__(self, dim: int = 64, layers: int = 2, max_tokens: int = 128, kind: str = "gru"):
        super().__init__()
        if kind not in self.KINDS:
            raise ConfigError(f"ByteLM: unknown kind {kind!r}; choose one of {self.KINDS}")
        for name, v in (("dim", dim), ("layers", layers), ("max_tokens", max_tokens)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"ByteLM: {name} must be a whole number ≥ 1, got {v!r}")
        self.dim, self.layers, self.max_tokens, self.kind = dim, layers, max_tokens, kind
        self.embed = nn.Embedding(BOS + 1, dim)
        if kind == "gru":
            self.body = nn.GRU(dim, dim, num_layers=layers, batch_first=True)
        else:
            heads = 4 if dim % 4 == 0 else 1
            self.pos = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
            self.blocks = nn.ModuleList(_CausalBlock(dim, heads) for _ in range(layers))
            self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, BOS + 1)

    def config(self) -> dict[str, Any]:
        return {
            "model": "ByteLM",
            "kind": self.kind,
            "dim": self.dim,
            "layers": self.layers,
            "max_tokens": self.max_tokens,
        }

    def prepare(self, sample: np.ndarray, generator: torch.Generator | None) -> Item:
        return (np.ascontiguousarray(sample[: self.max_tokens], dtype=np.uint8),)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, 257]`` for input token ids ``[B, T]`` (start token first)."""
        h = self.embed(inputs)
        if self.kind == "gru":
            h = self.body(h)[0]
        else:
            t = inputs.shape[1]
            h = h + self.pos[:t]
            causal = torch.triu(torch.full((t, t), float("-inf"), device=h.device), diagonal=1)
            for block in self.blocks:
                h = block(h, causal)
            h = self.norm(h)
        return self.head(h)

    def losses(self, items: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean next-byte cross-entropy (nats per byte) of each sample, and its byte count."""
        lengths = np.fromiter((len(it[0]) for it in items), dtype=np.int64, count=len(items))
        width = int(lengths.max())
        targets = np.zeros((len(items), width), dtype=np.int64)
        for i, it in enumerate(items):
            targets[i, : lengths[i]] = it[0]
        dev = self.device
        tgt = torch.from_numpy(targets).to(dev)
        inp = torch.cat([torch.full((len(items), 1), BOS, dtype=torch.long, device=dev), tgt[:, :-1]], 1)
        lens = torch.from_numpy(lengths).to(dev)
        mask = torch.arange(width, device=dev)[None, :] < lens[:, None]
        ce = F.cross_entropy(self(inp).transpose(1, 2), tgt, reduction="none")
        per_sample = (ce * mask).sum(1) / lens
        return per_sample, lens.to(per_sample.dtype)


class MaskedAutoencoder(StreamModel):
    """Masked reconstruction of fixed-size vectors with an MLP.

    The input is the vector with hidden entries zeroed, concatenated with the mask; the
    loss is the mean squared error on the hidden entries.

    Args:
        input_dim: entries per sample (an image is flattened).
        dim: hidden width; layers: hidden layers.
        mask_ratio: fraction of entries hidden per sample (at least one).
    """

    objective = "masked"

    def __init__(self, input_dim: int, dim: int = 64, layers: int = 2, mask_ratio: float = 0.5):
        super().__init__()
        for name, v in (("input_dim", input_dim), ("dim", dim), ("layers", layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"MaskedAutoencoder: {name} must be a whole number ≥ 1, got {v!r}")
        if not (0.0 < mask_ratio < 1.0):
            raise ConfigError(f"MaskedAutoencoder: mask_ratio must be in (0, 1), got {mask_ratio!r}")
        self.input_dim, self.dim, self.layers, self.mask_ratio = input_dim, dim, layers, mask_ratio
        self.hidden_count = max(1, math.floor(mask_ratio * input_dim + 0.5))
        width = [2 * input_dim] + [dim] * layers
        mods: list[nn.Module] = []
        for a, b in zip(width[:-1], width[1:], strict=True):
            mods += [nn.Linear(a, b), nn.GELU()]
        self.body = nn.Sequential(*mods, nn.Linear(width[-1], input_dim))

    def config(self) -> dict[str, Any]:
        return {
            "model": "MaskedAutoencoder",
            "input_dim": self.input_dim,
            "dim": self.dim,
            "layers": self.layers,
            "mask_ratio": self.mask_ratio,
        }

    def prepare(self, sample: np.ndarray, generator: torch.Generator | None) -> Item:
        hidden = torch.randperm(self.input_dim, generator=generator)[: self.hidden_count].numpy()
        mask = np.zeros(self.input_dim, dtype=np.uint8)
        mask[hidden] = 1
        return (np.ascontiguousarray(sample, dtype=np.float32), mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[B, D]`` of ``x`` with the entries where ``mask`` is 1 hidden."""
        return self.body(torch.cat([x * (1 - mask), mask], 1))

    def losses(self, items: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared error on the hidden entries of each sample, and their count."""
        dev = self.device
        x = torch.from_numpy(np.stack([it[0] for it in items])).to(dev)
        mask = torch.from_numpy(np.stack([it[1] for it in items])).to(dev, torch.float32)
        err = (self(x, mask) - x).square() * mask
        count = mask.sum(1)
        return err.sum(1) / count, count


def build_model(config: dict[str, Any]) -> StreamModel:
    """Rebuild a model from its :meth:`StreamModel.config` (for annealed checkpoints).

    >>> build_model(ByteLM(dim=8, layers=1).config()).config()["dim"]
    8
    """
    kwargs = dict(config)
    name = kwargs.pop("model", None)
    classes = {"ByteLM": ByteLM, "MaskedAutoencoder": MaskedAutoencoder}
    if name not in classes:
        raise ConfigError(f"unknown model {name!r} in config {config}; known: {sorted(classes)}")
    return classes[name](**kwargs)
