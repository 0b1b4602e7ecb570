"""DACESR (Lei et al.): a Mamba SR network conditioned on an image embedding (Fig. 3, §IV-B).

- `DACESRNet`: SwinIR's shell (a 3x3 head, residual groups with a 3x3 convolution and a skip each, a final
  LayerNorm and 3x3 convolution with a long skip, a pixel-shuffle x4 upsampler) whose groups hold Vision Mamba
  blocks (`savl.baselines.mamba`) instead of Swin layers (the paper's RSSBs, after DVMSR). After every group
  the conditional feature modulator (Eq. 6, `modulate`) rescales and shifts the tokens with the image
  embedding. `forward(lr) -> sr` computes the embedding from `lr` with the network's own REE.
- `RealEmbeddingExtractor` (REE, §IV-B1): an image encoder whose every convolution carries a LoRA adapter
  (rank `lora_rank`, the paper's r = 8). `forward(x, tuned=True)` is the LR branch (base + adapters),
  `forward(x, tuned=False)` the GT branch (base alone). Its training is `savl.baselines.objectives.REEObjective`.

What differs from the paper, and why. The paper's REE is DAPE (a LoRA-tuned Recognize Anything Model, Swin-L,
384 x 384 input) tuned once more with LoRA on COCO images with severe Real-ESRGAN degradations; those weights
are not available here and a Swin-L is far beyond the book's CPU budget. Our REE is a small convolutional
encoder (four stride-2 convolutions, pooled to a few tokens) trained from scratch: its base learns to recognise
images by contrastive learning on clean crops (two halves of one crop are a positive pair, InfoNCE), standing
in for RAM's recognition pre-training, while its adapters learn the paper's tuning (Eq. 7: the MSE between the
LR branch's embedding and the GT branch's) on the most severely degraded samples only (the degradation
selection strategy, scored by the base's own agreement between LR and GT, standing in for RAM's tag
similarity). What this changes: the embedding carries what a few thousand steps of contrastive learning on the
training photos can recognise, not RAM's 6,400-tag semantics, so DACESR's semantic prior is mostly missing at
book scale; the SR network, the modulator and the training procedure are the paper's.

`condition="ram"` names the RAM checkpoint (`ram_checkpoint`, looked up in torch hub's checkpoint folder, where
the Recognize Anything release's `ram_swin_large_14m.pth` goes); building such a network fails with one line
saying which file to place where, or, when the file is there, that savl has no Swin-L RAM to load it into.
`condition="none"` is the unconditioned backbone (the paper's Table IV, row "None").

Sizes: `DACESRConfig.paper()` is the released model (embed 192, 8 groups of 2 blocks, d_state 16, expand 2,
pixel-shuffle upsampler with 64 features): 7.43 M parameters without the REE. The paper's Table II lists a
"Mamba-based" backbone at 3.65 M; the released configuration is larger than that, and the paper gives no
count for DACESR itself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from savl.baselines.mamba import VisionMambaBlock
from savl.errors import ConfigError, ModelFileError

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K's, as SwinIR's shell
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RAM's input normalisation
CONDITIONS = ("ree", "ram", "none")


@dataclass
class REEConfig:
    """The small REE: `base` channels after the first stride-2 layer (doubling twice), `code_dim` embedding
    channels, `tokens` x `tokens` tokens, inputs resized to `input_size` (RAM: 384)."""

    base: int = 64
    code_dim: int = 256
    tokens: int = 4
    input_size: int = 384
    lora_rank: int = 8

    @classmethod
    def profile(cls, name: str) -> REEConfig:
        return {
            "paper": cls(),
            "book": cls(base=16, code_dim=64, tokens=4, input_size=64),
            "smoke": cls(base=8, code_dim=16, tokens=2, input_size=32, lora_rank=2),
        }[name]


@dataclass
class DACESRConfig:
    """Sizes of the SR network and its condition. Defaults: the released model (train_DACESR.yml)."""

    embed_dim: int = 192
    depths: tuple[int, ...] = (2, 2, 2, 2, 2, 2, 2, 2)
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    num_feat: int = 64
    upscale: int = 4
    scan_chunk: int = 16
    condition: str = "ree"
    ram_checkpoint: str = "ram_swin_large_14m.pth"
    ree: REEConfig = field(default_factory=REEConfig)

    def __post_init__(self):
        self.depths = tuple(int(d) for d in self.depths)
        if isinstance(self.ree, dict):
            self.ree = REEConfig(**self.ree)
        if self.condition not in CONDITIONS:
            raise ConfigError(f"DACESRConfig: condition must be one of {', '.join(CONDITIONS)}, got {self.condition!r}")
        if self.upscale not in (2, 4, 8):
            raise ConfigError(f"DACESRConfig: upscale {self.upscale} must be 2, 4 or 8")
        if not self.depths or min(self.depths) < 1:
            raise ConfigError(f"DACESRConfig: depths {self.depths} must be positive")

    @classmethod
    def paper(cls) -> DACESRConfig:
        return cls()

    @classmethod
    def book(cls) -> DACESRConfig:
        """About 0.3 M parameters (REE excluded): the zoo's book budget."""
        return cls(embed_dim=48, depths=(2, 2, 2), d_state=8, num_feat=32, ree=REEConfig.profile("book"))

    @classmethod
    def smoke(cls) -> DACESRConfig:
        return cls(embed_dim=16, depths=(1,), d_state=4, num_feat=16, scan_chunk=8, ree=REEConfig.profile("smoke"))

    @classmethod
    def profile(cls, name: str) -> DACESRConfig:
        if name not in ("paper", "book", "smoke"):
            raise ConfigError(f"unknown profile {name!r} (use paper, book or smoke)")
        return getattr(cls, name)()


class LoRAConv2d(nn.Module):
    """A convolution with a low-rank adapter (LoRA, Hu et al. 2022): W x + up(down(x)), where `down` is a
    rank-r convolution of the same kernel and stride and `up` a zero-initialised 1x1 (so the adapter starts at
    zero). In the tuned branch the base weights are read without gradient: only the adapter learns there."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, rank: int):
        super().__init__()
        self.stride, self.padding = stride, kernel // 2
        self.base = nn.Conv2d(cin, cout, kernel, stride, kernel // 2)
        self.down = nn.Conv2d(cin, rank, kernel, stride, kernel // 2, bias=False)
        self.up = nn.Conv2d(rank, cout, 1, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor, tuned: bool) -> torch.Tensor:
        if not tuned:
            return self.base(x)
        w, b = self.base.weight.detach(), self.base.bias.detach()
        return F.conv2d(x, w, b, self.stride, self.padding) + self.up(self.down(x))


class RealEmbeddingExtractor(nn.Module):
    """`forward(image, tuned=True) -> (B, tokens^2, code_dim)`; the image (RGB in [0, 1], any size) is resized
    to `input_size` and normalised as RAM's input."""

    architecture = "RealEmbeddingExtractor"

    def __init__(self, config: REEConfig | None = None):
        super().__init__()
        config = config or REEConfig()
        self.config = config
        w, r = config.base, config.lora_rank
        widths = [3, w, 2 * w, 4 * w, 4 * w]
        self.convs = nn.ModuleList(LoRAConv2d(a, b, 3, 2, r) for a, b in zip(widths, widths[1:]))
        self.proj = LoRAConv2d(4 * w, config.code_dim, 1, 1, r)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, tuned: bool = True) -> torch.Tensor:
        s = self.config.input_size
        x = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        for conv in self.convs:
            x = F.gelu(conv(x, tuned))
        x = F.adaptive_avg_pool2d(self.proj(x, tuned), self.config.tokens)
        return x.flatten(2).transpose(1, 2)


def ram_checkpoint_path(name: str) -> Path:
    """Where the RAM checkpoint `name` is looked for: as given when absolute, else torch hub's checkpoints."""
    p = Path(name)
    return p if p.is_absolute() else Path(torch.hub.get_dir()) / "checkpoints" / p


def require_ram(name: str) -> Path:
    """The RAM checkpoint's path; one-line ModelFileError when it is missing (where to place which file)."""
    path = ram_checkpoint_path(name)
    if not path.is_file():
        raise ModelFileError(
            f"{path.name}: Recognize Anything (RAM, Swin-L) weights not found; place the file in {path.parent} "
            "(from the recognize-anything release; nothing is downloaded), or use condition 'ree'"
        )
    return path


def modulate(h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """Eq. 6, the conditional feature modulator: the embedding (B, T, E) is resized bilinearly to the token
    grid (B, L, C) (the paper's "R&I"), c, and used as both scale and shift (c = c'). As in the released code the
    group's output is kept: h + h * c + c, i.e. Eq. 6 with alpha = 1 + c and beta = c, so a zero embedding
    leaves the features unchanged."""
    c = F.interpolate(embedding[:, None], size=h.shape[1:], mode="bilinear", align_corners=False)[:, 0]
    return h + h * c + c


class MambaGroup(nn.Module):
    """A residual state-space group (RSSB): `depth` Vision Mamba blocks, a 3x3 convolution, a skip."""

    def __init__(self, config: DACESRConfig, depth: int):
        super().__init__()
        e = config.embed_dim
        self.blocks = nn.ModuleList(
            VisionMambaBlock(e, config.d_state, config.d_conv, config.expand, config.scan_chunk) for _ in range(depth)
        )
        self.conv = nn.Conv2d(e, e, 3, 1, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = x
        for block in self.blocks:
            y = block(y)
        y = y.transpose(1, 2).reshape(x.shape[0], x.shape[2], *size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class DACESRNet(nn.Module):
    """`forward(lr, embedding=None) -> sr`; the embedding comes from `self.ree` (tuned branch) unless given."""

    architecture = "DACESRNet"

    def __init__(self, config: DACESRConfig | None = None):
        super().__init__()
        config = config or DACESRConfig()
        self.config = config
        self.scale = config.upscale
        if config.condition == "ram":
            path = require_ram(config.ram_checkpoint)
            raise ConfigError(
                f"{path}: found, but savl has no Swin-L RAM image encoder to load it into; use condition 'ree'"
            )
        self.ree = RealEmbeddingExtractor(config.ree) if config.condition == "ree" else None
        e, f = config.embed_dim, config.num_feat
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, e, 3, 1, 1)
        self.patch_norm = nn.LayerNorm(e)
        self.groups = nn.ModuleList(MambaGroup(config, d) for d in config.depths)
        self.norm = nn.LayerNorm(e)
        self.conv_after_body = nn.Conv2d(e, e, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(e, f, 3, 1, 1), nn.LeakyReLU(inplace=True))
        up: list[nn.Module] = []
        for _ in range(int(math.log2(config.upscale))):
            up += [nn.Conv2d(f, 4 * f, 3, 1, 1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*up)
        self.conv_last = nn.Conv2d(f, 3, 3, 1, 1)
        self.apply(_init_linear)

    def embed(self, lr: torch.Tensor) -> torch.Tensor | None:
        return None if self.ree is None else self.ree(lr, tuned=True)

    def forward(self, lr: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        if embedding is None:
            embedding = self.embed(lr)
        x = self.conv_first(lr - self.rgb_mean)
        size = x.shape[-2:]
        h = self.patch_norm(x.flatten(2).transpose(1, 2))
        for group in self.groups:
            h = group(h, size)
            if embedding is not None:
                h = modulate(h, embedding)
        h = self.norm(h).transpose(1, 2).reshape(x.shape)
        x = self.conv_after_body(h) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        return x + self.rgb_mean


def _init_linear(m: nn.Module) -> None:
    # SwinIR's / Vim's initialisation of the token layers (truncated normal 0.02, zero bias; LayerNorm 1, 0).
    # The Mamba step-size projection keeps its own initialisation (its bias sets the initial step sizes).
    if isinstance(m, nn.Linear) and not getattr(m, "_keep_init", False):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def replace(config: DACESRConfig, **changes) -> DACESRConfig:
    return dataclasses.replace(config, **changes)
