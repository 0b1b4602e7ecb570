"""Full-reference image metrics with the conventions SR papers report (book appendix, metrics, BasicSR).

Protocol, in this order:
1. round to 8 bits (`round(clamp(x, 0, 1) * 255)`), the precision of the PNGs that are scored;
2. crop `crop_border` pixels on every side (the scale, by convention);
3. with `y_channel`, convert to Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1]), float;
4. PSNR = 10 log10(255^2 / MSE) per image; SSIM with an 11x11 Gaussian window (sigma 1.5),
   C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, valid region only, mean of the map, RGB per channel and averaged.

Both return one value per image (kornia's `metrics.psnr` reduces over the batch, which is not what a
per-image table needs). Identical images give PSNR = inf (MSE = 0) and SSIM = 1. Arithmetic is float64
(float32 on MPS, which has no float64), on the input's device.

These are written here rather than taken from a package because the exact BasicSR convention (8-bit
rounding, Y without rounding, valid-region window) is what makes numbers comparable with the paper.
`LPIPS` wraps the `lpips` package (v0.1) and refuses to download its trunk.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from savl.errors import ImageError, ModelFileError

__all__ = ["LPIPS", "lpips_trunk_file", "psnr", "quantize_8bit", "rgb_to_y", "ssim"]

# ITU-R BT.601 luma for R, G, B in [0, 1], giving Y in [16, 235] (MATLAB rgb2ycbcr, BasicSR).
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


# ---------------------------------------------------------------------------------------------- helpers
def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _check_pair(sr: torch.Tensor, hr: torch.Tensor, y_channel: bool, crop_border: int) -> None:
    for name, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ImageError(f"{name}: expected a (B, C, H, W) tensor, got {shape}")
    if sr.shape != hr.shape:
        raise ImageError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
    if y_channel and sr.shape[1] != 3:
        raise ImageError(f"y_channel=True needs 3 (RGB) channels, got {sr.shape[1]}")
    if not isinstance(crop_border, int) or crop_border < 0:
        raise ImageError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    h, w = sr.shape[-2:]
    if 2 * crop_border >= min(h, w):
        raise ImageError(f"crop_border {crop_border} leaves nothing of a {w}x{h} image")


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> 8-bit levels 0..255 as floats (round half to even, like numpy's `.round()`)."""
    return torch.round(x.detach().to(_work_dtype(x.device)).clamp(0, 1) * 255.0)


def rgb_to_y(x255: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB levels in [0, 255] -> (B, 1, H, W) Y in [16, 235], not rounded (book appendix, metrics)."""
    w = torch.tensor(_Y_WEIGHTS, dtype=x255.dtype, device=x255.device).view(1, 3, 1, 1)
    return _Y_OFFSET + (x255 * w).sum(1, keepdim=True) / 255.0


def _prepare(sr, hr, crop_border: int, y_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-3 of the protocol: 8-bit rounding, border crop, optional Y conversion."""
    _check_pair(sr, hr, y_channel, crop_border)
    a, b = quantize_8bit(sr), quantize_8bit(hr.to(sr.device))
    if crop_border:
        c = crop_border
        a, b = a[..., c:-c, c:-c], b[..., c:-c, c:-c]
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    return a, b


# ------------------------------------------------------------------------------------------------ PSNR
def psnr(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB (book appendix, metrics): `sr`, `hr` float (B, 3, H, W) in [0, 1] -> Tensor[B].

    8-bit rounding, then `crop_border` pixels off every side, then Y (when `y_channel`), then
    10 log10(255^2 / MSE) with the MSE over channels and pixels of each image. Identical images -> inf.
    """
    a, b = _prepare(sr, hr, crop_border, y_channel)
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 gives +inf, by IEEE division


# ------------------------------------------------------------------------------------------------ SSIM
def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The 11-tap Gaussian (sigma 1.5) normalised to sum 1, as an outer product (cv2.getGaussianKernel)."""
    r = SSIM_WINDOW // 2
    x = torch.arange(-r, r + 1, dtype=dtype, device=device)
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004, BasicSR convention, book appendix, metrics) -> Tensor[B].

    Same preparation as `psnr`; local statistics by a valid (unpadded) 11x11 Gaussian-window convolution,
    population (not sample) variances, the map averaged per channel, channels averaged.
    """
    a, b = _prepare(sr, hr, crop_border, y_channel)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ImageError(
            f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after the crop, got {a.shape[-1]}x{a.shape[-2]}"
        )
    c = a.shape[1]
    win = _gaussian_window(a.dtype, a.device).expand(c, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)  # no padding: the valid region only

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean(dim=(-2, -1)).mean(1)


# ----------------------------------------------------------------------------------------------- LPIPS
_TRUNKS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def lpips_trunk_file(net: str) -> tuple[str, Path]:
    """(file name, folder) where torchvision looks for the ImageNet trunk that LPIPS `net` needs.

    The folder is torch hub's checkpoint cache (`$TORCH_HOME/hub/checkpoints`, default
    `~/.cache/torch/hub/checkpoints`); the name is the last part of torchvision's download URL.
    """
    if net not in _TRUNKS:
        raise ModelFileError(f"unknown LPIPS network {net!r}; use one of {', '.join(_TRUNKS)}")
    import torchvision.models as tvm

    url = getattr(tvm, _TRUNKS[net]).IMAGENET1K_V1.url
    return url.rsplit("/", 1)[-1], Path(torch.hub.get_dir()) / "checkpoints"


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al. 2018) through the `lpips` package: `lpips(sr, hr) -> Tensor[B]`, inputs in [0, 1].

    Inputs are rounded to 8 bits (like `psnr`/`ssim`) and scaled to [-1, 1]; no border crop (LPIPS is
    computed on the whole RGB image, as BasicSR's LPIPS script does). The linear calibration layers ship
    inside the `lpips` package; the ImageNet trunk comes from torchvision's cache and is never downloaded
    here: when it is missing, `ModelFileError` names the file and the folder to put it in.

    `pretrained=False` builds a randomly initialised trunk (`pnet_rand=True`) for tests and plumbing; such
    a model sets `random_trunk = True` and its `metric_name` is "lpips_random_trunk", which `evaluate`
    reports under that name, never as LPIPS.
    """

    def __init__(self, net: str = "alex", device: str | torch.device | None = None, pretrained: bool = True):
        super().__init__()
        self.net = net
        self.random_trunk = not pretrained
        name, folder = lpips_trunk_file(net)
        if pretrained and not (folder / name).is_file():
            raise ModelFileError(
                f"LPIPS ({net}) needs the ImageNet trunk {name}: place it in {folder} "
                f"(from {self.trunk_url}; set TORCH_HOME to use another cache)"
            )
        import lpips as lpips_pkg  # after the cache check: a missing trunk fails fast

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" from inside lpips
            try:
                self.model = lpips_pkg.LPIPS(net=net, version="0.1", pnet_rand=not pretrained, verbose=False)
            except Exception as e:  # a corrupt cache file surfaces as pickle/zip/runtime errors
                if not pretrained:
                    raise
                msg = " ".join(str(e).split())[:200]
                raise ModelFileError(f"{folder / name}: cannot be loaded as the {net} trunk ({msg})") from None
        self.model.eval().requires_grad_(False)
        if device is not None:
            self.to(device)

    @property
    def trunk_url(self) -> str:
        import torchvision.models as tvm

        return getattr(tvm, _TRUNKS[self.net]).IMAGENET1K_V1.url

    @property
    def metric_name(self) -> str:
        return "lpips_random_trunk" if self.random_trunk else "lpips"

    def describe(self) -> str:
        trunk = "RANDOM trunk, not LPIPS" if self.random_trunk else "ImageNet trunk"
        return f"LPIPS v0.1 ({self.net}, {trunk})"

    @torch.no_grad()
    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check_pair(sr, hr, True, 0)
        dev = next(self.model.parameters()).device
        a = quantize_8bit(sr).float().to(dev) / 127.5 - 1.0
        b = quantize_8bit(hr).float().to(dev) / 127.5 - 1.0
        return self.model(a, b).flatten().to(sr.device)
