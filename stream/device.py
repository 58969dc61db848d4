"""Where an operator runs: ``device = "auto"`` means the GPU when there is one, else the CPU.

torch is imported only when asked, so the engine runs without it.

Example:
    >>> from stream.device import torch_device, cuda_available
    >>> torch_device("cpu")
    device(type='cpu')
    >>> torch_device("auto").type == ("cuda" if cuda_available() else "cpu")
    True
"""

from __future__ import annotations

from typing import Any


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def torch_device(device: Any = "auto") -> Any:
    """The ``torch.device`` for ``device``: ``"auto"`` (or ``None``) picks CUDA when available."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
