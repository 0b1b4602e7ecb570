"""Tiled inference: tile = core size (Real-ESRGAN), tiles agree with the whole image, streamed output, any size,
gray/RGBA tracks, bf16 fallback."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from savl.infer import _bands, _channels_last, _window, count_tiles, resample, tile_grid, upscale, upscale_to_array


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


def test_tile_grid_balances_cores_and_counts_like_realesrgan():
    assert tile_grid(256, 128) == [(0, 128), (128, 256)]
    assert tile_grid(257, 128) == [(0, 86), (86, 171), (171, 257)]  # no 1-pixel sliver at the end
    assert tile_grid(50, 64) == [(0, 50)] and tile_grid(50, None) == [(0, 50)]
    for length in (1, 65, 100, 257, 1000):
        cores = tile_grid(length, 64)
        assert len(cores) == math.ceil(length / 64) and cores[0][0] == 0 and cores[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(cores, cores[1:])) and all(c1 - c0 <= 64 for c0, c1 in cores)
    # Real-ESRGAN's tile 128 / pad 16 on a 256 x 256 LR image: ceil(256/128)^2 = 4 tiles.
    assert count_tiles(256, 256, 128) == 4 and count_tiles(300, 100, 128) == 3


def test_blend_weights_are_smooth_positive_and_sum_to_one_where_tiles_meet():
    a0, a1, left = _window((0, 64), 128, 8, 1)
    b0, b1, right = _window((64, 128), 128, 8, 1)
    assert (a0, a1, b0, b1) == (0, 72, 56, 128)
    assert (left > 0).all() and (right > 0).all() and torch.all(left[:56] == 1) and torch.all(right[16:] == 1)
    torch.testing.assert_close(left[56:72] + right[:16], torch.ones(16))
    assert torch.all(left[56:].diff() < 0) and torch.all(right[:16].diff() > 0)
    assert torch.all(_window((0, 64), 64, 8, 4)[2] == 1)


class Counting(nn.Module):
    """Wraps a model and records the LR size of every forward pass."""

    def __init__(self, model):
        super().__init__()
        self.model, self.scale, self.calls = model, model.scale, []

    def forward(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        return self.model(x)


def test_tile_is_the_core_size_so_256_with_tile_128_runs_4_tiles():
    model = Counting(TinySR().eval())
    upscale(model, torch.rand(3, 256, 256), tile=128, overlap=16)
    assert len(model.calls) == 4  # the tile used to include the overlap: 9 tiles here
    assert sorted(set(model.calls)) == [(144, 144)]  # a 128 core + 16 of context on the inner side
    model.calls.clear()
    upscale(model, torch.rand(3, 300, 100), tile=128, overlap=16)
    assert len(model.calls) == count_tiles(300, 100, 128) == 3


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
        upscale(model, torch.rand(3, 100, 100), tile=32, overlap=-1)
    with pytest.raises(ValueError, match="expects"):
        upscale(model, torch.rand(2, 10, 10))


@pytest.mark.parametrize("tile, overlap", [(64, 16), (48, 20), (70, 0)])
def test_tiled_matches_untiled_under_core_tiles(tile, overlap):
    model = TinySR().eval()
    img = torch.rand(3, 150, 130, generator=torch.Generator().manual_seed(3))
    whole = upscale(model, img, tile=None)
    tiled = upscale(model, img, tile=tile, overlap=overlap)
    assert tiled.shape == whole.shape == (3, 600, 520)
    # A 7x7 receptive field is inside a pad of 16 or 20; with no pad only the rows at the seams differ.
    assert psnr(whole, tiled) >= (40.0 if overlap else 25.0)


def test_bands_stream_each_output_row_once_in_bounded_bands():
    model = TinySR().eval()
    img = torch.rand(3, 200, 90, generator=torch.Generator().manual_seed(4))
    # Each band is a view into a reused buffer: copy it before the next one.
    bands = [(y, rows.clone()) for y, rows in _bands(model, img, 48, 8, torch.float32, torch.device("cpu"), 4)]
    starts = [y for y, rows in bands if rows.shape[1]]
    assert starts == sorted(starts) and starts[0] == 0
    assert sum(rows.shape[1] for _, rows in bands) == 800
    assert max(rows.shape[1] for _, rows in bands) <= (48 + 2 * 8) * 4  # never the whole image at once
    torch.testing.assert_close(torch.cat([rows for _, rows in bands], 1).clamp(0, 1), upscale(model, img, 48, 8))


@pytest.mark.parametrize("channels, bit_depth", [(3, 8), (1, 16), (4, 8)])
def test_upscale_to_array_is_the_quantised_upscale(channels, bit_depth):
    model = TinySR().eval()
    img = torch.rand(channels, 70, 50, generator=torch.Generator().manual_seed(5))
    arr = upscale_to_array(model, img, bit_depth=bit_depth, tile=32, overlap=8)
    peak = 255 if bit_depth == 8 else 65535
    assert arr.dtype == (np.uint8 if bit_depth == 8 else np.uint16) and arr.shape == (280, 200, channels)
    ref = torch.round(upscale(model, img, tile=32, overlap=8) * peak).permute(1, 2, 0).numpy()
    assert np.array_equal(arr, ref.astype(arr.dtype))


def test_resample_matches_pillow_lanczos_on_8_bit_rgb():
    from PIL import Image

    # A smooth image: Pillow's 8-bit path rounds and clips between its two passes, the float path does not,
    # and the two agree only where the first pass does not overshoot [0, 255].
    yy, xx = np.mgrid[0:40, 0:60]
    samples = np.stack([127 + 100 * np.sin(xx / 7 + k) * np.cos(yy / 9) for k in range(3)], -1).astype(np.uint8)
    ours = resample(samples, 30, 45)
    ref = np.asarray(Image.fromarray(samples).resize((45, 30), Image.LANCZOS))
    assert ours.shape == ref.shape == (30, 45, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_the_savl_command_flushes_subnormals_before_any_work(tmp_path):
    # In a fresh process: the flag is per thread, and PyTorch's intra-op threads inherit it only when they start
    # after it is set. `savl sr` (here stopping at once on a missing input, exit 2) sets it before any work, so
    # a 2-thread fill and product of 1e-39 afterwards leave no subnormal in any half; without it all 65536 stay.
    import subprocess
    import sys

    code = (
        "import torch\n"
        "before = (torch.tensor([1e-39]) * 0.5).view(torch.int32).item() != 0\n"  # one element: no threads yet
        "from savl.cli import main\n"
        f"rc = main(['sr', {str(tmp_path / 'missing.png')!r}, {str(tmp_path / 'out')!r}])\n"
        "torch.set_num_threads(2)\n"
        "y = torch.full((1 << 16,), 1e-39) * 0.5\n"
        "print(rc, before, int((y.view(torch.int32) != 0).sum()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "True", "0"], out.stdout + out.stderr[-2000:]


def test_upscale_runs_channels_last_on_cpu_and_gives_the_weights_back():
    # On the CPU the weights are held channels-last for the call (faster oneDNN convolutions): the output is the
    # plain NCHW forward's to float rounding, and the model's tensors come back in their own layout and values.
    model = TinySR().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    img = torch.rand(3, 40, 36, generator=torch.Generator().manual_seed(2))
    seen = []
    cl = torch.channels_last
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=cl)))
    out = upscale(model, img, tile=None)
    with torch.no_grad():
        ref = model(img[None])[0].clamp(0, 1)
    assert seen[0] and not seen[-1]  # the call inside upscale saw channels-last input; the reference did not
    assert torch.allclose(out, ref, atol=1e-6)
    for k, v in model.state_dict().items():
        assert v.is_contiguous() and torch.equal(v, before[k]), k


def test_one_tile_is_the_network_output_itself():
    # A single tile skips the blend buffer: its output must be the network's, clamped (to float rounding: upscale
    # holds the weights channels-last); with tiles, the rows written straight into the result must be exactly
    # those the streamed bands hand on.
    model = TinySR().eval()
    img = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(img[None])[0].clamp(0, 1)
    torch.testing.assert_close(upscale(model, img, tile=None), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(upscale(model, img, tile=64), ref, atol=1e-6, rtol=0)  # one core covers it
    tiled = upscale(model, img, tile=16, overlap=4)
    with torch.no_grad(), _channels_last(model, torch.device("cpu")) as cl:
        bands = _bands(model, img, 16, 4, torch.float32, "cpu", 4, cl)
        rows = torch.cat([r.clone().clamp_(0, 1) for _, r in bands], 1)
    assert torch.equal(tiled, rows)


def _reference_blend(model, img, tile, overlap, s=4):
    """The tiled output written the plain way, in float64: every padded tile's output times its weight summed
    over a full-size canvas, divided by the summed weights, clamped. A side that meets another tile ramps as
    sin^2 (= the raised cosine) over the 2 * overlap output pixels the two tiles share."""

    def weights(core, length):
        c0, c1 = core
        a0, a1 = max(0, c0 - overlap), min(length, c1 + overlap)
        centre = np.arange(a0 * s, a1 * s) + 0.5
        w = np.ones(len(centre))
        if overlap:
            zone = 2 * overlap * s
            if c0 > 0:
                w = np.minimum(w, np.sin(0.5 * np.pi * np.clip((centre - (c0 - overlap) * s) / zone, 0, 1)) ** 2)
            if c1 < length:
                w = np.minimum(w, np.sin(0.5 * np.pi * np.clip(((c1 + overlap) * s - centre) / zone, 0, 1)) ** 2)
        return a0, a1, w

    _, H, W = img.shape
    rgb = img[:3] if img.shape[0] != 1 else img.expand(3, -1, -1)
    num, den = np.zeros((3, H * s, W * s)), np.zeros((H * s, W * s))
    for core_y in tile_grid(H, tile):
        for core_x in tile_grid(W, tile):
            (y0, y1, wy), (x0, x1, wx) = weights(core_y, H), weights(core_x, W)
            with torch.no_grad():
                pred = model(rgb[None, :, y0:y1, x0:x1])[0].double().numpy()
            w = np.outer(wy, wx)
            num[:, y0 * s : y1 * s, x0 * s : x1 * s] += pred * w
            den[y0 * s : y1 * s, x0 * s : x1 * s] += w
    out = torch.from_numpy(np.clip(num / den, 0, 1)).float()
    return out.mean(0, keepdim=True) if img.shape[0] == 1 else out


@pytest.mark.parametrize(
    "channels, hw, tile, overlap",
    [(3, (150, 130), 64, 16), (4, (67, 45), 32, 8), (1, (53, 71), 24, 6), (3, (61, 83), 40, 0), (4, (33, 29), 16, 0)],
)
def test_tiles_blended_into_the_result_equal_a_plain_reference_blend(channels, hw, tile, overlap):
    # RGB and RGBA blend straight into upscale's result (no band buffer); gray and upscale_to_array still go
    # through the band. Both must equal the plain full-canvas blend, and the two paths must agree exactly.
    model = TinySR().eval()
    img = torch.rand(channels, *hw, generator=torch.Generator().manual_seed(11))
    out = upscale(model, img, tile=tile, overlap=overlap)
    ref = _reference_blend(model, img, tile, overlap)
    torch.testing.assert_close(out[:3], ref, atol=2e-6, rtol=0)
    with torch.no_grad(), _channels_last(model, torch.device("cpu")) as cl:
        rgb = img[:3] if channels != 1 else img.expand(3, -1, -1)
        bands = _bands(model, rgb, tile, overlap, torch.float32, "cpu", 4, cl)
        band = torch.cat([r.clone().clamp_(0, 1) for _, r in bands], 1)
    if channels == 1:
        torch.testing.assert_close(out, band.mean(0, keepdim=True), atol=1e-6, rtol=0)
    else:
        torch.testing.assert_close(out[:3], band, atol=1e-6, rtol=0)
    whole = upscale(model, img, tile=None)
    if channels == 4:
        assert torch.equal(out[3], whole[3])  # the alpha track is not tiled
    assert psnr(whole[:3], out[:3]) >= (40.0 if overlap else 25.0)


class OutOfMemoryOnce(nn.Module):
    """Raises an out-of-memory error on its `fail_at`-th forward pass (after earlier tiles were blended)."""

    def __init__(self, model, fail_at):
        super().__init__()
        self.model, self.scale, self.fail_at, self.calls = model, model.scale, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise torch.OutOfMemoryError("simulated")
        return self.model(x)


def test_auto_tile_restart_after_out_of_memory_rezeroes_the_rows_it_blends_again():
    # tile="auto" on the CPU starts at 256: a 520 x 300 image runs 3 x 2 tiles, and the 4th forward pass fails
    # after the first tile row (2 tiles) was blended into the result and normalised and one tile of the second
    # added; the restart at 128 blends those rows again and must give exactly what tile=128 gives from scratch.
    model = TinySR().eval()
    img = torch.rand(3, 520, 300, generator=torch.Generator().manual_seed(12))
    failing = OutOfMemoryOnce(model, fail_at=4)
    out = upscale(failing, img, tile="auto", overlap=8)
    assert failing.calls == 4 + count_tiles(520, 300, 128)
    torch.testing.assert_close(out, upscale(model, img, tile=128, overlap=8), atol=0, rtol=0)
    with pytest.raises(torch.OutOfMemoryError):  # a fixed tile is not shrunk
        upscale(OutOfMemoryOnce(model, fail_at=2), img, tile=128, overlap=8)
