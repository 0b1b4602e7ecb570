"""The models and objectives of the four stages (the paper's §4.1 schedule with Real-ESRGAN's GAN stage).

- representation: SAVL alone (encoder + decoder), loss Eq. 14 with beta_t of Eq. 29-30.
- joint: SAVL + the SR net guided by the SAVL posterior; the SR net owns the encoder and SAVL shares the
  same module, so one set of encoder weights gets both gradients. loss = savl_weight * SAVL + sr_weight * L1.
- frozen_l1: the encoder is frozen (no gradient, posterior computed without a graph); SR loss only.
- gan: as frozen_l1, plus VGG19 perceptual and adversarial losses against a U-Net discriminator (SN); an EMA
  of the SR net is kept (decay 0.999, as Real-ESRGAN). The adversarial part is computed by the loop, which
  owns the discriminator.
- rrdb_sft: the non-blind RRDB-SFT of Table 4 (A.3, savl.models.rrdb_sft), L1, conditioned per batch on
  `model.guidance`: nothing, a frozen SAVL encoder's posterior mean ("code", the encoder from
  `model.encoder_from` or `init_from`), or the ground-truth kernel map of the batch's own draw ("kernel",
  handed over by the loop from `BatchSource.next`).

The SAVL objective's reduction (`losses.reduction`) applies to the SAVL loss only; the SR losses are per-element
means. With `reduction: literal` the SAVL loss is a per-image sum, thousands of times the SR L1 of the joint
stage; `losses.savl_weight` is then the knob that balances them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from savl.errors import ConfigError

# U-Net discriminator width per profile (Real-ESRGAN uses 64).
DISCRIMINATOR_BASE = {"paper": 64, "book": 16, "smoke": 8}


def _sr_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from savl.losses import reconstruction

    return reconstruction(pred, target, kind)


def _baseline(stage: str):
    """(build_models, objective class) of a baseline stage (savl.baselines.objectives.STAGES), or None."""
    from savl.baselines.objectives import STAGES

    return STAGES.get(stage)


def build_models(cfg) -> dict[str, nn.Module]:
    """Named models of a stage: "savl" (representation, joint), "srnet" (SR stages), "discriminator" (gan);
    a baseline stage's own (savl.baselines.objectives)."""
    baseline = _baseline(cfg.stage)
    if baseline is not None:
        return baseline[0](cfg)
    from savl.losses import KLSchedule
    from savl.models.decoder import Decoder, DecoderConfig
    from savl.models.encoder import AmortizedEncoder, EncoderConfig
    from savl.models.savl import SAVL
    from savl.models.srnet import DARHAGNet, SRNetConfig

    p, m, lo = cfg.profile, cfg.model, cfg.losses
    enc_cfg = dataclasses.replace(EncoderConfig.profile(p), deterministic=m.variant != "savl")
    models: dict[str, nn.Module] = {}

    def make_savl(encoder):
        return SAVL(
            encoder,
            Decoder(
                dataclasses.replace(
                    DecoderConfig.profile(p), code_dim=enc_cfg.code_dim, learned_scale=lo.rec == "laplace"
                )
            ),
            variant=m.variant,
            kl_schedule=KLSchedule(lo.beta_final, lo.anneal_steps),
            alpha=lo.alpha,
            lam=lo.lam,
            rec=lo.rec,
            reduction=lo.reduction,
        )

    if cfg.stage == "representation":
        models["savl"] = make_savl(AmortizedEncoder(enc_cfg))
        return models
    if cfg.stage == "rrdb_sft":
        models["srnet"] = _build_rrdb_sft(cfg, enc_cfg)
        return models
    sr_cfg = SRNetConfig.profile(p).replace(
        channel_guidance=m.channel_guidance, spatial_guidance=m.spatial_guidance, encoder=enc_cfg
    )
    srnet = DARHAGNet(sr_cfg)
    models["srnet"] = srnet
    if cfg.stage == "joint":
        if srnet.encoder is None:
            raise ConfigError("stage joint needs model.channel_guidance or model.spatial_guidance (no encoder)")
        models["savl"] = make_savl(srnet.encoder)  # shared module: the SR net owns it
    if cfg.stage == "gan":
        from savl.models.discriminator import UNetDiscriminatorSN

        models["discriminator"] = UNetDiscriminatorSN(3, DISCRIMINATOR_BASE[p])
    if cfg.stage in ("frozen_l1", "gan") and srnet.encoder is not None:
        srnet.encoder.requires_grad_(False)
    return models


def _build_rrdb_sft(cfg, enc_cfg) -> nn.Module:
    """RRDB-SFT at the profile's size; for guidance "code" its frozen encoder comes from `model.encoder_from`
    (a SAVL or AmortizedEncoder model file, whose encoder config it takes) or later from `init_from` (the loop
    loads a representation run's encoder into `srnet.encoder`; the profile's encoder config then)."""
    from savl.models.rrdb_sft import RRDBSFTConfig, RRDBSFTNet

    m = cfg.model
    net_cfg = dataclasses.replace(RRDBSFTConfig.profile(cfg.profile, m.guidance), encoder=enc_cfg)
    if not m.encoder_from:
        return RRDBSFTNet(net_cfg)
    from savl.models.encoder import AmortizedEncoder
    from savl.models.io import load_model

    loaded = load_model(m.encoder_from)
    encoder = loaded if isinstance(loaded, AmortizedEncoder) else getattr(loaded, "encoder", None)
    if not isinstance(encoder, AmortizedEncoder):
        raise ConfigError(f"{m.encoder_from}: model.encoder_from must be a SAVL or AmortizedEncoder model file")
    net = RRDBSFTNet(dataclasses.replace(net_cfg, encoder=encoder.config))
    net.encoder.load_state_dict(encoder.state_dict())
    return net


def make_objective(cfg, models: dict[str, nn.Module]) -> nn.Module:
    """The stage's objective: `Objective` for SAVL's stages, the baseline's own class otherwise."""
    baseline = _baseline(cfg.stage)
    return (baseline[1] if baseline is not None else Objective)(cfg, models)


class Objective(nn.Module):
    """The trainable part of a stage and its loss terms; this is what DDP wraps.

    Only the modules updated by the main optimiser are registered as children (the CLUB net of the
    deterministic_club variant and the discriminator have their own optimisers), so every registered
    parameter that requires grad receives a gradient on every step (find_unused_parameters=False).
    """

    def __init__(self, cfg, models: dict[str, nn.Module]):
        super().__init__()
        self.stage, self.losses = cfg.stage, cfg.losses
        savl = models.get("savl")
        object.__setattr__(self, "savl_model", savl)  # unregistered: its encoder/decoder are registered below
        if cfg.stage == "representation":
            self.encoder, self.decoder = savl.encoder, savl.decoder
        else:
            self.srnet = models["srnet"]
            if savl is not None:
                self.decoder = savl.decoder

    def forward(
        self,
        lr: torch.Tensor,
        target: torch.Tensor,
        step: int,
        generator=None,
        clean: torch.Tensor | None = None,
        guide: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`target` is the SR loss target (USM-sharpened GT when `data.usm`); `clean` the GT the LR was made from
        (None: `target`). SAVL's decoder re-degrades `clean`: p(y | x, r) models how y came from x, and y was
        made from the unsharpened x. `guide` is the batch's kernel map (rrdb_sft with guidance kernel)."""
        lo = self.losses
        x = target if clean is None else clean
        if self.stage == "representation":
            out = self.savl_model(lr, x, step, generator)
            return _scalars(out) | {"loss": out["loss"]}
        if self.stage == "joint":
            # SAVL's ELBO on (LR, the GT the LR was made from); the SR net reads the same encoder's posterior.
            out = self.savl_model(lr, x, step, generator)
            sr, _ = self.srnet.forward_with_posterior(lr)
            sr_term = _sr_loss(lo.sr, sr, target)
            terms = _scalars(out)
            terms["savl_loss"] = out["loss"]
            terms["sr_" + lo.sr] = sr_term
            terms["loss"] = lo.savl_weight * out["loss"] + lo.sr_weight * sr_term
            return terms
        if self.stage == "rrdb_sft":
            # "kernel": the batch's kernel map; "code": the frozen encoder codes lr (no graph); "none": nothing
            sr = self.srnet(lr, guide if self.srnet.config.guidance == "kernel" else None)
            sr_term = _sr_loss(lo.sr, sr, target)
            return {"sr_" + lo.sr: sr_term, "loss": lo.sr_weight * sr_term, "sr": sr}
        enc = self.srnet.encoder
        if enc is not None:
            with torch.no_grad():
                post = enc(lr).detach()
            sr = self.srnet(lr, post)
        else:
            sr = self.srnet(lr)
        sr_term = _sr_loss(lo.sr, sr, target)
        return {"sr_" + lo.sr: sr_term, "loss": lo.sr_weight * sr_term, "sr": sr}


def _scalars(out: dict) -> dict[str, torch.Tensor]:
    """Loss terms of a SAVL forward worth logging (scalars), without its loss and images."""
    return {k: v for k, v in out.items() if k != "loss" and isinstance(v, torch.Tensor) and v.dim() == 0}
