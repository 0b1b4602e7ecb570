"""ReDSR (Liu et al., ECCV 2024): a degradation code learned by re-degradation, guiding a DASR-style SR network.

The paper's Fig. 2 and §3.2, with the layer shapes of its public code (Chernobyllight/ReDSR, read to check
them; nothing copied):

- `DegradationEncoder` (Eq. 2): three stride-2 4x4 convolutions alternating with 5x5 ones (PReLU after each,
  no normalisation), then global average pooling: one `code_dim`-d code f per LR patch. (§3.2.1 says "five 5x5
  layers"; the released model has the six layers above, and only they give Table 1's 6.28 M.)
- `Degrader` (Eq. 3): DASR's SR body run on the second HR patch, guided by f, with the upscaler replaced by a
  stride-`scale` convolution, so it outputs the pseudo LR patch. Used in training only.
- `DASRGenerator` (Eq. 6): DASR's degradation-aware SR network. f is compressed by an MLP into one code per
  group; each DA block applies a depthwise convolution whose kernel is predicted from the code, then a 1x1
  convolution, plus a channel attention computed from the code alone.
- `ReDSRNet`: encoder + generator, what `savl sr` runs (`forward(lr) -> sr`).
- Losses: `redegradation_loss` (Eq. 4), `modulation_weight` (Eq. 8); the energy distance (Eq. 5) is
  `savl.losses.redsr_energy_loss`, weight `ED_WEIGHT` = 0.01 (Eq. 9's lambda_1), 64 samples (`ED_SAMPLES`).

Padding: the released code pads with reflection. Reflection needs the pad to be smaller than the side, which
the book's small patches (an LR half of 32 x 16 is 2 pixels wide after three stride-2 layers) break, so `_pad`
reflects where it can and replicates otherwise; at the paper's 64 x 64 patches it always reflects.

Sizes: `ReDSRConfig.paper()` is the released model: encoder 1.58 M + generator 4.70 M = 6.28 M, Table 1's
figure for ReDSR (the degrader, 1.24 M, is not counted there because it is not run at test time).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ConfigError

#: Eq. 9: L = lambda_1 L_ED + L_RD + L_SR with lambda_1 = 0.01; L_ED against m = 64 samples of N(0, I) (§4.1).
ED_WEIGHT = 0.01
ED_SAMPLES = 64
#: DIV2K's mean colour, subtracted before the generator and added back after it (DASR's convention).
RGB_MEAN = (0.4488, 0.4371, 0.4040)


@dataclass
class ReDSRConfig:
    """Sizes of ReDSR's three networks. Defaults: the released model (Table 1's 6.28 M)."""

    code_dim: int = 64  # C of Eq. 2
    base: int = 64  # encoder width (nf); it widens to 2x and 4x after the first and second stride-2 layer
    num_feat: int = 64  # generator width
    groups: int = 5  # DA groups of the generator
    blocks_per_group: int = 5  # DA blocks per group
    kernel_size: int = 3  # of the predicted depthwise kernels and the 3x3 convolutions
    reduction: int = 8  # generator's channel attention: code_dim -> code_dim / reduction -> num_feat
    channels: int = 64  # degrader width (nc)
    degrader_blocks: int = 3
    degrader_reduction: int = 4
    upscale: int = 4

    def __post_init__(self):
        checks = [
            (self.kernel_size % 2 == 1, f"kernel_size {self.kernel_size} must be odd"),
            (self.code_dim >= self.reduction, f"code_dim {self.code_dim} must be >= reduction {self.reduction}"),
            (
                self.code_dim >= self.degrader_reduction,
                f"code_dim {self.code_dim} must be >= degrader_reduction {self.degrader_reduction}",
            ),
            (self.upscale in (2, 4, 8), f"upscale {self.upscale} must be 2, 4 or 8"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"ReDSRConfig: {message}")

    @classmethod
    def paper(cls) -> ReDSRConfig:
        return cls()

    @classmethod
    def book(cls) -> ReDSRConfig:
        """Sized like the zoo's book models (about 0.4 M at test time), the paper's 64-d code kept."""
        return cls(base=16, num_feat=32, groups=2, blocks_per_group=2, channels=16, degrader_blocks=2)

    @classmethod
    def smoke(cls) -> ReDSRConfig:
        return cls(code_dim=16, base=8, num_feat=8, groups=1, blocks_per_group=1, channels=8, degrader_blocks=1)

    @classmethod
    def profile(cls, name: str) -> ReDSRConfig:
        if name not in ("paper", "book", "smoke"):
            raise ConfigError(f"unknown profile {name!r} (use paper, book or smoke)")
        return getattr(cls, name)()


def _pad(x: torch.Tensor, pad: int, kernel: int) -> torch.Tensor:
    """Pad by `pad` on every side (more where the side is shorter than `kernel`): reflect where the pad is
    smaller than the side, else replicate."""
    h, w = x.shape[-2:]
    ph, pw = max(pad, math.ceil((kernel - h) / 2)), max(pad, math.ceil((kernel - w) / 2))
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if h > ph and w > pw else "replicate"
    return F.pad(x, (pw, pw, ph, ph), mode=mode)


class PadConv(nn.Module):
    """Reflection-padded convolution (the released code's `ReflectionPad2d` + `Conv2d(padding=0)`)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, pad: int | None = None):
        super().__init__()
        self.pad = kernel // 2 if pad is None else pad
        self.kernel = kernel
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_pad(x, self.pad, self.kernel))


class DegradationEncoder(nn.Module):
    """Eq. 2: f = Encoder(I_LR), a `code_dim` vector per patch (global average pooling of the last map)."""

    def __init__(self, config: ReDSRConfig):
        super().__init__()
        nf, c = config.base, config.code_dim
        shapes = [(3, nf, 4, 2, 1), (nf, nf, 5, 1, 2), (nf, 2 * nf, 4, 2, 1), (2 * nf, 2 * nf, 5, 1, 2)]
        shapes += [(2 * nf, 4 * nf, 4, 2, 1), (4 * nf, c, 5, 1, 2)]
        layers: list[nn.Module] = []
        for cin, cout, k, s, p in shapes:
            layers += [PadConv(cin, cout, k, s, p), nn.PReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.body(lr).mean(dim=(-2, -1))


class DAConv(nn.Module):
    """DASR's degradation-aware convolution: a depthwise k x k convolution whose per-sample kernel an MLP
    predicts from the code, PReLU, a `mix` convolution; plus the features scaled by a channel attention
    computed from the code alone (sigmoid of a bottleneck MLP)."""

    def __init__(self, code_dim: int, channels: int, kernel: int, reduction: int, mix_kernel: int, reflect: bool):
        super().__init__()
        self.k, self.reflect = kernel, reflect
        self.kernel = nn.Sequential(
            nn.Linear(code_dim, channels, bias=False),
            nn.PReLU(),
            nn.Linear(channels, channels * kernel * kernel, bias=False),
        )
        self.mix = (
            PadConv(channels, channels, mix_kernel) if reflect else nn.Conv2d(channels, channels, mix_kernel, 1, 0)
        )
        hidden = max(1, code_dim // reduction)
        self.attention = nn.Sequential(
            nn.Linear(code_dim, hidden, bias=False), nn.PReLU(), nn.Linear(hidden, channels, bias=False), nn.Sigmoid()
        )
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weight = self.kernel(code).reshape(b * c, 1, self.k, self.k)
        p = self.k // 2
        if self.reflect:
            y = F.conv2d(_pad(x, p, self.k).reshape(1, b * c, h + 2 * p, w + 2 * p), weight, groups=b * c)
        else:
            y = F.conv2d(x.reshape(1, b * c, h, w), weight, padding=p, groups=b * c)
        y = self.mix(self.act(y.reshape(b, c, h, w)))
        return y + x * self.attention(code)[:, :, None, None]


class DABlock(nn.Module):
    """DASR's DA block: DAConv, PReLU, conv, PReLU, DAConv, PReLU, conv, plus the input."""

    def __init__(self, code_dim, channels, kernel, reduction, mix_kernel, reflect):
        super().__init__()
        conv = (lambda: PadConv(channels, channels, kernel)) if reflect else (
            lambda: nn.Conv2d(channels, channels, kernel, 1, kernel // 2)
        )
        self.da1 = DAConv(code_dim, channels, kernel, reduction, mix_kernel, reflect)
        self.conv1 = conv()
        self.da2 = DAConv(code_dim, channels, kernel, reduction, mix_kernel, reflect)
        self.conv2 = conv()
        self.act1, self.act2, self.act3 = nn.PReLU(), nn.PReLU(), nn.PReLU()

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv1(self.act1(self.da1(x, code))))
        return self.conv2(self.act3(self.da2(y, code))) + x


class DAGroup(nn.Module):
    """`blocks` DA blocks and a 3x3 convolution, with a skip over the group."""

    def __init__(self, config: ReDSRConfig):
        super().__init__()
        c, k = config.num_feat, config.kernel_size
        self.blocks = nn.ModuleList(
            DABlock(config.code_dim, c, k, config.reduction, 1, False) for _ in range(config.blocks_per_group)
        )
        self.conv = nn.Conv2d(c, c, k, 1, k // 2)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.blocks:
            y = block(y, code)
        return self.conv(y) + x


class DASRGenerator(nn.Module):
    """Eq. 6: I_SR = Generator(I_LR, f). The code is compressed (MLP) into one code per group."""

    def __init__(self, config: ReDSRConfig):
        super().__init__()
        c, k, d = config.num_feat, config.kernel_size, config.code_dim
        self.code_dim = d
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(3, c, k, 1, k // 2)
        self.compress = nn.Sequential(nn.Linear(d, d, bias=False), nn.PReLU(), nn.Linear(d, d * config.groups))
        self.groups = nn.ModuleList(DAGroup(config) for _ in range(config.groups))
        self.body_conv = nn.Conv2d(c, c, k, 1, k // 2)
        up: list[nn.Module] = []
        for _ in range(int(math.log2(config.upscale))):
            up += [nn.Conv2d(c, 4 * c, 3, 1, 1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(c, 3, k, 1, k // 2)

    def forward(self, lr: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        codes = self.compress(code).split(self.code_dim, dim=1)
        x = self.head(lr - self.rgb_mean)
        y = x
        for group, z in zip(self.groups, codes):
            y = group(y, z)
        y = self.body_conv(y) + x
        return self.tail(self.upsample(y)) + self.rgb_mean


class Degrader(nn.Module):
    """Eq. 3: I^_LR2 = Degrader(I_HR2, f). The code goes through an MLP into one code per DA block; the blocks
    run at HR resolution; a stride-`scale` 3x3 convolution and three reflection-padded 3x3 ones make the LR."""

    architecture = "ReDSRDegrader"

    def __init__(self, config: ReDSRConfig | None = None):
        super().__init__()
        config = config or ReDSRConfig()
        self.config = config
        d, c, n = config.code_dim, config.channels, config.degrader_blocks
        self.code_dim = d
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.PReLU(), nn.Linear(d, d * n), nn.PReLU())
        self.head = nn.Sequential(PadConv(3, c, 3), nn.PReLU())
        self.blocks = nn.ModuleList(DABlock(d, c, 3, config.degrader_reduction, 3, True) for _ in range(n))
        s = config.upscale
        self.tail = nn.Sequential(
            nn.Conv2d(c, 4 * c, 3, stride=s, padding=0),
            nn.PReLU(),
            PadConv(4 * c, 2 * c, 3),
            nn.PReLU(),
            PadConv(2 * c, c, 3),
            nn.PReLU(),
            PadConv(c, 3, 3),
        )

    def forward(self, hr: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        s = self.config.upscale
        if hr.shape[-2] % s or hr.shape[-1] % s:
            raise ValueError(f"Degrader: HR size {tuple(hr.shape[-2:])} must be a multiple of {s}")
        codes = self.mlp(code).split(self.code_dim, dim=1)
        x = self.head(hr)
        for block, z in zip(self.blocks, codes):
            x = block(x, z)
        return self.tail(x)


class ReDSRNet(nn.Module):
    """ReDSR at test time: `forward(lr, code=None) -> sr`, the code computed from `lr` unless given;
    `encode(lr) -> (B, code_dim)`."""

    architecture = "ReDSRNet"

    def __init__(self, config: ReDSRConfig | None = None):
        super().__init__()
        config = config or ReDSRConfig()
        self.config = config
        self.scale = config.upscale
        self.encoder = DegradationEncoder(config)
        self.generator = DASRGenerator(config)

    def encode(self, lr: torch.Tensor) -> torch.Tensor:
        return self.encoder(lr)

    def forward(self, lr: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        if code is None:
            code = self.encoder(lr)
        return self.generator(lr, code)


def redegradation_loss(pseudo_lr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """Eq. 4: L_RD = || I_LR2 - I^_LR2 ||_1 (per-element mean, as the released code's L1Loss)."""
    return F.l1_loss(pseudo_lr, lr)


def modulation_weight(pseudo_lr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """Eq. 8: W = 2 / (1 + C^-1) with the confidence C = 1 / d, d the RMSE between the re-degraded and the
    real second LR patch; one weight per sample, (B,), carrying no gradient. W is 2 for a perfect
    re-degradation and falls towards 0 as it fails. (The released code's default weighs L_SR by a constant 2,
    this limit; its optional "focal" weight is a logistic in the PSNR instead; we follow the paper.)"""
    d = (pseudo_lr.detach() - lr.detach()).square().flatten(1).mean(1).sqrt()
    return 2.0 / (1.0 + d)


def modulated_l1(sr: torch.Tensor, hr: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 7: L_SR = W . || I_SR - I_HR ||_1, the per-sample L1 (mean over pixels) weighted and averaged."""
    return (weight * (sr - hr).abs().flatten(1).mean(1)).mean()


def split_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two patches of one image that share its degradation: the left and right halves of a crop (§3.2.1 takes
    "I_2 with different contents ... but the same degradation"; the released code crops two patches per image
    and degrades both with one kernel). Width must be even."""
    w = x.shape[-1]
    if w % 2:
        raise ConfigError(f"ReDSR needs an even patch width to split a crop into two patches, got {w}")
    return x[..., : w // 2], x[..., w // 2 :]


def replace(config: ReDSRConfig, **changes) -> ReDSRConfig:
    return dataclasses.replace(config, **changes)
