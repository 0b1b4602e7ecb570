"""MATLAB-compatible bicubic resize: the content operator D of the paper (§3.1; book appendix, metrics).

Written by hand because no maintained Python package reproduces MATLAB's ``imresize(..., 'bicubic')``:
torch's ``interpolate(antialias=True)`` and Pillow renormalise the kernel at the borders instead of
mirroring, and OpenCV does not antialias. The rules followed, from MATLAB's documented algorithm:

- cubic kernel with a = -0.5 (Keys), support 4 input pixels;
- when shrinking (scale < 1) the kernel is stretched by 1/scale and scaled by ``scale`` (antialiasing),
  so its support is 4/scale input pixels;
- output pixel i (1-based) maps to input coordinate u = i/scale + (1 - 1/scale)/2;
- indices outside the image are mirrored (symmetric padding: ... 2 1 | 1 2 ... n | n n-1 ...);
- the weights of each output pixel are normalised to sum to one;
- output size ``ceil(in * scale)``; with ``size`` given, the scale of each axis is out/in;
- MATLAB resizes the dimension with the smaller scale first (stable sort, so H first when the scales
  are equal). For float data the two axis passes are linear maps on different axes and commute, so the
  order changes only round-off; it is kept because it is also the cheaper order.

Each axis pass is a precomputed (out, P) weight matrix and (out, P) index matrix applied with P
row ``index_select`` + multiply-add steps (the W pass on the transposed tensor): memory stays at the
output size, cost is linear in P, and autograd works.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = ["imresize"]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


@lru_cache(maxsize=128)
def _contributions(in_len: int, out_len: int, scale: float, antialiasing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out_len, P) float64 and 0-based input indices (out_len, P) int64 of one axis."""
    width = 4.0
    stretch = antialiasing and scale < 1
    if stretch:
        width = width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based input coordinate of each output pixel
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, may leave [1, in_len]
    dist = u[:, None] - ind
    w = scale * _cubic(scale * dist) if stretch else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    # Symmetric padding: index sequence 1..n, n..1 repeated.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(ind.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)  # drop taps that are zero for every output pixel, as MATLAB does
    return w[:, keep], idx[:, keep]


def _resize_rows(x: torch.Tensor, out_len: int, scale: float, antialiasing: bool) -> torch.Tensor:
    """Resize along dim -2: out[..., i, :] = sum_p w[i, p] * x[..., idx[i, p], :]."""
    w, idx = _contributions(x.shape[-2], out_len, float(scale), antialiasing)
    w_t = torch.from_numpy(w).to(device=x.device, dtype=x.dtype)
    idx_t = torch.from_numpy(idx).to(device=x.device)
    # Selecting whole rows copies contiguous memory, which is much faster than gathering along dim -1.
    out = x.index_select(-2, idx_t[:, 0]) * w_t[:, 0, None]
    for p in range(1, w.shape[1]):
        out = out.addcmul_(x.index_select(-2, idx_t[:, p]), w_t[:, p, None])
    return out


def _resize_axis(x: torch.Tensor, dim: int, out_len: int, scale: float, antialiasing: bool) -> torch.Tensor:
    if dim == -2:
        return _resize_rows(x, out_len, scale, antialiasing)
    xt = x.transpose(-1, -2).contiguous()
    return _resize_rows(xt, out_len, scale, antialiasing).transpose(-1, -2).contiguous()


def imresize(
    x: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    *,
    antialiasing: bool = True,
) -> torch.Tensor:
    """Resize (B, C, H, W) or (C, H, W) float tensors exactly like MATLAB's ``imresize(x, scale, 'bicubic')``.

    Give either ``scale`` (a float, or (scale_h, scale_w)) or ``size`` ((H, W)). The output is float,
    not clamped (bicubic overshoots). float64 input is computed in float64, other floats in float32
    and returned in the input dtype (book appendix, metrics); the content operator D of §3.1.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale or size")
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        raise ValueError(f"imresize: expected a (C, H, W) or (B, C, H, W) tensor, got {getattr(x, 'shape', x)}")
    if not x.is_floating_point():
        raise ValueError(f"imresize: expected a floating-point tensor, got {x.dtype}")
    in_h, in_w = x.shape[-2], x.shape[-1]
    if in_h == 0 or in_w == 0:
        raise ValueError(f"imresize: empty input of shape {tuple(x.shape)}")
    if size is not None:
        out_h, out_w = (int(s) for s in size)
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"imresize: size must be positive, got {size}")
        sh, sw = out_h / in_h, out_w / in_w
    else:
        sh, sw = (float(s) for s in scale) if isinstance(scale, (tuple, list)) else (float(scale),) * 2
        if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
            raise ValueError(f"imresize: scale must be positive and finite, got {scale}")
        out_h, out_w = math.ceil(in_h * sh), math.ceil(in_w * sw)

    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = x.to(work)
    passes = [(-2, out_h, sh), (-1, out_w, sw)]
    if sw < sh:  # MATLAB: the dimension with the smaller scale first (stable: H first on ties)
        passes.reverse()
    for dim, out_len, s in passes:
        if out_len != y.shape[dim] or s != 1.0:
            y = _resize_axis(y, dim, out_len, s, antialiasing)
    return y.to(x.dtype)
