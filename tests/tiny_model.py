"""A one-convolution x4 network that the CLI tests save and load like any savl model file (imported by
test_cli, test_cli_sr and test_write_safety; a module of its own because conftest names clash across folders)."""

import dataclasses

import torch


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
