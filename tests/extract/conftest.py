"""Fixtures for the extraction tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: on a shared 2-core CPU it avoids OpenMP spin contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
