"""Batched, device-agnostic degradation operators (book appendix, Real-ESRGAN; README).

Every op takes ``x`` of shape (B, C, H, W), float, on any device, and returns a tensor on the same device.
Per-sample parameters are tensors of shape (B,) (a Python number is broadcast). Random ops take either one
``torch.Generator`` for the whole batch or a sequence of B generators, one per sample: the latter makes each
sample's noise reproducible on its own (the Real-ESRGAN pipeline records one noise seed per sample).

Filtering is correlation (no kernel flip) with reflect padding in PyTorch's sense (the edge pixel is not
repeated: numpy ``reflect`` / scipy.ndimage ``mirror``), as Real-ESRGAN's ``filter2D`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch
import torch.nn.functional as F

from savl.errors import ConfigError

Generators = torch.Generator | Sequence[torch.Generator] | None


# --------------------------------------------------------------------------------------------------
# Padding and filtering
# --------------------------------------------------------------------------------------------------
def reflect_pad(x: torch.Tensor, pad: int | tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect-pad (left, right, top, bottom) by any amount, even beyond the image size.

    ``F.pad(mode="reflect")`` refuses pads >= the side; repeating it continues the mirror periodically,
    which is what numpy's ``reflect`` mode does for large pads. A side of 1 pixel is replicated.
    """
    left, right, top, bottom = (pad,) * 4 if isinstance(pad, int) else pad
    while left or right or top or bottom:
        h, w = x.shape[-2:]
        if h == 1 or w == 1:
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        step = (min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1))
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return x


def _check_image(x: torch.Tensor, name: str = "x") -> None:
    if x.ndim != 4:
        raise ConfigError(f"{name} must be a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ConfigError(f"{name} must be a floating-point tensor, got {x.dtype}")


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate each image with a (k, k) kernel, or sample b with kernel[b] when kernel is (B, k, k).

    Reflect padding by ``k // 2`` (any image size, see :func:`reflect_pad`), then kornia's ``filter2d``.
    """
    _check_image(x)
    if kernel.ndim == 2:
        kernel = kernel[None]
    if kernel.ndim != 3 or kernel.shape[-1] != kernel.shape[-2] or kernel.shape[-1] % 2 == 0:
        raise ConfigError(f"kernel must be (k, k) or (B, k, k) with odd k, got shape {tuple(kernel.shape)}")
    if kernel.shape[0] not in (1, x.shape[0]):
        raise ConfigError(f"{kernel.shape[0]} kernels for a batch of {x.shape[0]} images")
    kernel = _trim_zero_border(kernel).to(device=x.device, dtype=x.dtype)
    p = kernel.shape[-1] // 2
    return kornia.filters.filter2d(reflect_pad(x, p), kernel, padding="valid")


def _trim_zero_border(kernel: torch.Tensor) -> torch.Tensor:
    """Drop the outer rings of a (B, k, k) kernel batch that are zero in every kernel (a host tensor only).

    Real-ESRGAN pads every kernel to 21 x 21; a batch of narrow ones then spends most of its multiplications
    on zeros. Zero taps add nothing, so the trimmed correlation (with its smaller reflect padding) computes
    the same sums; a kernel on an accelerator is left alone (reading it would wait for the device).
    """
    if kernel.device.type != "cpu" or kernel.shape[-1] == 1:
        return kernel
    support = kernel.detach().abs().amax(0) > 0
    rows, cols = support.any(1).nonzero(), support.any(0).nonzero()
    if rows.numel() == 0:
        return kernel
    c = kernel.shape[-1] // 2
    r = int(max((rows - c).abs().max(), (cols - c).abs().max()))
    return kernel[:, c - r : c + r + 1, c - r : c + r + 1] if r < c else kernel


def _band_matrix(k: torch.Tensor, n: int) -> torch.Tensor:
    """(n + K - 1, n) matrix with column j holding the 1-D kernel k at rows j..j+K-1: ``xp @ M`` correlates."""
    kk = k.numel()
    cols = torch.arange(n, device=k.device)
    rows = cols[None, :] + torch.arange(kk, device=k.device)[:, None]
    m = torch.zeros(n + kk - 1, n, device=k.device, dtype=k.dtype)
    m[rows, cols.expand(kk, n)] = k[:, None].expand(kk, n)
    return m


def filter2d_separable(x: torch.Tensor, kernel_x: torch.Tensor, kernel_y: torch.Tensor) -> torch.Tensor:
    """Separable correlation with odd 1-D kernels along columns (x) and rows (y); reflect padding.

    Written as two matrix products with banded matrices: for long kernels (USM's 51 taps) BLAS beats
    the depthwise convolution several-fold on CPU (measured ~7x for 32x3x256x256).
    """
    _check_image(x)
    kx = kernel_x.to(device=x.device, dtype=x.dtype).reshape(-1)
    ky = kernel_y.to(device=x.device, dtype=x.dtype).reshape(-1)
    if kx.numel() % 2 == 0 or ky.numel() % 2 == 0:
        raise ConfigError(f"separable kernels must have odd lengths, got {kx.numel()} and {ky.numel()}")
    h, w = x.shape[-2:]
    px, py = kx.numel() // 2, ky.numel() // 2
    xp = reflect_pad(x, (px, px, py, py))
    return _band_matrix(ky, h).T @ (xp @ _band_matrix(kx, w))


def filter2d_spatial(x: torch.Tensor, kernels: torch.Tensor, rows_per_chunk: int = 32) -> torch.Tensor:
    """Per-pixel blur: output pixel (b, :, i, j) is the correlation of x with ``kernels[b, i, j]`` (k, k).

    ``kernels`` is (B, H, W, k, k) (or (H, W, k, k) shared by the batch). Reflect padding as :func:`filter2d`.
    Works on strips of rows to bound the unfolded memory (B * C * k^2 * rows * W values).
    """
    _check_image(x)
    b, c, h, w = x.shape
    if kernels.ndim == 4:
        kernels = kernels[None].expand(b, *kernels.shape)
    if kernels.ndim != 5 or kernels.shape[1:3] != (h, w) or kernels.shape[0] not in (1, b):
        raise ConfigError(f"per-pixel kernels must be (B, {h}, {w}, k, k), got shape {tuple(kernels.shape)}")
    k = kernels.shape[-1]
    kernels = kernels.to(device=x.device, dtype=x.dtype).expand(b, -1, -1, -1, -1)
    xp = reflect_pad(x, k // 2)
    out = torch.empty_like(x)
    for r0 in range(0, h, rows_per_chunk):
        r1 = min(h, r0 + rows_per_chunk)
        strip = xp[:, :, r0 : r1 + k - 1]
        cols = F.unfold(strip, k).view(b, c, k * k, r1 - r0, w)  # (B, C, k*k, rows, W)
        kk = kernels[:, r0:r1].reshape(b, r1 - r0, w, k * k).permute(0, 3, 1, 2)  # (B, k*k, rows, W)
        out[:, :, r0:r1] = (cols * kk[:, None]).sum(2)
    return out


# --------------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------------
RESIZE_MODES = ("area", "bilinear", "bicubic")


def resize(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    mode: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """``F.interpolate`` by ``scale`` (output floor(H*scale)) or to ``size`` (H, W).

    ``antialias`` applies to bilinear/bicubic downscaling (area averages by construction). Real-ESRGAN itself
    resizes without antialiasing; its pipeline passes ``antialias=False`` (see RealESRGANConfig).
    """
    _check_image(x)
    if (scale is None) == (size is None):
        raise ConfigError("resize needs exactly one of scale and size")
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if size is not None:
        size = (int(size[0]), int(size[1]))
        if min(size) < 1:
            raise ConfigError(f"resize size must be positive, got {size}")
        if size == tuple(x.shape[-2:]):
            return x
        kw = {"size": size}
    else:
        if scale <= 0 or min(math.floor(x.shape[-2] * scale), math.floor(x.shape[-1] * scale)) < 1:
            raise ConfigError(f"resize scale {scale} gives an empty image from {tuple(x.shape[-2:])}")
        if scale == 1:
            return x
        kw = {"scale_factor": float(scale)}
    extra = {"align_corners": False, "antialias": antialias} if mode != "area" else {}
    return F.interpolate(x, mode=mode, **kw, **extra)


# --------------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------------
def _per_sample(v, b: int, device, dtype=torch.float32) -> torch.Tensor:
    t = torch.as_tensor(v, device=device, dtype=dtype).reshape(-1)
    if t.numel() == 1:
        t = t.expand(b)
    if t.numel() != b:
        raise ConfigError(f"per-sample parameter has {t.numel()} values for a batch of {b}")
    return t


def _generators(generator: Generators, b: int) -> list[torch.Generator | None] | None:
    """None/one generator -> None (draw the batch at once); a sequence -> one generator per sample."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    gens = list(generator)
    if len(gens) != b:
        raise ConfigError(f"{len(gens)} generators for a batch of {b}")
    return gens


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal draws on the generator's device, moved to ``device`` (CPU generator + GPU image works)."""
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev, dtype=torch.float32).to(device)


def add_gaussian_noise(x: torch.Tensor, sigma, gray, generator: Generators = None) -> torch.Tensor:
    """``x + sigma_b * n``; n ~ N(0, 1) per channel, or one draw shared by all channels where ``gray_b``.

    ``sigma`` is on the image's scale (Real-ESRGAN's sigma/255). Not clamped.
    """
    _check_image(x)
    b, c, h, w = x.shape
    s = _per_sample(sigma, b, x.device)
    g = _per_sample(gray, b, x.device, torch.bool)
    gens = _generators(generator, b)
    if gens is None:
        colour = _randn((b, c, h, w), generator, x.device)
        mono = _randn((b, 1, h, w), generator, x.device)
        noise = torch.where(g[:, None, None, None], mono.expand(b, c, h, w), colour)
    else:
        gray_list = g.tolist()
        noise = torch.stack(
            [_randn((1 if gi else c, h, w), gen, x.device).expand(c, h, w) for gi, gen in zip(gray_list, gens)]
        )
    return x + (noise * s[:, None, None, None]).to(x.dtype)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (kornia's rgb_to_grayscale) of RGB, or the image itself when it has one channel."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ConfigError(f"gray noise needs 1 or 3 channels, got {x.shape[1]}")
    return kornia.color.rgb_to_grayscale(x)


def poisson_levels(img: torch.Tensor) -> torch.Tensor:
    """``vals = 2^ceil(log2(#unique 8-bit values))`` per image of a (B, C, H, W) batch in [0, 1] (§5.3)."""
    b = img.shape[0]
    q = (img.detach().float().clamp(0, 1) * 255).round().long().reshape(b, -1)
    present = torch.zeros(b, 256, dtype=torch.bool, device=img.device)
    present.scatter_(1, q, True)
    n = present.sum(1).clamp(min=1).double()
    return torch.exp2(torch.ceil(torch.log2(n))).float()


def add_poisson_noise(x: torch.Tensor, scale, gray, generator: Generators = None) -> torch.Tensor:
    """Real-ESRGAN's Poisson (shot) noise (book appendix, Real-ESRGAN): ``x + scale_b * (Poisson(q vals) / vals - q)``.

    ``q`` is the image rounded to 8 bits (the luma image where ``gray_b``; its noise then goes to every
    channel) and ``vals`` the power of two above its number of distinct values. Not clamped.
    """
    _check_image(x)
    b, c, h, w = x.shape
    s = _per_sample(scale, b, x.device)
    g = _per_sample(gray, b, x.device, torch.bool)
    gens = _generators(generator, b)
    xf = x.float()
    noise = torch.empty_like(xf)
    for is_gray in (False, True):
        idx = torch.nonzero(g == is_gray).flatten()
        if idx.numel() == 0:
            continue
        img = to_gray(xf[idx]) if is_gray else xf[idx]
        q = (img.clamp(0, 1) * 255).round() / 255
        vals = poisson_levels(q)[:, None, None, None]
        rate = q * vals
        if gens is None:
            gdev = generator.device if generator is not None else x.device
            drawn = torch.poisson(rate.to(gdev), generator=generator).to(x.device)
        else:
            drawn = torch.stack(
                [
                    torch.poisson(rate[j].to(gens[i].device), generator=gens[i]).to(x.device)
                    for j, i in enumerate(idx.tolist())
                ]
            )
        noise[idx] = (drawn / vals - q).expand(-1, c, -1, -1)
    return x + (noise * s[:, None, None, None]).to(x.dtype)


# --------------------------------------------------------------------------------------------------
# JPEG and sharpening
# --------------------------------------------------------------------------------------------------
def jpeg(x: torch.Tensor, quality) -> torch.Tensor:
    """JPEG round trip with per-sample quality (B,) in [1, 100] through kornia's differentiable codec.

    The codec expects RGB in [0, 1]: the input is clamped first (as Real-ESRGAN does before its JPEG).
    """
    _check_image(x)
    if x.shape[1] != 3:
        raise ConfigError(f"jpeg needs RGB images, got {x.shape[1]} channels")
    q = _per_sample(quality, x.shape[0], x.device)
    if bool(((q < 1) | (q > 100)).any()):
        raise ConfigError(f"JPEG quality must lie in [1, 100], got {q.tolist()}")
    out = kornia.enhance.jpeg_codec_differentiable(x.float().clamp(0, 1), q)
    return out.to(x.dtype)


def opencv_gaussian_1d(ksize: int, sigma: float = 0.0) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel``: sigma <= 0 means ``0.3 ((ksize - 1) / 2 - 1) + 0.8`` (8.0 for 51)."""
    if sigma <= 0:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def usm_sharpen(x: torch.Tensor, weight: float = 0.5, threshold: float = 10, radius: int = 50) -> torch.Tensor:
    """Real-ESRGAN's unsharp masking of the GT (book appendix, Real-ESRGAN).

    ``residual = x - G*x`` with G a Gaussian of size ``radius`` (+1 if even, so 51) and OpenCV's default sigma;
    the sharpened ``clamp(x + weight * residual)`` is blended in through a soft mask, the Gaussian-blurred
    indicator of ``|residual| * 255 > threshold``: flat regions stay untouched.
    """
    _check_image(x)
    ksize = radius + 1 if radius % 2 == 0 else radius
    k = opencv_gaussian_1d(ksize)
    blur = filter2d_separable(x, k, k)
    residual = x - blur
    mask = (residual.abs() * 255 > threshold).to(x.dtype)
    soft = filter2d_separable(mask, k, k)
    sharp = (x + weight * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * x
