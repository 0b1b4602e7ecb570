"""Tiled inference (DESIGN §2, §5.1 "256x256 tiles") and severity maps (Eq. 15).

`upscale` keeps the image in host memory and streams tiles to the model's device, so memory stays flat as the
image grows. Overlapping tiles are blended with a smooth window (a raised-cosine ramp over the overlap), so
seams do not show. Gray images go through the network as RGB and come back gray; an alpha channel is
upscaled on its own track with MATLAB bicubic (a network trained on RGB knows nothing about alpha).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from savl.errors import SavlError
from savl.imresize import imresize


def model_scale(model: nn.Module) -> int:
    """The upscaling factor a model declares (`model.scale` or `model.config.upscale`)."""
    for owner, name in ((model, "scale"), (getattr(model, "config", None), "upscale")):
        value = getattr(owner, name, None) if owner is not None else None
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(model).__name__}: cannot tell its scale; pass scale=")


def _positions(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts covering [0, length): stride tile - overlap, the last tile flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blend weights: raised-cosine ramps over `overlap` pixels on sides that touch another tile."""
    w = torch.ones(length, dtype=torch.float32)
    if overlap > 0:
        t = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        ramp = 0.5 - 0.5 * torch.cos(math.pi * t)  # strictly positive, rises to ~1
        if not at_start:
            w[:overlap] = ramp
        if not at_end:
            w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def _run(model: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One forward pass; bf16/fp16 via autocast with a NaN/Inf check that falls back to fp32."""
    if dtype == torch.float32:
        return model(x).float()
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        y = model(x)
    y = y.float()
    if not torch.isfinite(y).all():
        warnings.warn(f"non-finite output under {dtype}; this tile was recomputed in float32", stacklevel=3)
        y = model(x).float()
    return y


def _auto_tile(device: torch.device) -> int:
    """A starting tile size: from free memory on CUDA, a fixed 256 elsewhere (OOM retries shrink it)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # about 1.5 GB of activations per 256x256 LR tile for a HAT-size x4 network, in fp32 (measured order).
        side = int(256 * math.sqrt(max(free, 1) / 1.5e9))
        return int(max(64, min(1024, side)) // 16 * 16)
    return 256


@torch.no_grad()
def upscale(
    model: nn.Module,
    image: torch.Tensor,
    tile: int | str | None = 256,
    overlap: int = 16,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    scale: int | None = None,
) -> torch.Tensor:
    """Super-resolve one image (C,H,W) in [0,1], C in {1, 3, 4}, tile by tile. Returns (C, sH, sW) on the CPU.

    tile: LR tile side (None = whole image at once, "auto" = from free GPU memory, halved on out-of-memory).
    overlap: LR pixels shared by neighbouring tiles, blended with a smooth window.
    """
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"upscale expects (C,H,W) with C in 1, 3, 4; got {tuple(image.shape)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    scale = scale or model_scale(model)
    image = image.detach().float().cpu()
    alpha = image[3:] if image.shape[0] == 4 else None
    rgb = image[:3] if image.shape[0] != 1 else image.expand(3, -1, -1)

    auto = tile == "auto"
    size = _auto_tile(device) if auto else tile
    while True:
        try:
            out = _upscale_rgb(model, rgb, size, overlap, dtype, device, scale)
            break
        except torch.OutOfMemoryError:
            if not auto or size <= 32:
                raise
            size //= 2
            torch.cuda.empty_cache()
    out = out.clamp(0, 1)
    if image.shape[0] == 1:
        out = out.mean(0, keepdim=True)
    if alpha is not None:
        out = torch.cat([out, imresize(alpha, scale=scale).clamp(0, 1)], 0)
    return out


def _upscale_rgb(model, rgb, tile, overlap, dtype, device, scale) -> torch.Tensor:
    _, H, W = rgb.shape
    if tile is None or (H <= tile and W <= tile):
        return _run(model, rgb[None].to(device), dtype)[0].cpu()
    if overlap * 2 >= tile:
        raise ValueError(f"overlap {overlap} must be less than half the tile {tile}")
    out = torch.zeros(3, H * scale, W * scale)
    weight = torch.zeros(1, H * scale, W * scale)
    ys, xs = _positions(H, tile, overlap), _positions(W, tile, overlap)
    for y0 in ys:
        th = min(tile, H)
        wy = _ramp(th * scale, overlap * scale, y0 == 0, y0 + th >= H)
        for x0 in xs:
            tw = min(tile, W)
            patch = rgb[:, y0 : y0 + th, x0 : x0 + tw][None].to(device)
            pred = _run(model, patch, dtype)[0].cpu()
            wx = _ramp(tw * scale, overlap * scale, x0 == 0, x0 + tw >= W)
            w = wy[:, None] * wx[None, :]
            sl = (slice(None), slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale))
            out[sl] += pred * w
            weight[sl] += w
    return out / weight


@torch.no_grad()
def severity_map(model: nn.Module, image: torch.Tensor, device: str | torch.device | None = None):
    """Eq. 15 severity of an LR image (3,H,W): returns (raw (H,W) float tensor, colour-mapped (3,H,W) in [0,1]).

    `model` is anything with an encoder: an `AmortizedEncoder`, a `SAVL` (`.encode`), or an SR network that owns
    one (`.encoder`).
    """
    import matplotlib

    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = image[:3].detach().float()[None].to(device)
    if hasattr(model, "encode"):
        posterior = model.encode(x)
    elif hasattr(model, "encoder"):  # an SR network: its encoder, or None for plain HAT
        posterior = model.encoder(x) if model.encoder is not None else None
    else:
        posterior = model(x)
    if not hasattr(posterior, "severity"):
        raise SavlError(f"{type(model).__name__}: has no encoder, so no severity map (plain HAT has none)")
    sev = posterior.severity()[0, 0].float().cpu()
    lo, hi = sev.min(), sev.max()
    norm = (sev - lo) / (hi - lo) if hi > lo else torch.zeros_like(sev)
    rgb = torch.from_numpy(matplotlib.colormaps["magma"](norm.numpy())[..., :3]).permute(2, 0, 1).float()
    return sev, rgb
