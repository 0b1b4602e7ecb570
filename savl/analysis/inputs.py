"""The controlled inputs of the representation protocols: image lists, crops, the content operator
(bicubic down), and one noise or blur degradation at a chosen level, every draw from a seeded generator.
"""

from __future__ import annotations

import math

import torch

from savl.errors import ConfigError, DataError


def as_image_list(images) -> list[tuple[str, torch.Tensor]]:
    """Normalise images to ``[(name, (3, H, W) float tensor)]``.

    Accepts a (3, H, W) or (B, 3, H, W) tensor, a list of tensors, or ``savl.data.sample_images()``.
    """
    if isinstance(images, torch.Tensor):
        images = [images] if images.dim() == 3 else list(images)
    out = []
    for i, item in enumerate(images):
        name, img = item if isinstance(item, tuple) else (f"image{i}", item)
        img = torch.as_tensor(img)
        if img.dim() != 3 or img.shape[0] != 3:
            raise DataError(f"{name}: expected an RGB image of shape (3, H, W), got {tuple(img.shape)}")
        out.append((str(name), img.float()))
    if not out:
        raise DataError("no images given")
    return out


def center_crop(img: torch.Tensor, size: int | None) -> torch.Tensor:
    """Central ``size`` x ``size`` crop of a (..., H, W) tensor; ``None`` keeps the image."""
    if size is None:
        return img
    h, w = img.shape[-2:]
    if size > min(h, w):
        raise DataError(f"crop {size} is larger than the image ({h}x{w})")
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top : top + size, left : left + size]


def downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The content operator D: MATLAB-compatible bicubic by 1/scale (§3.1)."""
    from savl.imresize import imresize

    return imresize(hr, scale=1.0 / scale)


def add_noise(lr: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Per-channel Gaussian noise of std ``sigma`` (on [0, 1]; none at 0), clamped to [0, 1]."""
    from savl.degrade.ops import add_gaussian_noise

    if sigma > 0:
        b = lr.shape[0]
        s = torch.full((b,), float(sigma), device=lr.device)
        lr = add_gaussian_noise(lr, s, torch.zeros(b, dtype=torch.bool, device=lr.device), generator)
    return lr.clamp(0, 1)


def degrade(hr: torch.Tensor, factor: str, value: float, generator: torch.Generator, scale: int = 4):
    """One controlled degradation of an HR batch (B, 3, H, W) -> LR in [0, 1].

    ``noise``: bicubic down, then Gaussian noise of std ``value`` (on [0, 1]); ``blur``: Gaussian blur
    of std ``value`` HR pixels (none at 0), then bicubic down.
    """
    if factor == "noise":
        return add_noise(downsample(hr, scale), value, generator)
    if factor == "blur":
        import kornia

        if value > 0:
            k = 2 * math.ceil(3 * value) + 1
            hr = kornia.filters.gaussian_blur2d(hr, (k, k), (float(value), float(value)), border_type="reflect")
        return downsample(hr, scale).clamp(0, 1)
    raise ConfigError(f"unknown degradation factor {factor!r} (expected 'noise' or 'blur')")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))
