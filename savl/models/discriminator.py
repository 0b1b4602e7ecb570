"""The U-Net discriminator with spectral normalisation used in the GAN stage (Real-ESRGAN §4.2).

Layout (written from the Real-ESRGAN paper's description): conv0 (no norm) -> three stride-2 4x4 convs
(C -> 2C -> 4C -> 8C) -> three 3x3 convs after bilinear x2 upsampling (8C -> 4C -> 2C -> C), each added to the
encoder feature of the same size when `skip` -> two more 3x3 convs -> a 3x3 conv to one logit per pixel. Every
conv but the first and the last is spectrally normalised (`torch.nn.utils.parametrizations.spectral_norm`);
activations are LeakyReLU(0.2). Upsampling goes to the skip feature's exact size, so any input size works and
the logits always have the input's spatial size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from savl.errors import ConfigError, ImageError


@dataclass
class DiscriminatorConfig:
    in_ch: int = 3
    base: int = 64
    skip: bool = True


class UNetDiscriminatorSN(nn.Module):
    """forward(x (B, in_ch, H, W)) -> per-pixel real/fake logits (B, 1, H, W)."""

    architecture = "UNetDiscriminatorSN"

    def __init__(self, in_ch: int = 3, base: int = 64, skip: bool = True):
        super().__init__()
        if in_ch < 1 or base < 1:
            raise ConfigError(f"UNetDiscriminatorSN: in_ch {in_ch} and base {base} must be positive")
        self.config = DiscriminatorConfig(in_ch, base, skip)
        self.skip = skip
        sn = spectral_norm
        c = base
        self.conv0 = nn.Conv2d(in_ch, c, 3, 1, 1)
        self.conv1 = sn(nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False))
        self.conv2 = sn(nn.Conv2d(2 * c, 4 * c, 4, 2, 1, bias=False))
        self.conv3 = sn(nn.Conv2d(4 * c, 8 * c, 4, 2, 1, bias=False))
        self.conv4 = sn(nn.Conv2d(8 * c, 4 * c, 3, 1, 1, bias=False))
        self.conv5 = sn(nn.Conv2d(4 * c, 2 * c, 3, 1, 1, bias=False))
        self.conv6 = sn(nn.Conv2d(2 * c, c, 3, 1, 1, bias=False))
        self.conv7 = sn(nn.Conv2d(c, c, 3, 1, 1, bias=False))
        self.conv8 = sn(nn.Conv2d(c, c, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(c, 1, 3, 1, 1)

    @staticmethod
    def _act(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.2)

    def _up(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_ch:
            raise ImageError(f"discriminator input must be (B, {self.config.in_ch}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 8:
            raise ImageError(f"discriminator input {tuple(x.shape[-2:])} is smaller than 8 pixels, the depth of the U")
        x0 = self._act(self.conv0(x))
        x1 = self._act(self.conv1(x0))
        x2 = self._act(self.conv2(x1))
        x3 = self._act(self.conv3(x2))
        x4 = self._act(self.conv4(self._up(x3, x2)))
        if self.skip:
            x4 = x4 + x2
        x5 = self._act(self.conv5(self._up(x4, x1)))
        if self.skip:
            x5 = x5 + x1
        x6 = self._act(self.conv6(self._up(x5, x0)))
        if self.skip:
            x6 = x6 + x0
        out = self._act(self.conv7(x6))
        out = self._act(self.conv8(out))
        return self.conv9(out)


def build_discriminator(config: DiscriminatorConfig) -> UNetDiscriminatorSN:
    """The discriminator described by `config` (what `savl.models.io.load_model` calls)."""
    return UNetDiscriminatorSN(config.in_ch, config.base, config.skip)
