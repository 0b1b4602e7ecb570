"""The likelihood p(y | z, r): re-degrades a clean HR image with a degradation code (paper A.4).

Pipeline: a fixed 9x9 Gaussian blur (sigma 9.0) splits the HR image x into a low-frequency base and a
high-frequency condition (x = base + condition); both are brought to LR resolution ("encoding scale 0.25") by
pixel-unshuffle, which is lossless, so the code decides what survives the degradation; SFT layers fuse the
code r into an RRDB trunk; a 3-channel head predicts the LR image as a residual over the area-downsampled base.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ConfigError, ImageError
from savl.models.blocks import RRDB, SFTLayer


@dataclass
class DecoderConfig:
    """Decoder sizes for the "paper", "book" and "smoke" profiles; paper: 8 RRDBs, growth 32, residual scale 0.2, x4."""

    in_channels: int = 3
    code_dim: int = 64
    channels: int = 64
    num_blocks: int = 8
    growth: int = 32
    res_scale: float = 0.2
    scale: int = 4
    blur_size: int = 9
    blur_sigma: float = 9.0
    # A head that predicts the Laplace scale b per LR pixel and colour channel (Eq. 13 with b learned instead
    # of fixed): off in the paper's decoder; `rec: laplace` switches it on.
    learned_scale: bool = False

    def __post_init__(self):
        if self.scale < 1 or self.num_blocks < 1 or self.channels < 1 or self.blur_size % 2 == 0:
            raise ConfigError(f"DecoderConfig: scale, num_blocks, channels >= 1 and an odd blur_size needed ({self})")

    @classmethod
    def paper(cls) -> DecoderConfig:
        return cls(code_dim=64, channels=64, num_blocks=8, growth=32)

    @classmethod
    def book(cls) -> DecoderConfig:
        return cls(code_dim=64, channels=32, num_blocks=2, growth=16)

    @classmethod
    def smoke(cls) -> DecoderConfig:
        return cls(code_dim=8, channels=16, num_blocks=1, growth=8)

    @classmethod
    def profile(cls, name: str) -> DecoderConfig:
        if name not in ("paper", "book", "smoke"):
            raise ConfigError(f"unknown profile {name!r} (use paper, book or smoke)")
        return getattr(cls, name)()


def frequency_split(hr: torch.Tensor, size: int = 9, sigma: float = 9.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(base, condition): base = Gaussian blur of hr (reflect border), condition = hr - base (paper A.4)."""
    base = kornia.filters.gaussian_blur2d(hr, (size, size), (sigma, sigma), border_type="reflect")
    return base, hr - base


class Decoder(nn.Module):
    """p(y | z, r): `forward(hr (B,3,H,W), code (B,m,h,w)) -> y_hat (B,3,h,w)` with H = scale*h, W = scale*w."""

    architecture = "Decoder"

    def __init__(self, config: DecoderConfig | None = None):
        super().__init__()
        self.config = c = config or DecoderConfig()
        unshuffled = c.in_channels * c.scale**2
        self.head = nn.Conv2d(2 * unshuffled, c.channels, 3, padding=1)
        self.code_net = nn.Sequential(
            nn.Conv2d(c.code_dim, c.channels, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(c.channels, c.channels, 1)
        )
        self.sft = nn.ModuleList(SFTLayer(c.channels, c.channels) for _ in range(c.num_blocks))
        self.blocks = nn.ModuleList(RRDB(c.channels, c.growth, c.res_scale) for _ in range(c.num_blocks))
        self.body_out = nn.Conv2d(c.channels, c.channels, 3, padding=1)
        self.tail = nn.Sequential(
            nn.Conv2d(c.channels, c.channels, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(c.channels, 3, 3, padding=1)
        )
        self.log_scale = None
        if c.learned_scale:
            self.log_scale = nn.Sequential(
                nn.Conv2d(c.channels, c.channels, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(c.channels, 3, 1)
            )
            # Start near b = 0.05 (a typical |y - y_hat| of an untrained decoder on [0, 1] images).
            nn.init.zeros_(self.log_scale[-1].weight)
            nn.init.constant_(self.log_scale[-1].bias, -3.0)

    def forward(self, hr: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """The predicted LR image (the Laplace location)."""
        return self.forward_with_scale(hr, code)[0]

    def forward_with_scale(self, hr: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(location, log b): log b is None unless `learned_scale`."""
        c = self.config
        if hr.dim() != 4 or code.dim() != 4 or hr.shape[1] != c.in_channels or code.shape[1] != c.code_dim:
            raise ImageError(
                f"decoder needs hr (B,{c.in_channels},H,W) and code (B,{c.code_dim},h,w), "
                f"got {tuple(hr.shape)} and {tuple(code.shape)}"
            )
        h, w = code.shape[-2:]
        if hr.shape[-2:] != (c.scale * h, c.scale * w) or hr.shape[0] != code.shape[0]:
            raise ImageError(
                f"hr is {tuple(hr.shape)} but the code is {tuple(code.shape)}: expected hr "
                f"{c.scale * h}x{c.scale * w} (scale {c.scale}) and the same batch"
            )
        base, cond = frequency_split(hr, c.blur_size, c.blur_sigma)
        # "Encoding scale 0.25": pixel-unshuffle moves each scale x scale HR block into channels at LR size.
        x = torch.cat([F.pixel_unshuffle(base, c.scale), F.pixel_unshuffle(cond, c.scale)], dim=1)
        feat = self.head(x)
        r = self.code_net(code)
        body = feat
        for sft, block in zip(self.sft, self.blocks):
            body = block(sft(body, r))
        feat = feat + self.body_out(body)
        # Area-downsampled base as the skip: the head only predicts what the degradation changes.
        mean = F.avg_pool2d(base, c.scale) + self.tail(feat)
        return mean, (self.log_scale(feat) if self.log_scale is not None else None)
