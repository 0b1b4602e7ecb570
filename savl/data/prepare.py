"""`savl data prepare`: Real-ESRGAN's preparation of its training data (DF2K + OST), written from the
description in the Real-ESRGAN training guide (Wang et al., ICCVW 2021), not from its scripts.

1. Multi-scale DF2K: every DIV2K / Flickr2K training image is also kept downscaled (Lanczos) by 3/4, 1/2 and
   1/3, and once more with its shortest edge at 400 pixels (`NAME` -> `NAMET0` .. `NAMET3`), so that the
   network sees content at several scales.
2. Sub-images: every image (originals, multi-scale copies, OST) is cut into `crop` x `crop` tiles taken every
   `step` pixels (400 and 200), plus one flush with the bottom / right edge when the regular grid leaves more
   than `thresh` pixels uncovered there. Small files decode much faster than 2K photos, which is what keeps a
   GPU fed. A side not longer than `crop` gives one tile covering it whole.
3. A `meta_info.txt` listing every sub-image relative to its own folder (`data.meta_info` of configs/paper).

Every file is written atomically (temporary name, then rename) and a file already present is not redone, so
an interrupted preparation simply runs again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from savl.data.hr_files import META_INFO, PAPER_SOURCES, PREPARED, data_roots, find_images, locate, missing_message
from savl.errors import DataError

MULTISCALE = (0.75, 0.5, 1 / 3)
SHORTEST_EDGE = 400
CROP, STEP, THRESH = 400, 200, 0


def _save_png(path: Path, array: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_rgb8(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 of an image file (savl.io.read_image, rounded back to 8 bits for 16-bit files)."""
    from savl.data.hr_files import _decode

    a = _decode(str(path))
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    return a


def multiscale_sizes(width: int, height: int, shortest_edge: int = SHORTEST_EDGE) -> list[tuple[int, int]]:
    """(w, h) of the copies of a (width x height) image: each scale of MULTISCALE (sizes truncated), then the
    copy whose shortest edge is `shortest_edge` (the other edge keeps the aspect ratio, truncated)."""
    sizes = [(int(width * s), int(height * s)) for s in MULTISCALE]
    if width < height:
        sizes.append((shortest_edge, int(shortest_edge * height / width)))
    else:
        sizes.append((int(shortest_edge * width / height), shortest_edge))
    return sizes


def _multiscale_one(job: tuple[Path, Path, int]) -> int:
    from PIL import Image

    src, out_dir, shortest_edge = job
    outs = [out_dir / f"{src.stem}T{i}.png" for i in range(len(MULTISCALE) + 1)]
    if all(o.is_file() for o in outs):
        return 0
    im = Image.fromarray(_load_rgb8(src))
    for o, size in zip(outs, multiscale_sizes(im.width, im.height, shortest_edge)):
        if not o.is_file():
            _save_png(o, np.asarray(im.resize(size, resample=Image.LANCZOS)))
    return len(outs)


def tile_starts(length: int, crop: int = CROP, step: int = STEP, thresh: int = THRESH) -> list[int]:
    """Start offsets of the tiles along one side of `length` pixels: 0, step, 2 step, ... while a whole tile
    fits, plus `length - crop` when more than `thresh` pixels would be left uncovered; [0] if length <= crop."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def _subimages_one(job: tuple[Path, Path, int, int, int]) -> int:
    src, out_dir, crop, step, thresh = job
    from PIL import Image

    img, n = None, 0
    with Image.open(src) as im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: decoded upright, so the sides swap
            w, h = h, w
    k = 0
    for top in tile_starts(h, crop, step, thresh):
        for left in tile_starts(w, crop, step, thresh):
            k += 1
            out = out_dir / f"{src.stem}_s{k:03d}.png"
            if out.is_file():
                continue
            if img is None:
                img = _load_rgb8(src)
            _save_png(out, np.ascontiguousarray(img[top : top + crop, left : left + crop]))
            n += 1
    return n


def _run(fn: Callable, jobs: list, workers: int, progress: Callable[[str], None] | None, label: str) -> int:
    done = 0
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for i, n in enumerate(pool.map(fn, jobs, chunksize=4), 1):
                done += n
                if progress is not None and (i % 100 == 0 or i == len(jobs)):
                    progress(f"{label}: {i}/{len(jobs)} images")
    else:
        for i, job in enumerate(jobs, 1):
            done += fn(job)
            if progress is not None and (i % 100 == 0 or i == len(jobs)):
                progress(f"{label}: {i}/{len(jobs)} images")
    return done


def make_multiscale(
    sources: Iterable[Path], out_dir: Path, workers: int = 1, progress=None, shortest_edge: int = SHORTEST_EDGE
) -> list[Path]:
    """Step 1: the multi-scale copies of every image of `sources` (folders, searched recursively) into
    `out_dir` (flat; names must be unique across the sources). Returns the written files."""
    files = [f for s in sources for f in find_images(s)]
    stems = {}
    for f in files:
        if f.stem in stems:
            raise DataError(f"{f}: its name clashes with {stems[f.stem]} in the multi-scale folder")
        stems[f.stem] = f
    _run(_multiscale_one, [(f, Path(out_dir), shortest_edge) for f in files], workers, progress, "multi-scale")
    return find_images(out_dir) if Path(out_dir).is_dir() else []


def make_subimages(
    source: Path, out_dir: Path, crop: int = CROP, step: int = STEP, thresh: int = THRESH, workers: int = 1,
    progress=None,
) -> list[Path]:
    """Step 2: the tiles of every image under `source` (recursively) into `out_dir`, keeping the sub-folders
    (`a/b.png` -> `a/b_s001.png`, ... row by row). Returns every tile file of those images."""
    if crop < 1 or step < 1 or thresh < 0:
        raise DataError(f"crop {crop} and step {step} must be positive, thresh {thresh} not negative")
    source, out_dir = Path(source), Path(out_dir)
    files = find_images(source)
    jobs = [(f, out_dir / f.parent.relative_to(source), crop, step, thresh) for f in files]
    _run(_subimages_one, jobs, workers, progress, f"sub-images of {source.name}")
    return find_images(out_dir)


def prepare_paper_data(
    root=None, out: str | os.PathLike | None = None, *, crop: int = CROP, step: int = STEP, thresh: int = THRESH,
    workers: int = 1, progress=None, shortest_edge: int = SHORTEST_EDGE,
) -> Path:
    """The whole preparation of DF2K + OST found under the data roots: multi-scale DF2K, sub-images of DF2K,
    of its multi-scale copies and of OST, and the meta_info list. Output: `out`, default `<first root>/`
    DF2K_OST_sub (the name configs/paper expect), with `DF2K_multiscale/` (step 1) beside it. Returns the
    meta_info file."""
    roots = data_roots(root)
    found = {}
    for name, rel in PAPER_SOURCES.items():
        hits = locate(rel, roots)
        if not hits:
            raise DataError(missing_message(rel, roots))
        found[name] = hits
    out = Path(out) if out is not None else roots[0] / PREPARED
    multi = out.parent / "DF2K_multiscale"
    df2k = found["DIV2K"] + found["Flickr2K"]
    make_multiscale(df2k, multi, workers, progress, shortest_edge)
    tiles: list[Path] = []
    names = [f.name for f in df2k]
    for i, folder in enumerate(df2k):
        sub = folder.name if names.count(folder.name) == 1 else f"{folder.name}_{i}"
        tiles += make_subimages(folder, out / "DF2K_HR_sub" / sub, crop, step, thresh, workers, progress)
    tiles += make_subimages(multi, out / "DF2K_multiscale_sub", crop, step, thresh, workers, progress)
    for i, folder in enumerate(found["OST"]):
        tiles += make_subimages(folder, out / "OST_sub" / (f"{i}" if len(found["OST"]) > 1 else ""), crop, step,
                                thresh, workers, progress)
    from savl.data.hr_files import write_meta_info

    return write_meta_info(out / META_INFO, tiles)
