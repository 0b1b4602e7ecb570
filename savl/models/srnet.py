"""The degradation-aware SR network: DA-RHAG groups (DSCA first, then HABs and an OCAB) in HAT's x4 shell
(paper §3, Fig. 3 and §3.4).

`DARHAGNet(config)` owns the amortized encoder q(r | y) when either guidance is on and computes the posterior
from the LR itself unless one is passed in. With both switches off it is plain HAT (our baseline) and has no
encoder. The `paper` profile is sized to the paper's Table 2 (encoder included): 14.0 M parameters with both
guidances, 14.0 M without channel modulation, 13.6 M without spatial modulation. The paper gives neither the
backbone's width nor depth nor DSCA's layers, so these are fitted: HAT's 6 groups of 6 HABs, window 16, 6 heads,
with embed 168 and compress/squeeze 28 (between HAT-S, 144 and 24, and HAT, 180 and 3/30); DSCA's channel branch
with 8 hidden channels (0.04 M in all, below the paper's rounding, as Table 2's equal 14.0 / 14.0 implies) and
its spatial branch with 104 (0.39 M, the paper's 14.0 - 13.6). Measured: 14.02 / 13.99 / 13.63 M
(benchmarks/results/srnet_size.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from savl.errors import ConfigError
from savl.models.dsca import DSCA, GuidanceMaps
from savl.models.encoder import AmortizedEncoder, EncoderConfig, Posterior
from savl.models.hat import HAT


@dataclass
class SRNetConfig:
    """Sizes and switches of the SR network. `depths[i]` HABs in group i; `heads` per attention layer."""

    embed_dim: int = 168
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    heads: int = 6
    window: int = 16
    mlp_ratio: float = 2.0
    compress: int = 28
    squeeze: int = 28
    overlap: float = 0.5
    upscale: int = 4
    num_feat: int = 64
    drop_path: float = 0.0
    channel_guidance: bool = True
    spatial_guidance: bool = True
    dsca_channel_hidden: int = 8
    dsca_spatial_hidden: int = 104
    gamma_init: float = 0.25
    encoder: EncoderConfig = field(default_factory=EncoderConfig.paper)

    def __post_init__(self):
        self.depths = tuple(int(d) for d in self.depths)
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig(**self.encoder)
        checks = [
            (self.embed_dim % self.heads == 0, f"embed_dim {self.embed_dim} must be divisible by heads {self.heads}"),
            (
                self.embed_dim % self.compress == 0 and self.embed_dim % self.squeeze == 0,
                f"embed_dim {self.embed_dim} must be divisible by compress {self.compress} and squeeze {self.squeeze}",
            ),
            (self.window >= 2 and self.window % 2 == 0, f"window {self.window} must be even"),
            (len(self.depths) > 0 and min(self.depths) > 0, f"depths {self.depths} must be positive"),
            (0.0 <= self.drop_path < 1.0, f"drop_path {self.drop_path} must lie in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"SRNetConfig: {message}")

    @property
    def guided(self) -> bool:
        return self.channel_guidance or self.spatial_guidance

    @classmethod
    def paper(cls) -> SRNetConfig:
        """Table 2's sizes with the paper-size encoder: 14.0 M (13.99 M without channel, 13.63 M without spatial
        guidance); drop_path 0.1 as HAT."""
        return cls(drop_path=0.1, encoder=EncoderConfig.paper())

    @classmethod
    def book(cls) -> SRNetConfig:
        """Small enough to train on 2 CPU cores in minutes (0.5 M parameters, about 5 GFLOP at 64x64 LR)."""
        return cls(
            embed_dim=48,
            depths=(2, 2),
            heads=3,
            window=8,
            compress=3,
            squeeze=12,
            num_feat=32,
            dsca_channel_hidden=8,
            dsca_spatial_hidden=32,
            encoder=EncoderConfig.book(),
        )

    @classmethod
    def smoke(cls) -> SRNetConfig:
        """Tiny: a forward pass in well under a second."""
        return cls(
            embed_dim=16,
            depths=(2,),
            heads=2,
            window=4,
            compress=2,
            squeeze=4,
            num_feat=16,
            dsca_channel_hidden=4,
            dsca_spatial_hidden=8,
            encoder=EncoderConfig.smoke(),
        )

    @classmethod
    def profile(cls, name: str) -> SRNetConfig:
        if name not in ("paper", "book", "smoke"):
            raise ConfigError(f"unknown profile {name!r} (use paper, book or smoke)")
        return getattr(cls, name)()

    def replace(self, **changes) -> SRNetConfig:
        return dataclasses.replace(self, **changes)


class DARHAGNet(nn.Module):
    """DSCA-guided HAT (paper §3.4). `forward(lr, posterior=None) -> sr`; `forward_with_posterior(lr)`.

    Submodules: `sr` (the HAT shell, savl.models.hat.HAT), `encoder` (AmortizedEncoder or None), `dsca`
    (one DSCA per group, or None). A DA-RHAG group computes  x + RHAG.body(DSCA(x)),  with DSCA's attention
    biases (factored, savl.models.hat.FactoredBias) handed to the group's HABs; at initialisation DSCA's channel
    modulation is the identity and its attention bias is at most 1 logit.
    """

    architecture = "DARHAGNet"

    def __init__(self, config: SRNetConfig | None = None):
        super().__init__()
        config = config or SRNetConfig()
        self.config = config
        self.scale = config.upscale
        self.sr = HAT(
            embed_dim=config.embed_dim,
            depths=config.depths,
            heads=config.heads,
            window=config.window,
            mlp_ratio=config.mlp_ratio,
            compress=config.compress,
            squeeze=config.squeeze,
            overlap=config.overlap,
            upscale=config.upscale,
            drop_path=config.drop_path,
            num_feat=config.num_feat,
        )
        self.encoder: AmortizedEncoder | None = None
        self.dsca: nn.ModuleList | None = None
        if config.guided:
            self.encoder = AmortizedEncoder(config.encoder)
            self.dsca = nn.ModuleList(
                DSCA(
                    config.embed_dim,
                    config.encoder.code_dim,
                    config.heads,
                    config.window,
                    config.dsca_channel_hidden,
                    config.dsca_spatial_hidden,
                    channel=config.channel_guidance,
                    spatial=config.spatial_guidance,
                    gamma_init=config.gamma_init,
                )
                for _ in config.depths
            )

    def posterior(self, lr: torch.Tensor) -> Posterior | None:
        """q(r | y) from the encoder, or None for plain HAT."""
        return self.encoder(lr) if self.encoder is not None else None

    def forward(self, lr: torch.Tensor, posterior: Posterior | None = None, reference: bool = False) -> torch.Tensor:
        """Super-resolve lr (B, 3, h, w) -> (B, 3, scale*h, scale*w); the posterior is computed when not given.
        `reference=True` uses the materialised attention path (tests, FLOP counting)."""
        if self.encoder is not None and posterior is None:
            posterior = self.encoder(lr)
        return self._super_resolve(lr, posterior, reference)

    def forward_with_posterior(self, lr: torch.Tensor, reference: bool = False):
        """(sr, posterior) from one encoder pass: what joint training (SR loss + SAVL's ELBO) needs."""
        posterior = self.posterior(lr)
        return self._super_resolve(lr, posterior, reference), posterior

    def _super_resolve(self, lr: torch.Tensor, posterior, reference: bool) -> torch.Tensor:
        if self.dsca is None or posterior is None:
            return self.sr(lr, reference=reference)
        maps = GuidanceMaps.from_posterior(posterior, tuple(lr.shape[-2:]), self.config.window)
        guides = [partial(dsca, maps=maps) for dsca in self.dsca]
        return self.sr(lr, guides, reference=reference)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the whole network and of its parts (encoder, DSCA, backbone)."""
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        return {
            "total": count(self),
            "encoder": count(self.encoder),
            "dsca": count(self.dsca),
            "backbone": count(self.sr),
        }
