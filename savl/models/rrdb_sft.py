"""RRDB-SFT: the non-blind SR network of the paper's Table 4 (A.3), guided per LR pixel by a condition map.

The paper compares degradation guidances on MANet's spatially variant protocol by feeding each one to the same
SR network, RRDB-SFT (ESRGAN's residual-in-residual dense blocks, each preceded by a spatial feature
transform, as in MANet, Liang et al. 2021). Ours follows that network: conv head -> `num_blocks` x
(SFT(features, condition) -> three residual dense blocks, residual scale 0.2) -> conv -> + head features ->
conv to 3 s^2 channels -> pixel shuffle (x s). `RRDBSFTConfig.guidance` says what the condition map is:

* ``"none"``: no condition. The SFT layers still see the features (they read the concatenation of features
  and condition), so this is the same network with the condition's input columns removed: any difference to
  the guided rows is the information in the condition, not extra capacity.
* ``"code"``: the posterior mean of a frozen SAVL encoder (m channels), computed from the LR image itself.
* ``"kernel"``: the ground-truth blur kernel of every LR pixel (an upper bound, the paper's "+ GT" row), given
  as the (sig1, sig2, theta) map that `savl.degrade.spatial.manet_degrade` returns beside the LR image. Each
  kernel is rebuilt (`savl.degrade.kernels.manet_kernel`, 21 x 21 taps) and projected on a PCA basis of
  `kernel_components` components (15, MANet's code length), as SRMD, IKC and MANet feed kernels to their SR
  networks. The basis is fitted to kernels drawn from the protocol's own family (sig1, sig2 uniform in
  [b, a + b], theta uniform in [0, pi): mode 5's law, whose range holds modes 1-4) with a fixed seed, and each
  component is divided by its standard deviation so the condition has unit scale. It is a buffer, so a saved
  model carries the basis it was trained with. PCA rather than the raw (sig1, sig2, theta): the parameters are
  not a faithful code of the kernel (theta is meaningless when sig1 = sig2, and theta and theta + pi give the
  same kernel), while the PCA code is a linear function of the taps themselves.

`skip` (our book-scale addition, off in the paper profile): the output is added to a bilinear upsampling of
the LR image and the last convolution starts at zero, so a network trained for a few hundred steps starts
from (and only has to improve on) interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ConfigError, ImageError
from savl.models.blocks import ResidualDenseBlock
from savl.models.encoder import AmortizedEncoder, EncoderConfig, Posterior

GUIDANCES = ("none", "code", "kernel")
KERNEL_SIZE = 21  # MANet's kernels are 21 x 21 at every scale
# Kernels drawn to fit the PCA basis (fixed seed): a few thousand fix 15 components of a 441-dim family well.
PCA_SAMPLES = 2048
PCA_SEED = 2021


@dataclass
class RRDBSFTConfig:
    """Sizes and guidance of RRDB-SFT; `profile(name)` gives the "paper", "book" and "smoke" ones.

    channels: feature width (MANet's nf); num_blocks: RRDB-SFT blocks (nb); growth: dense growth (gc);
    sft_hidden: width of the SFT layers' hidden convolutions (MANet's 32); kernel_components: PCA components of
    the kernel guidance (MANet's code length 15); encoder: the SAVL encoder of the code guidance (built only
    then; its code_dim sets the condition's width).
    """

    guidance: str = "none"
    channels: int = 64
    num_blocks: int = 10
    growth: int = 32
    res_scale: float = 0.2
    sft_hidden: int = 32
    kernel_components: int = 15
    scale: int = 4
    skip: bool = False
    encoder: EncoderConfig = field(default_factory=EncoderConfig.paper)

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig(**self.encoder)
        if self.guidance not in GUIDANCES:
            raise ConfigError(f"RRDBSFTConfig: guidance must be one of {', '.join(GUIDANCES)}, got {self.guidance!r}")
        if min(self.channels, self.num_blocks, self.growth, self.sft_hidden, self.scale) < 1:
            raise ConfigError(f"RRDBSFTConfig: channels, num_blocks, growth, sft_hidden, scale must be >= 1 ({self})")
        if not 1 <= self.kernel_components <= KERNEL_SIZE**2:
            raise ConfigError(f"RRDBSFTConfig: kernel_components must lie in [1, {KERNEL_SIZE**2}]")

    @property
    def cond_channels(self) -> int:
        """Channels of the condition map the SFT layers read."""
        return {"none": 0, "code": self.encoder.code_dim, "kernel": self.kernel_components}[self.guidance]

    @classmethod
    def paper(cls, guidance: str = "none") -> RRDBSFTConfig:
        """MANet's RRDB-SFT (its stage-2 network): nf 64, 10 blocks, growth 32, 15 PCA components."""
        return cls(guidance=guidance, encoder=EncoderConfig.paper())

    @classmethod
    def book(cls, guidance: str = "none") -> RRDBSFTConfig:
        """Trainable on one CPU core in about five minutes (benchmarks in the zoo configs)."""
        return cls(
            guidance=guidance, channels=32, num_blocks=2, growth=16, sft_hidden=16, skip=True,
            encoder=EncoderConfig.book(),
        )  # fmt: skip

    @classmethod
    def smoke(cls, guidance: str = "none") -> RRDBSFTConfig:
        """Tiny: a training step in a fraction of a second."""
        return cls(
            guidance=guidance, channels=8, num_blocks=1, growth=4, sft_hidden=4, kernel_components=4, skip=True,
            encoder=EncoderConfig.smoke(),
        )  # fmt: skip

    @classmethod
    def profile(cls, name: str, guidance: str = "none") -> RRDBSFTConfig:
        if name not in ("paper", "book", "smoke"):
            raise ConfigError(f"unknown profile {name!r} (use paper, book or smoke)")
        return getattr(cls, name)(guidance)


class ConcatSFT(nn.Module):
    """MANet's SFT layer: scale and shift from the concatenation of the features and the condition.

    out = x * sigmoid(g(cat(x, c))) + h(cat(x, c)), g and h two 3x3 convolutions with a LeakyReLU(0.2) between.
    (`savl.models.blocks.SFTLayer` is SFTGAN's, which reads the condition alone; reading the features too is
    what lets the unguided variant keep the same layers.)
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int):
        super().__init__()
        cin = channels + cond_channels

        def branch() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, hidden, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(hidden, channels, 3, padding=1)
            )

        self.scale, self.shift = branch(), branch()

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        z = x if cond is None else torch.cat([x, cond], 1)
        return x * torch.sigmoid(self.scale(z)) + self.shift(z)


class RRDBSFTBlock(nn.Module):
    """SFT, then three residual dense blocks; the block's output is x + res_scale * RDBs(SFT(x, c))."""

    def __init__(self, channels: int, cond_channels: int, growth: int, hidden: int, res_scale: float):
        super().__init__()
        self.res_scale = res_scale
        self.sft = ConcatSFT(channels, cond_channels, hidden)
        self.rdbs = nn.Sequential(*(ResidualDenseBlock(channels, growth, res_scale) for _ in range(3)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return x + self.res_scale * self.rdbs(self.sft(x, cond))


def replayed_kernel_map(hr: torch.Tensor, lr: torch.Tensor, params) -> torch.Tensor:
    """The (1, 3, h, w) kernel map of one stored MANet-protocol image: `params` (its record, a list of one
    dict, as a frozen set stores it) replayed on `hr` (3, H, W). The replayed LR must equal the stored `lr` at
    8 bits, so the map is that of the draw that made this very LR image (else a one-line ConfigError)."""
    from savl.degrade.spatial import manet_replay

    again, kmap = manet_replay(hr[None].float(), params)
    if not torch.equal((again[0] * 255).round(), (lr.float() * 255).round()):
        raise ConfigError("the stored MANet params do not replay to the stored LR image (not this image's draw)")
    return kmap


@cache
def _kernel_pca(scale: int, components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean (441,), basis (k, 441), std (k,)) of MANet kernels drawn from the protocol's family at `scale`.

    Drawn with a fixed seed; each component's sign is fixed (its largest tap positive), so the basis is the same
    on every machine up to float rounding.
    """
    from savl.degrade.kernels import manet_kernel
    from savl.degrade.spatial import manet_ab

    a, b = manet_ab(scale)
    g = torch.Generator().manual_seed(PCA_SEED)
    u = torch.rand(PCA_SAMPLES, 3, generator=g, dtype=torch.float64)
    draws = torch.stack([b + a * u[:, 0], b + a * u[:, 1], math.pi * u[:, 2]], 1).tolist()
    taps = torch.stack([manet_kernel(*d, scale=scale, size=KERNEL_SIZE).double().flatten() for d in draws])
    mean = taps.mean(0)
    _, s, vh = torch.linalg.svd(taps - mean, full_matrices=False)
    basis = vh[:components]
    pivot = basis.abs().argmax(1)
    basis = basis * basis.gather(1, pivot[:, None]).sign()
    std = s[:components] / math.sqrt(PCA_SAMPLES - 1)
    return mean.float(), basis.float(), std.float()


class RRDBSFTNet(nn.Module):
    """RRDB-SFT guided by `config.guidance` (paper A.3, Table 4). `forward(lr, guide=None) -> sr`.

    guide: for "kernel", the (B, 3, h, w) map of (sig1, sig2, theta) per LR pixel that
    `savl.degrade.spatial.manet_degrade` (or `manet_replay`) returns (required); for "code", optionally a
    Posterior or a (B, m, h, w) code (otherwise the frozen encoder codes `lr`); for "none", ignored.
    """

    architecture = "RRDBSFTNet"

    def __init__(self, config: RRDBSFTConfig | None = None):
        super().__init__()
        config = config or RRDBSFTConfig()
        self.config = config
        self.scale = config.scale
        c, cc = config.channels, config.cond_channels
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList(
            RRDBSFTBlock(c, cc, config.growth, config.sft_hidden, config.res_scale) for _ in range(config.num_blocks)
        )
        self.trunk = nn.Conv2d(c, c, 3, padding=1)
        self.tail = nn.Conv2d(c, 3 * config.scale**2, 3, padding=1)
        if config.skip:  # start from the interpolation the skip adds
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)
        self.encoder: AmortizedEncoder | None = None
        if config.guidance == "code":
            self.encoder = AmortizedEncoder(config.encoder)
            self.encoder.requires_grad_(False)  # frozen: the code is an input, as the GT kernel is
        if config.guidance == "kernel":
            mean, basis, std = _kernel_pca(config.scale, config.kernel_components)
            self.register_buffer("kernel_mean", mean.clone())
            self.register_buffer("kernel_basis", basis.clone())
            self.register_buffer("kernel_std", std.clone())

    # ------------------------------------------------------------------------------------- conditions
    def kernel_codes(self, kernel_map: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) map of MANet kernel parameters (sig1, sig2, theta) -> (B, k, h, w) whitened PCA codes.

        Every distinct triple is turned into its 21 x 21 kernel once (`manet_kernel`, the function that made the
        LR image) and projected: code = basis (taps - mean) / std.
        """
        if kernel_map.dim() != 4 or kernel_map.shape[1] != 3:
            raise ImageError(f"kernel map must be (B, 3, h, w) of (sig1, sig2, theta), got {tuple(kernel_map.shape)}")
        from savl.degrade.kernels import manet_kernel

        b, _, h, w = kernel_map.shape
        flat = kernel_map.detach().permute(0, 2, 3, 1).reshape(-1, 3).cpu()
        triples, inverse = torch.unique(flat, dim=0, return_inverse=True)
        taps = torch.stack(
            [manet_kernel(s1, s2, th, scale=self.scale, size=KERNEL_SIZE).flatten() for s1, s2, th in triples.tolist()]
        ).to(self.kernel_basis)
        codes = (taps - self.kernel_mean) @ self.kernel_basis.T / self.kernel_std
        return codes[inverse.to(codes.device)].view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def condition(self, lr: torch.Tensor, guide=None) -> torch.Tensor | None:
        """The condition map the SFT layers read (None for "none")."""
        g = self.config.guidance
        if g == "none":
            return None
        if g == "kernel":
            if guide is None:
                raise ConfigError("RRDB-SFT with kernel guidance needs the kernel map of the LR image (guide=)")
            cond = self.kernel_codes(guide)
        elif isinstance(guide, Posterior):
            cond = guide.mean
        elif guide is not None:
            cond = guide
        else:
            with torch.no_grad():
                cond = self.encoder(lr).mean
        if tuple(cond.shape[-2:]) != tuple(lr.shape[-2:]) or cond.shape[1] != self.config.cond_channels:
            raise ImageError(
                f"condition map {tuple(cond.shape)} does not fit the LR image {tuple(lr.shape)} "
                f"({self.config.cond_channels} channels at the LR size needed)"
            )
        return cond.to(lr)

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, lr: torch.Tensor, guide=None) -> torch.Tensor:
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise ImageError(f"RRDB-SFT input must be (B, 3, h, w), got {tuple(lr.shape)}")
        cond = self.condition(lr, guide)
        feat = self.head(lr)
        x = feat
        for block in self.blocks:
            x = block(x, cond)
        out = F.pixel_shuffle(self.tail(feat + self.trunk(x)), self.scale)
        if self.config.skip:
            out = out + F.interpolate(lr, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters (the SR network) and those of the frozen encoder."""
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        return {"sr": count(self) - count(self.encoder), "encoder": count(self.encoder)}
