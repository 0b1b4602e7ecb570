"""Blur kernels (Real-ESRGAN's families, MANet's Gaussians) against closed forms, moments, spectra, exact rebuilds
and golden kernels from MANet's own code."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from savl.degrade import kernels as K
from savl.errors import ConfigError


def moments(k: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (x, y) and covariance of a kernel seen as a distribution on pixel offsets (x = column, y = row)."""
    k = k.double().numpy()
    n = k.shape[0]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    mx, my = (k * xx).sum(), (k * yy).sum()
    dx, dy = xx - mx, yy - my
    cov = np.array([[(k * dx * dx).sum(), (k * dx * dy).sum()], [(k * dx * dy).sum(), (k * dy * dy).sum()]])
    return np.array([mx, my]), cov


def rotated_cov(a: float, b: float, theta: float) -> np.ndarray:
    """Reference covariance R diag(a, b) R^T, written out by hand (a, b are variances)."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array(
        [[a * c * c + b * s * s, (a - b) * c * s], [(a - b) * c * s, a * s * s + b * c * c]],
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: K.bivariate_gaussian(21, 2.0, 0.7, 0.4),
        lambda: K.generalized_gaussian(15, 1.5, 2.5, -1.0, 0.6),
        lambda: K.plateau(13, 1.0, 2.0, 2.0, 1.7),
        lambda: K.sinc_kernel(11, 1.3),
        lambda: K.motion_kernel(21, 9.5, 0.7),
        lambda: K.manet_kernel(6.0, 1.5, 1.1),
        lambda: K.pulse(21),
    ],
)
def test_every_kernel_is_float32_and_sums_to_one(make):
    k = make()
    assert k.dtype == torch.float32 and k.ndim == 2 and k.shape[0] == k.shape[1]
    assert float(k.double().sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("sx,sy,theta", [(2.0, 2.0, 0.0), (3.0, 1.0, 0.0), (2.5, 0.8, 0.6), (1.2, 2.7, -2.1)])
def test_bivariate_gaussian_second_moments_follow_std_convention(sx, sy, theta):
    # A 61x61 grid makes truncation negligible (> 20 std); discretisation error of the variance ~ 1/12 px^2
    # is the only bias left, so a 2 % relative tolerance plus 0.01 px^2 absolute suffices.
    k = K.bivariate_gaussian(61, sx, sy, theta)
    mean, cov = moments(k)
    assert np.allclose(mean, [30, 30], atol=1e-6)
    assert np.allclose(cov, rotated_cov(sx**2, sy**2, theta), rtol=0.02, atol=0.01)


def test_isotropic_gaussian_ignores_theta_and_matches_separable_product():
    k = K.bivariate_gaussian(21, 1.7, 1.7, 1.234)
    t = np.arange(-10, 11, dtype=np.float64)
    g = np.exp(-(t**2) / (2 * 1.7**2))
    ref = np.outer(g, g) / np.outer(g, g).sum()
    assert np.allclose(k.numpy(), ref, atol=1e-7)


def test_rotation_by_pi_over_two_swaps_axes():
    a = K.bivariate_gaussian(21, 3.0, 1.0, 0.0).numpy()
    b = K.bivariate_gaussian(21, 3.0, 1.0, math.pi / 2).numpy()
    assert np.allclose(a, b.T, atol=1e-7)


def test_generalized_with_beta_one_is_the_gaussian():
    a = K.generalized_gaussian(17, 2.2, 1.1, 0.9, 1.0)
    b = K.bivariate_gaussian(17, 2.2, 1.1, 0.9)
    assert torch.allclose(a, b, atol=1e-7)


def test_generalized_and_plateau_shapes():
    g_flat, g_peak = K.generalized_gaussian(21, 2, 2, 0, 4.0), K.generalized_gaussian(21, 2, 2, 0, 0.5)
    # A large beta flattens the top: the centre is closer to its neighbour at distance 1.
    assert g_flat[10, 11] / g_flat[10, 10] > g_peak[10, 11] / g_peak[10, 10]
    p = K.plateau(21, 2.0, 2.0, 0.0, 1.0).double().numpy()
    t = np.arange(-10, 11, dtype=np.float64)
    r2 = (t[None] ** 2 + t[:, None] ** 2) / 4.0
    ref = 1 / (1 + r2)
    assert np.allclose(p, ref / ref.sum(), atol=1e-7)


@pytest.mark.parametrize("cutoff", [math.pi / 2, 2.0])
def test_sinc_kernel_is_an_ideal_circular_low_pass(cutoff):
    # Reference: numpy's FFT of the kernel, zero-padded to 256^2, against the disc of radius `cutoff`.
    # A 41-tap truncation leaves Gibbs ripple; measured (cutoff pi/2, 2.0): mean |H| inside 0.8*cutoff
    # 1.036 / 0.967, max |H - 1| there 0.11 / 0.10; beyond 1.25*cutoff mean 0.008, max 0.046 / 0.037.
    k = K.sinc_kernel(41, cutoff, pad_to=None).double().numpy()
    H = np.abs(np.fft.fft2(k, s=(256, 256)))
    w = np.fft.fftfreq(256) * 2 * np.pi
    r = np.hypot(w[None, :], w[:, None])
    inside, outside = r < 0.8 * cutoff, (r > 1.25 * cutoff) & (r < math.pi)
    assert abs(H[inside].mean() - 1) < 0.06 and np.abs(H[inside] - 1).max() < 0.2
    assert H[outside].mean() < 0.02 and H[outside].max() < 0.08


def test_sinc_centre_is_the_limit_and_padding_is_centred():
    cutoff = 1.7
    k = K.sinc_kernel(13, cutoff, pad_to=None).double().numpy()
    # Unnormalised centre cutoff^2/(4 pi) and first neighbour cutoff J1(cutoff)/(2 pi): their ratio is fixed.
    from scipy.special import j1

    assert k[6, 7] / k[6, 6] == pytest.approx((cutoff * j1(cutoff) / (2 * math.pi)) / (cutoff**2 / (4 * math.pi)))
    padded = K.sinc_kernel(13, cutoff, pad_to=21)
    assert padded.shape == (21, 21) and torch.equal(padded[4:17, 4:17], torch.from_numpy(k).float())
    assert padded[:4].abs().sum() == 0 and padded[:, 17:].abs().sum() == 0


@pytest.mark.parametrize("angle", [0.0, 0.5, math.pi / 2, 2.3])
def test_motion_kernel_energy_lies_along_the_angle(angle):
    length = 12.0
    k = K.motion_kernel(21, length, angle)
    mean, cov = moments(k)
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, 1]
    # Principal axis direction (mod pi) equals the angle; variance along ~ L^2/12 (uniform segment),
    # across it only the bilinear splat (< 0.25 px^2).
    diff = (math.atan2(major[1], major[0]) - angle) % math.pi
    assert min(diff, math.pi - diff) < 0.02
    assert evals[1] == pytest.approx(length**2 / 12, rel=0.05)
    assert evals[0] < 0.25
    assert np.allclose(mean, [10, 10], atol=1e-6)


def test_motion_kernel_horizontal_is_a_row():
    k = K.motion_kernel(21, 8.0, 0.0)
    assert k[10].sum() == pytest.approx(1.0, abs=1e-6)
    assert torch.count_nonzero(k[10]) == 9  # offsets -4..4


@pytest.mark.parametrize("sig1,sig2,theta", [(4.0, 1.0, 0.0), (6.0, 2.0, 0.8), (2.0, 5.0, -1.3)])
def test_manet_kernel_uses_variances(sig1, sig2, theta):
    # A large lattice removes truncation; covariance must equal R diag(sig1, sig2) R^T (variances, not stds).
    k = K.manet_kernel(sig1, sig2, theta, scale=4, size=61, grid=61)
    mean, cov = moments(k)
    assert np.allclose(cov, rotated_cov(sig1, sig2, theta), rtol=0.02, atol=0.01)
    assert np.allclose(mean, [30, 30], atol=1e-3)  # centred on the lattice


@pytest.mark.parametrize("scale,lattice", [(4, 18), (3, 19), (2, 20)])
def test_manet_kernel_lattice_is_size_minus_scale_plus_one_in_the_top_left_corner(scale, lattice):
    k = K.manet_kernel(1.0, 0.5, 0.3, scale=scale)
    assert k.shape == (21, 21)
    assert k[lattice:].abs().sum() == 0 and k[:, lattice:].abs().sum() == 0
    assert K.manet_kernel(6.0, 4.0, 0.3, scale=scale)[lattice - 1].sum() > 0  # a wide kernel fills the lattice
    mean, cov = moments(k)
    c = (lattice - 1) / 2  # (8.5, 8.5) at x4
    assert np.allclose(mean, [c, c], atol=1e-3)
    assert np.allclose(cov, rotated_cov(1.0, 0.5, 0.3), rtol=0.03, atol=0.01)


def test_manet_kernel_equals_manets_own_kernels():
    """Golden kernels from MANet's code (fixtures/manet_sv_golden.md): mode 4 at three blocks of a 3x4 grid."""
    with np.load(Path(__file__).resolve().parent / "fixtures" / "manet_sv_golden.npz") as g:
        want, blocks, table = g["kernels_mode4"], g["kernels_mode4_blocks"], g["table_mode4"].astype(np.float64)
    for (i, j), kern in zip(blocks, want):
        got = K.manet_kernel(*table[i, j], scale=4)
        np.testing.assert_allclose(got.numpy(), kern, rtol=1e-5, atol=1e-8)


def test_random_kernel_record_rebuilds_exactly_through_json(generator):
    cfg = K.KernelConfig(sinc_prob=0.3)
    types = set()
    for _ in range(60):
        k, rec = K.random_kernel(cfg, generator)
        rebuilt = K.kernel_from_record(json.loads(json.dumps(rec)))
        assert torch.equal(k, rebuilt)
        assert k.shape == (21, 21) and float(k.double().sum()) == pytest.approx(1.0, abs=1e-6)
        types.add(rec["type"])
    assert {"iso", "aniso", "sinc"} <= types


def test_random_kernel_same_seed_same_draws():
    a = [K.random_kernel(K.KernelConfig(), torch.Generator().manual_seed(5))[1] for _ in range(3)]
    b = [K.random_kernel(K.KernelConfig(), torch.Generator().manual_seed(5))[1] for _ in range(3)]
    assert a == b


def test_final_kernel_is_sinc_or_pulse(generator):
    seen = set()
    for _ in range(40):
        k, rec = K.random_final_kernel(0.5, generator)
        seen.add(rec["type"])
        assert torch.equal(k, K.kernel_from_record(rec))
        if rec["type"] == "sinc":
            assert math.pi / 3 <= rec["cutoff"] <= math.pi
        else:
            assert torch.equal(k, K.pulse(21))
    assert seen == {"sinc", "pulse"}


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError):
        K.bivariate_gaussian(20, 1, 1, 0)
    with pytest.raises(ConfigError):
        K.bivariate_gaussian(21, 0.0, 1, 0)
    with pytest.raises(ConfigError):
        K.sinc_kernel(21, 4.0)
    with pytest.raises(ConfigError):
        K.KernelConfig(kernel_prob=(0.5, 0.5))
    with pytest.raises(ConfigError):
        K.kernel_from_record({"type": "iso", "size": 21})
    with pytest.raises(ConfigError):
        K.kernel_from_record({"type": "box", "size": 21, "sigma_x": 1, "sigma_y": 1, "theta": 0})


def _subnormal(k: np.ndarray) -> np.ndarray:
    # Compared in float64: a float32 cast would itself flush subnormals to zero in a process where an earlier
    # test (a training run, the savl command) has set the flush-to-zero flag on this thread.
    k = np.abs(k.astype(np.float64))
    return (k > 0) & (k < np.finfo(np.float32).tiny)


def test_taps_below_the_floor_are_zeroed_and_the_sum_kept():
    # Closed-form isotropic Gaussian, sigma 0.5 on 21x21: exp(-2 r^2) reaches float32's subnormal range at
    # r^2 = 45 and 50, so the unfloored kernel carries subnormal taps; the floored one none, and it keeps the
    # closed form's values (rescaled by the mass it dropped) everywhere above the floor.
    t = np.arange(-10, 11, dtype=np.float64)
    ref = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 0.5**2))
    ref /= ref.sum()
    assert _subnormal(ref).sum() > 0
    k = K.bivariate_gaussian(21, 0.5, 0.5, 0.0).double().numpy()
    kept = ref >= K.TAP_FLOOR
    assert not kept.all() and (k[~kept] == 0).all()
    assert k.sum() == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose(k[kept], ref[kept] / ref[kept].sum(), rtol=1e-6)


def test_no_random_kernel_has_taps_below_the_floor(generator):
    cfg = K.KernelConfig(sinc_prob=0.3)
    for _ in range(300):
        k, rec = K.random_kernel(cfg, generator)
        v = np.abs(k.double().numpy())
        assert ((v == 0) | (v >= K.TAP_FLOOR * (1 - 1e-6))).all(), rec
        assert float(k.double().sum()) == pytest.approx(1.0, abs=1e-6)
        assert not _subnormal(k.numpy()).any()


def test_manet_kernels_keep_manets_own_tail_rule():
    # MANet zeroes below float64 eps times the peak, not at TAP_FLOOR: a wide kernel keeps taps under 1e-8.
    k = K.manet_kernel(0.6, 0.6, 0.0).double().numpy()
    assert ((k > 0) & (k < K.TAP_FLOOR)).any()


def test_uniform_draws_select_records_by_inverse_cdf():
    cfg = K.KernelConfig()
    # u[0] = 0 is the smallest size, u[1] below sinc_prob a sinc whose cut-off spans its range.
    rec = K.kernel_record_from_uniforms(cfg, [0.0, 0.05, 0.0] + [0.5] * 6)
    assert rec == {"type": "sinc", "size": 7, "cutoff": math.pi / 3, "pad_to": 21}
    # u[3] just below 0.45 is "iso", just above it "aniso" (kernel_prob 0.45, 0.25, ...).
    assert K.kernel_record_from_uniforms(cfg, [0.99, 0.5, 0, 0.449, 0.5, 0, 0, 0, 0])["type"] == "iso"
    rec = K.kernel_record_from_uniforms(cfg, [0.99, 0.5, 0, 0.451, 0.5, 0.25, 0.75, 0, 0])
    assert rec["type"] == "aniso" and rec["size"] == 21
    assert rec["sigma_x"] == pytest.approx(1.6) and rec["sigma_y"] == pytest.approx(0.9)
    assert rec["theta"] == pytest.approx(math.pi / 2)
    with pytest.raises(ConfigError, match="9 uniform draws"):
        K.kernel_record_from_uniforms(cfg, [0.5] * 8)
