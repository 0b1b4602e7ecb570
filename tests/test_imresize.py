"""savl.imresize against hand-computed MATLAB weights, a scalar re-implementation of MATLAB's documented
rules, and Pillow's BICUBIC (same kernel and antialiasing; Pillow renormalises at borders, MATLAB mirrors)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from savl.imresize import imresize

# Keys' cubic (a = -0.5) at the offsets that scale factors 2 and 1/2 produce, as exact fractions:
# c(0.25) = 1.5/64 - 2.5/16 + 1 = 111/128, c(0.75) = 29/128, c(1.25) = -9/128, c(1.75) = -3/128.
C025, C075, C125, C175 = 111 / 128, 29 / 128, -9 / 128, -3 / 128


def _matrix(in_len: int, **kw) -> torch.Tensor:
    """The (out, in) linear map imresize applies along W, read off by resizing the unit vectors."""
    eye = torch.eye(in_len, dtype=torch.float64).reshape(in_len, 1, 1, in_len)
    out = imresize(eye, **kw)  # (in, 1, 1, out): row j is the image of e_j
    return out[:, 0, 0, :].T


def test_downscale_by_half_weights_by_hand():
    # Output 1 of 2 sits at u = 1.5 (1-based). Kernel stretched x2 and halved: taps at distances
    # 0.5, 1.5, 2.5, 3.5 on each side get c(0.25)/2, c(0.75)/2, c(1.25)/2, c(1.75)/2. Left of pixel 1 the
    # indices mirror (0 -> 1, -1 -> 2, -2 -> 3), right of pixel 4 (5 -> 4), so pixel 1 collects
    # c(0.25)/2 + c(0.75)/2, pixel 2 c(0.25)/2 + c(1.25)/2, pixel 3 c(0.75)/2 + c(1.75)/2,
    # pixel 4 c(1.25)/2 + c(1.75)/2. The weights already sum to one.
    row = [(C025 + C075) / 2, (C025 + C125) / 2, (C075 + C175) / 2, (C125 + C175) / 2]
    assert row == [35 / 64, 51 / 128, 13 / 128, -3 / 64]
    expected = torch.tensor([row, row[::-1]], dtype=torch.float64)
    got = _matrix(4, size=(1, 2))
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.allclose(_matrix(4, scale=(1.0, 0.5)), expected, atol=1e-12)


def test_upscale_by_two_weights_by_hand():
    # Output i sits at u = i/2 + 1/4; fraction 0.75 or 0.25. Taps floor(u)-1 .. floor(u)+2, mirrored.
    a = [C175, C075, C025, C125]  # fraction 0.75
    b = [C125, C025, C075, C175]  # fraction 0.25
    expected = torch.tensor(
        [
            [a[1] + a[2], a[0] + a[3], 0, 0],  # u = 0.75: taps 0, 1, 2, 3 -> 1, 1, 2 and -1 -> 2
            [b[0] + b[1], b[2], b[3], 0],  # u = 1.25: taps 0 (-> 1), 1, 2, 3
            [a[0] + a[1], a[2], a[3], 0],  # u = 1.75
            b,  # u = 2.25: taps 1..4
            a,  # u = 2.75
            [0, b[0], b[1], b[2] + b[3]],  # u = 3.25: tap 5 -> 4
            [0, a[0], a[1], a[2] + a[3]],  # u = 3.75
            [0, 0, b[0] + b[3], b[1] + b[2]],  # u = 4.25: taps 3, 4, 5 -> 4, 6 -> 3
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(_matrix(4, scale=(1.0, 2.0)), expected, atol=1e-12)
    assert expected[0].tolist() == [1.09375, -0.09375, 0, 0]


def _reference_1d(signal: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """MATLAB's documented rules, one output pixel at a time (a second, scalar implementation)."""
    n = len(signal)

    def keys(t):
        t = abs(t)
        if t <= 1:
            return 1.5 * t**3 - 2.5 * t**2 + 1
        if t <= 2:
            return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
        return 0.0

    def mirror(j):  # 1-based symmetric padding
        j = (j - 1) % (2 * n)
        return j if j < n else 2 * n - 1 - j

    k = (lambda t: scale * keys(scale * t)) if scale < 1 else keys
    half = 2 / scale if scale < 1 else 2
    out = np.zeros(out_len)
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        taps = range(math.floor(u - half), math.ceil(u + half) + 1)
        w = np.array([k(u - j) for j in taps])
        out[i - 1] = sum(wj * signal[mirror(j)] for wj, j in zip(w / w.sum(), taps))
    return out


@pytest.mark.parametrize("in_len,scale", [(11, 0.3), (9, 1.7), (16, 0.25), (5, 3.0), (13, 1 / 3)])
def test_matches_scalar_reference(generator, in_len, scale):
    x = torch.rand(in_len, generator=generator, dtype=torch.float64)
    out_len = math.ceil(in_len * scale)
    expected = _reference_1d(x.numpy(), out_len, scale)
    got = imresize(x.reshape(1, 1, in_len), scale=(1.0, scale))[0, 0].numpy()
    assert np.allclose(got, expected, atol=1e-12)
    got_h = imresize(x.reshape(1, in_len, 1), scale=(scale, 1.0))[0, :, 0].numpy()  # the H axis too
    assert np.allclose(got_h, expected, atol=1e-12)


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 0.7, 1.5, 2, 3, 4])
def test_constant_preserved(scale):
    x = torch.full((2, 3, 19, 23), 0.37)
    y = imresize(x, scale)
    assert y.shape == (2, 3, math.ceil(19 * scale), math.ceil(23 * scale))
    assert (y - 0.37).abs().max() < 1e-6


def test_output_size_rule_and_arguments():
    assert imresize(torch.zeros(1, 37, 37), 0.25).shape == (1, 10, 10)  # ceil(9.25)
    assert imresize(torch.zeros(1, 10, 10), 4).shape == (1, 40, 40)
    assert imresize(torch.zeros(1, 10, 12), size=(7, 9)).shape == (1, 7, 9)
    assert imresize(torch.zeros(1, 10, 10), scale=(0.5, 2)).shape == (1, 5, 20)
    x = torch.rand(3, 8, 8)
    assert torch.equal(imresize(x, 1.0), x)
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(ValueError):
        imresize(x, scale=2, size=(4, 4))
    with pytest.raises(ValueError):
        imresize(x, scale=0)
    with pytest.raises(ValueError):
        imresize(x.long(), scale=2)
    with pytest.raises(ValueError):
        imresize(x[0], scale=2)


def test_up_then_down_is_close_to_identity_on_smooth_image():
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, 48, dtype=torch.float64), torch.linspace(0, 1, 64, dtype=torch.float64), indexing="ij"
    )
    img = (0.5 + 0.3 * torch.sin(2 * math.pi * (1.5 * xx + yy)) + 0.1 * torch.cos(4 * math.pi * yy))[None]
    back = imresize(imresize(img, 2), 0.5)
    err = (back - img).abs()
    # Measured: 2.8e-3 at the borders (mirroring of a non-symmetric signal), 2.0e-5 four pixels in.
    assert err.max() < 5e-3
    assert err[:, 4:-4, 4:-4].max() < 1e-4


def _interior(n_in: int, n_out: int) -> np.ndarray:
    """Output pixels whose kernel support (radius 2, or 2/scale when shrinking) stays inside the image."""
    s = n_out / n_in
    c = (np.arange(n_out) + 0.5) / s - 0.5
    r = 2 / min(s, 1)
    return (c - r >= 0) & (c + r <= n_in - 1)


@pytest.mark.parametrize("size", [(15, 20), (42, 56), (7, 9), (50, 33), (100, 130), (240, 320)])
def test_interior_matches_pillow_bicubic(generator, size):
    x = torch.rand(60, 80, generator=generator, dtype=torch.float64)
    ours = imresize(x[None], size=size)[0].numpy()
    pil = Image.fromarray(x.numpy().astype(np.float32), mode="F").resize(size[::-1], Image.Resampling.BICUBIC)
    theirs = np.asarray(pil, dtype=np.float64)
    inside = np.ix_(_interior(60, size[0]), _interior(80, size[1]))
    assert inside[0].size >= 3 and inside[1].size >= 5
    # Measured up to 1.2e-7 (Pillow returns float32); borders differ by 1e-2 (renormalise vs mirror).
    assert np.abs(ours[inside] - theirs[inside]).max() < 1e-6
    assert np.abs(ours - theirs).max() > 1e-3


def test_batched_unbatched_dtypes_and_separability(generator):
    x = torch.rand(2, 3, 17, 13, generator=generator, dtype=torch.float64)
    y = imresize(x, scale=(0.6, 2.2))
    assert y.dtype == torch.float64 and y.shape == (2, 3, 11, 29)
    assert torch.equal(imresize(x[1], scale=(0.6, 2.2)), y[1])
    # The two passes are linear maps on different axes: y = M_h x M_w^T whichever runs first.
    m_h = _matrix(17, scale=(1.0, 0.6))  # MATLAB uses the given scale, not out/in = 11/17
    m_w = _matrix(13, scale=(1.0, 2.2))
    assert torch.allclose(y, m_h @ x @ m_w.T, atol=1e-12)
    y32 = imresize(x.float(), scale=(0.6, 2.2))
    assert y32.dtype == torch.float32 and (y32.double() - y).abs().max() < 1e-6
    y16 = imresize(x.bfloat16(), scale=(0.6, 2.2))
    assert y16.dtype == torch.bfloat16 and (y16.double() - y).abs().max() < 2e-2


def test_gradients_flow(generator):
    x = torch.rand(1, 2, 6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, scale=(0.5, 1.5)), (x,))
    y = imresize(x.float(), 2)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
