"""The hand-crafted reference code against the quantities it estimates."""

import kornia
import pytest
import torch

from savl.analysis.reference import HandcraftedCode, haar_hh
from savl.errors import ImageError


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_noise_channel_recovers_the_gaussian_sigma_on_a_flat_image(sigma):
    g = torch.Generator().manual_seed(0)
    lr = 0.5 + sigma * torch.randn(1, 1, 96, 96, generator=g).expand(1, 3, 96, 96)
    est = HandcraftedCode(window=15)(lr).mean[:, 0].exp()
    assert float(est.median()) == pytest.approx(sigma, rel=0.15)


def test_haar_band_is_orthonormal_so_white_noise_keeps_its_sigma():
    g = torch.Generator().manual_seed(1)
    n = torch.randn(1, 1, 256, 256, generator=g).expand(1, 3, 256, 256)
    assert float(haar_hh(n).std()) == pytest.approx(1.0, rel=0.02)


def test_sharpness_channel_falls_when_the_image_is_blurred():
    from savl.data import sample_images

    img = sample_images(["astronaut"])[0][1][None, :3, 100:164, 150:214]
    sharp = HandcraftedCode()(img).mean[:, 1].mean()
    blurred = HandcraftedCode()(kornia.filters.gaussian_blur2d(img, (9, 9), (2.0, 2.0))).mean[:, 1].mean()
    assert float(blurred) < float(sharp) - 0.3


def test_bad_shapes_are_refused():
    with pytest.raises(ImageError):
        HandcraftedCode()(torch.rand(1, 1, 16, 16))
    with pytest.raises(ImageError):
        HandcraftedCode(window=4)
