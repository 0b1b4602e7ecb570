"""Shared test set-up: headless matplotlib, deterministic torch, small thread pool (2-core machines)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def generator():
    """A seeded CPU generator: every random draw in a test goes through one."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny models: extra threads only add synchronisation (very slow on busy 2-core
    hosts). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
