"""SAVL: the amortized encoder and the likelihood decoder trained by the composed objective (Eq. 12-14).

Variants (the ablations of §4.4):
- "savl": stochastic per-pixel code; loss = alpha * L_rec + beta_t * KL (Eq. 14 / Eq. 29, beta_t from Eq. 30).
  The paper's beta replaces the (1 + lambda) of Eq. 12, so lambda does not appear again here.
- "deterministic": point-mass code; loss = alpha * L_rec (no regulariser).
- "deterministic_club": point-mass code; the KL is replaced by a CLUB upper bound of the MI between the code
  r(u) and the content under pixel u (the HR pixels of that LR cell), weighted by its own lambda (`lam`, not
  annealed): loss = alpha * L_rec + lam * CLUB. `lam=None` sets it to beta_final, the weight the savl
  variant's KL reaches, so the ablation swaps the regulariser at the same weight. The CLUB net q is trained
  in alternation by `club_step`.

Reduction (`reduction`, see `savl.losses.REDUCTIONS`): "literal" sums Eq. 13 over pixels and colour channels
and Eq. 7 over pixels and code channels, per image, as the paper writes them; "pixel" (the default) takes the
per-element mean of Eq. 13 and Eq. 7 summed over code channels and averaged over pixels (nats per pixel), so
that beta's scale does not depend on the patch size; "element" averages Eq. 7 over code channels too. The KL
weighs 3x more under "pixel" than under "literal" for the same beta; `savl.losses.convert_beta` translates.
The CLUB estimate (a per-pixel MI) is reduced like the KL: times the pixel count under "literal", divided by
m under "element".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from savl.errors import ConfigError
from savl.losses import CLUB, REDUCTIONS, KLSchedule, laplace_nll, reconstruction, reduce_per_image
from savl.models.decoder import Decoder, DecoderConfig
from savl.models.encoder import AmortizedEncoder, EncoderConfig, Posterior

VARIANTS = ("savl", "deterministic", "deterministic_club")


@dataclass
class SAVLConfig:
    """Everything needed to rebuild a SAVL model (for `savl.models.io.save_model` / `load_model`)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    variant: str = "savl"
    alpha: float = 1.0
    lam: float | None = None
    rec: str = "l1"
    beta_final: float = 5e-4
    anneal_steps: int = 50_000
    reduction: str = "pixel"
    club_hidden: int = 64
    club_samples: int = 256


class SAVL(nn.Module):
    """Encoder + decoder + objective (Eq. 12-14). `forward` returns the loss terms of one training step."""

    architecture = "SAVL"

    def __init__(
        self,
        encoder: AmortizedEncoder,
        decoder: Decoder,
        variant: str = "savl",
        kl_schedule: KLSchedule | None = None,
        alpha: float = 1.0,
        lam: float | None = None,
        rec: str = "l1",
        reduction: str = "pixel",
        club_hidden: int = 64,
        club_samples: int = 256,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"SAVL: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if rec not in ("l1", "l2", "laplace"):
            raise ConfigError(f"SAVL: rec must be 'l1', 'l2' or 'laplace', got {rec!r}")
        if (rec == "laplace") != decoder.config.learned_scale:
            raise ConfigError("SAVL: rec 'laplace' and a decoder with learned_scale go together")
        if reduction not in REDUCTIONS:
            raise ConfigError(f"SAVL: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.kl_schedule = kl_schedule or KLSchedule()
        if lam is None:  # the CLUB weight defaults to the savl variant's final KL weight
            lam = self.kl_schedule.beta_final if variant == "deterministic_club" else 0.0
        if lam < 0:
            raise ConfigError(f"SAVL: lam must be >= 0, got {lam}")
        if variant == "deterministic_club" and lam == 0:
            raise ConfigError("SAVL: variant 'deterministic_club' needs lam > 0 (lam is the CLUB weight)")
        if variant != "deterministic_club" and lam != 0:
            # the savl variant's KL weight is beta_t alone (the paper's beta replaces 1 + lambda)
            raise ConfigError(
                f"SAVL: lam is the CLUB weight of 'deterministic_club'; variant {variant!r} needs lam = 0"
            )
        want_deterministic = variant != "savl"
        if encoder.config.deterministic != want_deterministic:
            kind = "deterministic" if want_deterministic else "stochastic"
            raise ConfigError(f"SAVL: variant {variant!r} needs a {kind} encoder")
        if encoder.config.code_dim != decoder.config.code_dim:
            raise ConfigError(
                f"SAVL: encoder code_dim {encoder.config.code_dim} != decoder code_dim {decoder.config.code_dim}"
            )
        self.encoder, self.decoder = encoder, decoder
        self.variant = variant
        self.alpha, self.lam, self.rec = float(alpha), float(lam), rec
        self.reduction = reduction
        self.club_samples = club_samples
        self.club_hidden = club_hidden
        content_dim = decoder.config.in_channels * decoder.config.scale**2
        self.club = CLUB(encoder.config.code_dim, content_dim, club_hidden) if variant == "deterministic_club" else None

    @property
    def config(self) -> SAVLConfig:
        return SAVLConfig(
            encoder=self.encoder.config,
            decoder=self.decoder.config,
            variant=self.variant,
            alpha=self.alpha,
            lam=self.lam,
            rec=self.rec,
            beta_final=self.kl_schedule.beta_final,
            anneal_steps=self.kl_schedule.anneal_steps,
            reduction=self.reduction,
            club_hidden=self.club_hidden,
            club_samples=self.club_samples,
        )

    @classmethod
    def from_config(cls, config: SAVLConfig) -> SAVL:
        return cls(
            AmortizedEncoder(config.encoder, deterministic=config.variant != "savl"),
            Decoder(config.decoder),
            variant=config.variant,
            kl_schedule=KLSchedule(config.beta_final, config.anneal_steps),
            alpha=config.alpha,
            lam=config.lam,
            rec=config.rec,
            reduction=config.reduction,
            club_hidden=config.club_hidden,
            club_samples=config.club_samples,
        )

    @classmethod
    def build(cls, profile: str = "book", variant: str = "savl", **kwargs) -> SAVL:
        """A SAVL model of a size profile ("paper", "book", "smoke"); kwargs go to `SAVLConfig`."""
        enc = dataclasses.replace(EncoderConfig.profile(profile), deterministic=variant != "savl")
        dec = dataclasses.replace(DecoderConfig.profile(profile), learned_scale=kwargs.get("rec") == "laplace")
        config = SAVLConfig(encoder=enc, decoder=dec, variant=variant, **kwargs)
        return cls.from_config(config)

    def representation_parameters(self):
        """Encoder and decoder parameters: what the main optimizer updates (not the CLUB net)."""
        yield from self.encoder.parameters()
        yield from self.decoder.parameters()

    def club_parameters(self):
        """Parameters of the CLUB variational net q (its own optimizer, `club_step`)."""
        if self.club is None:
            raise ConfigError(f"SAVL: variant {self.variant!r} has no CLUB net")
        yield from self.club.parameters()

    def encode(self, lr: torch.Tensor) -> Posterior:
        return self.encoder(lr)

    def _reduce(self, per_image: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        m, h, w = code.shape[1:]
        return reduce_per_image(per_image, self.reduction, h * w, m)

    def _club_pairs(self, code: torch.Tensor, hr: torch.Tensor, generator: torch.Generator | None):
        """Per-pixel pairs (r(u), content(u)); content = the scale x scale HR block under LR pixel u."""
        x = code.permute(0, 2, 3, 1).reshape(-1, code.shape[1])
        content = F.pixel_unshuffle(hr, self.decoder.config.scale)
        y = content.permute(0, 2, 3, 1).reshape(-1, content.shape[1])
        n = x.shape[0]
        if n > self.club_samples:
            gen_device = generator.device if generator is not None else code.device
            idx = torch.randperm(n, generator=generator, device=gen_device)[: self.club_samples].to(code.device)
            x, y = x[idx], y[idx]
        return x, y

    def forward(
        self, lr: torch.Tensor, hr: torch.Tensor, step: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss terms at training step `step`: loss, rec, kl (as weighted), kl_per_image, beta, y_hat[, club].

        In training mode the code is sampled (Eq. 5); in eval mode the posterior mean is used.
        """
        post = self.encoder(lr)
        code = post.sample(generator) if self.training else post.mean
        y_hat, log_scale = self.decoder.forward_with_scale(hr, code)
        if self.rec == "laplace":
            rec = laplace_nll(y_hat, log_scale, lr, self.reduction)
        else:
            rec = reconstruction(y_hat, lr, self.rec, self.reduction)
        beta = self.kl_schedule(step)
        kl_per_image = post.kl()
        kl = self._reduce(kl_per_image, code)
        out = {
            "rec": rec,
            "kl": kl,
            "kl_per_image": kl_per_image.mean(),
            "beta": torch.tensor(beta, device=lr.device, dtype=rec.dtype),
            "y_hat": y_hat,
        }
        if self.rec == "laplace":  # the L1 beside the NLL, comparable with l1-trained models
            out["l1"] = (y_hat - lr).abs().mean().detach()
        if self.variant == "savl":
            out["loss"] = self.alpha * rec + beta * kl
        elif self.variant == "deterministic":
            out["loss"] = self.alpha * rec
        else:
            x, y = self._club_pairs(code, hr, generator)
            # q is frozen here (detached parameters): the encoder minimises the bound, q is fit by club_step.
            frozen = {k: v.detach() for k, v in self.club.named_parameters()}
            club = functional_call(self.club, frozen, (x, y))
            # The estimate is per pixel; as a per-image sum it is that times the pixel count (then reduced).
            pixels = code.shape[-2] * code.shape[-1]
            club_reduced = self._reduce((club * pixels).expand(code.shape[0]), code)
            out["club"] = club
            out["loss"] = self.alpha * rec + self.lam * club_reduced
        return out

    def club_step(self, lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss of the alternating CLUB update: -mean log q(content | code), the code detached (CLUB's q step)."""
        if self.club is None:
            raise ConfigError(f"SAVL: club_step needs variant 'deterministic_club', not {self.variant!r}")
        with torch.no_grad():
            code = self.encoder(lr).mean
        x, y = self._club_pairs(code, hr, generator)
        return -self.club.log_likelihood(x, y)

    @torch.no_grad()
    def swap(self, content_hr: torch.Tensor, degradation_lr: torch.Tensor) -> torch.Tensor:
        """Fig. 12: decode the content of `content_hr` with the (mean) code of `degradation_lr`.

        If the two differ in size, the code map is resized bilinearly to content_hr's LR size.
        """
        code = self.encoder(degradation_lr).mean
        s = self.decoder.config.scale
        size = (content_hr.shape[-2] // s, content_hr.shape[-1] // s)
        if code.shape[-2:] != size:
            code = F.interpolate(code, size=size, mode="bilinear", align_corners=False)
        if code.shape[0] != content_hr.shape[0]:
            code = code.expand(content_hr.shape[0], -1, -1, -1)
        return self.decoder(content_hr, code)
