"""savl.metrics against independent references: scikit-image, closed forms, hand-computed values (the
conventions: book appendix, metrics)."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from savl.errors import ImageError, ModelFileError
from savl.metrics import LPIPS, lpips_trunk_file, psnr, ssim


def _pair(generator, b=2, h=40, w=48, noise=0.08):
    hr = torch.rand(b, 3, h, w, generator=generator)
    sr = (hr + noise * torch.randn(b, 3, h, w, generator=generator)).clamp(0, 1)
    return sr, hr


def _reference_arrays(sr, hr, crop, y):
    """BasicSR's steps written independently in numpy: round, crop, Y from the BT.601 matrix."""
    a = np.round(np.clip(sr.permute(1, 2, 0).double().numpy(), 0, 1) * 255)
    b = np.round(np.clip(hr.permute(1, 2, 0).double().numpy(), 0, 1) * 255)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    if y:
        m = np.array([65.481, 128.553, 24.966]) / 255.0
        a, b = a @ m + 16.0, b @ m + 16.0
    return a, b


@pytest.mark.parametrize("y_channel", [True, False])
@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_and_ssim_match_scikit_image_per_image(generator, y_channel, crop):
    sr, hr = _pair(generator)
    p, s = psnr(sr, hr, crop, y_channel), ssim(sr, hr, crop, y_channel)
    assert p.shape == s.shape == (2,)
    for i in range(2):
        a, b = _reference_arrays(sr[i], hr[i], crop, y_channel)
        ref_p = peak_signal_noise_ratio(b, a, data_range=255)
        # skimage filters the whole image (reflect) and then crops (win-1)/2 = 5 pixels per side before the
        # mean: with an 11-tap window that is exactly the valid region of an unpadded convolution.
        ref_s = structural_similarity(
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=None if y_channel else -1,
        )
        assert float(p[i]) == pytest.approx(ref_p, abs=1e-9)
        assert float(s[i]) == pytest.approx(ref_s, abs=1e-9)
    # per image, not one batch value: the two images have different scores
    assert float(p[0]) != float(p[1])


def test_psnr_closed_form_uniform_error():
    # HR on the 8-bit grid, away from 0 and 1, so a shift of k levels survives rounding and clamping.
    torch.manual_seed(0)
    hr = torch.randint(20, 200, (1, 3, 16, 16)).double() / 255
    for k in (1, 3, 10):
        sr = hr + k / 255
        # RGB: every sample is off by k levels -> MSE = k^2
        assert float(psnr(sr, hr, y_channel=False)[0]) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)
        # Y: the error is k/255 * (65.481 + 128.553 + 24.966) = 219 k / 255 levels
        ref_y = 20 * math.log10(255 / (219 * k / 255))
        assert float(psnr(sr, hr)[0]) == pytest.approx(ref_y, abs=1e-9)


def test_rounding_to_8_bits_comes_first():
    torch.manual_seed(1)
    hr = torch.randint(0, 256, (1, 3, 16, 16)).double() / 255
    # less than half a level: the same PNG, so identical images -> inf and SSIM 1
    sr = hr + 0.4 / 255 * torch.sign(torch.randn(1, 3, 16, 16)) * (hr > 0.01) * (hr < 0.99)
    assert math.isinf(float(psnr(sr, hr)[0]))
    assert float(ssim(sr, hr)[0]) == pytest.approx(1.0, abs=1e-12)
    # out-of-range values are clamped before rounding
    assert math.isinf(float(psnr(hr.clamp(0, 1) * 0 + 1.7, torch.ones_like(hr), y_channel=False)[0]))


def test_crop_border_hand_computed():
    hr = torch.full((1, 3, 20, 20), 100 / 255, dtype=torch.float64)
    sr = hr.clone()
    sr[..., 0, 0] = 110 / 255  # one corner pixel off by 10 levels in every channel
    # no crop: MSE over C*H*W = 3 * 100 / (3 * 400)
    assert float(psnr(sr, hr, 0, False)[0]) == pytest.approx(10 * math.log10(255**2 / (100 / 400)), abs=1e-9)
    # with Y: 219 * 10 / 255 levels at one of 400 pixels
    mse_y = (219 * 10 / 255) ** 2 / 400
    assert float(psnr(sr, hr, 0, True)[0]) == pytest.approx(10 * math.log10(255**2 / mse_y), abs=1e-9)
    # the crop removes the only difference
    assert math.isinf(float(psnr(sr, hr, 1, False)[0]))
    assert float(ssim(sr, hr, 1)[0]) == pytest.approx(1.0, abs=1e-12)
    assert float(ssim(sr, hr, 0)[0]) < 1.0


def test_ssim_closed_form_for_constant_images():
    # constant images: zero variances, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    a, b = 60.0, 90.0
    sr = torch.full((1, 3, 16, 16), a / 255, dtype=torch.float64)
    hr = torch.full((1, 3, 16, 16), b / 255, dtype=torch.float64)
    c1 = (0.01 * 255) ** 2
    ref = (2 * a * b + c1) / (a * a + b * b + c1)
    assert float(ssim(sr, hr, y_channel=False)[0]) == pytest.approx(ref, abs=1e-12)
    ya, yb = 16 + 219 * a / 255, 16 + 219 * b / 255
    ref_y = (2 * ya * yb + c1) / (ya * ya + yb * yb + c1)
    assert float(ssim(sr, hr)[0]) == pytest.approx(ref_y, abs=1e-12)


def test_metrics_are_per_image_not_batch(generator):
    sr, hr = _pair(generator, b=3)
    sr[1] = hr[1]  # the middle image is perfect
    p, s = psnr(sr, hr, 2), ssim(sr, hr, 2)
    for i in range(3):
        assert float(psnr(sr[i : i + 1], hr[i : i + 1], 2)[0]) == float(p[i])
        assert float(ssim(sr[i : i + 1], hr[i : i + 1], 2)[0]) == pytest.approx(float(s[i]), abs=1e-15)
    assert math.isinf(float(p[1])) and not math.isinf(float(p[0]))
    assert float(s[1]) == pytest.approx(1.0, abs=1e-12)


def test_float32_inputs_and_device_of_output(generator):
    sr, hr = _pair(generator, b=1)
    out = psnr(sr.float(), hr.float())
    assert out.device == sr.device and out.dtype == torch.float64
    assert float(out[0]) == float(psnr(sr.double(), hr.double())[0])


@pytest.mark.parametrize(
    ("sr", "hr", "kwargs", "match"),
    [
        (torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), {}, "expected a"),
        (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17), {}, "differ in shape"),
        (torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), {}, "3 .RGB. channels"),
        (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), {"crop_border": 8}, "leaves nothing"),
        (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), {"crop_border": 3}, "at least 11x11"),
    ],
)
def test_bad_inputs_raise_one_line_image_error(sr, hr, kwargs, match):
    with pytest.raises(ImageError, match=match) as info:
        ssim(sr, hr, **kwargs)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ LPIPS
def test_lpips_offline_error_names_the_trunk_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    name, folder = lpips_trunk_file("alex")
    assert name == "alexnet-owt-7be5be79.pth"
    assert folder == tmp_path / "hub" / "checkpoints"
    with pytest.raises(ModelFileError) as info:
        LPIPS("alex")
    msg = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(folder) in msg and "\n" not in msg
    assert not folder.exists()  # nothing was downloaded or created
    with pytest.raises(ModelFileError, match="vgg16-397923af.pth"):
        LPIPS("vgg")
    with pytest.raises(ModelFileError, match="unknown LPIPS network"):
        LPIPS("resnet")


def test_lpips_corrupt_cache_file_is_a_model_file_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    name, folder = lpips_trunk_file("alex")
    folder.mkdir(parents=True)
    (folder / name).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="cannot be loaded"):
        LPIPS("alex")


def test_lpips_random_trunk_plumbing(generator):
    torch.manual_seed(0)  # the random trunk's initialisation
    metric = LPIPS("alex", pretrained=False)  # random trunk: plumbing only, never reported as LPIPS
    assert metric.random_trunk and metric.metric_name == "lpips_random_trunk"
    assert "not LPIPS" in metric.describe()
    sr, hr = _pair(generator, b=2, h=64, w=64, noise=0.2)
    d = metric(sr, hr)
    assert d.shape == (2,) and torch.all(d > 0)
    assert torch.equal(metric(hr, hr), torch.zeros(2))
