"""savl.io: round trips against independent decoders (Pillow, libpng via torchvision, tifffile) and every
error case, each with a one-line ImageError that names the file."""

import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import savl.io as sio
from savl.errors import ImageError
from savl.io import image_files, read_image, write_image


def _rand(gen, shape, peak):
    """Random samples on the quantisation grid of `peak` (255 or 65535), as float32 in [0, 1]."""
    q = torch.randint(0, peak + 1, shape, generator=gen)
    return q.float() / peak, q


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png16_unfiltered(a: np.ndarray) -> bytes:
    """A 16-bit RGB PNG built here with filter type 0 (independent of savl's Paeth encoder)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def _assert_one_line(err: pytest.ExceptionInfo, path) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert err.value.__cause__ is None


# ------------------------------------------------------------------------------------------ round trips
def test_rgb8_round_trip_matches_pillow(tmp_path, generator):
    img, q = _rand(generator, (3, 13, 17), 255)
    path = tmp_path / "a.png"
    write_image(path, img)
    back, info = read_image(path, with_info=True)
    assert back.dtype == torch.float32 and back.shape == (3, 13, 17)
    assert torch.equal(back, img)
    assert (info.format, info.bit_depth, info.gray, info.alpha) == ("PNG", 8, False, None)
    with Image.open(path) as im:  # an independent decoder sees the same samples
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), q.permute(1, 2, 0).numpy().astype(np.uint8))


def test_rgba8_round_trip(tmp_path, generator):
    img, _ = _rand(generator, (3, 9, 11), 255)
    alpha, qa = _rand(generator, (1, 9, 11), 255)
    path = tmp_path / "a.png"
    write_image(path, img, alpha=alpha)
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        assert np.array_equal(np.asarray(im)[..., 3], qa[0].numpy().astype(np.uint8))
    back, info = read_image(path, with_info=True)
    assert torch.equal(back, img)
    assert info.alpha is not None and info.alpha.shape == (1, 9, 11)
    assert torch.equal(info.alpha, alpha)


def test_gray8_round_trip(tmp_path, generator):
    img, q = _rand(generator, (1, 8, 10), 255)
    path = tmp_path / "g.png"
    write_image(path, img)
    with Image.open(path) as im:
        assert im.mode == "L"
        assert np.array_equal(np.asarray(im), q[0].numpy().astype(np.uint8))
    back, info = read_image(path, with_info=True)
    assert info.gray and info.bit_depth == 8 and info.alpha is None
    assert torch.equal(back, img.expand(3, -1, -1))
    # Writing the replicated RGB back with gray=True gives the same file contents (luma of equal channels).
    write_image(tmp_path / "g2.png", back, gray=True)
    assert torch.equal(read_image(tmp_path / "g2.png"), back)
    # Gray + alpha is written as LA and read back with its alpha.
    alpha, _ = _rand(generator, (1, 8, 10), 255)
    write_image(tmp_path / "la.png", img, alpha=alpha)
    with Image.open(tmp_path / "la.png") as im:
        assert im.mode == "LA"
    back, info = read_image(tmp_path / "la.png", with_info=True)
    assert info.gray and torch.equal(info.alpha, alpha) and torch.equal(back[2:], img)


def test_gray_flag_uses_itu601_luma_like_pillow(tmp_path, generator):
    img, q = _rand(generator, (3, 6, 7), 255)
    write_image(tmp_path / "l.png", img, gray=True)
    expected = Image.fromarray(q.permute(1, 2, 0).numpy().astype(np.uint8)).convert("L")
    got = np.asarray(Image.open(tmp_path / "l.png")).astype(int)
    # Pillow's convert("L") uses fixed-point 601 weights; rounding may differ by one level.
    assert np.abs(got - np.asarray(expected).astype(int)).max() <= 1


def test_gray16_round_trip_matches_pillow(tmp_path, generator):
    img, q = _rand(generator, (1, 7, 9), 65535)
    path = tmp_path / "g16.png"
    write_image(path, img, bit_depth=16)
    with Image.open(path) as im:  # Pillow decodes 16-bit gray PNG correctly: an independent check
        assert np.array_equal(np.asarray(im).astype(np.int64), q[0].numpy())
    back, info = read_image(path, with_info=True)
    assert info.gray and info.bit_depth == 16
    assert torch.equal(back, img.expand(3, -1, -1))
    assert back[0].mul(65535).round().long().equal(q[0])


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_png16_colour_and_alpha_round_trip_exact(tmp_path, generator, channels):
    img, q = _rand(generator, (1 if channels == 2 else 3, 12, 19), 65535)
    alpha = None
    if channels in (2, 4):
        alpha, _ = _rand(generator, (1, 12, 19), 65535)
    path = tmp_path / "c16.png"
    write_image(path, img, bit_depth=16, alpha=alpha)
    back, info = read_image(path, with_info=True)  # decoded by libpng (torchvision), not by our code
    assert info.bit_depth == 16 and info.gray == (channels == 2)
    assert torch.equal(back, img.expand(3, -1, -1))
    if alpha is not None:
        assert torch.equal(info.alpha, alpha)
    # Pillow reads 16-bit colour PNG truncated to the high byte; it must agree with those bytes.
    if channels == 3:
        with Image.open(path) as im:
            assert np.array_equal(np.asarray(im).astype(np.int64), (q >> 8).permute(1, 2, 0).numpy())


def test_png16_written_elsewhere_is_read_exactly(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    path = tmp_path / "ext16.png"
    path.write_bytes(_png16_unfiltered(a))
    back, info = read_image(path, with_info=True)
    assert info.bit_depth == 16
    assert np.array_equal(back.mul(65535).round().permute(1, 2, 0).numpy().astype(np.uint16), a)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_tiff_round_trip(tmp_path, generator, bit_depth):
    import tifffile

    peak = 255 if bit_depth == 8 else 65535
    img, q = _rand(generator, (3, 6, 5), peak)
    alpha, _ = _rand(generator, (1, 6, 5), peak)
    path = tmp_path / "t.tif"
    write_image(path, img, bit_depth=bit_depth, alpha=alpha)
    assert np.array_equal(tifffile.imread(path)[..., :3].astype(np.int64), q.permute(1, 2, 0).numpy())
    back, info = read_image(path, with_info=True)
    assert (info.format, info.bit_depth) == ("TIFF", bit_depth)
    assert torch.equal(back, img) and torch.equal(info.alpha, alpha)


def test_jpeg_approximate_round_trip(tmp_path):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    img = torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(6 * xx) * torch.cos(4 * yy)])  # smooth content
    path = tmp_path / "s.jpg"
    write_image(path, img, quality=95)
    back, info = read_image(path, with_info=True)
    assert info.format == "JPEG" and back.shape == img.shape
    assert (back - img).abs().mean() < 0.01  # measured 0.0046 at quality 95
    with Image.open(path) as im:
        assert torch.equal(back, torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255)
    write_image(tmp_path / "low.jpg", img, quality=10)
    assert (read_image(tmp_path / "low.jpg") - img).abs().mean() > (back - img).abs().mean()


@pytest.mark.parametrize("suffix", [".bmp", ".webp"])
def test_lossless_pillow_formats(tmp_path, generator, suffix):
    img, _ = _rand(generator, (3, 5, 6), 255)
    path = tmp_path / f"x{suffix}"
    write_image(path, img, quality=100)  # WebP at quality 100 is written lossless
    assert torch.equal(read_image(path), img)


def test_palette_png_with_transparency_gives_alpha(tmp_path):
    im = Image.new("P", (4, 3))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "p.png", transparency=0)
    rgb, info = read_image(tmp_path / "p.png", with_info=True)
    assert torch.equal(rgb[:, 1, 1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(rgb[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert info.alpha[0, 1, 1] == 1 and info.alpha[0, 0, 0] == 0


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((4, 6, 3), np.uint8)
    a[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(a).save(tmp_path / "r.jpg", quality=100, exif=exif)
    img = read_image(tmp_path / "r.jpg")
    assert img.shape == (3, 6, 4)
    assert img[:, 0, -1].mean() > 0.8  # the marker moved to the top-right corner


def test_write_accepts_other_devices_dtypes_and_clamps(tmp_path):
    img = torch.tensor([[[-0.5, 0.25, 1.7]]], dtype=torch.float64).expand(3, 1, 3)
    write_image(tmp_path / "c.png", img)
    assert torch.equal(read_image(tmp_path / "c.png")[0, 0], torch.tensor([0.0, 64 / 255, 1.0]))


# -------------------------------------------------------------------------------------------- errors
def test_missing_directory_and_empty_files(tmp_path):
    for path, words in [
        (tmp_path / "nope.png", "no such file"),
        (tmp_path, "folder"),
    ]:
        with pytest.raises(ImageError, match=words) as err:
            read_image(path)
        _assert_one_line(err, path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as err:
        read_image(empty)
    _assert_one_line(err, empty)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files(tmp_path, generator, suffix):
    img, _ = _rand(generator, (3, 64, 64), 255)
    good = tmp_path / f"good{suffix}"
    write_image(good, img)
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated") as err:
        read_image(bad)
    _assert_one_line(err, bad)


def test_truncated_png16(tmp_path, generator):
    img, _ = _rand(generator, (3, 32, 32), 65535)
    good = tmp_path / "good.png"
    write_image(good, img, bit_depth=16)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageError, match="corrupt or truncated") as err:
        read_image(bad)
    _assert_one_line(err, bad)


def test_corrupt_png_bytes(tmp_path, generator):
    img, _ = _rand(generator, (3, 16, 16), 255)
    good = tmp_path / "good.png"
    write_image(good, img)
    data = bytearray(good.read_bytes())
    for i in range(60, len(data) - 20):  # scramble the compressed stream (CRCs then fail)
        data[i] ^= 0x5A
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError) as err:
        read_image(bad)
    _assert_one_line(err, bad)


def test_not_an_image(tmp_path):
    txt = tmp_path / "notes.png"
    txt.write_text("hello, this is text\n")
    with pytest.raises(ImageError, match="not an image") as err:
        read_image(txt)
    _assert_one_line(err, txt)


def test_decompression_bomb_checked_before_decoding(tmp_path, generator):
    img, _ = _rand(generator, (3, 20, 30), 255)
    write_image(tmp_path / "small.png", img)
    with pytest.raises(ImageError, match="600 pixels is over the limit of 500") as err:
        read_image(tmp_path / "small.png", max_pixels=500)
    _assert_one_line(err, tmp_path / "small.png")
    # Headers claiming huge sizes with almost no data: refused from the header alone, 8- and 16-bit.
    for depth in (8, 16):
        ihdr = struct.pack(">IIBBBBB", 60000, 60000, depth, 2, 0, 0, 0)
        bomb = tmp_path / f"bomb{depth}.png"
        bomb.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
            + _png_chunk(b"IEND", b"")
        )
        with pytest.raises(ImageError, match="over the limit|too large") as err:
            read_image(bomb)
        _assert_one_line(err, bomb)


def test_write_errors(tmp_path, generator):
    img, _ = _rand(generator, (3, 4, 4), 255)
    cases = [
        (tmp_path / "x.gifx", {}, "unknown image suffix"),
        (tmp_path / "x.jpg", {"bit_depth": 16}, "cannot store 16-bit"),
        (tmp_path / "x.bmp", {"bit_depth": 16}, "cannot store 16-bit"),
        (tmp_path / "x.png", {"bit_depth": 12}, "8 or 16"),
        (tmp_path / "x.jpg", {"alpha": img[:1]}, "alpha"),
        (tmp_path / "x.png", {"alpha": img[:1, :2]}, "does not match"),
        (tmp_path / "missing" / "x.png", {}, "does not exist"),
    ]
    for path, kw, words in cases:
        with pytest.raises(ImageError, match=words) as err:
            write_image(path, img, **kw)
        _assert_one_line(err, path)
    with pytest.raises(ImageError, match="expected a"):
        write_image(tmp_path / "y.png", img[None])
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match="folder"):
        write_image(tmp_path / "dir.png", img)
    assert not (tmp_path / "x.png").exists()


def test_failed_write_keeps_existing_file_and_leaves_no_temp(tmp_path, generator, monkeypatch):
    img, _ = _rand(generator, (3, 4, 4), 255)
    dest = tmp_path / "keep.png"
    write_image(dest, img)
    before = dest.read_bytes()
    bad = img.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ImageError, match="NaN"):
        write_image(dest, bad)

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio.os, "replace", failing_replace)
    with pytest.raises(ImageError, match="cannot write .No space left") as err:
        write_image(dest, img * 0.5)
    _assert_one_line(err, dest)
    assert dest.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.png"]


def test_image_files_sorted_filtered(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.tiff", "notes.txt", ".hidden.png", "z.webp"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in image_files(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff", "z.webp"]
    with pytest.raises(ImageError, match="not a folder"):
        image_files(tmp_path / "a.jpg")
