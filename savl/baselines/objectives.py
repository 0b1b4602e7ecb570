"""Training stages of the baselines, for `savl train` (`savl.train.stages` reads `STAGES`).

Each stage is a row `name -> (build_models(cfg) -> {name: module}, objective class)`. The objective follows
`savl.train.stages.Objective`'s contract: constructed as `Objective(cfg, models)`, it registers only what the
main optimiser updates, and `forward(lr, target, step, generator) -> {"loss": ..., other scalar terms}`.
Every batch item is one HR crop (`target`, the loss target the data pipeline made) and the LR made from it.

- `redsr`: ReDSR's whole objective (Eq. 9) in one stage, as the paper trains it: each crop is split into two
  halves that share its degradation (`savl.baselines.redsr.split_pair`); the left LR half is encoded and
  super-resolved, the right HR half is re-degraded with the left half's code. Models: `srnet` (ReDSRNet:
  encoder + generator) and `degrader`.
- `dacesr_ree`: the REE (`savl.baselines.dacesr.RealEmbeddingExtractor`) from scratch: InfoNCE on the clean
  halves trains its base (`REE_TEMPERATURE`), and the MSE of Eq. 7 between the LR branch (base + LoRA) and the
  GT branch (base) trains the adapters on the `SEVERE_FRACTION` of the batch the base finds most degraded.
  Model: `ree`.
- `dacesr`: the SR network with the REE frozen, L1 (the paper's MSE-based model, trained before its GAN
  fine-tuning, §V-B). `init_from` a `dacesr_ree` run loads its `ree`. Models: `srnet` (DACESRNet) and `ree`
  (the same module as `srnet.ree`, so the previous stage's `ree` file loads into it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from savl.baselines import redsr
from savl.baselines.dacesr import DACESRConfig, DACESRNet, RealEmbeddingExtractor, REEConfig
from savl.errors import ConfigError
from savl.losses import redsr_energy_loss

#: DACESR's degradation selection (§V-B): the severe class is the bottom quarter of RAM's text similarity.
SEVERE_FRACTION = 0.25
#: InfoNCE temperature of the REE base's contrastive pre-training (SimCLR's common choice).
REE_TEMPERATURE = 0.1


def _sr_l1(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    from savl.losses import reconstruction

    return reconstruction(pred, target, kind)


# ----------------------------------------------------------------------------------------------- ReDSR
def build_redsr(cfg) -> dict[str, nn.Module]:
    c = redsr.ReDSRConfig.profile(cfg.profile)
    if cfg.lr_patch % 2:
        raise ConfigError(f"stage redsr splits each LR patch in two: data.gt_size / 4 = {cfg.lr_patch} must be even")
    return {"srnet": redsr.ReDSRNet(c), "degrader": redsr.Degrader(c)}


class ReDSRObjective(nn.Module):
    """Eq. 9: L = 0.01 L_ED + L_RD + L_SR (L_SR modulated by Eq. 8 and scaled by `losses.sr_weight`)."""

    def __init__(self, cfg, models: dict[str, nn.Module]):
        super().__init__()
        self.losses = cfg.losses
        self.srnet, self.degrader = models["srnet"], models["degrader"]

    def forward(self, lr, target, step: int, generator=None, clean=None) -> dict[str, torch.Tensor]:
        # The degrader re-degrades the GT the LR was made from (`clean`), not the USM-sharpened SR target.
        lr1, lr2 = redsr.split_pair(lr)
        hr1, _ = redsr.split_pair(target)
        _, hr2 = redsr.split_pair(target if clean is None else clean)
        code = self.srnet.encode(lr1)
        sr = self.srnet(lr1, code)
        pseudo = self.degrader(hr2, code)
        rd = redsr.redegradation_loss(pseudo, lr2)
        ed = redsr_energy_loss(code, redsr.ED_SAMPLES, generator)
        weight = redsr.modulation_weight(pseudo, lr2)
        sr_term = redsr.modulated_l1(sr, hr1, weight)
        loss = redsr.ED_WEIGHT * ed + rd + self.losses.sr_weight * sr_term
        return {"ed": ed, "rd": rd, "sr_l1": sr_term, "w": weight.mean(), "loss": loss}


# ---------------------------------------------------------------------------------------------- DACESR
def build_ree(cfg) -> dict[str, nn.Module]:
    return {"ree": RealEmbeddingExtractor(REEConfig.profile(cfg.profile))}


def severe_selection(ree: RealEmbeddingExtractor, lr: torch.Tensor, gt: torch.Tensor, fraction: float):
    """Indices of the `fraction` of the batch (at least one) whose LR the GT branch recognises least, and the
    per-item disagreement: the distance between the GT branch's embeddings of the LR and of the GT, relative to
    the GT embedding's norm. The paper ranks degradations by RAM's tag similarity between the LR and the GT on
    a calibration set and trains on the bottom quarter; we rank the batch's own draws by the base's embedding
    disagreement, per step."""
    with torch.no_grad():
        a = ree(lr, tuned=False).flatten(1)
        b = ree(gt, tuned=False).flatten(1)
        disagreement = (a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-12)
    k = max(1, math.ceil(fraction * lr.shape[0]))
    return disagreement.argsort(descending=True)[:k], disagreement


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between rows of a and b (N, E): row i of a and row i of b are the positive pair."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.t() / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


class REEObjective(nn.Module):
    """InfoNCE (base, clean halves) + Eq. 7's MSE (adapters, severe LR vs GT)."""

    def __init__(self, cfg, models: dict[str, nn.Module]):
        super().__init__()
        if cfg.batch < 2:
            raise ConfigError("stage dacesr_ree needs batch >= 2 (the contrastive loss needs negatives)")
        self.ree = models["ree"]

    def forward(self, lr, target, step: int, generator=None, clean=None) -> dict[str, torch.Tensor]:
        target = target if clean is None else clean  # the REE embeds the GT the LR was made from
        left, right = redsr.split_pair(target)
        left_embedding, right_embedding = self.ree(left, tuned=False).mean(1), self.ree(right, tuned=False).mean(1)
        contrastive = info_nce(left_embedding, right_embedding, REE_TEMPERATURE)
        chosen, disagreement = severe_selection(self.ree, lr, target, SEVERE_FRACTION)
        teacher = self.ree(target[chosen], tuned=False).detach()
        mse = F.mse_loss(self.ree(lr[chosen], tuned=True), teacher)
        return {
            "info_nce": contrastive,
            "mse": mse,
            "disagreement": disagreement.mean(),
            "loss": contrastive + mse,
        }


def build_dacesr(cfg) -> dict[str, nn.Module]:
    net = DACESRNet(DACESRConfig.profile(cfg.profile))
    models: dict[str, nn.Module] = {"srnet": net}
    if net.ree is not None:
        net.ree.requires_grad_(False)
        models["ree"] = net.ree  # shared: loads the dacesr_ree run's file
    return models


class DACESRObjective(nn.Module):
    """L_pixel of Eq. 8 (L1, scaled by `losses.sr_weight`); the REE is frozen and runs without a graph."""

    def __init__(self, cfg, models: dict[str, nn.Module]):
        super().__init__()
        self.losses = cfg.losses
        self.srnet = models["srnet"]

    def forward(self, lr, target, step: int, generator=None, clean=None) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            embedding = self.srnet.embed(lr)
        sr = self.srnet(lr, embedding)
        term = _sr_l1(sr, target, self.losses.sr)
        return {"sr_" + self.losses.sr: term, "loss": self.losses.sr_weight * term}


#: stage name -> (build_models, objective class)
STAGES = {
    "redsr": (build_redsr, ReDSRObjective),
    "dacesr_ree": (build_ree, REEObjective),
    "dacesr": (build_dacesr, DACESRObjective),
}
