"""The amortized degradation encoder q(r | y) and its per-pixel Gaussian posterior (Eq. 4-5, 7, 15; paper A.4).

The encoder maps an LR image y (B, 3, h, w) to a mean and a log-variance for every LR pixel u, i.e. a mean-field
Gaussian over r(u) in R^m (m = 64 in the paper). Its backbone follows MANet: conv head -> MAConv residual blocks
in a small U-shape -> conv tail, with GroupNorm(32) and SiLU (paper A.4).

Assumption A1 asks for a receptive-field-limited encoder. The paper profile (widths 32 x [1, 1, 2, 4], two
blocks per level) sees 209 x 209 LR pixels through its convolutions, and GroupNorm's image-wide statistics make
every code depend (weakly) on the whole image; MANet's own estimator (two levels, one block each, no
normalisation) sees about 22 pixels. `EncoderConfig.norm` ("group", "pixel", "none") and the depth (`levels`,
`blocks_per_level`) are therefore configurable; `EncoderConfig.rf_limited()` is the paper's widths with MANet's
depth and no normalisation.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ConfigError, ImageError
from savl.losses import kl_standard_normal
from savl.models.blocks import NORMS, MABlock, detached_norm_statistics, make_norm, trunc_normal_init

# Log-variance range (our choice; the paper gives none): sigma^2 in [exp(-12), exp(8)] =
# [6e-6, 3e3] keeps exp() finite in bf16/fp32 and the KL's -log sigma^2 term bounded. Clamping stops the
# gradient only beyond the range, where the KL already pushes back.
LOGVAR_MIN = -12.0
LOGVAR_MAX = 8.0


@dataclass
class EncoderConfig:
    """Encoder sizes; `profile(name)` gives the "paper", "book" and "smoke" ones.

    `multipliers` give each U-level's width as `base * mult`; `levels` uses only the first `levels` of them
    (None: all), so the U-shape's depth can change while the paper's list stays; `blocks_per_level` MABlocks
    per level; `norm` is the normalisation in every block and the tail: "group" (the paper's GroupNorm with
    gcd(`groups`, channels) groups), "pixel" (per-pixel channel norm, local) or "none".
    """

    in_channels: int = 3
    code_dim: int = 64
    base: int = 32
    multipliers: tuple[int, ...] = (1, 1, 2, 4)
    blocks_per_level: int = 2
    groups: int = 32
    split: int = 2
    reduction: int = 2
    deterministic: bool = False
    norm: str = "group"
    levels: int | None = None

    def __post_init__(self):
        self.multipliers = tuple(int(m) for m in self.multipliers)
        if self.code_dim < 1 or self.base < 2 or not self.multipliers or min(self.multipliers) < 1:
            raise ConfigError(f"EncoderConfig: code_dim >= 1, base >= 2 and positive multipliers needed ({self})")
        if self.blocks_per_level < 1:
            raise ConfigError("EncoderConfig: blocks_per_level must be >= 1")
        if self.norm not in NORMS:
            raise ConfigError(f"EncoderConfig: norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.levels is not None and not 1 <= self.levels <= len(self.multipliers):
            raise ConfigError(f"EncoderConfig: levels must lie in [1, {len(self.multipliers)}], got {self.levels}")

    @classmethod
    def paper(cls) -> EncoderConfig:
        """Paper A.4: m = 64, base 32, multipliers [1, 1, 2, 4], GroupNorm(32)."""
        return cls(code_dim=64, base=32, multipliers=(1, 1, 2, 4), blocks_per_level=2)

    @classmethod
    def book(cls) -> EncoderConfig:
        """CPU-trainable in minutes; keeps m = 64 so codes have the paper's dimension."""
        return cls(code_dim=64, base=16, multipliers=(1, 2, 2), blocks_per_level=1)

    @classmethod
    def smoke(cls) -> EncoderConfig:
        """Tiny: a training step in well under a second on CPU."""
        return cls(code_dim=8, base=8, multipliers=(1, 2), blocks_per_level=1)

    @classmethod
    def profile(cls, name: str) -> EncoderConfig:
        if name not in ("paper", "book", "smoke"):
            raise ConfigError(f"unknown profile {name!r} (use paper, book or smoke)")
        return getattr(cls, name)()

    @classmethod
    def rf_limited(cls, profile: str = "paper", norm: str = "none") -> EncoderConfig:
        """A receptive-field-limited variant of a profile (assumption A1): the profile's widths and code size
        with MANet's depth, two U-levels of one block each, and no image-wide normalisation."""
        return dataclasses.replace(cls.profile(profile), levels=2, blocks_per_level=1, norm=norm)

    @property
    def widths(self) -> list[int]:
        """Channel width of each U-level used."""
        used = self.multipliers if self.levels is None else self.multipliers[: self.levels]
        return [self.base * m for m in used]

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.widths) - 1)


class Posterior:
    """Per-pixel mean-field Gaussian q(r(u) | y) = N(mu(u), diag sigma^2(u)) (Eq. 4-5).

    `logvar is None` marks a deterministic code (the ablations of §4.4): a point mass at `mu`.
    """

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor | None = None):
        if logvar is not None and logvar.shape != mu.shape:
            raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ in shape")
        self.mu = mu
        self.logvar = logvar

    @property
    def deterministic(self) -> bool:
        return self.logvar is None

    @property
    def mean(self) -> torch.Tensor:
        return self.mu

    @property
    def variance(self) -> torch.Tensor:
        return torch.zeros_like(self.mu) if self.logvar is None else self.logvar.exp()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. 5: r = mu + sigma * eps, eps ~ N(0, I) (reparameterised: differentiable in mu and logvar)."""
        if self.logvar is None:
            return self.mu
        if generator is not None and generator.device != self.mu.device:
            eps = torch.randn(self.mu.shape, generator=generator, device=generator.device, dtype=self.mu.dtype)
            eps = eps.to(self.mu.device)
        else:
            eps = torch.randn(self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + (0.5 * self.logvar).exp() * eps

    def kl(self) -> torch.Tensor:
        """Eq. 7 summed over channels and pixels, shape (B,); zeros for a deterministic code."""
        if self.logvar is None:
            return self.mu.new_zeros(self.mu.shape[0])
        return kl_standard_normal(self.mu, self.logvar)

    def severity(self, rel_eps: float = 1e-6) -> torch.Tensor:
        """Eq. 15, image-wise: s(u) = 1 - (v(u) - mean_u v) / Var_u(v), v = channel-averaged sigma^2; (B,1,h,w).

        Mean and (population) variance run over the pixels of each image. Where an image's variance map is
        constant (Var(v) <= (rel_eps * mean v)^2, i.e. flat up to float rounding) the ratio is 0/0; we return
        s = 1 there, the value Eq. 15 gives every pixel at the mean. Deterministic codes have no variance and
        return ones (a neutral, spatially uniform severity).
        """
        b, _, h, w = self.mu.shape
        if self.logvar is None:
            return self.mu.new_ones(b, 1, h, w)
        v = self.logvar.exp().mean(1, keepdim=True)
        mean = v.mean((2, 3), keepdim=True)
        var = v.var((2, 3), unbiased=False, keepdim=True)
        flat = var <= (rel_eps * mean).square()
        s = 1 - (v - mean) / torch.where(flat, torch.ones_like(var), var)
        return torch.where(flat, torch.ones_like(s), s)

    def detach(self) -> Posterior:
        return Posterior(self.mu.detach(), None if self.logvar is None else self.logvar.detach())


class AmortizedEncoder(nn.Module):
    """q(r | y): MANet-style U-shaped MAConv network, output at the input's LR resolution (paper A.4).

    Any input size works: the image is replicate-padded on the bottom/right to a multiple of the U-shape's
    downsampling factor and the output is cropped back. GroupNorm uses gcd(32, channels) groups
    (`norm_groups`); `config.norm` replaces it. `deterministic=True` (or `config.deterministic`) gives the
    §4.4 ablation: a tail of m channels and a Posterior with `logvar=None`.
    """

    architecture = "AmortizedEncoder"

    def __init__(self, config: EncoderConfig | None = None, deterministic: bool = False):
        super().__init__()
        config = config or EncoderConfig()
        config = dataclasses.replace(config, deterministic=bool(deterministic or config.deterministic))
        self.config = config
        widths = config.widths
        blocks = lambda c: nn.Sequential(  # noqa: E731
            *(
                MABlock(c, config.groups, config.split, config.reduction, config.norm)
                for _ in range(config.blocks_per_level)
            )
        )
        self.head = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(blocks(c) for c in widths)
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.ups = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in zip(widths, widths[1:]))
        self.up_blocks = nn.ModuleList(blocks(c) for c in widths[:-1])
        out = config.code_dim * (1 if config.deterministic else 2)
        self.tail = nn.Sequential(
            make_norm(config.norm, widths[0], config.groups),
            nn.SiLU(),
            nn.Conv2d(widths[0], out, 3, padding=1),
        )
        trunc_normal_init(self)
        # A small tail starts the posterior near the prior (mu ~ 0, logvar ~ 0), so the initial KL is small.
        trunc_normal_init(self.tail[-1], scale=0.1)
        self._rf: int | None = None

    def forward(self, y: torch.Tensor) -> Posterior:
        if y.dim() != 4 or y.shape[1] != self.config.in_channels:
            raise ImageError(f"encoder input must be (B, {self.config.in_channels}, h, w), got {tuple(y.shape)}")
        h, w = y.shape[-2:]
        f = self.config.downsample_factor
        ph, pw = (-h) % f, (-w) % f
        x = F.pad(y, (0, pw, 0, ph), mode="replicate") if ph or pw else y
        x = self.head(x)
        skips = []
        for i, block in enumerate(self.down_blocks):
            x = block(x)
            if i < len(self.downs):
                skips.append(x)
                x = self.downs[i](x)
        for i in reversed(range(len(self.ups))):
            x = self.ups[i](F.interpolate(x, scale_factor=2, mode="nearest"))
            x = self.up_blocks[i](x + skips[i])
        out = self.tail(x)[..., :h, :w]
        if self.config.deterministic:
            return Posterior(out, None)
        mu, logvar = out.chunk(2, dim=1)
        return Posterior(mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))

    @property
    def image_wide(self) -> bool:
        """True when a normalisation with image-wide statistics (GroupNorm) couples every code to every pixel."""
        return self.config.norm == "group"

    def receptive_field(self) -> int:
        """Side length (LR pixels) of the region that can influence one output pixel, measured (assumption A1).

        Measured, not derived: on a float64 copy, with GroupNorm statistics detached (they couple each output
        weakly to the whole image, see `image_wide`; `LocalGroupNorm`), we take the gradient of mu at pixels of
        every phase modulo the downsampling factor with respect to a random input, and report the widest
        non-zero extent along either axis. Cached after the first call.
        """
        if self._rf is None:
            self._rf = measure_receptive_field(self)
        return self._rf


def measure_receptive_field(encoder: AmortizedEncoder, canvas: int | None = None) -> int:
    """Gradient-support receptive field of `encoder` (see `AmortizedEncoder.receptive_field`).

    Every layer is separable in its support (square kernels, 2x strides and upsampling on both axes), so the
    extent along rows is the extent along columns; we measure rows on a thin strip (`canvas` x 2f) for speed.
    """
    f = encoder.config.downsample_factor
    if canvas is None:
        canvas = _receptive_field_bound(encoder.config) * 2 + 4 * f
        canvas += (-canvas) % f
    net = copy.deepcopy(encoder).to(device="cpu", dtype=torch.float64).eval()
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(1, encoder.config.in_channels, canvas, 2 * f, generator=gen, dtype=torch.float64)
    y.requires_grad_(True)
    widest = 0
    centre = canvas // 2 - (canvas // 2) % f
    with detached_norm_statistics(net):
        mu = net(y).mu
        for phase in range(f):
            p = centre + phase
            (grad,) = torch.autograd.grad(mu[0, :, p, f].sum(), y, retain_graph=True)
            rows = (grad.abs().sum((0, 1, 3)) > 0).nonzero().flatten()
            if rows[0] == 0 or rows[-1] == canvas - 1:
                raise RuntimeError("receptive field reaches the canvas border; measure on a larger canvas")
            widest = max(widest, int(rows[-1] - rows[0] + 1))
    return widest


def _receptive_field_bound(config: EncoderConfig) -> int:
    """An upper bound on the receptive field (used to size the measuring canvas), from the layer list.

    At level l (pixel stride 2^l) each 3x3 conv adds 2 * 2^l: per MABlock two MAConvs, plus the strided
    downsampling conv and the conv after each 2x nearest upsampling (which also adds up to 2^l of spread).
    """
    rf = 1 + 2  # head conv
    n = len(config.widths)
    for level in range(n):
        stride = 2**level
        convs = 2 * config.blocks_per_level * (2 if level < n - 1 else 1)
        rf += convs * 2 * stride
        if level < n - 1:
            rf += 2 * stride + 2 * 2 * stride + 2 * stride  # down conv, up conv, nearest-upsampling slack
    return rf + 2  # tail conv
