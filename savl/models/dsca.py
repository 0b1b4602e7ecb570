"""DSCA: degradation-guided spatial and channel attention from the SAVL posterior (paper §3.4, Fig. 4).

What the paper says (§3.4): the posterior variance guides spatial attention ("we define degradation severity as
the posterior variance to reweight SW-MSA scores, promoting attention between pixels with similar degradation");
the posterior mode guides channel attention ("a lightweight convolutional network uses the posterior mode to
predict a channel-wise modulation vector"). DSCA opens every DA-RHAG group. Table 2 sizes the variants: 14.0 M
parameters with both guidances, 14.0 M without channel modulation, 13.6 M without spatial modulation. The paper
gives no layer forms; everything below is OUR READING of that description.

Channel guidance: one vector of length C per image, from the posterior mean mu (m channels):
    a = Linear(avgpool_u(LeakyReLU(conv3x3(mu))))   in R^C,   Linear zero-initialised
    x' = x * (1 + a)                                the same scale for every pixel of the image; identity at init
Per image (not per pixel, not per window): a "vector" in the paper's words, the way channel attention (SE, HAT's
CAB) pools globally; so the ablation without spatial guidance modulates no pixel differently from another. The
convolution and the pool see only the image's own pixels (not the padding added for the window partition).

Spatial guidance: a bounded, scale-free severity, then a Gaussian similarity term on the window-attention logits.
  1. Eq. 15 (kept literal in savl.models.encoder.Posterior.severity for the severity maps of §4.2) divides by
     Var[sigma^2]: its spread is the inverse of the spread of sigma^2, so as an attention bias it grows without
     bound when the variance map is nearly flat (an untrained paper-size encoder on a degraded photo: median
     |s_i - s_j| within a window of order 100). DSCA instead standardises the same v = channel-mean sigma^2
     in the log domain, per image,
         z(u) = -(log v(u) - mean_u log v) / std_u(log v)        (0 where log v is flat)
     which orders pixels as Eq. 15 does (small variance = severe) but is unchanged when every sigma^2 is
     multiplied by a constant, and has unit spread whatever the encoder's scale. Gradients reach the encoder
     through z too (joint stage), scaled by 1/std(log v): large while the variance map is nearly flat, but far
     below Eq. 15's 1/Var[sigma^2].
  2. A per-head descriptor, bounded by tanh:
         s_h(u) = tanh(z(u) + g_h(l~)(u)),   l~ = log sigma^2 centred per image and channel (also scale-free),
     g = conv3x3 -> LeakyReLU -> conv3x3 (m -> hidden -> heads), last conv zero-initialised, so s_h = tanh(z).
  3. For pixels i, j of one attention window, head h:
         bias_ij = -gamma_h (s_h(i) - s_h(j))^2,   gamma_h = softplus(rho_h) >= 0, gamma_h = 0.25 at init,
     so |bias| <= 4 gamma_h (at most 1 logit at initialisation) and it is 0 for a constant severity.
The squared difference (a Gaussian kernel in severity, like a bilateral filter's range term) rather than |.|
is ours; it lets the term be folded into the q.k product: expanding,
    -gamma (s_i - s_j)^2 = -gamma s_i^2 + 2 gamma s_i s_j - gamma s_j^2,
and -gamma s_i^2 is constant along query i's softmax row, so it drops out of the attention. The rest is the
inner product of left_i = [2 gamma s_i, -gamma] and right_j = [s_j, s_j^2]: DSCA hands the HABs a
`FactoredBias(left, right)` (savl.models.hat), which appends two channels per head to q and k (and two zero
channels to v) instead of materialising a (B*nW, heads, N, N) bias; attention keeps PyTorch's fused kernels
where they apply and no bias tensor needs a gradient. `attention_bias` gives the literal dense bias, the
reference the tests compare the folded form with. The descriptors are taken at the feature resolution
(resized, then reflect-padded like the LR) and, for shifted-window blocks, rolled by the same (-w/2, -w/2)
before the window partition, so they line up with the tokens.

DSCA sits first in every DA-RHAG group (savl.models.srnet): it modulates the group input and hands the factored
biases (one per window shift) to the group's HABs; OCAB is left alone (the paper reweights SW-MSA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ConfigError, ImageError
from savl.models.hat import FactoredBias, reflect_pad_to, window_partition

_LOG_EPS = 1e-30  # floor of sigma^2 before the log (a point-mass posterior has sigma^2 = 0)
_FLAT_STD = 1e-6  # a log-variance map whose spread is below this (in nats) counts as flat


def _log_variance(posterior) -> torch.Tensor:
    """log sigma^2 (B, m, h, w) of anything with `.logvar` (savl.models.encoder.Posterior) or `.variance`."""
    logvar = getattr(posterior, "logvar", None)
    if logvar is not None:
        return logvar
    return torch.log(posterior.variance.clamp_min(_LOG_EPS))


def standardised_severity(log_variance: torch.Tensor) -> torch.Tensor:
    """DSCA's scale-free severity z (B, 1, h, w) from log sigma^2 (B, m, h, w):
    z = -(log v - mean_u log v) / std_u(log v), v = channel-mean sigma^2 (the v of Eq. 15); 0 where flat.

    Per image; population std. Same ordering of pixels as Eq. 15 (larger where the variance is smaller)."""
    m = log_variance.shape[1]
    log_v = torch.logsumexp(log_variance, dim=1, keepdim=True) - math.log(m)  # log of the channel mean of sigma^2
    centred = log_v - log_v.mean((2, 3), keepdim=True)
    std = centred.square().mean((2, 3), keepdim=True).sqrt()
    flat = std <= _FLAT_STD
    return torch.where(flat, torch.zeros_like(centred), -centred / torch.where(flat, torch.ones_like(std), std))


@dataclass
class GuidanceMaps:
    """Posterior statistics at the (padded) feature resolution, each computed per image before resizing/padding:
    mean (B, m, H, W); log_variance (B, m, H, W), log sigma^2 centred per image and channel; severity (B, 1, H, W),
    the standardised z of `standardised_severity`; `valid` (h, w), the image's own pixels (top-left)."""

    mean: torch.Tensor
    log_variance: torch.Tensor
    severity: torch.Tensor
    valid: tuple[int, int]

    @classmethod
    def from_posterior(cls, posterior, size: tuple[int, int], multiple: int = 1) -> GuidanceMaps:
        """Statistics of `posterior` (anything with `.mean` and `.logvar` or `.variance`, (B, m, h, w)), resized to
        `size` (the unpadded LR size) when they differ (bilinear), then reflect-padded bottom/right to a multiple
        of `multiple`, exactly as the LR is padded (savl.models.hat)."""
        log_var = _log_variance(posterior)
        maps = [
            posterior.mean,
            log_var - log_var.mean((2, 3), keepdim=True),
            standardised_severity(log_var),
        ]
        if tuple(maps[0].shape[-2:]) != tuple(size):
            maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
        # sym_int, not int: under torch.export's symbolic sizes int() would fix the traced size into the graph
        valid = (torch.sym_int(size[0]), torch.sym_int(size[1]))
        return cls(*(reflect_pad_to(m, multiple) for m in maps), valid=valid)


class DSCA(nn.Module):
    """Degradation-guided spatial and channel attention (paper §3.4; forms documented in the module).

    forward(x (B, H*W, C), size (H, W), maps: GuidanceMaps or a Posterior) -> (x', {shift: FactoredBias})
    with one factored attention bias (left, right each (B*nW, heads, N, 2)) per shift in `shifts` (empty when
    spatial guidance is off).
    """

    def __init__(
        self,
        dim: int,
        code_dim: int = 64,
        heads: int = 6,
        window: int = 16,
        channel_hidden: int = 8,
        spatial_hidden: int = 64,
        channel: bool = True,
        spatial: bool = True,
        gamma_init: float = 0.25,
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
            self.channel_conv = nn.Conv2d(code_dim, channel_hidden, 3, 1, 1)
            self.channel_fc = nn.Linear(channel_hidden, dim)
            nn.init.zeros_(self.channel_fc.weight)  # identity at initialisation: x * (1 + 0)
            nn.init.zeros_(self.channel_fc.bias)
        if spatial:
            last = nn.Conv2d(spatial_hidden, heads, 3, 1, 1)
            nn.init.zeros_(last.weight)  # s_h = tanh(z) at initialisation
            nn.init.zeros_(last.bias)
            self.severity_net = nn.Sequential(
                nn.Conv2d(code_dim, spatial_hidden, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), last
            )
            # softplus^-1(gamma_init), so gamma = softplus(rho) starts at gamma_init and stays >= 0
            self.gamma_raw = nn.Parameter(torch.full((heads,), math.log(math.expm1(gamma_init))))

    @property
    def gamma(self) -> torch.Tensor:
        """(heads,) non-negative severity-similarity strengths."""
        return F.softplus(self.gamma_raw)

    def modulation(self, maps: GuidanceMaps) -> torch.Tensor:
        """(B, C) channel-wise modulation vector a from the posterior mean, pooled over the image's own pixels."""
        h, w = maps.valid
        features = F.leaky_relu(self.channel_conv(maps.mean[..., :h, :w]), 0.2)
        return self.channel_fc(features.mean((2, 3)))

    def head_severity(self, maps: GuidanceMaps) -> torch.Tensor:
        """(B, heads, H, W) bounded per-head severity s_h = tanh(z + g_h(centred log sigma^2))."""
        return torch.tanh(maps.severity + self.severity_net(maps.log_variance))

    def severity_windows(self, severity: torch.Tensor, shift: int) -> torch.Tensor:
        """(B, heads, H, W) -> (B*nW, heads, N) for the windows of the map rolled by (-shift, -shift)."""
        if shift:
            severity = torch.roll(severity, shifts=(-shift, -shift), dims=(2, 3))
        return window_partition(severity.permute(0, 2, 3, 1), self.window).transpose(1, 2)

    def attention_bias(self, severity: torch.Tensor, shift: int) -> torch.Tensor:
        """Reference: the dense (B*nW, heads, N, N) bias -gamma_h (s_i - s_j)^2 for per-head severities
        (B, heads, H, W) rolled by (-shift, -shift)."""
        s = self.severity_windows(severity, shift)
        return -self.gamma.to(s.dtype).view(1, -1, 1, 1) * (s.unsqueeze(-1) - s.unsqueeze(-2)).square()

    def factored_bias(self, severity: torch.Tensor, shift: int) -> FactoredBias:
        """The same bias up to the row constant -gamma s_i^2 (which softmax ignores), as left_i . right_j with
        left_i = [2 gamma s_i, -gamma] and right_j = [s_j, s_j^2], each (B*nW, heads, N, 2)."""
        s = self.severity_windows(severity, shift)
        gamma = self.gamma.to(s.dtype).view(1, -1, 1)
        left = torch.stack([2 * gamma * s, (-gamma).expand_as(s)], dim=-1)
        right = torch.stack([s, s.square()], dim=-1)
        return FactoredBias(left, right)

    def forward(self, x: torch.Tensor, size: tuple[int, int], maps) -> tuple[torch.Tensor, dict[int, FactoredBias]]:
        H, W = size
        if not isinstance(maps, GuidanceMaps):
            maps = GuidanceMaps.from_posterior(maps, size, 1)
        if tuple(maps.mean.shape[-2:]) != (H, W):
            raise ImageError(f"guidance maps are {tuple(maps.mean.shape[-2:])} but the features are {(H, W)}")
        biases: dict[int, FactoredBias] = {}
        if self.channel:
            x = x * (1 + self.modulation(maps).unsqueeze(1))
        if self.spatial:
            severity = self.head_severity(maps)
            biases = {shift: self.factored_bias(severity, shift) for shift in self.shifts}
        return x, biases
