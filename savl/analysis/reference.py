"""A hand-crafted degradation code: what a learned representation has to beat in Table 1 and Table 5.

Two classical per-pixel statistics of the LR image, no learning:
- noise: Donoho's robust estimate sigma = median(|d|) / 0.6745 of the finest diagonal Haar wavelet band d
  (HH, the band where natural images carry least signal), taken over a local window instead of the whole image;
- blur: Crete-Roffet et al.'s re-blur statistic (2007), locally: the share of the local gradient magnitude that a
  further 9x9 box blur removes (large on sharp pixels, small on pixels that are already blurred).
Both are brought back to the LR grid and log-transformed (both act multiplicatively). Call it like any encoder
in `savl.analysis.protocols`: `HandcraftedCode()(lr)` returns an object with `.mean` (B, 2, h, w).
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from savl.errors import ImageError

#: Median of |N(0, 1)|: Donoho and Johnstone's MAD-to-sigma factor.
MAD_TO_SIGMA = 0.6745


@dataclass
class HandcraftedPosterior:
    mean: torch.Tensor


def haar_hh(img: torch.Tensor) -> torch.Tensor:
    """The finest diagonal Haar band of the luma, (B, 1, h//2, w//2), orthonormal (noise sigma is preserved)."""
    y = img.mean(1, keepdim=True)
    h, w = (y.shape[-2] // 2) * 2, (y.shape[-1] // 2) * 2
    y = y[..., :h, :w]
    a, b = y[..., 0::2, 0::2], y[..., 0::2, 1::2]
    c, d = y[..., 1::2, 0::2], y[..., 1::2, 1::2]
    return (a - b - c + d) / 2


def _gradient_norm(y: torch.Tensor) -> torch.Tensor:
    return kornia.filters.spatial_gradient(y, normalized=False).norm(dim=2)


class HandcraftedCode:
    """`(lr (B, 3, h, w) in [0, 1]) -> HandcraftedPosterior(mean (B, 2, h, w))`: [log noise sigma, log sharpness].

    `window` is the local window (LR pixels) of both statistics.
    """

    def __init__(self, window: int = 9):
        if window < 3 or window % 2 == 0:
            raise ImageError(f"HandcraftedCode: window must be odd and >= 3, got {window}")
        self.window = window

    def __call__(self, lr: torch.Tensor) -> HandcraftedPosterior:
        if lr.dim() != 4 or lr.shape[1] != 3 or min(lr.shape[-2:]) < 4:
            raise ImageError(f"HandcraftedCode needs (B, 3, h, w) images with h, w >= 4, got {tuple(lr.shape)}")
        lr = lr.float()
        h, w = lr.shape[-2:]
        k = self.window
        half = max(3, (k // 2) | 1)  # the Haar band is at half resolution
        hh = haar_hh(lr).abs()
        sigma = kornia.filters.median_blur(F.pad(hh, [half // 2] * 4, mode="reflect"), (half, half))
        sigma = sigma[..., half // 2 : half // 2 + hh.shape[-2], half // 2 : half // 2 + hh.shape[-1]] / MAD_TO_SIGMA
        sigma = F.interpolate(sigma, size=(h, w), mode="bilinear", align_corners=False)
        y = lr.mean(1, keepdim=True)
        # Crete-Roffet's re-blur test: a sharp image loses much of its local variation when blurred again, an
        # already blurred one little. log of (variation lost) / (variation) is larger for sharper pixels.
        v = kornia.filters.box_blur(_gradient_norm(y), (k, k), border_type="reflect")
        reblurred = kornia.filters.box_blur(y, (9, 9), border_type="reflect")
        v_b = kornia.filters.box_blur(_gradient_norm(reblurred), (k, k), border_type="reflect")
        sharpness = (v - v_b).clamp_min(0) / (v + 1e-4)
        code = torch.cat([torch.log(sigma + 1e-4), torch.log(sharpness + 1e-3)], 1)
        return HandcraftedPosterior(mean=code)
