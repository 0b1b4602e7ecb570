"""Training HR images on disk: data roots, the folders a config names, recursive search, Real-ESRGAN-style
`meta_info` file lists, and a patch dataset that decodes each image only when one of its items is read.

The paper trains on Real-ESRGAN's synthetic-data recipe (DF2K + OST, §4.1): thousands of 2K photos, far too
many to hold decoded in memory. `HRFileDataset` keeps only the list of file names (as one numpy byte array, so
DataLoader workers forked from the main process share it without copying) and decodes one image per item, in
the worker that reads it; memory is then bounded by the workers' prefetch queue, whatever the dataset's size.

Where the data is: `data.root` (one folder or a list), else `$SAVL_DATA` (folders separated by `os.pathsep`),
else the folder `savl data download` fills (`savl.data.catalog.data_root`). A relative folder or meta_info
name is looked up in each root in turn. A name that is in no root fails in one line that says which command
fetches it (`savl data download NAME`, or `savl data prepare` for the prepared sub-images).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from savl.errors import ConfigError, DataError

DATA_ENV = "SAVL_DATA"

# Real-ESRGAN's training data (DF2K + OST) as catalogued folders: the HR training images of each dataset,
# relative to a data root (globs allowed; OST keeps its category sub-folders, searched recursively).
PAPER_SOURCES: dict[str, str] = {
    "DIV2K": "DIV2K/DIV2K_train_HR",
    "Flickr2K": "Flickr2K/**/Flickr2K_HR",
    "OST": "OST",
}
# What `savl data prepare` writes under a data root (multi-scale DF2K + sub-images of everything).
PREPARED = "DF2K_OST_sub"
META_INFO = "meta_info.txt"


def data_roots(root: str | os.PathLike | list | tuple | None = None) -> list[Path]:
    """The folders data names are looked up in: `root` (one or several), else `$SAVL_DATA`, else the catalog's
    data root (where `savl data download` puts datasets)."""
    if root is None:
        env = os.environ.get(DATA_ENV)
        if env:
            return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        from savl.data.catalog import data_root

        return [data_root()]
    items = [root] if isinstance(root, (str, os.PathLike)) else list(root)
    if not items:
        raise ConfigError("data.root: give at least one folder")
    return [Path(p).expanduser() for p in items]


def _is_hidden(path: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(top).parts)


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder` and all its sub-folders (by suffix, case-insensitive; hidden files and
    folders skipped), sorted by their path relative to `folder`."""
    from savl.io import IMAGE_SUFFIXES

    top = Path(folder)
    if not top.is_dir():
        raise DataError(f"{top}: no such folder")
    out = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                out.append(Path(dirpath) / f)
    return sorted(out, key=lambda p: p.relative_to(top).as_posix())


def _matches(root: Path, name: str, want_dir: bool) -> list[Path]:
    if any(ch in name for ch in "*?["):
        hits = sorted(root.glob(name))
    else:
        hits = [root / name]
    return [h for h in hits if (h.is_dir() if want_dir else h.is_file())]


def locate(name: str | os.PathLike, roots: list[Path], want_dir: bool = True) -> list[Path]:
    """The folders (or the file) `name` names: itself when absolute, else its matches in the first root that has
    any (a glob such as `Flickr2K/**/Flickr2K_HR` may match several). Empty when no root has it."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return _matches(Path(p.anchor), str(p.relative_to(p.anchor)), want_dir)
    for r in roots:
        hits = _matches(r, str(name), want_dir)
        if hits:
            return hits
    return []


def missing_message(name: str | os.PathLike, roots: list[Path]) -> str:
    """One line: `name` is under none of `roots`, and the command that fetches (or prepares) it."""
    from savl.data.catalog import load_catalog

    where = ", ".join(str(r) for r in roots)
    first = Path(name).parts[0] if Path(name).parts else str(name)
    to = f" --root {roots[0]}" if roots else ""
    catalog = load_catalog()
    if first in catalog:
        entry = catalog[first]
        how = f"`savl data download {first}{to}`"
        if not entry.files:
            how += " (it says where to get it by hand)"
    elif first == PREPARED:
        absent = [d for d, rel in PAPER_SOURCES.items() if not locate(rel, roots)]
        if absent:
            how = " and ".join(f"`savl data download {d}{to}`" for d in absent) + f", then `savl data prepare{to}`"
        else:
            how = f"`savl data prepare{to}`"
    else:
        return f"{name}: not found under {where} (set data.root or ${DATA_ENV})"
    return f"{name}: not found under {where}; fetch it with {how}"


def read_meta_info(path: str | os.PathLike) -> list[str]:
    """File names listed by a meta_info file (Real-ESRGAN style: one image per line, its path first, anything
    after a space ignored), relative to the file's own folder; no absolute names, no '..'."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: no such meta_info file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read as a text file list ({e})") from None
    names = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        rel = fields[0]
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts:
            raise DataError(f"{path}: line {n}: {rel!r} must be a path inside the file's folder")
        names.append(rel)
    if not names:
        raise DataError(f"{path}: the meta_info file lists no images")
    return names


def write_meta_info(path: str | os.PathLike, files: list[Path]) -> Path:
    """Write `files` (under the file's folder) as a meta_info list of relative paths, sorted, atomically."""
    from savl.io import write_group

    path = Path(path)
    base = path.parent.resolve()
    rel = sorted(Path(os.path.relpath(Path(f).resolve(), base)).as_posix() for f in files)
    bad = next((r for r in rel if r.startswith("../")), None)
    if bad is not None:
        raise DataError(f"{path}: {bad} is outside the meta_info file's folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_group({path: "".join(f"{r}\n" for r in rel).encode()})
    return path


def training_files(
    root=None, folders: list[str] | None = None, meta_info: str | None = None
) -> list[Path]:
    """The HR training images a config names. With `meta_info`: the files it lists (each must exist). Else every
    image under each of `folders` (looked up in the roots), or under the roots themselves when no folder is
    named. A name found in no root raises DataError naming it and the command that fetches it."""
    roots = data_roots(root)
    if meta_info is not None:
        hits = locate(meta_info, roots, want_dir=False)
        if not hits:
            raise DataError(missing_message(meta_info, roots))
        listed = hits[0]
        files = [listed.parent / rel for rel in read_meta_info(listed)]
        for f in files:
            if not f.is_file():
                raise DataError(f"{listed}: lists {f}, which does not exist")
        return files
    files: list[Path] = []
    for name in folders or [None]:
        if name is None:  # no folder named: the roots themselves hold the images
            hits = roots
            missing = next((r for r in roots if not r.is_dir()), None)
            if missing is not None:
                raise DataError(f"{missing}: no such folder (data.root)")
        else:
            hits = locate(name, roots)
            if not hits:
                raise DataError(missing_message(name, roots))
        for h in hits:
            found = find_images(h)
            if not found:
                raise DataError(f"{h}: no image files in this folder or its sub-folders")
            files += found
    return files


def _decode(path: str) -> np.ndarray:
    """(H, W, 3) uint8 for an 8-bit RGB PNG or JPEG (the photos of DF2K and OST), else float32 from savl.io;
    the crop is taken before the conversion to float, which a 2K photo would otherwise pay in full."""
    import warnings

    from PIL import Image, ImageOps

    from savl.io import read_image

    try:
        with open(path, "rb") as f:
            head = f.read(26)
        # 8-bit PNG (bit depth byte of IHDR) or JPEG only: Pillow would silently cut a 16-bit RGB PNG to 8 bits
        eight_bit = (head[:8] == b"\x89PNG\r\n\x1a\n" and head[24:25] == b"\x08") or head[:3] == b"\xff\xd8\xff"
        if eight_bit:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    if im.mode == "RGB" and im.width * im.height <= 200_000_000:
                        im.load()
                        return np.asarray(ImageOps.exif_transpose(im))
    except Exception:  # anything Pillow cannot do here, savl.io reads or reports in one line
        pass
    return read_image(path).permute(1, 2, 0).numpy()


class HRFileDataset(Dataset):
    """Random HR crops decoded on demand from image files: {"hr": (3, patch, patch)} float32 in [0, 1].

    Item i of epoch e reads file i mod n and draws its crop and one of the 8 flips/rotations from
    `numpy.random.default_rng([seed, e, i])`, exactly as `HRPatchDataset` does, so the two give the same
    patches for the same files. An image smaller than the patch is first padded at the bottom/right by
    reflection (as Real-ESRGAN pads its small training images) instead of being refused. Nothing decoded is kept.
    """

    def __init__(self, files, patch: int = 256, seed: int = 0, *, augment: bool = True, length: int | None = None):
        if not isinstance(patch, int) or patch < 1:
            raise ConfigError(f"patch must be a positive integer, got {patch!r}")
        names = [os.fsencode(Path(f)) for f in files]
        if not names:
            raise DataError("no training images given")
        # One contiguous byte array instead of a list of Python objects: forked workers read it without
        # touching reference counts, so its pages stay shared (a list would be copied into every worker).
        self.files = np.array(names, dtype=np.bytes_)
        self.patch, self.seed, self.augment = patch, int(seed), augment
        self.length = len(self.files) if length is None else int(length)
        if self.length < 1:
            raise ConfigError(f"length must be positive, got {length!r}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def path(self, j: int) -> Path:
        return Path(os.fsdecode(bytes(self.files[j])))

    def __getitem__(self, index: int) -> dict:
        from savl.data.datasets import _dihedral, _rng

        if not 0 <= index < self.length:
            raise IndexError(index)
        path = self.path(index % len(self.files))
        img = _decode(str(path))
        p = self.patch
        h, w = img.shape[:2]
        if h < p or w < p:
            img = np.pad(img, ((0, max(p - h, 0)), (0, max(p - w, 0)), (0, 0)), mode="reflect")
        rng = _rng(self.seed, self.epoch, index)
        top = int(rng.integers(0, img.shape[0] - p + 1))
        left = int(rng.integers(0, img.shape[1] - p + 1))
        crop = np.ascontiguousarray(img[top : top + p, left : left + p])
        hr = torch.from_numpy(crop).permute(2, 0, 1)
        hr = hr.float() / 255.0 if hr.dtype == torch.uint8 else hr.float()
        if self.augment:
            hr = _dihedral(hr, int(rng.integers(4)), bool(rng.integers(2)))
        return {"hr": hr.contiguous()}
