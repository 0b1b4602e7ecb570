"""Shared test set-up: headless matplotlib, deterministic torch, small thread pool (2-core machines)."""

import dataclasses
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


class TinyX4(torch.nn.Module):
    """A one-convolution x4 network that the CLI tests save and load like any savl model file."""

    architecture = "TestTinyX4"

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.scale = 4
        self.conv = torch.nn.Conv2d(3, 48, 3, padding=1)
        self.shuffle = torch.nn.PixelShuffle(4)

    def forward(self, x):
        return torch.sigmoid(self.shuffle(self.conv(x)))


@dataclasses.dataclass
class TinyX4Config:
    width: int = 48


def save_tiny_x4(path):
    """Register TinyX4 and save one (seeded) to `path`; returns the written path."""
    from savl.models.io import register_architecture, save_model

    register_architecture(TinyX4.architecture, TinyX4, TinyX4Config)
    torch.manual_seed(0)
    return save_model(TinyX4(TinyX4Config()), path)
