"""Tiled inference (the paper evaluates on 256 x 256 LR tiles) and severity maps (Eq. 15).

Tiles follow Real-ESRGAN's meaning: `tile` is the side of the core each tile is responsible for, and
`overlap` (Real-ESRGAN's `tile_pad`) extra LR pixels of context are added on every side that touches another
tile, so an H x W image runs ceil(H / tile) * ceil(W / tile) tiles. Cores are balanced (never a sliver at the
end). Where two padded tiles meet they share 2 * overlap pixels, blended with a raised-cosine window, so seams do
not show even for networks whose receptive field exceeds the pad.

The image stays in host memory and tiles go to the model's device one at a time. `upscale` blends the tiles
of an RGB(A) image straight into its float result (host memory: the output plus one tile). Elsewhere finished
output rows are handed on as soon as no later tile can touch them, so `upscale_to_array` writes them straight
into a preallocated uint8/uint16 array: host memory is the output's own bytes plus one band of tiles, flat in
the image size. Gray images go through the network as RGB and come back gray; an alpha channel is upscaled on its
own track with MATLAB bicubic (a network trained on RGB knows nothing about alpha).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from savl.errors import SavlError
from savl.imresize import imresize

# torch.OutOfMemoryError is torch >= 2.5; older releases only have the CUDA one (its base class since).
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def flush_subnormals() -> bool:
    """Have the CPU flush subnormal floats (below 1.2e-38 in float32) to zero; returns whether it can.

    Near-zero attention probabilities and tiny blur taps otherwise run many times slower on x86 (a 21x21
    depthwise blur whose taps are subnormal: 4.7x on 2 threads). The flag is per thread; threads started later
    inherit it, so call this before the first parallel operation starts PyTorch's intra-op threads (the
    `savl` command does, for every subcommand): set later it covers only the calling thread. It changes no
    value above 1.2e-38.
    """
    return bool(torch.set_flush_denormal(True))


def model_scale(model: nn.Module) -> int:
    """The upscaling factor a model declares (`model.scale` or `model.config.upscale`)."""
    for owner, name in ((model, "scale"), (getattr(model, "config", None), "upscale")):
        value = getattr(owner, name, None) if owner is not None else None
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(model).__name__}: cannot tell its scale; pass scale=")


def tile_grid(length: int, tile: int | None) -> list[tuple[int, int]]:
    """The cores [start, end) along one side: ceil(length / tile) of them, sizes differing by at most one."""
    n = 1 if tile is None else max(1, math.ceil(length / tile))
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def count_tiles(height: int, width: int, tile: int | None) -> int:
    """How many forward passes `upscale` makes on an LR image of this size (tile = core side, None = one)."""
    return len(tile_grid(height, tile)) * len(tile_grid(width, tile))


def _raised_cosine(t: torch.Tensor) -> torch.Tensor:
    return 0.5 - 0.5 * torch.cos(math.pi * t.clamp(0, 1))


def _window(core: tuple[int, int], length: int, overlap: int, scale: int) -> tuple[int, int, torch.Tensor]:
    """The padded input span [a0, a1) of a core (LR pixels) and its 1-D blend weights at output resolution.

    A side that touches another tile ramps from ~0 at the padded edge to ~1 at 2 * overlap inside it, the span
    the neighbour also covers; its neighbour's ramp is the mirror image, so the two sum to one there.
    """
    c0, c1 = core
    a0, a1 = max(0, c0 - overlap), min(length, c1 + overlap)
    w = torch.ones((a1 - a0) * scale)
    if overlap > 0:
        x = torch.arange(a0 * scale, a1 * scale, dtype=torch.float64) + 0.5  # output pixel centres
        zone = 2 * overlap * scale
        if c0 > 0:
            w = torch.minimum(w, _raised_cosine((x - (c0 - overlap) * scale) / zone).float())
        if c1 < length:
            w = torch.minimum(w, _raised_cosine(((c1 + overlap) * scale - x) / zone).float())
    return a0, a1, w


def _run(model: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One forward pass; bf16/fp16 via autocast with a NaN/Inf check that falls back to fp32."""
    if dtype == torch.float32:
        return model(x).float()
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        y = model(x)
    y = y.float()
    if not torch.isfinite(y).all():
        warnings.warn(f"non-finite output under {dtype}; this tile was recomputed in float32", stacklevel=3)
        y = model(x).float()
    return y


def _auto_tile(device: torch.device) -> int:
    """A starting tile size: from free memory on CUDA, a fixed 256 elsewhere (OOM retries shrink it)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # about 1.5 GB of activations per 256x256 LR tile for a HAT-size x4 network, in fp32 (measured order).
        side = int(256 * math.sqrt(max(free, 1) / 1.5e9))
        return int(max(64, min(1024, side)) // 16 * 16)
    return 256


@contextlib.contextmanager
def _channels_last(model: nn.Module, device: torch.device) -> Iterator[bool]:
    """On the CPU, hold the model's 4-D weights in channels-last order for the call, then put them back.

    oneDNN's convolutions then skip reordering every input and output, and HAT's feature map leaves its first
    convolution already in (B, H, W, C) order, which its token layout wants: 1.2x for a book-size HAT on a 128x128
    or 256x256 LR image (benchmarks/results/hat_upstream_cpu.md), the same values to float rounding. Yields
    whether inputs should be channels-last too. Elsewhere (CUDA) nothing changes.
    """
    if device.type != "cpu":
        yield False
        return
    moved = [
        t
        for t in itertools.chain(model.parameters(), model.buffers())
        if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last)
    ]
    for t in moved:
        t.data = t.data.contiguous(memory_format=torch.channels_last)
    try:
        yield True
    finally:
        for t in moved:
            t.data = t.data.contiguous()


def _bands(
    model, rgb, tile, overlap, dtype, device, scale, channels_last: bool = False, into: torch.Tensor | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (first output row, finished float rows (3, n, sW)) top to bottom, each row exactly once.

    Without `into`, the rows are a view into one preallocated band buffer that the next step overwrites: use
    them (or copy them) before asking for the next band. All arithmetic on the band is in place, so host memory
    is one band (12 bytes x band height x output width) whatever the image height.

    With `into` (a float (3, sH, sW) tensor, e.g. the caller's result), the tiles are blended straight into it
    and the yielded rows are views of it, normalised in place: no band buffer at all. Each row is zeroed just
    before the first tile adds to it, so a second pass (an out-of-memory restart) overwrites whatever an
    earlier pass left.
    """
    _, H, W = rgb.shape
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if into is not None and tuple(into.shape) != (3, H * scale, W * scale):
        raise ValueError(f"into must be (3, {H * scale}, {W * scale}), got {tuple(into.shape)}")
    rows, cols = tile_grid(H, tile), tile_grid(W, tile)
    if len(rows) == len(cols) == 1:  # one tile: every blend weight is 1, so its output is the image
        patch = rgb[None].to(device)
        if channels_last:
            patch = patch.contiguous(memory_format=torch.channels_last)
        pred = _run(model, patch, dtype)[0].cpu()
        if pred.shape[-2:] != (H * scale, W * scale):
            got = tuple(pred.shape[-2:])
            raise SavlError(f"{type(model).__name__}: a {H}x{W} input gave {got}, not x{scale} of it")
        if into is not None:
            yield 0, into.copy_(pred)
        else:  # an inference tensor cannot be changed in place
            yield 0, pred.clone() if pred.is_inference() else pred
        return
    xwin = [_window(c, W, overlap, scale) for c in cols]
    col_sum = torch.zeros(W * scale)  # the blend weights are separable, so their sum is an outer product
    for a0, a1, wx in xwin:
        col_sum[a0 * scale : a1 * scale] += wx
    if into is None:
        capacity = (max(c1 - c0 for c0, c1 in rows) + 2 * overlap) * scale
        buf = torch.empty(3, capacity, W * scale)
    else:
        capacity, buf = H * scale, into
    row_sum = torch.empty(capacity)
    # buf row r is output row origin + r; output rows [start, filled) hold partial sums, those above are done.
    origin, start, filled = 0, 0, 0
    for i, core in enumerate(rows):
        y0, y1, wy = _window(core, H, overlap, scale)
        buf[:, filled - origin : y1 * scale - origin].zero_()
        row_sum[filled - origin : y1 * scale - origin].zero_()
        filled = y1 * scale
        top = y0 * scale - origin
        for x0, x1, wx in xwin:
            patch = rgb[:, y0:y1, x0:x1][None].to(device)
            if channels_last:
                patch = patch.contiguous(memory_format=torch.channels_last)
            pred = _run(model, patch, dtype)[0].cpu()
            if pred.shape[-2:] != ((y1 - y0) * scale, (x1 - x0) * scale):
                raise SavlError(
                    f"{type(model).__name__}: a {y1 - y0}x{x1 - x0} input gave {tuple(pred.shape[-2:])}, "
                    f"not x{scale} of it"
                )
            # pred is only read (a model may return an inference-mode tensor, which cannot be changed in place).
            buf[:, top : top + pred.shape[1], x0 * scale : x1 * scale].addcmul_(pred, wy[:, None] * wx[None, :])
        row_sum[top : top + wy.shape[0]] += wy
        finished = max(0, rows[i + 1][0] - overlap) if i + 1 < len(rows) else H  # the next tile row's top
        done = max(finished * scale, start)
        out = buf[:, start - origin : done - origin]
        out.div_(row_sum[start - origin : done - origin, None]).div_(col_sum[None, :])
        yield start, out
        start = done
        if into is None:  # rows the next tile row still adds to move to the top of the buffer
            buf[:, : filled - start] = buf[:, start - origin : filled - origin].clone()
            row_sum[: filled - start] = row_sum[start - origin : filled - origin].clone()
            origin = start


def _stream(
    model: nn.Module,
    image: torch.Tensor,
    sink: Callable[[int, torch.Tensor], None] | None,
    tile: int | str | None,
    overlap: int,
    dtype: torch.dtype,
    device,
    scale: int | None,
    into: torch.Tensor | None = None,
) -> tuple[int, torch.Tensor | None]:
    """Run the tiles and hand each finished band (first row, (C, n, sW) in [0, 1]) to `sink`; returns the
    scale and the upscaled alpha plane (or None). With tile="auto", an out-of-memory error halves the tile and
    starts again (the sink then sees the rows again, in order).

    `into` (RGB or RGBA input only): a (3, sH, sW) float tensor the tiles are blended, normalised and clamped in,
    in place (no band buffer); `sink` may then be None."""
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"upscale expects (C,H,W) with C in 1, 3, 4; got {tuple(image.shape)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    scale = scale or model_scale(model)
    image = image.detach().float().cpu()
    gray = image.shape[0] == 1
    rgb = image[:3] if not gray else image.expand(3, -1, -1)
    if gray and into is not None:  # the gray plane is the mean of the clamped channels: it needs all three
        raise ValueError("into= needs an RGB or RGBA image")

    auto = tile == "auto"
    size = _auto_tile(device) if auto else tile
    with _channels_last(model, device) as channels_last:
        while True:
            try:
                for y, rows in _bands(model, rgb, size, overlap, dtype, device, scale, channels_last, into):
                    if rows.shape[1] == 0:  # a tile row whose rows the next one still touches
                        continue
                    rows.clamp_(0, 1)
                    if sink is not None:
                        sink(y, rows.mean(0, keepdim=True) if gray else rows)
                break
            except OutOfMemoryError:
                if not auto or size <= 32:
                    raise
                size //= 2
                torch.cuda.empty_cache()
    alpha = imresize(image[3:], scale=scale).clamp(0, 1) if image.shape[0] == 4 else None
    return scale, alpha


@torch.no_grad()
def upscale(
    model: nn.Module,
    image: torch.Tensor,
    tile: int | str | None = 256,
    overlap: int = 16,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    scale: int | None = None,
) -> torch.Tensor:
    """Super-resolve one image (C,H,W) in [0,1], C in {1, 3, 4}, tile by tile. Returns (C, sH, sW) on the CPU.

    tile: side of each tile's core in LR pixels (None = whole image at once, "auto" = from free GPU memory,
    halved on out-of-memory); an H x W image runs ceil(H / tile) * ceil(W / tile) forward passes.
    overlap: LR pixels of context added on each inner side of a tile (Real-ESRGAN's tile_pad), blended.
    """
    if image.dim() != 3:
        raise ValueError(f"upscale expects (C,H,W) with C in 1, 3, 4; got {tuple(image.shape)}")
    s = scale or model_scale(model)
    c, h, w = image.shape
    # The tiles are blended straight into the result (no band buffer, no list of copies, no concatenation: one
    # output's worth of memory); the alpha plane, if any, takes the last channel. A gray image's plane is the
    # mean of the three clamped colour channels, so it still goes through the band.
    result = torch.empty(c, h * s, w * s)

    def keep(y: int, rows: torch.Tensor) -> None:
        result[:, y : y + rows.shape[1]] = rows  # an out-of-memory restart rewrites the rows

    if c == 1:
        _, alpha = _stream(model, image, keep, tile, overlap, dtype, device, s)
    else:
        _, alpha = _stream(model, image, None, tile, overlap, dtype, device, s, into=result[:3])
    if alpha is not None:
        result[3:] = alpha
    return result


@torch.no_grad()
def upscale_to_array(
    model: nn.Module,
    image: torch.Tensor,
    bit_depth: int = 8,
    tile: int | str | None = 256,
    overlap: int = 16,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    scale: int | None = None,
) -> np.ndarray:
    """`upscale`, written band by band into a preallocated (sH, sW, C) uint8 or uint16 array.

    Host memory is the array itself (C or 2C bytes per output pixel) plus one band of tiles, instead of the
    float output, its copies and the quantisation temporaries of `upscale` + `write_image`.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if image.dim() != 3:
        raise ValueError(f"upscale expects (C,H,W) with C in 1, 3, 4; got {tuple(image.shape)}")
    s = scale or model_scale(model)
    c, h, w = image.shape
    peak = 65535 if bit_depth == 16 else 255
    array = np.empty((h * s, w * s, c), np.uint16 if bit_depth == 16 else np.uint8)
    colour = 1 if c == 1 else 3

    def write(y: int, rows: torch.Tensor) -> None:
        array[y : y + rows.shape[1], :, :colour] = rows.mul_(peak).round_().permute(1, 2, 0).numpy()

    _, alpha = _stream(model, image, write, tile, overlap, dtype, device, s)
    if alpha is not None:
        array[..., 3] = torch.round(alpha[0] * peak).numpy()
    return array


def resample(samples: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (H, W, C) uint8/uint16 samples with a Lanczos filter (Real-ESRGAN's --outscale uses Lanczos-4),
    one channel at a time in float32 so memory stays near one plane."""
    from PIL import Image

    peak = np.iinfo(samples.dtype).max
    out = np.empty((height, width, samples.shape[2]), samples.dtype)
    for k in range(samples.shape[2]):
        plane = Image.fromarray(samples[..., k].astype(np.float32), mode="F")
        resized = np.asarray(plane.resize((width, height), Image.LANCZOS))
        out[..., k] = np.clip(np.round(resized), 0, peak)
    return out


@torch.no_grad()
def severity_map(model: nn.Module, image: torch.Tensor, device: str | torch.device | None = None):
    """Eq. 15 severity of an LR image (3,H,W): returns (raw (H,W) float tensor, colour-mapped (3,H,W) in [0,1]).

    `model` is anything with an encoder: an `AmortizedEncoder`, a `SAVL` (`.encode`), or an SR network that owns
    one (`.encoder`).
    """
    import matplotlib

    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = image[:3].detach().float()[None].to(device)
    if hasattr(model, "encode"):
        posterior = model.encode(x)
    elif hasattr(model, "encoder"):  # an SR network: its encoder, or None for plain HAT
        posterior = model.encoder(x) if model.encoder is not None else None
    else:
        posterior = model(x)
    if not hasattr(posterior, "severity"):
        raise SavlError(f"{type(model).__name__}: has no encoder, so no severity map (plain HAT has none)")
    sev = posterior.severity()[0, 0].float().cpu()
    lo, hi = sev.min(), sev.max()
    norm = (sev - lo) / (hi - lo) if hi > lo else torch.zeros_like(sev)
    rgb = torch.from_numpy(matplotlib.colormaps["magma"](norm.numpy())[..., :3]).permute(2, 0, 1).float()
    return sev, rgb
