"""Shared building blocks (paper A.4): MAConv/MABlock, RDB/RRDB, SFT, channel attention.

Written by hand because no maintained package provides them; each follows the paper that introduced it
(MAConv: MANet, Liang et al. 2021; RRDB: ESRGAN; SFT: SFTGAN; channel attention: RCAN) in our own code.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def norm_groups(channels: int, groups: int = 32) -> int:
    """Group count for GroupNorm(`groups`) on `channels`: gcd(groups, channels).

    The paper uses GroupNorm(32); narrower layers (the book and smoke profiles) cannot have 32 groups, so we use
    the largest count dividing both, which is min(32, channels) whenever channels is a power of two.
    """
    return math.gcd(groups, channels)


class LocalGroupNorm(nn.GroupNorm):
    """GroupNorm whose image-wide statistics can be detached (for measuring the receptive field).

    GroupNorm makes every output depend weakly on every input pixel through its mean and variance. With
    `detach_stats` on, those statistics are treated as constants, so gradients show the convolutional
    (local) receptive field only; the forward values are unchanged.
    """

    detach_stats: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.detach_stats:
            return super().forward(x)
        b, c = x.shape[:2]
        g = x.reshape(b, self.num_groups, -1)
        mean = g.mean(-1, keepdim=True).detach()
        var = g.var(-1, unbiased=False, keepdim=True).detach()
        y = ((g - mean) / torch.sqrt(var + self.eps)).reshape_as(x)
        if self.affine:
            shape = (1, c) + (1,) * (x.dim() - 2)
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


class PixelNorm(nn.Module):
    """Per-pixel channel normalisation: each pixel's channel vector to zero mean, unit variance, then a per-channel
    affine (a LayerNorm over channels at every pixel). Its statistics are local, so unlike GroupNorm it does not
    make an output depend on the whole image. Same parameter count as GroupNorm (weight and bias per channel).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = x.var(1, unbiased=False, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return y * self.weight.view(shape) + self.bias.view(shape)


NORMS = ("group", "pixel", "none")


def make_norm(kind: str, channels: int, groups: int = 32) -> nn.Module:
    """The encoder's normalisation layer: "group" (the paper's GroupNorm(32), statistics over the whole image),
    "pixel" (`PixelNorm`, statistics over one pixel's channels) or "none" (identity, as MANet's estimator)."""
    if kind == "group":
        return LocalGroupNorm(norm_groups(channels, groups), channels)
    if kind == "pixel":
        return PixelNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


@contextmanager
def detached_norm_statistics(module: nn.Module):
    """Within the block, every LocalGroupNorm in `module` detaches its statistics."""
    norms = [m for m in module.modules() if isinstance(m, LocalGroupNorm)]
    for m in norms:
        m.detach_stats = True
    try:
        yield
    finally:
        for m in norms:
            m.detach_stats = False


def kaiming_scaled_init(module: nn.Module, scale: float) -> None:
    """ESRGAN's initialisation of residual dense blocks: Kaiming normal (fan-in, gain sqrt 2, i.e.
    std = sqrt(2 / fan_in)) multiplied by `scale`, zero bias. The small scale (0.1) keeps each residual branch
    near zero at the start, so a deep trunk starts close to the identity."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in", nonlinearity="relu")
            with torch.no_grad():
                m.weight.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def trunc_normal_init(module: nn.Module, scale: float = 1.0) -> None:
    """Truncated-normal init (paper A.4), fan-in scaled: std = scale / sqrt(fan_in), cut at 2 std; zero bias.

    The paper names the distribution, not its width; fan-in scaling keeps activations O(1) for any width.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = scale / math.sqrt(fan_in)
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MAConv(nn.Module):
    """Mutual-affine convolution (MANet): channels are split; each split is modulated by an affine transform
    (sigmoid scale, shift) predicted from the *other* splits by 1x1 convs, then convolved on its own.

    Cross-channel mixing happens only through the cheap affine paths, which keeps the parameter count low
    while still letting channels inform each other.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, split: int = 2, reduction: int = 2):
        super().__init__()
        if split < 2 or in_channels < split or out_channels < split:
            raise ValueError(f"MAConv needs split >= 2 and at least `split` channels (got {in_channels}, {split})")
        self.in_splits = _split_sizes(in_channels, split)
        self.out_splits = _split_sizes(out_channels, split)
        self.affine = nn.ModuleList()
        self.conv = nn.ModuleList()
        for cin, cout in zip(self.in_splits, self.out_splits):
            rest = in_channels - cin
            hidden = max(1, rest // reduction)
            self.affine.append(nn.Sequential(nn.Conv2d(rest, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, 2 * cin, 1)))
            self.conv.append(nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.in_splits, dim=1)
        out = []
        for i, part in enumerate(parts):
            others = torch.cat([p for j, p in enumerate(parts) if j != i], dim=1)
            scale, shift = self.affine[i](others).chunk(2, dim=1)
            out.append(self.conv[i](part * torch.sigmoid(scale) + shift))
        return torch.cat(out, dim=1)


def _split_sizes(channels: int, split: int) -> list[int]:
    base = channels // split
    return [base + (1 if i < channels % split else 0) for i in range(split)]


class MABlock(nn.Module):
    """Residual block of two MAConvs with norm + SiLU pre-activation (paper A.4: GroupNorm(32), SiLU).

    `norm` is "group" (the paper's), "pixel" or "none" (`make_norm`).
    """

    def __init__(self, channels: int, groups: int = 32, split: int = 2, reduction: int = 2, norm: str = "group"):
        super().__init__()
        self.body = nn.Sequential(
            make_norm(norm, channels, groups),
            nn.SiLU(),
            MAConv(channels, channels, 3, split, reduction),
            make_norm(norm, channels, groups),
            nn.SiLU(),
            MAConv(channels, channels, 3, split, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualDenseBlock(nn.Module):
    """RDB (ESRGAN): five densely connected 3x3 convs (growth `growth`), LeakyReLU(0.2), scaled residual.

    The convs start from ESRGAN's initialisation, Kaiming normal scaled by `init_scale` (0.1), zero bias.
    """

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2, init_scale: float = 0.1):
        super().__init__()
        self.res_scale = res_scale
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5)
        )
        kaiming_scaled_init(self.convs, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, dim=1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return x + self.res_scale * out


class RRDB(nn.Module):
    """Residual-in-residual dense block (ESRGAN): three RDBs and an outer residual scaled by `res_scale`;
    each RDB's convs start from Kaiming normal x `init_scale` (ESRGAN's 0.1)."""

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2, init_scale: float = 0.1):
        super().__init__()
        self.res_scale = res_scale
        self.body = nn.Sequential(
            *(ResidualDenseBlock(channels, growth, res_scale, init_scale) for _ in range(3))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class SFTLayer(nn.Module):
    """Spatial feature transform (SFTGAN): x * (1 + gamma(c)) + beta(c), gamma/beta per pixel from condition c."""

    def __init__(self, channels: int, cond_channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or channels
        self.scale = nn.Sequential(
            nn.Conv2d(cond_channels, hidden, 1), nn.LeakyReLU(0.1), nn.Conv2d(hidden, channels, 1)
        )
        self.shift = nn.Sequential(
            nn.Conv2d(cond_channels, hidden, 1), nn.LeakyReLU(0.1), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.scale(cond)) + self.shift(cond)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (RCAN / HAT's CAB): x * sigmoid(W2 relu(W1 avgpool(x)))."""

    def __init__(self, channels: int, squeeze: int = 16):
        super().__init__()
        hidden = max(1, channels // squeeze)
        self.attn = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attn(x)
