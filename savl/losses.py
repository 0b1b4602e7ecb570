"""Losses of SAVL and its SR stage (DESIGN §2, §5.1, §5.3, §5.6, §5.7).

- `kl_standard_normal`: Eq. 7, the closed-form KL of a per-pixel diagonal Gaussian to N(0, I).
- `KLSchedule`: Eq. 29-30, linear warm-up of beta.
- `reconstruction`: Eq. 13, the negative log-likelihood of a Laplace (L1) or Gaussian (L2) decoder.
- `energy_distance`: ReDSR's Eq. 5 between two sample sets.
- `CLUB`: the contrastive log-ratio upper bound of mutual information (Cheng et al. 2020), DESIGN §5.6.
- `PerceptualLoss`, `gan_loss`: the GAN stage's VGG19 and adversarial terms (DESIGN §5.3).
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


def reconstruction(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Eq. 13: -log p(y | z, r) up to scale and constants, averaged over elements.

    "l1": Laplace likelihood -> mean |pred - target| (the paper's choice); "l2": Gaussian -> mean squared error.
    """
    if kind == "l1":
        return (pred - target).abs().mean()
    if kind == "l2":
        return (pred - target).square().mean()
    raise ConfigError(f"reconstruction: kind must be 'l1' or 'l2', got {kind!r}")


def energy_distance(x: torch.Tensor, y: torch.Tensor, normalise: bool = False, unbiased: bool = True) -> torch.Tensor:
    """ReDSR's Eq. 5: 2 E||x - y|| - E||x - x'|| - E||y - y'|| between sample sets x (N, D) and y (M, D).

    `unbiased=True` averages the within-set terms over distinct pairs only (a U-statistic), so two samples from
    the same distribution give 0 in expectation; `unbiased=False` includes the zero diagonal (a V-statistic,
    exactly 0 for identical sets). `normalise=True` divides by D (DESIGN §2).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"energy_distance needs (N, D) and (M, D) tensors, got {tuple(x.shape)}, {tuple(y.shape)}")
    xy = _pairwise_distance(x, y).mean()
    xx = _within_mean(_pairwise_distance(x, x), unbiased)
    yy = _within_mean(_pairwise_distance(y, y), unbiased)
    ed = 2 * xy - xx - yy
    return ed / x.shape[1] if normalise else ed


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
    """CLUB (DESIGN §5.6): q(y | x) = N(mu(x), diag exp(logvar(x))), logvar = bound * tanh(.).

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


# VGG19 `features` indices of the convolutions read before their ReLU (DESIGN §5.3).
VGG19_LAYERS = {"conv1_2": 2, "conv2_2": 7, "conv3_4": 16, "conv4_4": 25, "conv5_4": 34}
PERCEPTUAL_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1


def vgg19_weights_path() -> Path:
    """Where torch hub caches torchvision's VGG19 weights: $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG19_URL)


class PerceptualLoss(nn.Module):
    """VGG19 perceptual loss (DESIGN §5.3): weighted L1 between pre-ReLU features of conv1_2 ... conv5_4.

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
    """Adversarial loss on discriminator logits (DESIGN §5.3: vanilla; the 0.1 weight is the caller's).

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
