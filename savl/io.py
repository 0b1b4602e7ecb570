"""Image files in and out: 8/16-bit, gray and alpha kept, atomic writes, one-line errors.

Writes never leave a half-written file: bytes go to a temporary file in the destination's folder, created
with mode 0666 less the umask (as a plain ``open()`` would), and renamed into place. `write_group` does the
same for several files that belong together (an image and its ``.json`` record, a severity map and its
``.npy``): all of them appear, or none. `check_output_paths` refuses an output that would replace one of
the inputs, or two inputs that would be written to the same output.

Tensors are float32 (3, H, W) in [0, 1]. Decoders, by format:

- PNG with 16-bit samples: `torchvision.io.decode_png` (Pillow truncates 48/64-bit PNG to 8 bits per
  channel). Writing 16-bit PNG is done here by hand (PNG spec, zlib + CRC chunks), since neither Pillow
  nor imageio's Pillow plugin can encode 16-bit colour PNG.
- TIFF: `tifffile` (keeps 16-bit RGB/RGBA and gray+alpha, which Pillow cannot); Pillow as a fallback.
- Everything else (8-bit PNG, JPEG, BMP, WebP, GIF, PNM): Pillow.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from savl.errors import ImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageInfo",
    "check_output_paths",
    "encode_image",
    "image_files",
    "read_image",
    "write_group",
    "write_image",
    "write_samples",
]

#: Suffixes that `image_files` lists (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")

# Output suffix -> (format name, bit depths the format can store).
_WRITERS = {
    ".png": ("PNG", (8, 16)),
    ".jpg": ("JPEG", (8,)),
    ".jpeg": ("JPEG", (8,)),
    ".tif": ("TIFF", (8, 16)),
    ".tiff": ("TIFF", (8, 16)),
    ".bmp": ("BMP", (8,)),
    ".webp": ("WEBP", (8,)),
}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class ImageInfo:
    """What `read_image` learned about a file besides its RGB pixels."""

    path: str
    format: str  # "PNG", "JPEG", "TIFF", ...
    bit_depth: int  # 8 or 16
    gray: bool  # the file was single-channel (or gray + alpha)
    alpha: torch.Tensor | None  # (1, H, W) float32 in [0, 1], or None


# ------------------------------------------------------------------------------------------------ read
def read_image(
    path, *, with_info: bool = False, max_pixels: int = 200_000_000
) -> torch.Tensor | tuple[torch.Tensor, ImageInfo]:
    """Read an image file as float32 RGB (3, H, W) in [0, 1].

    Gray files are replicated to three channels (``info.gray``); 16-bit files keep their precision
    (value / 65535); an alpha channel is split off into ``info.alpha``. Images larger than
    ``max_pixels`` are refused before their pixels are decoded (decompression bombs).
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a folder, not an image file")
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise ImageError(f"{p}: cannot be read ({e.strerror or e})") from None
    if not head:
        raise ImageError(f"{p}: empty file")

    if head[:4] in (b"II*\x00", b"MM\x00*"):
        decoded = _read_tiff(p, max_pixels)
        if decoded is None:  # tifffile could not decode it (e.g. a codec that needs imagecodecs)
            decoded = _read_pillow(p, max_pixels)
    elif head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR" and len(head) >= 26 and head[24] == 16:
        decoded = _read_png16(p, head, max_pixels)
    else:
        decoded = _read_pillow(p, max_pixels)
    array, fmt, bit_depth = decoded
    img, info = _to_tensor(array, p, fmt, bit_depth)
    return (img, info) if with_info else img


def _check_size(p: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{p}: invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            f"{p}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels} "
            "(possible decompression bomb; raise max_pixels if the file is trusted)"
        )


def _read_pillow(p: Path, max_pixels: int) -> tuple[np.ndarray, str, int]:
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check replaces Pillow's warning; Pillow's hard error is still caught below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                _check_size(p, im.width, im.height, max_pixels)
                fmt = im.format or p.suffix.lstrip(".").upper()
                im.load()  # force the full decode so that truncated files fail here
                im = ImageOps.exif_transpose(im)  # camera JPEGs: store pixels in display orientation
                array, bit_depth = _pillow_to_array(p, im)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{p}: image is too large for the decoder (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image file, or a format this library cannot read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{p}: corrupt or truncated image ({_one_line(e)})") from None
    return array, fmt, bit_depth


def _pillow_to_array(p: Path, im: Image.Image) -> tuple[np.ndarray, int]:
    """Pillow image -> (H, W, C) uint8/uint16 array with C in {1, 2, 3, 4} (gray, gray+alpha, RGB, RGBA)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.uint16)[..., None], 16
    if mode == "I":  # 32-bit integer samples; accepted when they fit 16 bits (Pillow's 16-bit gray PNG)
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise ImageError(f"{p}: 32-bit integer samples are not supported")
        return a.astype(np.uint16)[..., None], 16
    if mode == "1":
        im = im.convert("L")
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("La",):
        im = im.convert("LA")
    elif mode in ("RGBa", "RGBX"):
        im = im.convert("RGBA" if mode == "RGBa" else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        if mode == "F":
            raise ImageError(f"{p}: floating-point images are not supported")
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[..., None]
    return a, 8


def _read_tiff(p: Path, max_pixels: int) -> tuple[np.ndarray, str, int] | None:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tf:
            page = tf.pages[0]
            axes = page.axes
            shape = dict(zip(axes, page.shape))
            _check_size(p, shape.get("X", 0), shape.get("Y", 0), max_pixels)
            a = page.asarray()
    except ImageError:
        raise
    except Exception:  # noqa: BLE001 - tifffile raises many types; Pillow gets the next try
        return None
    # Bring the samples axis last: "YX", "YXS" (contiguous) or "SYX" (planar).
    if axes == "SYX":
        a = np.moveaxis(a, 0, -1)
    elif axes == "YX":
        a = a[..., None]
    elif axes != "YXS":
        return None
    if a.dtype == np.uint8:
        bit_depth = 8
    elif a.dtype == np.uint16:
        bit_depth = 16
    else:
        raise ImageError(f"{p}: TIFF sample type {a.dtype} is not supported (8- or 16-bit unsigned only)")
    if a.shape[-1] > 4:
        raise ImageError(f"{p}: TIFF with {a.shape[-1]} samples per pixel is not supported")
    return np.ascontiguousarray(a), "TIFF", bit_depth


def _read_png16(p: Path, head: bytes, max_pixels: int) -> tuple[np.ndarray, str, int]:
    width, height = struct.unpack(">II", head[16:24])
    _check_size(p, width, height, max_pixels)
    try:
        from torchvision.io import ImageReadMode, decode_png
    except ImportError:
        raise ImageError(f"{p}: reading 16-bit PNG needs torchvision (pip install torchvision)") from None
    try:
        data = torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)
        t = decode_png(data, ImageReadMode.UNCHANGED)
    except RuntimeError as e:
        raise ImageError(f"{p}: corrupt or truncated PNG ({_one_line(e)})") from None
    # Older torchvision returns 16-bit samples as int32, newer as uint16.
    a = t.to(torch.int32).permute(1, 2, 0).numpy().astype(np.uint16)
    return a, "PNG", 16


def _to_tensor(a: np.ndarray, p: Path, fmt: str, bit_depth: int) -> tuple[torch.Tensor, ImageInfo]:
    scale = 65535.0 if bit_depth == 16 else 255.0
    t = torch.from_numpy(a.astype(np.float32) / np.float32(scale)).permute(2, 0, 1).contiguous()
    c = t.shape[0]
    gray = c in (1, 2)
    alpha = t[c - 1 :].clone() if c in (2, 4) else None
    rgb = t[:1].expand(3, -1, -1).contiguous() if gray else t[:3].contiguous()
    return rgb, ImageInfo(path=str(p), format=fmt, bit_depth=bit_depth, gray=gray, alpha=alpha)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ----------------------------------------------------------------------------------------------- write
def write_image(
    path,
    img: torch.Tensor,
    *,
    bit_depth: int = 8,
    alpha: torch.Tensor | None = None,
    gray: bool = False,
    quality: int = 95,
) -> None:
    """Write a float (3, H, W) or (1, H, W) image in [0, 1] (clamped, rounded) atomically.

    The format follows the suffix (.png, .jpg/.jpeg, .tif/.tiff, .bmp, .webp). ``bit_depth=16`` is
    allowed for PNG and TIFF. ``alpha`` ((1, H, W) or (H, W) in [0, 1]) is written as RGBA / LA.
    ``gray=True`` writes one channel (ITU-R 601 luma of an RGB input, as Pillow's ``convert("L")``).
    ``quality`` is the JPEG / WebP quality (WebP at 100 is written lossless). The file appears complete
    or not at all: the bytes go to a temporary file in the same folder that replaces the destination
    only once written.
    """
    p = Path(path)
    data = encode_image(p, img, bit_depth=bit_depth, alpha=alpha, gray=gray, quality=quality)
    _write_atomic(p, data)


def encode_image(
    path,
    img: torch.Tensor,
    *,
    bit_depth: int = 8,
    alpha: torch.Tensor | None = None,
    gray: bool = False,
    quality: int = 95,
) -> bytes:
    """The bytes `write_image` would write to ``path`` (the format follows its suffix); nothing is written."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _WRITERS:
        known = ", ".join(sorted(_WRITERS))
        raise ImageError(f"{p}: unknown image suffix {p.suffix!r} (use one of {known})")
    fmt, depths = _WRITERS[suffix]
    if bit_depth not in (8, 16):
        raise ImageError(f"{p}: bit_depth must be 8 or 16, got {bit_depth}")
    if bit_depth not in depths:
        raise ImageError(f"{p}: {fmt} cannot store {bit_depth}-bit samples (use .png or .tif)")
    if alpha is not None and fmt == "JPEG":
        raise ImageError(f"{p}: JPEG cannot store an alpha channel (use .png)")
    if not 1 <= int(quality) <= 100:
        raise ImageError(f"{p}: quality must be in 1..100, got {quality}")

    samples = _quantise(p, img, alpha, gray, bit_depth)  # (H, W, C) uint8/uint16
    return _encode(p, samples, fmt, bit_depth, int(quality))


def write_samples(path, samples: np.ndarray, *, quality: int = 95) -> None:
    """Write (H, W, C) uint8 or uint16 samples (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) as they are,
    atomically, with the checks of `write_image`: the path `savl sr` uses so that no float copy of a large
    output is ever made."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _WRITERS:
        raise ImageError(f"{p}: unknown image suffix {p.suffix!r} (use one of {', '.join(sorted(_WRITERS))})")
    fmt, depths = _WRITERS[suffix]
    if samples.ndim != 3 or samples.shape[2] not in (1, 2, 3, 4) or samples.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{p}: expected (H, W, 1..4) uint8/uint16 samples, got {samples.dtype} {samples.shape}")
    bit_depth = 16 if samples.dtype == np.uint16 else 8
    if bit_depth not in depths:
        raise ImageError(f"{p}: {fmt} cannot store {bit_depth}-bit samples (use .png or .tif)")
    if samples.shape[2] in (2, 4) and fmt == "JPEG":
        raise ImageError(f"{p}: JPEG cannot store an alpha channel (use .png)")
    if not 1 <= int(quality) <= 100:
        raise ImageError(f"{p}: quality must be in 1..100, got {quality}")
    _write_atomic(p, _encode(p, samples, fmt, bit_depth, int(quality)))


def _quantise(p: Path, img, alpha, gray: bool, bit_depth: int) -> np.ndarray:
    if not isinstance(img, torch.Tensor) or img.ndim != 3 or img.shape[0] not in (1, 3):
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ImageError(f"{p}: expected a (3, H, W) or (1, H, W) tensor, got {shape}")
    x = img.detach().to("cpu", torch.float64)
    if gray and x.shape[0] == 3:
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    planes = [x]
    if alpha is not None:
        a = alpha.detach().to("cpu", torch.float64)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[0] != 1 or a.shape[1:] != x.shape[1:]:
            raise ImageError(f"{p}: alpha of shape {tuple(alpha.shape)} does not match the image {tuple(img.shape)}")
        planes.append(a)
    x = torch.cat(planes, 0)
    if not torch.isfinite(x).all():
        raise ImageError(f"{p}: the image contains NaN or infinite values")
    peak = 65535 if bit_depth == 16 else 255
    q = torch.round(x.clamp(0.0, 1.0) * peak).permute(1, 2, 0).numpy()
    return q.astype(np.uint16 if bit_depth == 16 else np.uint8)


def _encode(p: Path, s: np.ndarray, fmt: str, bit_depth: int, quality: int) -> bytes:
    if fmt == "TIFF":
        import tifffile

        buf = io.BytesIO()
        kw = {"extrasamples": ["unassalpha"]} if s.shape[-1] in (2, 4) else {}
        photometric = "rgb" if s.shape[-1] >= 3 else "minisblack"
        tifffile.imwrite(buf, s if s.shape[-1] > 1 else s[..., 0], photometric=photometric, compression="zlib", **kw)
        return buf.getvalue()
    if fmt == "PNG" and bit_depth == 16:
        return _encode_png16(s)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[s.shape[-1]]
    im = Image.fromarray(s[..., 0] if mode == "L" else s, mode=mode)
    buf = io.BytesIO()
    kw = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "WEBP" and quality == 100:
        kw = {"lossless": True}
    try:
        im.save(buf, format=fmt, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise ImageError(f"{p}: {fmt} cannot store a {mode} image ({_one_line(e)})") from None
    return buf.getvalue()


def _encode_png16(s: np.ndarray) -> bytes:
    """16-bit PNG (PNG spec §11.2.2 IHDR, §9 filters, §10 zlib), written by hand: Pillow cannot encode it.

    Each row uses the Paeth filter (type 4), computed on whole rows with numpy, which compresses
    photographs well; decoders undo it exactly, so the samples round-trip bit for bit.
    """
    h, w, c = s.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = np.ascontiguousarray(s, dtype=">u2").view(np.uint8).reshape(h, w * c * 2).astype(np.int16)
    bpp = 2 * c  # bytes per complete pixel
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    upleft = np.zeros_like(raw)
    upleft[1:, bpp:] = raw[:-1, :-bpp]
    est = left + up - upleft
    pa, pb, pc = np.abs(est - left), np.abs(est - up), np.abs(est - upleft)
    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    filtered = ((raw - pred) & 0xFF).astype(np.uint8)
    rows = np.concatenate([np.full((h, 1), 4, np.uint8), filtered], axis=1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return _PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b"")


def _temporary(p: Path) -> tuple[Path, int]:
    """A new temporary file beside ``p``: (path, open descriptor). Mode 0666 less the umask, as open() gives."""
    if p.is_dir():
        raise ImageError(f"{p}: is a folder; give a file name")
    folder = p.parent
    if not folder.is_dir():
        raise ImageError(f"{p}: the folder {folder} does not exist")
    tmp = folder / f".{p.name}.{secrets.token_hex(4)}.tmp"
    try:
        return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise ImageError(f"{p}: cannot write ({e.strerror or _one_line(e)})") from None


def _write_atomic(p: Path, data: bytes) -> None:
    write_group({p: data})


def write_group(files: dict) -> None:
    """Write several files as one: each ``{path: bytes}`` goes to a temporary file beside it, and only when
    every one is written are they renamed into place. A failure (a full disk, an unwritable folder, Ctrl-C)
    removes the temporary files and leaves the destinations as they were."""
    staged: list[tuple[Path, Path]] = []
    done: list[Path] = []
    try:
        for path, data in files.items():
            p = Path(path)
            tmp, fd = _temporary(p)
            staged.append((tmp, p))
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except OSError as e:
                raise ImageError(f"{p}: cannot write ({e.strerror or _one_line(e)})") from None
        for tmp, p in staged:
            try:
                os.replace(tmp, p)
            except OSError as e:
                raise ImageError(f"{p}: cannot write ({e.strerror or _one_line(e)})") from None
            done.append(p)
    except BaseException:  # also on Ctrl-C: never leave temporary files, nor some of the group without the rest
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for p in done:
            p.unlink(missing_ok=True)
        raise


def check_output_paths(pairs, sidecars: tuple[str, ...] = ()) -> None:
    """Refuse to write over an input, and two inputs that would be written to one output.

    pairs: ``(input, output)`` paths; sidecars: suffixes of the files written beside each output (``.json``,
    ``.npy``), which count as outputs too. One-line ImageError naming the paths.
    """
    pairs = [(Path(a), Path(b)) for a, b in pairs]
    inputs = {_identity(a): a for a, _ in pairs}
    owner: dict[str, Path] = {}
    for src, dst in pairs:
        for out in (dst, *(dst.with_suffix(s) for s in sidecars)):
            key = _identity(out)
            if key in inputs:
                raise ImageError(f"{out}: is an input ({inputs[key]}); writing the output there would replace it")
            if key in owner and owner[key] != src:
                raise ImageError(f"{out}: both {owner[key]} and {src} would be written here; rename one of them")
            owner[key] = src


def _identity(p: Path) -> str:
    """What makes two paths one file: the inode of an existing file (links, hard links), else the resolved path."""
    try:
        st = p.stat()
        return f"inode:{st.st_dev}:{st.st_ino}"
    except OSError:
        return "path:" + os.path.normcase(str(p.resolve()))


# ------------------------------------------------------------------------------------------------ list
def image_files(folder) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, case-insensitive; hidden files skipped), sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageError(f"{d}: not a folder")
    return sorted(
        f for f in d.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
    )
