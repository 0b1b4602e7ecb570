"""Losses of SAVL and its SR stage.

- `kl_standard_normal`: Eq. 7, the closed-form KL of a per-pixel diagonal Gaussian to N(0, I).
- `KLSchedule`: Eq. 29-30, linear warm-up of beta.
- `reconstruction`: Eq. 13, the negative log-likelihood of a Laplace (L1) or Gaussian (L2) decoder.
- `REDUCTIONS`, `reduce_per_image`, `convert_beta`: how Eq. 13 and Eq. 7 are reduced to one number, and how
  beta translates between those reductions.
- `energy_distance`, `redsr_energy_loss`: ReDSR's Eq. 5 between two sample sets, and ReDSR's loss on codes.
- `CLUB`: the contrastive log-ratio upper bound of mutual information (Cheng et al. 2020).
- `PerceptualLoss`, `gan_loss`: the GAN stage's VGG19 and adversarial terms (Real-ESRGAN's recipe).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ConfigError, ModelFileError


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Eq. 7: KL(N(mu, exp(logvar)) || N(0, I)) = 1/2 sum (mu^2 + sigma^2 - 1 - log sigma^2).

    Summed over every non-batch dimension (channels and pixels); returns shape (B,).
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ in shape")
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1)


@dataclass
class KLSchedule:
    """Eq. 29-30: beta_t = beta_final * min(1, t / anneal_steps) (linear annealing from 0)."""

    beta_final: float = 5e-4
    anneal_steps: int = 50_000

    def __post_init__(self):
        if self.beta_final < 0 or self.anneal_steps < 0:
            raise ConfigError(f"KLSchedule: beta_final and anneal_steps must be >= 0 (got {self})")

    def __call__(self, step: int) -> float:
        if self.anneal_steps == 0:
            return float(self.beta_final)
        return float(self.beta_final) * min(1.0, max(0, step) / self.anneal_steps)


# How the SAVL objective is reduced to one number per batch. Eq. 13 and Eq. 7 are written per image and summed
# over every pixel u (and, for the L1, the 3 colour channels; for the KL, the m code channels).
REDUCTIONS = ("literal", "pixel", "element")
_REDUCTION_DOC = {
    "literal": "Eq. 13 and Eq. 7 as written: both summed over pixels and channels per image, averaged over images",
    "pixel": "reconstruction a per-element mean; KL summed over code channels and averaged over pixels",
    "element": "reconstruction a per-element mean; KL a per-element mean (over code channels and pixels)",
}


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def reconstruction(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "l1", reduction: str = "pixel"
) -> torch.Tensor:
    """Eq. 13: -log p(y | z, r) up to scale and constants.

    "l1": Laplace likelihood -> |pred - target| (the paper's choice); "l2": Gaussian -> squared error.
    `reduction="literal"` sums over channels and pixels per image and averages over images (Eq. 13 as written);
    "pixel" and "element" (the default, and what the SR losses use) take the mean over all elements.
    """
    _check_reduction(reduction)
    if kind == "laplace":
        raise ConfigError("reconstruction: kind 'laplace' needs the predicted scale; use laplace_nll")
    if kind == "l1":
        err = (pred - target).abs()
    elif kind == "l2":
        err = (pred - target).square()
    else:
        raise ConfigError(f"reconstruction: kind must be 'l1' or 'l2', got {kind!r}")
    if reduction == "literal":
        return err.flatten(1).sum(1).mean()
    return err.mean()


def laplace_nll(
    pred: torch.Tensor, log_scale: torch.Tensor, target: torch.Tensor, reduction: str = "pixel"
) -> torch.Tensor:
    """Eq. 13 with a Laplace scale b predicted per pixel: -log p(y | z, r) = |y - mu| / b + log(2 b), in nats.

    With a fixed b this is the L1 loss up to scale and a constant; with b predicted from the code, the code is
    rewarded for carrying how strong the degradation is (e.g. the noise level), not only what it did to this
    pixel. Reduced as `reconstruction`: per-image sums ("literal") or the mean over elements.
    """
    _check_reduction(reduction)
    log_scale = log_scale.clamp(-9.0, 3.0)  # b in [1e-4, 20] on [0, 1] images: no infinite reward at b -> 0
    nll = (pred - target).abs() * torch.exp(-log_scale) + log_scale + math.log(2.0)
    if reduction == "literal":
        return nll.flatten(1).sum(1).mean()
    return nll.mean()


def reduce_per_image(per_image: torch.Tensor, reduction: str, pixels: int, code_dim: int) -> torch.Tensor:
    """Reduce a regulariser summed over the `pixels` x `code_dim` code entries of each image (shape (B,)).

    "literal": the batch mean of the per-image sums (Eq. 7 as written); "pixel": divided by the pixel count,
    i.e. nats per pixel, summed over code channels; "element": divided by pixels * code_dim.
    """
    _check_reduction(reduction)
    if reduction == "literal":
        return per_image.mean()
    if reduction == "pixel":
        return per_image.mean() / pixels
    return per_image.mean() / (pixels * code_dim)


def _rec_over_kl_divisor(reduction: str, channels: int, code_dim: int) -> float:
    # (divisor of the summed reconstruction) / (divisor of the summed KL), per image with P pixels:
    # literal 1 / 1, pixel (channels P) / P, element (channels P) / (code_dim P). P cancels.
    _check_reduction(reduction)
    return {"literal": 1.0, "pixel": float(channels), "element": channels / code_dim}[reduction]


def convert_beta(beta: float, source: str, target: str, channels: int = 3, code_dim: int = 64) -> float:
    """The KL weight under reduction `target` that gives the same objective as `beta` under `source`.

    Derivation. For one image with P pixels let S_rec be Eq. 13 summed over pixels and the `channels` colour
    channels and S_kl be Eq. 7 summed over pixels and the `code_dim` code channels. A reduction R divides them
    by N_rec(R) and N_kl(R): literal (1, 1), pixel (channels P, P), element (channels P, code_dim P), so

        L_R = alpha S_rec / N_rec(R) + beta_R S_kl / N_kl(R)
            = (alpha / N_rec(R)) [S_rec + (beta_R N_rec(R) / N_kl(R) / alpha) S_kl].

    Two reductions have the same minimiser (their losses differ by a positive factor, which Adam ignores up
    to its epsilon) iff beta_R k(R) is the same, with k(R) = N_rec(R) / N_kl(R): k = 1 (literal), channels
    (pixel), channels / code_dim (element). Hence beta_target = beta_source k(source) / k(target). The pixel
    count cancels, so the result does not depend on the patch size. The same rule converts the CLUB weight
    `lam`, which SAVL reduces like the KL.

    Example: the paper's beta_final = 5e-4 (literal) is 5e-4 / 3 = 1.67e-4 under "pixel" and
    5e-4 * 64 / 3 = 1.07e-2 under "element"; conversely 5e-4 under "pixel" is 1.5e-3 literal (3x the paper).
    """
    if beta < 0:
        raise ConfigError(f"convert_beta: beta must be >= 0, got {beta}")
    if channels < 1 or code_dim < 1:
        raise ConfigError(f"convert_beta: channels and code_dim must be >= 1 (got {channels}, {code_dim})")
    k_source = _rec_over_kl_divisor(source, channels, code_dim)
    k_target = _rec_over_kl_divisor(target, channels, code_dim)
    return float(beta) * k_source / k_target


def energy_distance(x: torch.Tensor, y: torch.Tensor, normalise: bool = True, unbiased: bool = False) -> torch.Tensor:
    """ReDSR's Eq. 5: 2 E||x - y|| - E||x - x'|| - E||y - y'|| between sample sets x (N, D) and y (M, D).

    The defaults are ReDSR's loss as its code computes it: the within-set means run over all N^2 (M^2) pairs,
    the zero diagonal included (a V-statistic, exactly 0 for identical sets), and the result is divided by D.
    `unbiased=True` averages the within-set terms over distinct pairs only (a U-statistic, so two samples from
    the same distribution give 0 in expectation); `normalise=False` keeps Eq. 5's scale (no division by D).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"energy_distance needs (N, D) and (M, D) tensors, got {tuple(x.shape)}, {tuple(y.shape)}")
    xy = _pairwise_distance(x, y).mean()
    xx = _within_mean(_pairwise_distance(x, x), unbiased)
    yy = _within_mean(_pairwise_distance(y, y), unbiased)
    ed = 2 * xy - xx - yy
    return ed / x.shape[1] if normalise else ed


def redsr_energy_loss(codes: torch.Tensor, samples: int = 64, generator: torch.Generator | None = None) -> torch.Tensor:
    """ReDSR's regulariser on a batch of codes (B, D): `energy_distance` (ReDSR's form) to `samples` fresh
    draws from N(0, I). ReDSR draws 64 samples per step and weighs the loss by 0.01 (the caller's weight)."""
    if codes.dim() != 2:
        raise ValueError(f"redsr_energy_loss needs codes of shape (B, D), got {tuple(codes.shape)}")
    device = generator.device if generator is not None else codes.device
    t = torch.randn(samples, codes.shape[1], generator=generator, device=device, dtype=codes.dtype)
    return energy_distance(codes, t.to(codes.device))


def _pairwise_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Written out (not torch.cdist) so the gradient at zero distance is 0 instead of NaN.
    sq = (a[:, None, :] - b[None, :, :]).square().sum(-1)
    safe = torch.where(sq > 0, sq, torch.ones_like(sq))
    return torch.where(sq > 0, safe.sqrt(), torch.zeros_like(sq))


def _within_mean(d: torch.Tensor, unbiased: bool) -> torch.Tensor:
    n = d.shape[0]
    if not unbiased:
        return d.mean()
    if n < 2:
        raise ValueError("energy_distance(unbiased=True) needs at least 2 samples per set")
    return d.sum() / (n * (n - 1))  # diagonal is zero


class CLUB(nn.Module):
    """CLUB (Cheng et al. 2020): q(y | x) = N(mu(x), diag exp(logvar(x))), logvar = bound * tanh(.).

    `log_likelihood` trains q (maximise it, alternating with the main model); `forward` is the MI upper-bound
    estimate mean_i [log q(y_i|x_i) - mean_j log q(y_j|x_i)]. The inner mean over j is computed in closed form
    from the mean and variance of y, which is exact and O(N) instead of O(N^2).
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 64, logvar_bound: float = 5.0):
        super().__init__()
        self.logvar_bound = logvar_bound
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh())

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(x), self.logvar_bound * self.logvar(x)

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over samples of log q(y_i | x_i) (full Gaussian log-density, constants included)."""
        mu, logvar = self._params(x)
        ll = -0.5 * ((y - mu).square() / logvar.exp() + logvar + math.log(2 * math.pi))
        return ll.sum(-1).mean()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, logvar = self._params(x)
        inv_var = (-logvar).exp()
        positive = -0.5 * ((y - mu).square() * inv_var).sum(-1)
        # mean_j (mu_i - y_j)^2 = (mu_i - mean y)^2 + var(y)   (population variance, per dimension)
        y_mean = y.mean(0, keepdim=True)
        y_var = y.var(0, unbiased=False, keepdim=True)
        negative = -0.5 * (((mu - y_mean).square() + y_var) * inv_var).sum(-1)
        return (positive - negative).mean()


# VGG19 `features` indices of the convolutions read before their ReLU (Real-ESRGAN's perceptual loss).
VGG19_LAYERS = {"conv1_2": 2, "conv2_2": 7, "conv3_4": 16, "conv4_4": 25, "conv5_4": 34}
PERCEPTUAL_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1


def vgg19_weights_path() -> Path:
    """Where torch hub caches torchvision's VGG19 weights: $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG19_URL)


class PerceptualLoss(nn.Module):
    """VGG19 perceptual loss (Real-ESRGAN's): weighted L1 between pre-ReLU features of conv1_2 ... conv5_4.

    Inputs are RGB in [0, 1], normalised with the ImageNet mean/std. `weights="imagenet"` loads the torchvision
    file from the torch hub cache and never downloads; `weights=None` keeps random weights (tests only: such a
    loss is not a perceptual loss).
    """

    def __init__(self, weights: str | None = "imagenet", layer_weights: dict[str, float] | None = None):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.layer_weights = dict(PERCEPTUAL_WEIGHTS if layer_weights is None else layer_weights)
        unknown = set(self.layer_weights) - set(VGG19_LAYERS)
        if unknown:
            raise ConfigError(f"PerceptualLoss: unknown VGG19 layer {sorted(unknown)[0]!r}")
        last = max(VGG19_LAYERS[k] for k in self.layer_weights)
        features = make_layers(cfgs["E"], batch_norm=False)
        if weights == "imagenet":
            features.load_state_dict(_load_vgg19_features())
        elif weights is not None:
            raise ConfigError(f"PerceptualLoss: weights must be 'imagenet' or None, got {weights!r}")
        self.features = features[: last + 1].eval()
        for m in self.features:
            if isinstance(m, nn.ReLU):
                m.inplace = False  # an in-place ReLU would overwrite the stored pre-ReLU features
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # the frozen trunk never changes mode
        return self

    def extract(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pre-ReLU features of the weighted layers."""
        wanted = {VGG19_LAYERS[k]: k for k in self.layer_weights}
        out = {}
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp, ft = self.extract(pred), self.extract(target.detach())
        return sum(w * F.l1_loss(fp[k], ft[k]) for k, w in self.layer_weights.items())


def _load_vgg19_features() -> dict[str, torch.Tensor]:
    path = vgg19_weights_path()
    if not path.is_file():
        raise ModelFileError(
            f"{path.name}: VGG19 weights not found; place the file in {path.parent} "
            f"(from {VGG19_URL}; nothing is downloaded at run time)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or unsafe pickles raise many types
        raise ModelFileError(f"{path}: cannot be read as VGG19 weights ({type(e).__name__})") from None
    return {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}


def gan_loss(pred: torch.Tensor, target_is_real: bool, for_discriminator: bool = True, kind: str = "vanilla"):
    """Adversarial loss on discriminator logits (Real-ESRGAN uses "vanilla"; the 0.1 weight is the caller's).

    "vanilla": BCE-with-logits against 1 (real) or 0 (fake); the same formula serves the discriminator and the
    generator, so `for_discriminator` does not change it. "hinge": the discriminator gets mean relu(1 -+ pred),
    the generator -mean(pred) (then `target_is_real` must be True).
    """
    if kind == "vanilla":
        target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(pred, target)
    if kind == "hinge":
        if for_discriminator:
            return F.relu(1 - pred).mean() if target_is_real else F.relu(1 + pred).mean()
        if not target_is_real:
            raise ValueError("hinge generator loss is defined for target_is_real=True only")
        return -pred.mean()
    raise ConfigError(f"gan_loss: kind must be 'vanilla' or 'hinge', got {kind!r}")
