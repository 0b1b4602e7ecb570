"""Batched degradation ops (book appendix, Real-ESRGAN) against scipy / numpy / Pillow references."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from savl.degrade import ops
from savl.degrade.kernels import bivariate_gaussian, motion_kernel, sinc_kernel
from savl.errors import ConfigError


def test_filter2d_matches_scipy_correlate_mirror(generator):
    # PyTorch 'reflect' (edge not repeated) is scipy.ndimage 'mirror'; kornia correlates (no flip).
    x = torch.rand(3, 2, 24, 31, generator=generator, dtype=torch.float64)
    kernels = torch.stack([bivariate_gaussian(9, 2.0, 0.8, 0.5), motion_kernel(9, 6, 1.0), sinc_kernel(9, 2.0, None)])
    kernels = kernels.double()
    per_sample = ops.filter2d(x, kernels)
    shared = ops.filter2d(x, kernels[1])
    for b in range(3):
        for c in range(2):
            ref = ndimage.correlate(x[b, c].numpy(), kernels[b].numpy(), mode="mirror")
            assert np.abs(per_sample[b, c].numpy() - ref).max() < 1e-12
            ref1 = ndimage.correlate(x[b, c].numpy(), kernels[1].numpy(), mode="mirror")
            assert np.abs(shared[b, c].numpy() - ref1).max() < 1e-12


def test_filter2d_pads_beyond_the_image_size_like_scipy(generator):
    # A 21x21 kernel on a 6x7 image: the pad (10) exceeds the side; the mirror continues periodically.
    x = torch.rand(1, 1, 6, 7, generator=generator, dtype=torch.float64)
    k = bivariate_gaussian(21, 3.0, 2.0, 0.3).double()
    ref = ndimage.correlate(x[0, 0].numpy(), k.numpy(), mode="mirror")
    assert np.abs(ops.filter2d(x, k)[0, 0].numpy() - ref).max() < 1e-12


def test_filter2d_of_zero_padded_kernels_matches_scipy_with_the_full_kernel(generator):
    # Real-ESRGAN pads every kernel to 21x21; filter2d correlates with only the rings some kernel of the batch
    # uses (here 9x9 and 5x5 inside 21x21, so a 9x9 correlation), which must equal scipy's correlation with the
    # full zero-padded kernels, on an image smaller than the kernel too.
    from savl.degrade.kernels import pad_kernel

    narrow = (bivariate_gaussian(9, 2.0, 0.8, 0.5), sinc_kernel(5, 2.0, None))
    kernels = torch.stack([pad_kernel(k, 21) for k in narrow])
    assert ops._trim_zero_border(kernels).shape == (2, 9, 9)
    for h, w in ((24, 31), (6, 7)):
        x = torch.rand(2, 2, h, w, generator=generator, dtype=torch.float64)
        out = ops.filter2d(x, kernels.double())
        for b in range(2):
            for c in range(2):
                ref = ndimage.correlate(x[b, c].numpy(), kernels[b].double().numpy(), mode="mirror")
                assert np.abs(out[b, c].numpy() - ref).max() < 1e-12
    assert ops._trim_zero_border(torch.zeros(1, 21, 21)).shape == (1, 21, 21)  # nothing to keep: left alone


def test_reflect_pad_matches_numpy_reflect(generator):
    x = torch.rand(1, 1, 4, 5, generator=generator, dtype=torch.float64)
    out = ops.reflect_pad(x, (9, 3, 7, 11))[0, 0].numpy()
    ref = np.pad(x[0, 0].numpy(), ((7, 11), (9, 3)), mode="reflect")
    assert np.array_equal(out, ref)


def test_filter2d_spatial_matches_per_pixel_scipy(generator):
    x = torch.rand(2, 3, 9, 11, generator=generator, dtype=torch.float64)
    kern = torch.rand(2, 9, 11, 5, 5, generator=generator, dtype=torch.float64)
    kern = kern / kern.sum((-1, -2), keepdim=True)
    out = ops.filter2d_spatial(x, kern, rows_per_chunk=4)
    for b in range(2):
        for i in (0, 4, 8):
            for j in (0, 5, 10):
                ref = ndimage.correlate(x[b, 1].numpy(), kern[b, i, j].numpy(), mode="mirror")[i, j]
                assert out[b, 1, i, j].item() == pytest.approx(ref, abs=1e-12)
    # A field of identical kernels reduces to filter2d.
    same = kern[0, 0, 0].expand(9, 11, 5, 5)
    assert torch.allclose(ops.filter2d_spatial(x, same), ops.filter2d(x, kern[0, 0, 0]), atol=1e-12)


def test_resize_modes_and_sizes(generator):
    x = torch.rand(2, 3, 40, 60, generator=generator)
    assert ops.resize(x, 0.5, mode="area").shape == (2, 3, 20, 30)
    assert ops.resize(x, size=(17, 23), mode="bilinear").shape == (2, 3, 17, 23)
    assert ops.resize(x, 1.5, mode="bicubic").shape == (2, 3, 60, 90)
    # Area x0.5 is the mean of 2x2 blocks (numpy reference).
    ref = x.numpy().reshape(2, 3, 20, 2, 30, 2).mean((3, 5))
    assert np.allclose(ops.resize(x, 0.5, mode="area").numpy(), ref, atol=1e-6)
    # Antialiased bilinear halving of a checkerboard removes it (mean level), the plain one aliases it.
    cb = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float()[None, None]
    aa = ops.resize(cb, 0.5, mode="bilinear", antialias=True)
    assert (aa - 0.5).abs().max() < 0.05
    with pytest.raises(ConfigError):
        ops.resize(x, 0.5, size=(3, 3))
    with pytest.raises(ConfigError):
        ops.resize(x, 0.5, mode="nearest")


def test_gaussian_noise_std_and_gray(generator):
    x = torch.full((4, 3, 128, 128), 0.5)
    sigma = torch.tensor([0.01, 0.05, 0.1, 0.2])
    gray = torch.tensor([False, True, False, True])
    y = ops.add_gaussian_noise(x, sigma, gray, generator)
    n = y - x
    for b in range(4):
        assert n[b].std().item() == pytest.approx(sigma[b].item(), rel=0.02)  # 49k samples: ~0.3 % s.e.
    assert torch.equal(n[1, 0], n[1, 1]) and torch.equal(n[1, 0], n[1, 2])
    assert not torch.allclose(n[0, 0], n[0, 1])
    # Colour noise is independent across channels (correlation ~ 0).
    corr = np.corrcoef(n[2, 0].flatten().numpy(), n[2, 1].flatten().numpy())[0, 1]
    assert abs(corr) < 0.02


def test_noise_with_per_sample_generators_reproduces_each_sample_alone(generator):
    x = torch.rand(3, 3, 16, 16, generator=generator)
    gens = [torch.Generator().manual_seed(s) for s in (7, 8, 9)]
    y = ops.add_gaussian_noise(x, [0.1, 0.2, 0.3], [False, True, False], gens)
    alone = ops.add_gaussian_noise(x[1:2], 0.2, True, [torch.Generator().manual_seed(8)])
    assert torch.equal(y[1:2], alone)
    p = ops.add_poisson_noise(
        x, [1.0, 2.0, 0.5], [True, False, True], [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    )
    p_alone = ops.add_poisson_noise(x[2:3], 0.5, True, [torch.Generator().manual_seed(3)])
    assert torch.equal(p[2:3], p_alone)


def test_poisson_levels_is_the_power_of_two_above_the_unique_count():
    x = torch.zeros(2, 3, 8, 8)
    x[0].view(-1)[:5] = torch.arange(1, 6) / 255  # 6 distinct values -> 8
    x[1].view(-1)[:130] = torch.arange(130) / 255  # 130 distinct -> 256
    assert ops.poisson_levels(x).tolist() == [8.0, 256.0]


def test_poisson_noise_variance_matches_img_over_vals(generator):
    # Image of 4 grey levels (8-bit exact) -> vals = 4: Var(noise) = img / vals * scale^2 per level.
    levels = torch.tensor([0.2, 0.4, 0.6, 0.8])
    levels = (levels * 255).round() / 255
    x = levels.repeat_interleave(64 * 128).reshape(1, 1, 256, 128).expand(2, 3, 256, 128).contiguous()
    scale = torch.tensor([1.0, 2.5])
    y = ops.add_poisson_noise(x, scale, torch.tensor([False, False]), generator)
    n = (y - x).reshape(2, 3, 4, -1)
    vals = 4.0
    for b in range(2):
        for i, v in enumerate(levels.tolist()):
            var = n[b, :, i].var().item()
            assert var == pytest.approx(v / vals * scale[b].item() ** 2, rel=0.05)  # 24k samples per level
            assert n[b, :, i].mean().abs().item() < 0.02 * scale[b].item()


def test_poisson_gray_noise_is_shared_by_channels(generator):
    x = torch.rand(2, 3, 32, 32, generator=generator)
    y = ops.add_poisson_noise(x, 1.0, torch.tensor([True, False]), generator)
    n = y - x  # equal up to float32 rounding of (x + n) - x
    assert torch.allclose(n[0, 0], n[0, 1], atol=1e-6) and torch.allclose(n[0, 1], n[0, 2], atol=1e-6)
    assert not torch.allclose(n[1, 0], n[1, 1], atol=1e-3)


def _pil_jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64) / 255


def _psnr(a, b) -> float:
    return float(10 * np.log10(1 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def test_jpeg_quality_ordering_and_agreement_with_pillow():
    from skimage import data

    img = data.astronaut()[100:228, 150:278]  # 128x128 RGB uint8, real texture
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).expand(2, -1, -1, -1).contiguous()
    y = ops.jpeg(x, torch.tensor([95.0, 10.0]))
    assert y.shape == x.shape
    ref = x[0].permute(1, 2, 0).numpy()
    p95, p10 = _psnr(y[0].permute(1, 2, 0).numpy(), ref), _psnr(y[1].permute(1, 2, 0).numpy(), ref)
    # Measured on this crop: 40.2 dB at q95, 28.1 dB at q10 (Pillow: 39.5 / 27.3 dB).
    assert p95 > 37 and p10 < 31 and p95 - p10 > 8
    # Pillow (libjpeg) as an independent codec: kornia's output lies much closer to Pillow's than to the
    # input (measured 46.4 dB at q95, 41.0 dB at q10; they differ in rounding and chroma resampling).
    for q, out, bound in ((95, y[0], 43.0), (10, y[1], 37.0)):
        pil = _pil_jpeg(img, q)
        assert _psnr(out.permute(1, 2, 0).numpy(), pil) > bound


def test_jpeg_rejects_bad_quality():
    with pytest.raises(ConfigError):
        ops.jpeg(torch.rand(1, 3, 16, 16), torch.tensor([0.0]))


def test_usm_leaves_constant_images_unchanged_and_matches_a_scipy_reference(generator):
    flat = torch.full((2, 3, 40, 40), 0.37)
    assert torch.equal(ops.usm_sharpen(flat), flat)
    # Reference: the same definition with scipy's Gaussian filter (sigma 8, radius 25, mirror padding).
    x = torch.rand(1, 1, 48, 48, generator=generator, dtype=torch.float64)
    x = torch.from_numpy(ndimage.gaussian_filter(x[0, 0].numpy(), 1.0))[None, None]
    g = lambda a: ndimage.gaussian_filter(a, 8.0, radius=25, mode="mirror")  # noqa: E731
    a = x[0, 0].numpy()
    res = a - g(a)
    soft = g((np.abs(res) * 255 > 10).astype(np.float64))
    ref = soft * np.clip(a + 0.5 * res, 0, 1) + (1 - soft) * a
    assert np.abs(ops.usm_sharpen(x)[0, 0].numpy() - ref).max() < 1e-6
    # Sharpening raises the high-frequency energy of a smooth edge.
    edge = torch.linspace(0, 1, 64).clamp(0.3, 0.7).expand(1, 3, 64, 64).contiguous()
    lap = lambda t: (t[..., 1:-1] * 2 - t[..., :-2] - t[..., 2:]).abs().sum()  # noqa: E731
    assert lap(ops.usm_sharpen(edge)) > lap(edge)


def test_opencv_gaussian_sigma_rule():
    k = ops.opencv_gaussian_1d(51).double().numpy()
    t = np.arange(51) - 25.0
    ref = np.exp(-(t**2) / (2 * 8.0**2))
    assert np.allclose(k, ref / ref.sum(), atol=1e-7)


def test_filter2d_separable_matches_scipy_correlate1d(generator):
    x = torch.rand(2, 3, 13, 20, generator=generator, dtype=torch.float64)
    kx = torch.rand(7, generator=generator, dtype=torch.float64)
    ky = torch.rand(31, generator=generator, dtype=torch.float64)  # longer than the image height
    out = ops.filter2d_separable(x, kx, ky)
    for b in range(2):
        ref = ndimage.correlate1d(x[b, 2].numpy(), kx.numpy(), axis=1, mode="mirror")
        ref = ndimage.correlate1d(ref, ky.numpy(), axis=0, mode="mirror")
        assert np.abs(out[b, 2].numpy() - ref).max() < 1e-12
