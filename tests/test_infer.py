"""Tiled inference: tiles agree with the whole image, any size, gray/RGBA tracks, bf16 fallback."""

import math

import pytest
import torch
from torch import nn

from savl.infer import _positions, _ramp, upscale


class TinySR(nn.Module):
    """A random x4 network with a 7x7 receptive field at LR: small enough that overlap 16 hides the seams."""

    scale = 4

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(16, 48, 3, padding=1),
            nn.PixelShuffle(4),
        )

    def forward(self, x):
        return torch.sigmoid(self.body(x))


def psnr(a, b):
    return 10 * math.log10(1.0 / torch.mean((a - b) ** 2).item())


def test_positions_cover_the_image_and_end_flush():
    assert _positions(200, 64, 16) == [0, 48, 96, 136]
    assert _positions(50, 64, 16) == [0]
    for length in (65, 100, 257):
        starts = _positions(length, 64, 16)
        assert starts[0] == 0 and starts[-1] + 64 == length
        assert all(b - a <= 48 for a, b in zip(starts, starts[1:]))


def test_ramp_is_smooth_positive_and_one_inside():
    w = _ramp(64, 16, at_start=False, at_end=False)
    assert (w > 0).all() and torch.all(w[16:48] == 1)
    assert torch.all(w[:16].diff() > 0) and torch.all(w[-16:].diff() < 0)
    assert torch.all(_ramp(64, 16, at_start=True, at_end=True) == 1)


def test_tiled_matches_untiled_on_200x200():
    model = TinySR().eval()
    img = torch.rand(3, 200, 200, generator=torch.Generator().manual_seed(1))
    whole = upscale(model, img, tile=None)
    tiled = upscale(model, img, tile=64, overlap=16)
    assert whole.shape == tiled.shape == (3, 800, 800)
    assert psnr(whole, tiled) >= 40.0


@pytest.mark.parametrize("hw", [(37, 53), (1, 1), (65, 64)])
def test_any_size(hw):
    img = torch.rand(3, *hw)
    out = upscale(TinySR().eval(), img, tile=32, overlap=8)
    assert out.shape == (3, hw[0] * 4, hw[1] * 4)
    assert 0 <= out.min() and out.max() <= 1


def test_gray_and_rgba_tracks():
    model = TinySR().eval()
    gray = torch.rand(1, 20, 24)
    out = upscale(model, gray, tile=None)
    assert out.shape == (1, 80, 96)
    torch.testing.assert_close(out, upscale(model, gray.expand(3, -1, -1), tile=None).mean(0, keepdim=True))
    rgba = torch.cat([torch.rand(3, 20, 24), torch.ones(1, 20, 24)], 0)
    out = upscale(model, rgba, tile=16, overlap=4)
    assert out.shape == (4, 80, 96)
    torch.testing.assert_close(out[3], torch.ones(80, 96))  # opaque stays opaque (bicubic keeps constants)


def test_bf16_runs_and_stays_close():
    model = TinySR().eval()
    img = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(2))
    out = upscale(model, img, tile=None, dtype=torch.bfloat16)
    assert psnr(out, upscale(model, img, tile=None)) > 30


def test_bad_arguments():
    model = TinySR().eval()
    with pytest.raises(ValueError, match="overlap"):
        upscale(model, torch.rand(3, 100, 100), tile=32, overlap=16)
    with pytest.raises(ValueError, match="expects"):
        upscale(model, torch.rand(2, 10, 10))
