"""Shared pytest fixtures. Engine test helpers live in tests/streams.py."""

import pytest


@pytest.fixture
def torch_one_thread():
    """Tiny convolutions on a 2-core machine: extra threads only wait for each other."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
