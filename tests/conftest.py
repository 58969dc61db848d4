"""Shared pytest fixtures. Engine test helpers live in tests/streams.py."""

import os

import pytest

# The tests' models are tiny: one torch thread per process is faster than several waiting for
# each other, most of all when pytest-xdist runs one test process per core. Subprocesses
# (CLI runs, NAB workers) inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch
except ImportError:  # pragma: no cover - torch is a dependency; the engine tests run without it
    torch = None
else:
    torch.set_num_threads(1)


@pytest.fixture
def torch_one_thread():
    """Tiny convolutions on a 2-core machine: extra threads only wait for each other."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
