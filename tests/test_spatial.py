"""Spatially varying degradations: per-pixel blur, Table 5 patches, MANet modes, haze and motion blur.

References: a direct numpy loop and scipy.ndimage.correlate (per-pixel blur), scipy truncated-normal moments
(MANet kernels), ops.filter2d + [0::4] (MANet pipeline), golden LR images from MANet's own code
(fixtures/manet_sv_golden.md), scipy's Kolmogorov-Smirnov test (MANet mode 5), scipy.ndimage.gaussian_filter
(Table 5 blur), the censored-normal std by quadrature (Table 5 noise) and the scattering model's closed form (haze).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, ndimage, stats

from savl.degrade.kernels import bivariate_gaussian, manet_kernel
from savl.degrade.ops import filter2d
from savl.degrade.spatial import (
    MANET_A,
    MANET_B,
    TABLE5_SETTINGS,
    PatchClass,
    haze,
    manet_ab,
    manet_block_coordinates,
    manet_degrade,
    manet_kernel_params,
    manet_kernels,
    manet_replay,
    motion_blur,
    patchwise,
    patchwise_replay,
    spatially_variant_blur,
    to_8bit,
    vertical_depth,
)
from savl.errors import ConfigError
from savl.imresize import imresize


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ per-pixel blur
def _loop_reference(x, kernels, block):
    """Direct per-pixel correlation with edge (replication) padding."""
    x, kernels = x.double().numpy(), kernels.double().numpy()
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="edge")
    out = np.zeros_like(x)
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                kern = kernels[bi, i // block, j // block]
                out[bi, :, i, j] = (xp[bi, :, i : i + k, j : j + k] * kern).sum(axis=(-2, -1))
    return out


@pytest.mark.parametrize("block", [1, 3])
def test_spatially_variant_blur_matches_direct_loop(generator, block):
    x = torch.rand(2, 3, 9, 11, generator=generator)
    nh, nw = math.ceil(9 / block), math.ceil(11 / block)
    kernels = torch.rand(2, nh, nw, 5, 5, generator=generator)
    ref = _loop_reference(x, kernels, block)
    for budget in (1, 2**24):  # one row per strip, and the whole image in one strip
        out = spatially_variant_blur(x, kernels, block=block, max_elements=budget)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
        # stride s computes exactly the pixels [0::s, 0::s] of the full output
        sub = spatially_variant_blur(x, kernels, block=block, stride=3, max_elements=budget)
        np.testing.assert_allclose(sub.numpy(), ref[..., ::3, ::3], rtol=1e-5, atol=1e-6)


def test_spatially_variant_blur_equal_kernels_is_replicate_correlation(generator):
    x = torch.rand(1, 3, 30, 26, generator=generator)
    kern = torch.rand(7, 7, generator=generator)
    kern /= kern.sum()
    out = spatially_variant_blur(x, kern.expand(1, 30, 26, 7, 7), block=1)
    # scipy 'nearest' is replication padding: the whole image matches, borders included.
    ref = ndimage.correlate(x.double().numpy(), kern.double().numpy()[None, None], mode="nearest")
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)
    # filter2d pads by reflection: equal away from the 3-pixel border.
    np.testing.assert_allclose(out[..., 3:-3, 3:-3].numpy(), filter2d(x, kern)[..., 3:-3, 3:-3].numpy(), atol=1e-6)
    # A block map of one kernel gives the same.
    blocks = kern.expand(1, 3, 3, 7, 7)
    torch.testing.assert_close(spatially_variant_blur(x, blocks, block=10), out)


def test_spatially_variant_blur_rejects_bad_shapes(generator):
    x = torch.rand(1, 3, 8, 8, generator=generator)
    with pytest.raises(ConfigError, match="kernels must be"):
        spatially_variant_blur(x, torch.ones(1, 8, 8, 4, 4))  # even size
    with pytest.raises(ConfigError, match="kernels must be"):
        spatially_variant_blur(x, torch.ones(1, 2, 2, 3, 3), block=1)  # block grid mismatch
    with pytest.raises(ConfigError, match="B, C, H, W"):
        spatially_variant_blur(x[0], torch.ones(1, 8, 8, 3, 3))


# ----------------------------------------------------------------------------------------------- MANet
def _second_moments(k):
    """Eigenvalues (ascending) of a kernel's covariance about its centroid."""
    k = k.double().numpy()
    r, c = np.indices(k.shape)
    mr, mc = (k * r).sum(), (k * c).sum()
    cov = np.array([[(k * (c - mc) ** 2).sum(), (k * (c - mc) * (r - mr)).sum()], [0.0, (k * (r - mr) ** 2).sum()]])
    cov[1, 0] = cov[0, 1]
    return np.linalg.eigvalsh(cov), cov


def test_manet_mode1_kernel_variances_down_the_rows():
    table = manet_kernel_params(1, (5, 2))
    kernels = manet_kernels(table)
    a, b = MANET_A, MANET_B
    np.testing.assert_allclose(table[0, 0], [a + b, b, 0.0])
    np.testing.assert_allclose(table[4, 1], [a + b, 0.8 * a + b, 0.0])  # row coordinate 4/5: never a + b
    # The 18x18 lattice samples the variance-10 Gaussian at offsets -8.5 .. 8.5 about its mean (8.5), the
    # midpoints of unit cells covering [-9, 9]: the continuous truncated normal on [-9, 9] is the reference.
    s = math.sqrt(a + b)
    big = stats.truncnorm(-9 / s, 9 / s, scale=s).var()
    eig0, cov0 = _second_moments(kernels[0, 0])
    np.testing.assert_allclose(eig0, [b, big], rtol=1e-2)
    # theta = 0: sig1 lies along the columns (x), sig2 along the rows (y).
    assert cov0[0, 0] > cov0[1, 1] and abs(cov0[0, 1]) < 1e-9
    # Row coordinate 2/5: sig2 = 0.4 a + b, small enough to be barely truncated.
    eig_mid, _ = _second_moments(kernels[2, 1])
    assert eig_mid[0] == pytest.approx(0.4 * a + b, rel=0.02)


def test_manet_block_coordinates_and_tables_of_each_mode():
    a, b = MANET_A, MANET_B
    np.testing.assert_array_equal(manet_block_coordinates(4), [0, 0.25, 0.5, 0.75])  # j / n, never 1
    rows = np.array([0, 1 / 3, 2 / 3])[:, None]  # 3 block rows
    cols = np.array([0, 1 / 4, 2 / 4, 3 / 4])[None, :]  # 4 block columns
    t2 = manet_kernel_params(2, (3, 4))
    np.testing.assert_allclose(t2[..., 0], np.broadcast_to(a * cols + b, (3, 4)))  # sig1 along the columns
    np.testing.assert_allclose(t2[..., 1], np.broadcast_to(a * rows + b, (3, 4)))  # sig2 down the rows
    t3 = manet_kernel_params(3, (3, 4))
    np.testing.assert_allclose(t3[..., 2], np.broadcast_to(np.pi * rows, (3, 4)))  # theta down the rows
    np.testing.assert_allclose(t3[..., :2], np.broadcast_to([a + b, b], (3, 4, 2)))
    t4 = manet_kernel_params(4, (3, 4))
    np.testing.assert_allclose(t4[..., :2], t2[..., :2])
    np.testing.assert_allclose(t4[..., 2], t3[..., 2])
    with pytest.raises(ConfigError, match="mode"):
        manet_kernel_params(6, (2, 2))


def test_manet_ab_follows_the_scale():
    assert manet_ab(4) == pytest.approx((9.3, 0.7))
    assert manet_ab(2) == pytest.approx((4.65, 0.35))
    with pytest.raises(ConfigError, match="scale"):
        manet_ab(0)


# MANet's own test-set code on a 100x140 crop (3x4 blocks, the last ones partial): see fixtures/manet_sv_golden.md.
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "manet_sv_golden.npz"


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as g:
        return {k: g[k] for k in g.files}


@pytest.mark.parametrize("mode", [1, 2, 3, 4])
def test_manet_noise_free_lr_equals_manets_own_code(golden, mode):
    hr = torch.from_numpy(golden["hr"]).float()[None] / 255
    lr, kmap, params = manet_degrade(hr, mode, _gen(0), noise=0)
    want = torch.from_numpy(golden[f"lr_mode{mode}"]).float()[None] / 255
    assert lr.shape == want.shape == (1, 3, 25, 35)
    diff = (lr - want).abs()
    assert diff.max() <= 1 / 255 + 1e-6  # within one 8-bit level (float32 sums may round a tie differently)
    assert (diff < 1e-6).float().mean() > 0.99
    table = golden[f"table_mode{mode}"].astype(np.float64)
    np.testing.assert_allclose(np.stack([params[0][k] for k in ("sig1", "sig2", "theta")], -1), table, atol=1e-5)
    # The LR kernel map: LR pixel (i, j) comes from HR pixel (4i, 4j), in block (4i // 40, 4j // 40).
    np.testing.assert_allclose(kmap[0, :, 10, 20].numpy(), table[1, 2], atol=1e-5)
    np.testing.assert_allclose(kmap[0, :, 24, 34].numpy(), table[2, 3], atol=1e-5)


def test_manet_mode5_draws_independent_uniform_parameters_per_block():
    """Mode 5: sig1, sig2 ~ U(b, a + b) and theta ~ U(0, pi), independently per block (Table 4's last column)."""
    a, b = MANET_A, MANET_B
    t = manet_kernel_params(5, (30, 30), _gen(1))
    sig1, sig2, theta = (t[..., i].ravel() for i in range(3))
    for v, lo, width in ((sig1, b, a), (sig2, b, a), (theta, 0.0, np.pi)):
        assert stats.kstest(v, stats.uniform(lo, width).cdf).pvalue > 1e-3
        assert lo <= v.min() and v.max() <= lo + width
    # No correlation between the three values of a block, nor between horizontal neighbours (900 blocks:
    # the standard error of a correlation coefficient is 1/30).
    for u, v in ((sig1, sig2), (sig1, theta), (sig2, theta), (t[:, :-1, 0].ravel(), t[:, 1:, 0].ravel())):
        assert abs(np.corrcoef(u, v)[0, 1]) < 4 / 30
    # Each image of a batch draws its own table; the kernel map follows it.
    hr = torch.rand(2, 3, 80, 120, generator=_gen(2))
    _, kmap, params = manet_degrade(hr, 5, _gen(3), noise=0)
    assert params[0]["sig1"] != params[1]["sig1"]
    np.testing.assert_allclose(kmap[1, :, 10, 20].numpy(), [params[1][k][1][2] for k in ("sig1", "sig2", "theta")],
                               rtol=1e-6)


def test_manet_constant_image_stays_constant_up_to_noise():
    hr = torch.full((2, 3, 80, 120), 0.4)
    lr, _, _ = manet_degrade(hr, 5, _gen(0), noise=0)
    assert lr.shape == (2, 3, 20, 30)
    assert torch.equal(lr, torch.full_like(lr, 102 / 255))  # 0.4 = 102/255 exactly in 8 bits
    lr, _, _ = manet_degrade(hr, 4, _gen(0), noise=15)
    res = (lr - 102 / 255).double()
    assert abs(res.mean().item()) < 5 * (15 / 255) / math.sqrt(res.numel())
    # std of N(0, 15/255) rounded to 8 bits: sqrt(15^2 + 1/12) / 255; 3600 samples: 1.2 % standard error.
    assert res.std().item() == pytest.approx(math.sqrt(15**2 + 1 / 12) / 255, rel=0.06)


def test_manet_uniform_mode_equals_filter2d_and_subsampling(generator):
    # One 40-pixel block row: row coordinate 0 everywhere, so mode 1 uses one kernel (a + b, b, 0) on the image.
    hr = torch.rand(1, 3, 40, 120, generator=generator)
    lr, kmap, _ = manet_degrade(hr, 1, _gen(0), noise=0)
    kern = manet_kernel(MANET_A + MANET_B, MANET_B, 0.0)
    ref = to_8bit(filter2d(hr, kern)[..., ::4, ::4])
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))  # LR pixels >= 12 HR pixels from the border
    diff = (lr[inner] - ref[inner]).abs()
    assert diff.max() <= 1 / 255 + 1e-6 and (diff == 0).float().mean() > 0.99  # only rounding ties differ
    torch.testing.assert_close(kmap[0, :, 0, 0], torch.tensor([MANET_A + MANET_B, MANET_B, 0.0]))


def test_manet_blockwise_kernels_match_filter2d_per_block(generator):
    hr = torch.rand(1, 3, 120, 160, generator=generator)
    lr, kmap, params = manet_degrade(hr, 4, _gen(0), noise=0)
    table = manet_kernel_params(4, (3, 4))
    np.testing.assert_allclose(np.asarray(params[0]["sig1"]), table[..., 0])
    for bi in range(3):
        for bj in range(4):
            ref = to_8bit(filter2d(hr, manet_kernel(*table[bi, bj]))[..., ::4, ::4])
            rows = [i for i in range(30) if bi * 40 <= 4 * i < (bi + 1) * 40 and 10 <= 4 * i < 110]
            cols = [j for j in range(40) if bj * 40 <= 4 * j < (bj + 1) * 40 and 10 <= 4 * j < 150]
            got, want = lr[..., rows, :][..., cols], ref[..., rows, :][..., cols]
            assert (got - want).abs().max() <= 1 / 255 + 1e-6
            assert ((got - want).abs() < 1e-6).float().mean() > 0.97
            np.testing.assert_allclose(kmap[0, :, rows[0], cols[0]].numpy(), table[bi, bj], rtol=1e-6)


def test_manet_is_seeded_and_replays_from_json(generator):
    hr = torch.rand(2, 3, 80, 80, generator=generator)
    lr, kmap, params = manet_degrade(hr, 5, _gen(7))
    again, _, params2 = manet_degrade(hr, 5, _gen(7))
    assert torch.equal(lr, again) and params == params2
    other, _, _ = manet_degrade(hr, 5, _gen(8))
    assert not torch.equal(lr, other)
    assert params[0]["sig1"] != params[1]["sig1"]  # each image draws its own kernels
    replay, kmap2 = manet_replay(hr, json.loads(json.dumps(params)))
    assert torch.equal(lr, replay) and torch.equal(kmap, kmap2)
    with pytest.raises(ConfigError, match="one params dict per image"):
        manet_replay(hr, params[:1])
    # Other scales take MANet's a and b for that scale: at x2 the variances start at b = 0.35.
    lr2, _, params2 = manet_degrade(hr, 1, _gen(0), scale=2)
    assert lr2.shape == (2, 3, 40, 40)
    np.testing.assert_allclose(params2[0]["sig1"][0][0], 5.0)
    np.testing.assert_allclose(params2[0]["sig2"][0][0], 0.35)


# -------------------------------------------------------------------------------------------- Table 5
def test_patchwise_label_map_matches_the_grid(generator):
    hr = torch.rand(2, 3, 200, 136, generator=generator)  # partial last row and column of cells
    out = patchwise(hr, "noise", _gen(3), patch=64)
    assert out.lr.shape == (2, 3, 50, 34) and out.labels.shape == (2, 50, 34)
    for b in range(2):
        grid = np.asarray(out.params[b]["labels"])
        assert grid.shape == (4, 3)
        np.testing.assert_array_equal(out.labels[b].numpy(), np.kron(grid, np.ones((16, 16), int))[:50, :34])
        np.testing.assert_array_equal(out.labels_hr[b].numpy(), np.kron(grid, np.ones((64, 64), int))[:200, :136])
    assert out.labels.dtype == torch.int64


def _censored_std(mean, s):
    """std of clip(mean + s Z, 0, 1), Z standard normal, by quadrature."""
    if s == 0:
        return 0.0
    f = lambda z, p: np.clip(mean + s * z, 0, 1) ** p * stats.norm.pdf(z)  # noqa: E731
    m1 = integrate.quad(f, -12, 12, args=(1,), points=[-mean / s, (1 - mean) / s])[0]
    m2 = integrate.quad(f, -12, 12, args=(2,), points=[-mean / s, (1 - mean) / s])[0]
    return math.sqrt(m2 - m1**2)


def test_patchwise_noise_cells_have_their_noise_std():
    hr = torch.full((1, 3, 512, 512), 0.5)
    out = patchwise(hr, "noise", _gen(0), patch=128)
    grid = np.asarray(out.params[0]["labels"])
    assert set(grid.ravel()) == {0, 1, 2, 3}
    levels = [c.value for c in TABLE5_SETTINGS["noise"]]
    for i in range(4):
        for j in range(4):
            cell = out.lr[0, :, 32 * i : 32 * (i + 1), 32 * j : 32 * (j + 1)].double()
            s = levels[grid[i, j]]
            want = math.sqrt(_censored_std(0.5, s) ** 2 + (s > 0) / (12 * 255**2))  # + 8-bit rounding
            if s == 0:
                assert cell.std().item() == 0 and cell[0, 0, 0].item() == pytest.approx(128 / 255, abs=1e-7)
            else:
                assert cell.std().item() == pytest.approx(want, rel=0.06)


def test_patchwise_blur_cells_match_scipy_gaussian_and_order_high_frequencies():
    hr = torch.rand(1, 3, 192, 192, generator=_gen(5))
    out = patchwise(hr, "blur", _gen(6), patch=64)
    grid = np.asarray(out.params[0]["labels"])
    assert set(grid.ravel()) == {0, 1, 2, 3}
    sigmas = [c.value for c in TABLE5_SETTINGS["blur"]]
    refs = {}
    for s in sigmas:
        # scipy's sampled Gaussian, radius 10 (as the 21x21 kernel), 'nearest' = replication padding.
        blurred = ndimage.gaussian_filter(hr.double().numpy(), (0, 0, s, s), mode="nearest", truncate=10 / s)
        refs[s] = to_8bit(imresize(torch.from_numpy(blurred).float(), scale=1 / 4))
    energy = {k: [] for k in range(4)}
    m = 5  # LR pixels from a cell boundary: blur radius (10 HR) + bicubic support (8 HR) < 5 * 4
    for i in range(3):
        for j in range(3):
            lab = int(grid[i, j])
            win = (0, slice(None), slice(16 * i + m, 16 * (i + 1) - m), slice(16 * j + m, 16 * (j + 1) - m))
            got, want = out.lr[win], refs[sigmas[lab]][win]
            assert (got - want).abs().max() <= 1 / 255 + 1e-6
            lap = ndimage.laplace(out.lr[0, :, 16 * i : 16 * (i + 1), 16 * j : 16 * (j + 1)].numpy(), mode="nearest")
            energy[lab].append(float((lap[:, 2:-2, 2:-2] ** 2).mean()))
    # More blur, less high-frequency energy: every cell of a level above every cell of the next level.
    for k in range(3):
        assert min(energy[k]) > max(energy[k + 1])


def _blockiness(cell):
    """Mean |step| across 8-pixel block boundaries over the mean |step| elsewhere, rows and columns averaged."""
    ratios = []
    for c in (cell, cell.transpose(-1, -2)):
        d = (c[..., 1:] - c[..., :-1]).abs()  # d[..., j] = |x[j + 1] - x[j]|
        across = torch.zeros(d.shape[-1], dtype=torch.bool)
        across[7::8] = True
        ratios.append((d[..., across].mean() / d[..., ~across].mean()).item())
    return sum(ratios) / 2


def test_patchwise_type_cells_jpeg_blockiness_and_noise():
    # A smooth colour field: JPEG's 8x8 block edges stand out against its small, regular steps.
    yy, xx = torch.meshgrid(torch.arange(384.0), torch.arange(384.0), indexing="ij")
    field = 0.5 + 0.3 * torch.sin(2 * math.pi * xx / 150) * torch.cos(2 * math.pi * yy / 130)
    hr = torch.stack([field, field.roll(40, 1), field.roll(80, 0)])[None]
    out = patchwise(hr, "type", _gen(0), patch=128)
    clean = to_8bit(imresize(hr, scale=1 / 4))
    grid = np.asarray(out.params[0]["labels"])
    assert set(grid.ravel()) == {0, 1, 2}
    names = [c.kind for c in TABLE5_SETTINGS["type"]]
    for i in range(3):
        for j in range(3):
            win = (0, slice(None), slice(32 * i, 32 * i + 31), slice(32 * j, 32 * j + 31))  # inside the cell
            kind, b = names[grid[i, j]], _blockiness(out.lr[win])
            assert b > 1.3 if kind == "jpeg" else b < 1.2
            res = (out.lr[win] - clean[win]).std().item()
            if kind == "noise":  # std 0.15, a little less where the field nears 0.2 and clipping bites
                assert 0.13 < res < 0.155
            else:
                assert res < 0.03


def test_patchwise_is_seeded_and_replays_from_json(generator):
    hr = torch.rand(2, 3, 64, 64, generator=generator)
    for setting in ("type", "blur", "noise"):
        out = patchwise(hr, setting, _gen(11), patch=32)
        again = patchwise(hr, setting, _gen(11), patch=32)
        assert torch.equal(out.lr, again.lr) and out.params == again.params
        replay = patchwise_replay(hr, json.loads(json.dumps(out.params)))
        assert torch.equal(out.lr, replay.lr) and torch.equal(out.labels, replay.labels)
    assert not torch.equal(patchwise(hr, "type", _gen(12), patch=32).lr, out.lr)
    # Records of different settings replay side by side in one batch.
    a, b = patchwise(hr[:1], "type", _gen(0), patch=32), patchwise(hr[1:], "blur", _gen(0), patch=32)
    mixed = patchwise_replay(hr, a.params + b.params)
    assert torch.equal(mixed.lr, torch.cat([a.lr, b.lr]))


def test_patchwise_custom_setting_and_errors(generator):
    hr = torch.rand(1, 3, 64, 64, generator=generator)
    custom = [PatchClass("jpeg", 90), PatchClass("jpeg", 10)]
    out = patchwise(hr, custom, _gen(0), patch=32)
    assert out.params[0]["classes"] == [["jpeg", 90], ["jpeg", 10]]
    with pytest.raises(ConfigError, match="valid: type, blur, noise"):
        patchwise(hr, "colour", _gen(0))
    with pytest.raises(ConfigError, match="multiple of scale"):
        patchwise(hr, "blur", _gen(0), patch=30)
    with pytest.raises(ConfigError, match="kind"):
        PatchClass("haze", 1.0)
    with pytest.raises(ConfigError, match="3 channels"):
        patchwise(hr[:, :1], "blur", _gen(0))


# ---------------------------------------------------------------------------------- out of distribution
def test_haze_closed_form_on_a_constant_image():
    j, a, beta = 0.3, 0.9, 1.5
    img = torch.full((2, 3, 11, 7), j)
    out = haze(img, beta, a)
    d = np.linspace(1, 0, 11)  # the default depth: 1 at the top row, 0 at the bottom
    t = np.exp(-beta * d)
    want = np.broadcast_to((j * t + a * (1 - t))[:, None], (11, 7))
    np.testing.assert_allclose(out[1, 2].numpy(), want, rtol=1e-6)
    assert torch.equal(out[..., -1, :], img[..., -1, :])  # zero depth: no haze
    assert torch.equal(haze(img, 0.0, a), img)  # beta = 0: t = 1 everywhere
    # Per-channel airlight and a given depth map: far pixels tend to the airlight.
    depth = torch.full((11, 7), 50.0)
    far = haze(img, 1.0, (0.2, 0.5, 0.8), depth)
    torch.testing.assert_close(far[0, :, 0, 0], torch.tensor([0.2, 0.5, 0.8]), atol=1e-6, rtol=0)
    assert vertical_depth(5, 3).shape == (1, 1, 5, 3)
    with pytest.raises(ConfigError, match="depth"):
        haze(img, 1.0, 0.8, torch.zeros(5, 5))


def test_motion_blur_impulse_response_is_a_segment():
    img = torch.zeros(1, 1, 31, 31)
    img[..., 15, 15] = 1.0
    horiz = motion_blur(img, 8, 0.0)[0, 0]
    assert horiz.sum().item() == pytest.approx(1.0, abs=1e-5)
    rows, cols = torch.nonzero(horiz > 1e-6, as_tuple=True)
    assert set(rows.tolist()) == {15} and cols.min() >= 15 - 4 and cols.max() <= 15 + 4
    assert cols.max() - cols.min() >= 7
    vert = motion_blur(img, 8, math.pi / 2)[0, 0]
    torch.testing.assert_close(vert, horiz.T, atol=1e-6, rtol=0)
    flat = torch.full((1, 3, 20, 20), 0.6)
    torch.testing.assert_close(motion_blur(flat, 11, 0.7), flat)
    assert torch.equal(motion_blur(flat, 0, 0.3), flat)


def test_bivariate_gaussian_std_convention_used_by_table5():
    # The Table 5 blur classes are stds in HR pixels: the kernel's second moment is sigma^2.
    eig, _ = _second_moments(bivariate_gaussian(21, 2.0, 2.0))
    np.testing.assert_allclose(eig, [4.0, 4.0], rtol=1e-3)
