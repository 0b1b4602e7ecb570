"""Blur kernels of the Real-ESRGAN degradation space and MANet's spatially variant Gaussians (paper §4.1, Table 4).

Conventions shared by every kernel here:

* A kernel is a float32 tensor (k, k) that sums to 1, indexed ``[row, column]``.
* Offsets from the kernel centre are ``d = (x, y)`` with ``x`` the column offset and ``y`` the row offset
  (rows grow downwards, as in an image). A rotation by ``theta`` turns the x axis towards +y.
* ``bivariate_gaussian`` uses standard deviations (covariance ``R diag(sx^2, sy^2) R^T``);
  ``manet_kernel`` uses variances (the covariance eigenvalues), as MANet does.

The kernel formulas are the paper's definitions (written here because no package builds these families);
the sinc kernel uses ``scipy.special.j1`` for the Bessel function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from scipy import special

from savl.errors import ConfigError

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


# --------------------------------------------------------------------------------------------------
# Deterministic kernel families
# --------------------------------------------------------------------------------------------------
def _check_size(size: int) -> int:
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ConfigError(f"kernel size must be a positive odd integer, got {size}")
    return int(size)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Column (x) and row (y) offsets from the centre of an odd ``size`` grid, float64."""
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns, yy along rows
    return xx, yy


def covariance(sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T`` in (x, y) coordinates (standard deviations)."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    return rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T


def _mahalanobis(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``d' S^-1 d`` on the kernel grid."""
    if sigma_x <= 0 or sigma_y <= 0:
        raise ConfigError(f"kernel sigmas must be positive, got sigma_x={sigma_x}, sigma_y={sigma_y}")
    inv = np.linalg.inv(covariance(sigma_x, sigma_y, theta))
    xx, yy = _grid(size)
    return inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy


#: Taps whose magnitude is below this, once the kernel sums to 1, are set to zero and the rest rescaled so the
#: kernel still sums to 1. Such a tap times a pixel in [0, 1] is under a sixth of a float32 ulp of any result
#: in [0.5, 1], and zeroing them all (at most 21 x 21, then rescaling) moves an output by under 1e-5, about 1/400
#: of an 8-bit level; but the Gaussian tails below it reach float32's subnormal range (under 1.2e-38), where x86 CPUs
#: compute many times slower (about a quarter of Real-ESRGAN's kernel draws had such taps, which made its
#: 21 x 21 blur 4x slower).
TAP_FLOOR = 1e-8


def _normalised(k: np.ndarray, floor: float = TAP_FLOOR) -> torch.Tensor:
    """``k / sum(k)`` as float32, with taps below ``floor`` in magnitude zeroed and the sum kept at 1."""
    k = k / k.sum()
    tiny = np.abs(k) < floor
    if floor > 0 and tiny.any():
        k = np.where(tiny, 0.0, k)
        k = k / k.sum()  # the zeroed mass goes back to the other taps, in proportion
    return torch.from_numpy(k).to(torch.float32)


def bivariate_gaussian(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> torch.Tensor:
    """Anisotropic Gaussian ``exp(-0.5 d' S^-1 d)`` (Real-ESRGAN); isotropic when ``sigma_x == sigma_y``."""
    size = _check_size(size)
    return _normalised(np.exp(-0.5 * _mahalanobis(size, sigma_x, sigma_y, theta)))


def generalized_gaussian(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> torch.Tensor:
    """Generalized Gaussian ``exp(-0.5 (d' S^-1 d)^beta)`` (Real-ESRGAN); ``beta = 1`` is the Gaussian."""
    size = _check_size(size)
    if beta <= 0:
        raise ConfigError(f"generalized Gaussian beta must be positive, got {beta}")
    return _normalised(np.exp(-0.5 * np.power(_mahalanobis(size, sigma_x, sigma_y, theta), beta)))


def plateau(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> torch.Tensor:
    """Plateau-shaped kernel ``1 / (1 + (d' S^-1 d)^beta)`` (Real-ESRGAN)."""
    size = _check_size(size)
    if beta <= 0:
        raise ConfigError(f"plateau beta must be positive, got {beta}")
    return _normalised(1.0 / (1.0 + np.power(_mahalanobis(size, sigma_x, sigma_y, theta), beta)))


def pad_kernel(kernel: torch.Tensor, pad_to: int) -> torch.Tensor:
    """Zero-pad an odd (k, k) kernel symmetrically to (pad_to, pad_to); no-op when already that large."""
    k = kernel.shape[-1]
    if pad_to is None or pad_to <= k:
        return kernel
    p = (pad_to - k) // 2
    return torch.nn.functional.pad(kernel, (p, p, p, p))


def sinc_kernel(size: int, cutoff: float, pad_to: int | None = 21) -> torch.Tensor:
    """Circular low-pass (2-D sinc) kernel with angular cut-off ``cutoff`` in (0, pi] (Real-ESRGAN).

    ``h(r) = cutoff J1(cutoff r) / (2 pi r)`` is the inverse Fourier transform of the disc of radius
    ``cutoff``; at ``r = 0`` the limit ``cutoff^2 / (4 pi)`` is used. Truncated to ``size``, normalised,
    then zero-padded to ``pad_to`` (None keeps ``size``).
    """
    size = _check_size(size)
    if not 0 < cutoff <= math.pi + 1e-12:
        raise ConfigError(f"sinc cutoff must lie in (0, pi], got {cutoff}")
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * math.pi * r)
    k[r == 0] = cutoff**2 / (4 * math.pi)
    return pad_kernel(_normalised(k), pad_to or size)


def pulse(size: int = 21) -> torch.Tensor:
    """The identity kernel: a single 1 at the centre (Real-ESRGAN's "no final sinc")."""
    size = _check_size(size)
    k = torch.zeros(size, size)
    k[size // 2, size // 2] = 1.0
    return k


def motion_kernel(size: int, length: float, angle: float, samples_per_pixel: int = 16) -> torch.Tensor:
    """Linear motion blur: a centred segment of ``length`` pixels at ``angle`` radians, antialiased.

    The angle follows the Gaussians' ``theta`` (from the column axis towards increasing rows). The segment is
    sampled densely and each sample is splatted bilinearly onto the four nearest pixels (antialiasing);
    a zero length gives the pulse.
    """
    size = _check_size(size)
    if length < 0 or length > size - 1:
        raise ConfigError(f"motion length must lie in [0, {size - 1}] for a {size}x{size} kernel, got {length}")
    n = max(2, int(math.ceil(length * samples_per_pixel)) + 1)
    t = np.linspace(-0.5, 0.5, n) * length
    c = size // 2
    xs = c + t * math.cos(angle)
    ys = c + t * math.sin(angle)
    k = np.zeros((size, size), dtype=np.float64)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = np.clip(x0 + dx, 0, size - 1), np.clip(y0 + dy, 0, size - 1)
        np.add.at(k, (yi, xi), w)
    return _normalised(k)


def manet_kernel(
    sig1: float, sig2: float, theta: float, scale: int = 4, size: int = 21, grid: int | None = None
) -> torch.Tensor:
    """MANet's anisotropic Gaussian blur kernel: ``sig1``, ``sig2`` are covariance EIGENVALUES (variances).

    MANet (Liang et al., ICCV 2021, the kernels of the paper's Table 4) evaluates the Gaussian on a
    ``grid x grid`` lattice, ``grid = size - scale + 1`` by default (18 at x4 in a 21x21 kernel), centred on the
    lattice's middle (offsets ``i - (grid - 1) / 2``), with covariance ``R(theta) diag(sig1, sig2) R(theta)^T``
    in (column, row) coordinates. Values below machine epsilon times the peak are set to zero, the lattice is
    normalised and placed in the top-left corner of a zero ``size x size`` kernel. At x4 the kernel's centre
    therefore lies at (8.5, 8.5), 1.5 pixels up and left of the 21x21 grid's centre (10, 10).
    """
    if sig1 <= 0 or sig2 <= 0:
        raise ConfigError(f"MANet kernel variances must be positive, got sig1={sig1}, sig2={sig2}")
    g = grid if grid is not None else size - scale + 1
    if not 1 <= g <= size:
        raise ConfigError(f"MANet kernel lattice must lie in 1..{size}, got {g} (scale {scale}, size {size})")
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ np.diag([sig1, sig2]) @ rot.T)
    ax = np.arange(g, dtype=np.float64) - (g - 1) / 2
    xx, yy = np.meshgrid(ax, ax)  # xx: column offset, yy: row offset
    k = np.exp(-0.5 * (inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy))
    k[k < np.finfo(np.float64).eps * k.max()] = 0  # MANet drops the negligible tail values
    out = torch.zeros(size, size)
    out[:g, :g] = _normalised(k, floor=0.0)  # MANet's own rule only: the kernels equal MANet's (Table 4)
    return out


# --------------------------------------------------------------------------------------------------
# Real-ESRGAN's random draws
# --------------------------------------------------------------------------------------------------
@dataclass
class KernelConfig:
    """One blur stage of Real-ESRGAN (defaults: Real-ESRGAN's first blur stage)."""

    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    sigma_x_range: tuple[float, float] = (0.2, 3.0)
    sigma_y_range: tuple[float, float] = (0.2, 3.0)
    rotation_range: tuple[float, float] = (-math.pi, math.pi)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    pad_to: int = 21

    def __post_init__(self) -> None:
        self.kernel_list = tuple(self.kernel_list)
        self.kernel_prob = tuple(float(p) for p in self.kernel_prob)
        self.sizes = tuple(int(s) for s in self.sizes)
        for name in ("sigma_x_range", "sigma_y_range", "rotation_range", "betag_range", "betap_range"):
            lo, hi = (float(v) for v in getattr(self, name))
            if lo > hi:
                raise ConfigError(f"KernelConfig.{name} must be (low, high) with low <= high, got {(lo, hi)}")
            setattr(self, name, (lo, hi))
        unknown = set(self.kernel_list) - set(KERNEL_TYPES)
        if unknown:
            raise ConfigError(f"KernelConfig.kernel_list has unknown types {sorted(unknown)}; known: {KERNEL_TYPES}")
        if len(self.kernel_prob) != len(self.kernel_list) or abs(sum(self.kernel_prob) - 1) > 1e-6:
            raise ConfigError("KernelConfig.kernel_prob must have one probability per kernel type, summing to 1")
        if not 0 <= self.sinc_prob <= 1:
            raise ConfigError(f"KernelConfig.sinc_prob must lie in [0, 1], got {self.sinc_prob}")
        for s in self.sizes:
            _check_size(s)
            if s > self.pad_to:
                raise ConfigError(f"KernelConfig size {s} exceeds pad_to={self.pad_to}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KernelConfig:
        known = {f.name for f in fields(cls)}
        bad = set(d) - known
        if bad:
            raise ConfigError(f"KernelConfig: unknown keys {sorted(bad)}")
        return cls(**d)


def uniforms(generator: torch.Generator | None, n: int) -> torch.Tensor:
    """``n`` draws of U(0, 1) as a float64 tensor on the generator's device (no host synchronisation)."""
    dev = generator.device if generator is not None else "cpu"
    return torch.rand(n, generator=generator, device=dev, dtype=torch.float64)


def _pick(u: float, probs) -> int:
    """The category of a U(0, 1) draw ``u`` under ``probs`` (inverse CDF; zero-probability ones never)."""
    total = float(sum(probs))
    acc, last = 0.0, 0
    for i, p in enumerate(probs):
        if p > 0:
            acc += p / total
            last = i
            if u < acc:
                return i
    return last  # u within rounding of 1


def _between(u: float, lo: float, hi: float) -> float:
    return lo + (hi - lo) * u


def _beta(u_half: float, u: float, lo: float, hi: float) -> float:
    """Half the time U(lo, 1), half U(1, hi) (Real-ESRGAN's beta draw)."""
    if u_half < 0.5:
        return _between(u, lo, 1.0) if lo < 1 else 1.0
    return _between(u, 1.0, hi) if hi > 1 else 1.0


def sinc_cutoff_range(size: int) -> tuple[float, float]:
    """Real-ESRGAN's cut-off range: U(pi/3, pi) for sizes below 13, else U(pi/5, pi)."""
    return (math.pi / 3, math.pi) if size < 13 else (math.pi / 5, math.pi)


#: U(0, 1) draws one kernel record consumes (size, sinc or not, cut-off, type, sigma_x, sigma_y, theta, and
#: beta's half and value), whether or not the drawn type uses them all: the draws of a batch have fixed places.
KERNEL_DRAWS = 9
#: U(0, 1) draws of one final-filter record (size, sinc or not, cut-off).
FINAL_DRAWS = 3


def kernel_record_from_uniforms(stage_cfg: KernelConfig | dict, u) -> dict:
    """The Real-ESRGAN blur kernel record that ``KERNEL_DRAWS`` uniform draws ``u`` (floats in [0, 1)) select.

    Size uniformly from ``sizes``; with ``sinc_prob`` a sinc (cut-off by ``sinc_cutoff_range``), otherwise a
    type by ``kernel_prob``: isotropic types take one sigma and no rotation, anisotropic ones both sigmas and
    a rotation; generalized/plateau types a beta half below 1, half above.
    """
    cfg = stage_cfg if isinstance(stage_cfg, KernelConfig) else KernelConfig.from_dict(stage_cfg)
    if len(u) != KERNEL_DRAWS:
        raise ConfigError(f"a kernel record takes {KERNEL_DRAWS} uniform draws, got {len(u)}")
    size = cfg.sizes[_pick(u[0], [1.0] * len(cfg.sizes))]
    if u[1] < cfg.sinc_prob:
        record: dict[str, Any] = {"type": "sinc", "size": size, "cutoff": _between(u[2], *sinc_cutoff_range(size))}
    else:
        ktype = cfg.kernel_list[_pick(u[3], cfg.kernel_prob)]
        sx = _between(u[4], *cfg.sigma_x_range)
        if ktype.endswith("iso") and not ktype.endswith("aniso"):
            sy, theta = sx, 0.0
        else:
            sy = _between(u[5], *cfg.sigma_y_range)
            theta = _between(u[6], *cfg.rotation_range)
        record = {"type": ktype, "size": size, "sigma_x": sx, "sigma_y": sy, "theta": theta}
        if ktype.startswith("generalized"):
            record["beta"] = _beta(u[7], u[8], *cfg.betag_range)
        elif ktype.startswith("plateau"):
            record["beta"] = _beta(u[7], u[8], *cfg.betap_range)
    record["pad_to"] = cfg.pad_to
    return record


def random_kernel_record(stage_cfg: KernelConfig | dict, generator: torch.Generator | None) -> dict:
    """The parameters of one Real-ESRGAN blur kernel draw, without building it; see :func:`random_kernel`."""
    return kernel_record_from_uniforms(stage_cfg, uniforms(generator, KERNEL_DRAWS).tolist())


def random_kernel(stage_cfg: KernelConfig | dict, generator: torch.Generator | None) -> tuple[torch.Tensor, dict]:
    """One Real-ESRGAN blur kernel draw: ``(kernel (pad_to, pad_to), record)``.

    Size is drawn from ``sizes``; with ``sinc_prob`` a sinc kernel (cut-off by ``sinc_cutoff_range``), otherwise
    a type by ``kernel_prob``: isotropic types draw one sigma and no rotation, anisotropic types draw both sigmas
    and a rotation; generalized/plateau types draw beta half below 1, half above. The record alone rebuilds the
    kernel through :func:`kernel_from_record`.
    """
    record = random_kernel_record(stage_cfg, generator)
    return kernel_from_record(record), record


def final_record_from_uniforms(
    prob: float,
    u,
    sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21),
    cutoff_range: tuple[float, float] = (math.pi / 3, math.pi),
    pad_to: int = 21,
) -> dict:
    """Record of Real-ESRGAN's final filter from ``FINAL_DRAWS`` uniform draws ``u``: with ``prob`` a sinc with
    cut-off in ``cutoff_range`` (U(pi/3, pi)), else the pulse."""
    if len(u) != FINAL_DRAWS:
        raise ConfigError(f"a final-filter record takes {FINAL_DRAWS} uniform draws, got {len(u)}")
    size = sizes[_pick(u[0], [1.0] * len(sizes))]
    if u[1] < prob:
        return {"type": "sinc", "size": size, "cutoff": _between(u[2], *cutoff_range), "pad_to": pad_to}
    return {"type": "pulse", "size": pad_to, "pad_to": pad_to}


def random_final_record(prob: float, generator: torch.Generator | None, **kw: Any) -> dict:
    """Record of Real-ESRGAN's final filter drawn from ``generator``; see :func:`final_record_from_uniforms`."""
    return final_record_from_uniforms(prob, uniforms(generator, FINAL_DRAWS).tolist(), **kw)


def random_final_kernel(prob: float, generator: torch.Generator | None, **kw: Any) -> tuple[torch.Tensor, dict]:
    """Real-ESRGAN's final filter draw: ``(kernel, record)``; see :func:`random_final_record`."""
    record = random_final_record(prob, generator, **kw)
    return kernel_from_record(record), record


def kernel_from_record(record: dict) -> torch.Tensor:
    """Rebuild a kernel from the JSON record written by the random draws (exactly the same values)."""
    try:
        t = record["type"]
        size = int(record["size"])
        pad_to = record.get("pad_to")
        if t == "sinc":
            return sinc_kernel(size, float(record["cutoff"]), pad_to=pad_to)
        if t == "pulse":
            return pulse(size)
        if t == "motion":
            return pad_kernel(motion_kernel(size, float(record["length"]), float(record["angle"])), pad_to or size)
        sx, sy, th = float(record["sigma_x"]), float(record["sigma_y"]), float(record["theta"])
        if t in ("iso", "aniso", "gaussian"):
            k = bivariate_gaussian(size, sx, sy, th)
        elif t.startswith("generalized"):
            k = generalized_gaussian(size, sx, sy, th, float(record["beta"]))
        elif t.startswith("plateau"):
            k = plateau(size, sx, sy, th, float(record["beta"]))
        else:
            raise ConfigError(f"kernel record has unknown type {t!r}")
    except KeyError as e:
        raise ConfigError(f"kernel record {record} lacks the field {e.args[0]!r}") from None
    return pad_kernel(k, pad_to or size)
