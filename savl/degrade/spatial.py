"""Spatially varying degradations (the paper's Table 5 in A.5.1, Table 4 in A.3, and A.7).

Three families, all on (B, C, H, W) float images in [0, 1], on any device:

* :func:`patchwise` — Table 5's protocol: an HR image cut into a grid of patches, each patch given a random
  degradation class (type, blur level or noise level), returned with its per-pixel label map.
* :func:`manet_degrade` — MANet's spatially variant Gaussian kernels (modes 1–5), the Table 4 protocol.
* :func:`motion_blur` and :func:`haze` — the out-of-distribution degradations of A.7.

Randomness is drawn from the caller's ``torch.Generator``; every random draw that the output depends on is
recorded in a JSON-serialisable ``params`` dict per sample (noise as an integer seed of a CPU generator), so
``*_replay(hr, params)`` reproduces the output exactly, on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from savl.degrade.kernels import bivariate_gaussian, manet_kernel, motion_kernel, pulse
from savl.degrade.ops import add_gaussian_noise, filter2d, jpeg
from savl.errors import ConfigError
from savl.imresize import imresize

# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------
_SEED_HIGH = 2**31 - 1


def _check_images(x: torch.Tensor, name: str = "hr", channels: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{name} must be a float (B, C, H, W) tensor, got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ConfigError(f"{name} must have {channels} channels, got {x.shape[1]}")


def draw_seed(generator: torch.Generator | None) -> int:
    """An integer seed drawn from ``generator``: noise is regenerated from it on a CPU generator (replay)."""
    dev = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, _SEED_HIGH, (1,), generator=generator, device=dev).item())


def draw_uniform(generator: torch.Generator | None, lo: float, hi: float, n: int = 1) -> list[float]:
    """``n`` draws of U(lo, hi) from ``generator`` as Python floats (float64: exact in JSON params)."""
    dev = generator.device if generator is not None else "cpu"
    u = torch.rand(n, generator=generator, device=dev, dtype=torch.float64).cpu()
    return [lo + (hi - lo) * float(v) for v in u]


def _cpu_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit image (the last step of every protocol)."""
    return (x.clamp(0, 1) * 255).round() / 255


def _params_for_batch(params: Sequence[dict], b: int, what: str) -> list[dict]:
    if isinstance(params, dict) or len(params) != b:
        n = 1 if isinstance(params, dict) else len(params)
        raise ConfigError(f"{what} replay needs one params dict per image: got {n} for a batch of {b}")
    return list(params)


def _get(p: dict, key: str, what: str) -> Any:
    if key not in p:
        raise ConfigError(f"{what} params lack the key {key!r} (have {sorted(p)})")
    return p[key]


# --------------------------------------------------------------------------------------------------
# Per-pixel (spatially variant) blur
# --------------------------------------------------------------------------------------------------
def spatially_variant_blur(
    x: torch.Tensor, kernels: torch.Tensor, block: int = 1, stride: int = 1, max_elements: int = 2**24
) -> torch.Tensor:
    """Correlate each output pixel with its own kernel, with replication padding (MANet's convention).

    ``kernels`` is (B, ceil(H / block), ceil(W / block), k, k), odd k: with ``block = 1`` one kernel per pixel;
    with ``block = 40`` one kernel per 40x40 block (MANet), expanded to pixels strip by strip so the full
    (B, H, W, k, k) map is never built. Output pixel (b, c, i, j) is
    ``sum_{p,q} xpad[b, c, i + p, j + q] * kernels[b, i // block, j // block, p, q]`` (correlation, no flip,
    as :func:`savl.degrade.ops.filter2d`). ``stride = s`` computes only the pixels ``[..., 0::s, 0::s]``
    (the same values as blurring then subsampling, s^2 times cheaper: MANet's direct subsampling).

    Written by hand: a per-pixel kernel blur is MANet's operation and is not in kornia. It unfolds strips of
    rows (``F.unfold``) and contracts them with the kernels (multiply and sum); a strip holds at most about
    ``max_elements`` unfolded values (B * C * k^2 * rows * W), which bounds the memory.
    (``ops.filter2d_spatial`` is the reflect-padded, per-pixel-only sibling used by other pipelines.)
    """
    _check_images(x, "x")
    b, c, h, w = x.shape
    if block < 1 or int(block) != block or stride < 1 or int(stride) != stride:
        raise ConfigError(f"block and stride must be positive integers, got {block} and {stride}")
    nh, nw = math.ceil(h / block), math.ceil(w / block)
    if kernels.ndim != 5 or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 == 0:
        raise ConfigError(f"kernels must be (B, {nh}, {nw}, k, k) with odd k, got shape {tuple(kernels.shape)}")
    if tuple(kernels.shape[:3]) != (b, nh, nw):
        raise ConfigError(
            f"kernels must be (B, {nh}, {nw}, k, k) for a {b}x{c}x{h}x{w} image and block {block}, "
            f"got shape {tuple(kernels.shape)}"
        )
    k = kernels.shape[-1]
    p = k // 2
    oh, ow = math.ceil(h / stride), math.ceil(w / stride)
    xp = F.pad(x, (p, p, p, p), mode="replicate")
    if block > 1:
        return _blockwise(xp, kernels.to(device=x.device, dtype=x.dtype), block, stride, (oh, ow))
    kmap = kernels.to(device=x.device, dtype=x.dtype).reshape(b, nh, nw, k * k)
    col_block = (torch.arange(ow, device=x.device) * stride) // block
    rows = max(1, int(max_elements) // (b * c * k * k * ow))
    strips = []
    for r0 in range(0, oh, rows):
        r1 = min(oh, r0 + rows)
        strip = xp[:, :, r0 * stride : (r1 - 1) * stride + k]
        cols = F.unfold(strip, k, stride=stride).view(b, c, k * k, r1 - r0, ow)
        row_block = (torch.arange(r0, r1, device=x.device) * stride) // block
        kk = kmap[:, row_block][:, :, col_block].permute(0, 3, 1, 2)  # (B, k*k, rows, W)
        strips.append((cols * kk[:, None]).sum(2))  # twice as fast as the equivalent einsum on CPU
    return torch.cat(strips, dim=2)


def _blockwise(xp: torch.Tensor, kernels: torch.Tensor, block: int, stride: int, out_size: tuple[int, int]):
    """Block-constant kernels: one grouped ``conv2d`` per block (all images and channels at once).

    Output rows ``o`` of block row i are those with ``o * stride`` in ``[i * block, (i + 1) * block)``; the
    padded input they read starts at row ``o0 * stride`` (padding already applied). No unfolded copy.
    """
    b, c = xp.shape[:2]
    nh, nw, k = kernels.shape[1], kernels.shape[2], kernels.shape[-1]
    oh, ow = out_size
    out = xp.new_empty(b, c, oh, ow)

    def span(i: int, n_out: int) -> tuple[int, int]:
        return min(n_out, -(-i * block // stride)), min(n_out, -(-(i + 1) * block // stride))

    for i in range(nh):
        r0, r1 = span(i, oh)
        for j in range(nw):
            c0, c1 = span(j, ow)
            if r0 == r1 or c0 == c1:
                continue
            region = xp[:, :, r0 * stride : (r1 - 1) * stride + k, c0 * stride : (c1 - 1) * stride + k]
            weight = kernels[:, i, j, None, None].expand(b, c, 1, k, k).reshape(b * c, 1, k, k)
            res = F.conv2d(region.reshape(1, b * c, *region.shape[-2:]), weight, stride=stride, groups=b * c)
            out[:, :, r0:r1, c0:c1] = res.view(b, c, r1 - r0, c1 - c0)
    return out


# --------------------------------------------------------------------------------------------------
# Table 5: patchwise heterogeneous degradations
# --------------------------------------------------------------------------------------------------
DEGRADATION_KINDS = ("noise", "blur", "jpeg")


@dataclass(frozen=True)
class PatchClass:
    """One degradation class of a Table 5 setting.

    ``kind`` "blur": ``value`` is the Gaussian std in HR pixels (21x21 kernel, applied before downsampling);
    "noise": ``value`` is the Gaussian noise std on the [0, 1] intensity scale, added to the LR image;
    "jpeg": ``value`` is the JPEG quality, applied to the LR image.
    """

    kind: str
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))  # one type in the JSON params, whatever was given
        if self.kind not in DEGRADATION_KINDS:
            raise ConfigError(f"degradation kind must be one of {DEGRADATION_KINDS}, got {self.kind!r}")
        bad = {
            "blur": self.value <= 0,
            "noise": self.value < 0,
            "jpeg": not 1 <= self.value <= 100,
        }[self.kind]
        if bad:
            raise ConfigError(f"invalid {self.kind} level {self.value}")

    @property
    def name(self) -> str:
        unit = {"blur": "sigma", "noise": "std", "jpeg": "q"}[self.kind]
        return f"{self.kind} {unit}={self.value:g}"


# The paper's three settings (Table 5, A.5.1). The "type" setting does not state its levels; ours are
# one mid-range level per type: blur sigma 2 (HR px), noise std 0.15 (the smallest non-zero noise level),
# JPEG quality 30 (the strong end of Real-ESRGAN's [30, 95]). Labels are the class indices, in this order.
TABLE5_SETTINGS: dict[str, tuple[PatchClass, ...]] = {
    "type": (PatchClass("noise", 0.15), PatchClass("blur", 2.0), PatchClass("jpeg", 30)),
    "blur": tuple(PatchClass("blur", s) for s in (0.1, 1.0, 2.0, 3.0)),
    "noise": tuple(PatchClass("noise", s) for s in (0.0, 0.15, 0.30, 0.60)),
}
BLUR_KERNEL_SIZE = 21


class Patchwise(NamedTuple):
    """Result of :func:`patchwise`: the LR image, its per-pixel labels, the HR labels and the params."""

    lr: torch.Tensor  # (B, C, ceil(H / scale), ceil(W / scale)), 8-bit levels in [0, 1]
    labels: torch.Tensor  # (B, h, w) int64 at the LR resolution: the map the per-pixel codes are scored on
    labels_hr: torch.Tensor  # (B, H, W) int64: the patch grid on the HR image
    params: list[dict]


def _setting_classes(setting: str | Sequence[PatchClass]) -> tuple[str, tuple[PatchClass, ...]]:
    if isinstance(setting, str):
        if setting not in TABLE5_SETTINGS:
            raise ConfigError(f"unknown Table 5 setting {setting!r}; valid: {', '.join(TABLE5_SETTINGS)}")
        return setting, TABLE5_SETTINGS[setting]
    classes = tuple(setting)
    if not classes or not all(isinstance(c, PatchClass) for c in classes):
        raise ConfigError("a custom setting must be a non-empty sequence of PatchClass")
    return "custom", classes


def _label_map(grid: torch.Tensor, size: tuple[int, int], cell: int) -> torch.Tensor:
    """Expand a (gh, gw) grid of labels to a (H, W) map with ``cell`` pixels per grid cell."""
    h, w = size
    ri = torch.arange(h, device=grid.device) // cell
    ci = torch.arange(w, device=grid.device) // cell
    return grid[ri][:, ci]


def patchwise(
    hr: torch.Tensor,
    setting: str | Sequence[PatchClass],
    generator: torch.Generator | None,
    patch: int = 64,
    scale: int = 4,
) -> Patchwise:
    """Table 5's heterogeneous degradation (paper A.5.1): a random degradation class per HR patch.

    The HR image is cut into a grid of ``patch x patch`` cells (the last row/column may be partial); each
    cell draws a class uniformly from ``setting`` ("type", "blur", "noise" or a sequence of
    :class:`PatchClass`). The classes act in the classical order of the degradation model
    ``y = JPEG((x * k) downsampled + n)``, each only on its own cells:

    1. blur on the HR image: one Gaussian kernel per cell (identity for non-blur cells), replication padding
       (:func:`spatially_variant_blur`); the sigmas {0.1, 1, 2, 3} are HR-pixel stds like Real-ESRGAN's;
    2. MATLAB bicubic downsampling by ``scale`` (``savl.imresize``), shared by all cells;
    3. JPEG on the LR image (kornia's codec on the whole image, kept on JPEG cells only);
    4. Gaussian noise on the LR image (per-channel, from a recorded seed), then clamp and 8-bit rounding.

    Interpretation of the noise levels {0, 0.15, 0.30, 0.60}: we read them as stds on the [0, 1] scale
    (0.15 = 38/255). Read as x/255 they would be invisible: 0.15/255 and 0.30/255 lie far below one 8-bit
    step (rounding alone adds 0.29/255), so three of the four classes would be identical after rounding and
    no representation could separate them, contradicting the paper's 61.2 % clustering accuracy for SAVL.

    The encoder codes the LR image, so ``labels`` is given at the LR resolution: LR pixel (i, j) takes the
    label of the cell holding its HR footprint's corner (i * scale, j * scale). ``patch`` must be a multiple
    of ``scale`` so that every LR pixel's footprint lies in one cell; a multiple of ``16 * scale`` (the
    default 64 at x4) also aligns the cells with JPEG's 16x16 macroblocks, so JPEG blocks never straddle
    cells. Bicubic downsampling still mixes about 2 LR pixels across a cell boundary.
    """
    _check_images(hr, "hr", 3)
    name, classes = _setting_classes(setting)
    scale, patch = int(scale), int(patch)
    if scale < 1 or patch < scale or patch % scale:
        raise ConfigError(f"patch ({patch}) must be a positive multiple of scale ({scale})")
    b, _, h, w = hr.shape
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    dev = generator.device if generator is not None else "cpu"
    params = []
    for _ in range(b):
        grid = torch.randint(0, len(classes), (gh, gw), generator=generator, device=dev).cpu()
        params.append(
            {
                "setting": name,
                "classes": [[c.kind, c.value] for c in classes],
                "patch": patch,
                "scale": scale,
                "labels": grid.tolist(),
                "noise_seed": draw_seed(generator),
            }
        )
    return patchwise_replay(hr, params)


def patchwise_replay(hr: torch.Tensor, params: Sequence[dict]) -> Patchwise:
    """Re-apply :func:`patchwise` from its params (one dict per image): the same output, exactly."""
    _check_images(hr, "hr", 3)
    b, c, h, w = hr.shape
    params = _params_for_batch(params, b, "patchwise")
    what = "patchwise"
    scale, patch = int(_get(params[0], "scale", what)), int(_get(params[0], "patch", what))
    if any(int(_get(p, "scale", what)) != scale or int(_get(p, "patch", what)) != patch for p in params):
        raise ConfigError("patchwise replay needs one scale and one patch size for the whole batch")
    if scale < 1 or patch < scale or patch % scale:
        raise ConfigError(f"patch ({patch}) must be a positive multiple of scale ({scale})")
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    grids, class_lists = [], []
    for p in params:
        classes = [PatchClass(str(k), float(v)) for k, v in _get(p, "classes", what)]
        grid = torch.as_tensor(_get(p, "labels", what), dtype=torch.int64)
        if tuple(grid.shape) != (gh, gw) or grid.min() < 0 or grid.max() >= len(classes):
            raise ConfigError(f"patchwise labels must be a {gh}x{gw} grid of class indices for this image")
        grids.append(grid)
        class_lists.append(classes)

    # 1. Blur on the HR image, one kernel per cell (skipped when no cell of the batch is blurred).
    x = hr
    if any(cl.kind == "blur" for g, cls in zip(grids, class_lists) for cl in (cls[i] for i in g.unique())):
        ident = pulse(BLUR_KERNEL_SIZE)
        kernels = torch.stack(
            [
                torch.stack(
                    [
                        (
                            bivariate_gaussian(BLUR_KERNEL_SIZE, cls[i].value, cls[i].value)
                            if cls[i].kind == "blur"
                            else ident
                        )
                        for i in g.flatten().tolist()
                    ]
                ).view(gh, gw, BLUR_KERNEL_SIZE, BLUR_KERNEL_SIZE)
                for g, cls in zip(grids, class_lists)
            ]
        )
        x = spatially_variant_blur(x, kernels, block=patch)

    # 2. Bicubic downsampling (the content operator D of the paper's §3.1).
    lr = imresize(x, scale=1 / scale) if scale > 1 else x
    lh, lw = lr.shape[-2:]
    labels = torch.stack([_label_map(g, (lh, lw), patch // scale) for g in grids]).to(hr.device)
    labels_hr = torch.stack([_label_map(g, (h, w), patch) for g in grids]).to(hr.device)

    # 3. JPEG on the LR image, kept on the JPEG cells only (one codec pass per distinct quality).
    lr = lr.clamp(0, 1)
    out = lr
    qualities = sorted({cl.value for cls in class_lists for cl in cls if cl.kind == "jpeg"})
    for q in qualities:
        mask = torch.stack(
            [
                torch.isin(
                    lab,
                    torch.tensor(
                        [i for i, cl in enumerate(cls) if cl.kind == "jpeg" and cl.value == q], dtype=torch.int64
                    ),
                )
                for lab, cls in zip(labels.cpu(), class_lists)
            ]
        ).to(hr.device)
        if bool(mask.any()):
            out = torch.where(mask[:, None], jpeg(lr, q), out)

    # 4. Per-pixel noise std from the labels; noise drawn on a CPU generator from each sample's seed.
    stds = torch.stack(
        [
            torch.tensor([cl.value if cl.kind == "noise" else 0.0 for cl in cls], dtype=torch.float32)[lab]
            for lab, cls in zip(labels.cpu(), class_lists)
        ]
    )
    noise = torch.stack(
        [torch.randn((c, lh, lw), generator=_cpu_generator(_get(p, "noise_seed", what))) for p in params]
    )
    out = out + (noise * stds[:, None]).to(device=hr.device, dtype=out.dtype)
    return Patchwise(to_8bit(out), labels, labels_hr, [dict(p) for p in params])


# --------------------------------------------------------------------------------------------------
# Table 4: MANet spatially variant kernels
# --------------------------------------------------------------------------------------------------
MANET_BLOCK = 40  # HR pixels per kernel block (MANet's test sets)
MANET_MODES = (1, 2, 3, 4, 5)


def manet_ab(scale: int) -> tuple[float, float]:
    """MANet's ``(a, b)`` of the mode table at ``scale``: ``a = (2.5 - 0.175) scale``, ``b = 0.175 scale``.

    The variances then span ``[b, a + b] = [0.175 s, 2.5 s]``: (9.3, 0.7) at x4, the paper's Table 4 setting.
    """
    if int(scale) != scale or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    return (2.5 - 0.175) * scale, 0.175 * scale


MANET_A, MANET_B = manet_ab(4)  # 9.3, 0.7 (up to float rounding): Table 4 is x4


def manet_block_coordinates(n: int) -> np.ndarray:
    """Coordinates of ``n`` blocks along an axis, as MANet computes them: ``j / n`` for j = 0 .. n - 1.

    They run over [0, (n - 1) / n], so the last block never reaches the end of the range (a + b, pi).
    """
    return np.arange(n, dtype=np.float64) / n


def manet_kernel_params(
    mode: int,
    grid: tuple[int, int],
    generator: torch.Generator | None = None,
    a: float = MANET_A,
    b: float = MANET_B,
) -> np.ndarray:
    """(sig1, sig2, theta) per block, shape (nh, nw, 3) float64: the mode table of the paper's Table 4.

    sig1, sig2 are variances. In the table's header ``x`` is the block's ROW coordinate and ``y`` its COLUMN
    coordinate (:func:`manet_block_coordinates`), as in MANet's test-set code, which varies sig2 and theta
    down the rows:

    ====  ==========  ==========  ==========
    mode  sig1        sig2        theta
    ====  ==========  ==========  ==========
    1     a + b       a x + b     0
    2     a y + b     a x + b     0
    3     a + b       b           pi x
    4     a y + b     a x + b     pi x
    5     U(b, a+b)   U(b, a+b)   U(0, pi)
    ====  ==========  ==========  ==========

    Mode 5 draws each block's three values independently (from ``generator``).
    """
    if mode not in MANET_MODES:
        raise ConfigError(f"MANet mode must be one of {MANET_MODES}, got {mode!r}")
    nh, nw = grid
    x, y = np.meshgrid(manet_block_coordinates(nh), manet_block_coordinates(nw), indexing="ij")  # row, column
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    if mode == 1:
        sig1, sig2, theta = (a + b) * ones, a * x + b, zeros
    elif mode == 2:
        sig1, sig2, theta = a * y + b, a * x + b, zeros
    elif mode == 3:
        sig1, sig2, theta = (a + b) * ones, b * ones, np.pi * x
    elif mode == 4:
        sig1, sig2, theta = a * y + b, a * x + b, np.pi * x
    else:
        u = np.asarray(draw_uniform(generator, 0.0, 1.0, 3 * nh * nw)).reshape(3, nh, nw)
        sig1, sig2, theta = b + a * u[0], b + a * u[1], np.pi * u[2]
    return np.stack([sig1, sig2, theta], axis=-1)


def manet_kernels(table: np.ndarray, scale: int = 4) -> torch.Tensor:
    """The (nh, nw, 21, 21) kernels of a (nh, nw, 3) table of (sig1, sig2, theta) (``manet_kernel`` each)."""
    nh, nw, _ = table.shape
    flat = [manet_kernel(s1, s2, th, scale=scale) for s1, s2, th in table.reshape(-1, 3).tolist()]
    return torch.stack(flat).view(nh, nw, *flat[0].shape)


def manet_degrade(
    hr: torch.Tensor,
    mode: int,
    generator: torch.Generator | None,
    scale: int = 4,
    noise: float = 15,
    a: float | None = None,
    b: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """MANet's spatially variant degradation, modes 1–5: the protocol of the paper's Table 4.

    It follows MANet's test-set generation (``SRMDPreprocessing`` with ``sv_mode`` 1–5 in MANet's
    ``codes/utils/util.py``): one 21x21 kernel (:func:`savl.degrade.kernels.manet_kernel`) per 40x40 HR block,
    its (sig1, sig2, theta) from :func:`manet_kernel_params`; each HR pixel correlated with its block's kernel
    after replication padding; direct ``[0::scale]`` subsampling; Gaussian noise of std ``noise / 255``;
    clamp and 8-bit rounding. Without noise the LR images equal MANet's to within one 8-bit level
    (``tests/test_spatial.py`` checks golden values computed with MANet's code).

    Returns ``(lr, kernel_params_map, params)``: ``kernel_params_map`` is (B, 3, h, w) at the LR resolution
    holding (sig1, sig2, theta) of the kernel that produced each LR pixel (LR pixel (i, j) comes from HR pixel
    (i * scale, j * scale)). ``a`` and ``b`` default to MANet's values for ``scale`` (:func:`manet_ab`).
    """
    _check_images(hr)
    a0, b0 = manet_ab(scale)
    a = a0 if a is None else float(a)
    b = b0 if b is None else float(b)
    nh, nw = math.ceil(hr.shape[-2] / MANET_BLOCK), math.ceil(hr.shape[-1] / MANET_BLOCK)
    params = []
    for _ in range(hr.shape[0]):
        table = manet_kernel_params(mode, (nh, nw), generator, a, b)
        params.append(
            {
                "mode": int(mode),
                "scale": int(scale),
                "noise": float(noise),
                "block": MANET_BLOCK,
                "sig1": table[..., 0].tolist(),
                "sig2": table[..., 1].tolist(),
                "theta": table[..., 2].tolist(),
                "noise_seed": draw_seed(generator),
            }
        )
    lr, kmap = manet_replay(hr, params)
    return lr, kmap, params


def manet_replay(hr: torch.Tensor, params: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-apply :func:`manet_degrade` from its params: ``(lr, kernel_params_map)``, exactly the same."""
    _check_images(hr)
    bsz, _, h, w = hr.shape
    params = _params_for_batch(params, bsz, "MANet")
    what = "MANet"
    scale, block = int(_get(params[0], "scale", what)), int(_get(params[0], "block", what))
    if any(int(_get(p, "scale", what)) != scale or int(_get(p, "block", what)) != block for p in params):
        raise ConfigError("MANet replay needs one scale and one block size for the whole batch")
    nh, nw = math.ceil(h / block), math.ceil(w / block)
    tables = []
    for p in params:
        t = np.stack([np.asarray(_get(p, k, what), dtype=np.float64) for k in ("sig1", "sig2", "theta")], axis=-1)
        if t.shape != (nh, nw, 3):
            raise ConfigError(f"MANet params hold a {t.shape[:2]} block grid; this image needs {(nh, nw)}")
        tables.append(t)
    kernels = torch.stack([manet_kernels(t, scale) for t in tables])
    lr = spatially_variant_blur(hr, kernels, block=block, stride=scale)  # blur + [0::scale] in one pass
    sigma = torch.tensor([float(_get(p, "noise", what)) / 255 for p in params])
    gens = [_cpu_generator(_get(p, "noise_seed", what)) for p in params]
    lr = to_8bit(add_gaussian_noise(lr, sigma, False, gens))
    lh, lw = lr.shape[-2:]
    ri = (torch.arange(lh) * scale) // block
    ci = (torch.arange(lw) * scale) // block
    kmap = torch.stack([torch.from_numpy(t).float()[ri][:, ci].permute(2, 0, 1) for t in tables])
    return lr, kmap.to(hr.device)


# --------------------------------------------------------------------------------------------------
# A.7: out-of-distribution degradations
# --------------------------------------------------------------------------------------------------
def motion_blur(img: torch.Tensor, length: float, angle: float) -> torch.Tensor:
    """Linear motion blur of ``length`` pixels at ``angle`` radians (paper A.7).

    The kernel is :func:`savl.degrade.kernels.motion_kernel` on the smallest odd square that holds the
    segment; the blur is :func:`savl.degrade.ops.filter2d` (correlation, reflect padding).
    """
    _check_images(img, "img")
    if length < 0:
        raise ConfigError(f"motion length must be >= 0, got {length}")
    size = 2 * math.ceil(length / 2) + 1
    return filter2d(img, motion_kernel(size, float(length), float(angle)))


def vertical_depth(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Our synthetic depth for :func:`haze`: 1 at the top row falling linearly to 0 at the bottom row.

    Outdoor photographs usually show the far scene (sky, horizon) at the top and the ground near the camera
    at the bottom; the paper does not state its depth, so this is our choice. Shape (1, 1, H, W).
    """
    d = torch.linspace(1.0, 0.0, h, device=device) if h > 1 else torch.zeros(1, device=device)
    return d.view(1, 1, h, 1).expand(1, 1, h, w)


def haze(
    img: torch.Tensor,
    beta: float,
    airlight: float | Sequence[float] = 0.8,
    depth: torch.Tensor | None = None,
) -> torch.Tensor:
    """Atmospheric scattering (paper A.7): ``I = J t + A (1 - t)`` with transmission ``t = exp(-beta d)``.

    ``airlight`` A is a gray level or one value per channel; ``depth`` d is (H, W), (1, 1, H, W) or
    (B, 1, H, W), in arbitrary units scaled by ``beta``; without it, :func:`vertical_depth`.
    """
    _check_images(img, "img")
    b, c, h, w = img.shape
    if beta < 0:
        raise ConfigError(f"haze beta must be >= 0, got {beta}")
    a = torch.as_tensor(airlight, dtype=img.dtype, device=img.device).reshape(-1)
    if a.numel() not in (1, c):
        raise ConfigError(f"airlight must be one value or {c} values, got {a.numel()}")
    a = a.view(1, -1, 1, 1)
    d = vertical_depth(h, w, img.device) if depth is None else torch.as_tensor(depth, device=img.device)
    if d.ndim == 2:
        d = d[None, None]
    if d.ndim != 4 or d.shape[1] != 1 or tuple(d.shape[-2:]) != (h, w) or d.shape[0] not in (1, b):
        raise ConfigError(f"depth must be (H, W) or (B, 1, H, W) matching {h}x{w}, got {tuple(d.shape)}")
    t = torch.exp(-float(beta) * d.to(img.dtype))
    return img * t + a * (1 - t)
