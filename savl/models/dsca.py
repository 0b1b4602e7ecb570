"""DSCA: degradation-aware spatial and channel guidance from the SAVL posterior (paper §3.4, DESIGN §2, §5.1).

The paper guides the SR network with the two moments of the per-pixel posterior q(r | y) = N(mu, sigma^2):
the mean drives channel modulation and the variance drives spatial (attention) modulation. It does not give
the layers, so the exact forms below are OUR READING, written to satisfy the paper's description:

Channel guidance (from the mean mu, m channels):
    (a, b) = conv1x1(LeakyReLU(conv3x3(mu)))          a, b in R^{C x H x W}, last conv zero-initialised
    x' = x * (1 + a) + b                                per pixel and per channel (SFT-style); identity at init

Spatial guidance (from the variance): a per-head severity descriptor
    s~_h = s + g_h(log sigma^2),   s = Eq. 15 severity,   g's last conv zero-initialised (so s~_h = s at init)
and, for pixels i, j of one attention window, an additive term on the window-attention logits
    bias_ij^h = -gamma_h * |s~_h(i) - s~_h(j)|,   gamma_h = softplus(rho_h) >= 0 (learnable, per head)
so pixels of similar severity attend more to each other. It is 0 for a constant severity map. The maps are
taken at the feature resolution (resized, then reflect-padded like the LR) and, for shifted-window blocks,
rolled by the same (-w/2, -w/2) before the window partition, so bias and tokens line up.

DSCA sits first in every DA-RHAG group (savl.models.srnet): it modulates the group input and hands the biases
(one per window shift) to the group's HABs.

Cost: the biases are materialised, (B*nW, heads, N, N) floats per shift and group, e.g. 25 MB per 64x64 LR image
at window 16 with 6 heads; with a learnable gamma, SDPA on CPU takes its math path (DESIGN §6). A score
modification in FlexAttention would avoid the tensors on GPU; we keep the portable form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ConfigError, ImageError
from savl.models.hat import reflect_pad_to, window_partition

_LOG_EPS = 1e-8


@dataclass
class GuidanceMaps:
    """Posterior statistics at the (padded) feature resolution: mean (B,m,H,W), log_variance (B,m,H,W),
    severity (B,1,H,W) (Eq. 15)."""

    mean: torch.Tensor
    log_variance: torch.Tensor
    severity: torch.Tensor

    @classmethod
    def from_posterior(cls, posterior, size: tuple[int, int], multiple: int = 1) -> GuidanceMaps:
        """Resize the posterior maps to `size` (the unpadded LR size) when they differ (bilinear), then
        reflect-pad bottom/right to a multiple of `multiple`, exactly as the LR is padded (savl.models.hat).

        `posterior` is anything with `.mean`, `.variance` (B,m,h,w) and `.severity()` (B,1,h,w)
        (savl.models.encoder.Posterior)."""
        mean, variance, severity = posterior.mean, posterior.variance, posterior.severity()
        maps = [mean, torch.log(variance.clamp_min(_LOG_EPS)), severity]
        if tuple(mean.shape[-2:]) != tuple(size):
            maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
        return cls(*(reflect_pad_to(m, multiple) for m in maps))


class DSCA(nn.Module):
    """Degradation-aware spatial-channel attention guidance (paper §3.4; forms documented in the module).

    forward(x (B, H*W, C), size (H, W), maps: GuidanceMaps or a Posterior) -> (x', {shift: bias})
    with bias (B*nW, heads, N, N) for each shift in `shifts` (empty when spatial guidance is off).
    """

    def __init__(
        self,
        dim: int,
        code_dim: int = 64,
        heads: int = 6,
        window: int = 16,
        hidden: int = 64,
        channel: bool = True,
        spatial: bool = True,
        gamma_init: float = 1.0,
        shifts: tuple[int, ...] | None = None,
    ):
        super().__init__()
        if not (channel or spatial):
            raise ConfigError("DSCA needs channel or spatial guidance (use plain RHAG for neither)")
        if gamma_init <= 0:
            raise ConfigError(f"gamma_init {gamma_init} must be positive")
        self.dim, self.code_dim, self.heads, self.window = dim, code_dim, heads, window
        self.channel, self.spatial = channel, spatial
        self.shifts = tuple(shifts) if shifts is not None else (0, window // 2)
        if channel:
            last = nn.Conv2d(hidden, 2 * dim, 1)
            nn.init.zeros_(last.weight)  # identity at initialisation: x * (1 + 0) + 0
            nn.init.zeros_(last.bias)
            self.channel_net = nn.Sequential(
                nn.Conv2d(code_dim, hidden, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), last
            )
        if spatial:
            last = nn.Conv2d(hidden, heads, 3, 1, 1)
            nn.init.zeros_(last.weight)  # s~_h = s (Eq. 15) at initialisation
            nn.init.zeros_(last.bias)
            self.severity_net = nn.Sequential(
                nn.Conv2d(code_dim, hidden, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), last
            )
            # softplus^-1(gamma_init), so gamma = softplus(rho) starts at gamma_init and stays >= 0
            self.gamma_raw = nn.Parameter(torch.full((heads,), math.log(math.expm1(gamma_init))))

    @property
    def gamma(self) -> torch.Tensor:
        """(heads,) non-negative severity-similarity strengths."""
        return F.softplus(self.gamma_raw)

    def modulation(self, maps: GuidanceMaps) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel, per-channel (scale a, shift b), each (B, C, H, W), from the posterior mean."""
        a, b = self.channel_net(maps.mean).chunk(2, dim=1)
        return a, b

    def head_severity(self, maps: GuidanceMaps) -> torch.Tensor:
        """(B, heads, H, W) per-head severity descriptor s~_h = s + g_h(log sigma^2)."""
        return maps.severity + self.severity_net(maps.log_variance)

    def attention_bias(self, severity: torch.Tensor, shift: int) -> torch.Tensor:
        """(B*nW, heads, N, N) bias -gamma_h |s_i - s_j| for the windows of a map rolled by (-shift, -shift)."""
        if shift:
            severity = torch.roll(severity, shifts=(-shift, -shift), dims=(2, 3))
        s = window_partition(severity.permute(0, 2, 3, 1), self.window).transpose(1, 2)  # (B*nW, heads, N)
        distance = (s.unsqueeze(-1) - s.unsqueeze(-2)).abs()
        return -self.gamma.to(s.dtype).view(1, -1, 1, 1) * distance

    def forward(self, x: torch.Tensor, size: tuple[int, int], maps) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        H, W = size
        B, L, C = x.shape
        if not isinstance(maps, GuidanceMaps):
            maps = GuidanceMaps.from_posterior(maps, size, 1)
        if tuple(maps.mean.shape[-2:]) != (H, W):
            raise ImageError(f"guidance maps are {tuple(maps.mean.shape[-2:])} but the features are {(H, W)}")
        biases: dict[int, torch.Tensor] = {}
        if self.channel:
            a, b = self.modulation(maps)
            x = x * (1 + a.flatten(2).transpose(1, 2)) + b.flatten(2).transpose(1, 2)
        if self.spatial:
            severity = self.head_severity(maps)
            biases = {shift: self.attention_bias(severity, shift) for shift in self.shifts}
        return x, biases
