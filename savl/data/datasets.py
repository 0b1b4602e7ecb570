"""Dataset classes: HR patches for on-the-fly degradation, paired LR/HR folders
(plain, RealSR v3, DRealSR layouts), LR-only folders (RealSRSet) and frozen synthetic validation sets.

Randomness never touches a global RNG: every random choice of item `i` in epoch `e` comes from
`numpy.random.default_rng([seed, e, i])`, so results do not depend on DataLoader workers or order.
Images are float32 (3, H, W) in [0, 1] as read by `savl.io.read_image`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from savl.errors import ConfigError, DataError

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------- helpers
def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """One of the 8 flips/rotations (rot90 by k, then an optional horizontal flip)."""
    x = torch.rot90(x, k, dims=(-2, -1)) if k else x
    return torch.flip(x, dims=(-1,)) if flip else x


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header when Pillow can parse it, else by decoding with savl.io."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            return h, w
    except Exception:
        from savl.io import read_image

        img = read_image(path)
        return int(img.shape[-2]), int(img.shape[-1])


def _named_images(images) -> list[tuple[str, torch.Tensor | Path]]:
    """Normalise a folder, a list of tensors, a list of (name, tensor) pairs or of files."""
    if isinstance(images, (str, os.PathLike)):
        from savl.io import image_files

        folder = Path(images)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder")
        files = image_files(folder)
        if not files:
            raise DataError(f"{folder}: no image files in this folder")
        return [(f.stem, f) for f in files]
    out: list[tuple[str, torch.Tensor | Path]] = []
    for i, item in enumerate(images):
        if isinstance(item, tuple):
            name, img = item
        elif isinstance(item, (str, os.PathLike)):
            name, img = Path(item).stem, Path(item)
        else:
            name, img = f"{i:04d}", item
        if isinstance(img, torch.Tensor):
            if img.ndim != 3 or img.shape[0] != 3:
                raise DataError(f"image {name!r}: expected a (3, H, W) tensor, got {tuple(img.shape)}")
            img = img.detach().float()
        out.append((str(name), img if isinstance(img, torch.Tensor) else Path(img)))
    if not out:
        raise DataError("no images given")
    return out


def _read(img: torch.Tensor | Path) -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        return img
    from savl.io import read_image

    return read_image(img)


# ------------------------------------------------------------------------------------------ HR patches
class HRPatchDataset(Dataset):
    """Random HR crops with the 8 flips/rotations: {"hr": (3, patch, patch)} (Real-ESRGAN's GT crop is 256).

    Degradation is not applied here: the training loop degrades whole batches on the training
    device with `degrade_batch` (the Real-ESRGAN pipeline is batched and shares resize draws within a
    batch, as Real-ESRGAN does), which is faster on a GPU and keeps the parameter record next to the batch.

    images: a folder (files are read on demand, or kept with `cache=True`), a list of (3, H, W) tensors,
    of (name, tensor) pairs (e.g. `sample_images()`), or of files. length: items per epoch (default:
    the number of images; item i uses image i mod n). Call `set_epoch(e)` for fresh crops each epoch.
    """

    def __init__(
        self,
        images,
        patch: int = 256,
        length: int | None = None,
        seed: int = 0,
        *,
        augment: bool = True,
        cache: bool = False,
    ):
        if not isinstance(patch, int) or patch < 1:
            raise ConfigError(f"patch must be a positive integer, got {patch!r}")
        self.items = _named_images(images)
        self.patch, self.seed, self.augment, self.cache = patch, int(seed), augment, cache
        self.length = len(self.items) if length is None else int(length)
        if self.length < 1:
            raise ConfigError(f"length must be positive, got {length!r}")
        self.epoch = 0
        for name, img in self.items:
            h, w = img.shape[-2:] if isinstance(img, torch.Tensor) else _image_size(img)
            if h < patch or w < patch:
                where = img if isinstance(img, Path) else f"image {name!r}"
                raise DataError(f"{where}: {w}x{h} is smaller than the {patch}x{patch} patch")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _image(self, j: int) -> torch.Tensor:
        name, img = self.items[j]
        if isinstance(img, torch.Tensor):
            return img
        x = _read(img)
        if self.cache:
            self.items[j] = (name, x)
        return x

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        img = self._image(index % len(self.items))
        rng = _rng(self.seed, self.epoch, index)
        p = self.patch
        top = int(rng.integers(0, img.shape[-2] - p + 1))
        left = int(rng.integers(0, img.shape[-1] - p + 1))
        hr = img[:, top : top + p, left : left + p]
        if self.augment:
            hr = _dihedral(hr, int(rng.integers(4)), bool(rng.integers(2)))
        return {"hr": hr.contiguous()}


def degrade_batch(batch_hr, degradation, generator: torch.Generator | None = None):
    """Degrade one batch on its device: returns (lr, hr, params) with `params` the per-sample record.

    batch_hr: a (B, 3, H, W) tensor or a collated {"hr": ...} batch. degradation: any object with
    `__call__(hr, generator) -> (lr, params)` (`RealESRGANDegradation`, a protocol from `get_protocol`).
    The returned `hr` is the batch as given; Real-ESRGAN's USM-sharpened loss target is
    `degradation.sharpen(hr)`, left to the training loop, which knows which losses use it.
    """
    hr = batch_hr["hr"] if isinstance(batch_hr, dict) else batch_hr
    if not isinstance(hr, torch.Tensor) or hr.ndim != 4 or hr.shape[1] != 3:
        shape = tuple(hr.shape) if isinstance(hr, torch.Tensor) else type(hr).__name__
        raise DataError(f"degrade_batch expects a (B, 3, H, W) tensor, got {shape}")
    lr, params = degradation(hr, generator)
    return lr, hr, params


# ------------------------------------------------------------------------------------------ paired sets
_LAYOUTS = ("folders", "realsr", "drealsr")


def _strip(stem: str, suffixes: Sequence[str]) -> str | None:
    """The stem without the first matching suffix ('' matches as is), or None."""
    for s in suffixes:
        if s == "":
            return stem
        if stem.endswith(s) and len(stem) > len(s):
            return stem[: -len(s)]
    return None


def _keyed(files: list[Path], suffixes: Sequence[str], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        key = _strip(f.stem, suffixes)
        if key is None:
            continue
        if key in out:
            raise DataError(f"{f}: two {what} files share the name {key!r} ({out[key].name})")
        out[key] = f
    return out


def _subdir(root: Path, names: Sequence[str], pattern: str | None = None) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    if pattern is not None:
        hits = sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(pattern, p.name, re.I))
        if len(hits) == 1:
            return hits[0]
    raise DataError(f"{root}: expected a sub-folder named {' or '.join(names)}")


class PairedFolderDataset(Dataset):
    """Real LR/HR pairs at a fixed scale: {"lr", "hr", "name"} (RealSR, DRealSR, DIV2K-style folders).

    Layouts (names pair up by a key; every HR needs an LR partner and vice versa):
    - "folders": `root/hr/KEY.ext` with `root/lr/KEY.ext`, `KEYx{s}.ext` or `KEY_x{s}.ext` (the DIV2K /
      BasicSR convention `0801x4.png`); HR/LR folder names are case-insensitive.
    - "realsr": RealSR v3, one folder holding `KEY_HR.png` and `KEY_LR{s}.png` (e.g.
      `RealSR(V3)/Canon/Test/4`). Version 3 stores LR at LR resolution (v1/v2 stored registered LR
      at HR size and do not fit this class).
    - "drealsr": DRealSR, `root/test_HR/KEY_x1.png` with `root/test_LR/KEY_x{s}.png` (also `train_*`, any
      `*_HR` / `*_LR` pair of sub-folders). Our reading of the public release; HR files without the
      `_x1` suffix are accepted as they are.

    Sizes: HR is cropped at the bottom/right to a multiple of `scale` (BasicSR's mod-crop) and LR must
    then be exactly HR / scale; the first pair that is not raises DataError naming the LR file.
    crop: optional HR patch size (a multiple of `scale`) for training, taken at the same place in both,
    with the 8 flips/rotations if `augment`; seeded per item like HRPatchDataset.
    """

    def __init__(
        self,
        root: PathLike,
        scale: int,
        layout: str = "folders",
        crop: int | None = None,
        *,
        seed: int = 0,
        augment: bool = False,
    ):
        from savl.io import image_files

        root = Path(root)
        if layout not in _LAYOUTS:
            raise ConfigError(f"unknown layout {layout!r}; use one of {', '.join(_LAYOUTS)}")
        if not isinstance(scale, int) or scale < 1:
            raise ConfigError(f"scale must be a positive integer, got {scale!r}")
        if crop is not None and (crop < scale or crop % scale):
            raise ConfigError(f"crop {crop} must be a positive multiple of the scale {scale}")
        if not root.is_dir():
            raise DataError(f"{root}: no such folder")
        self.root, self.scale, self.layout, self.crop = root, scale, layout, crop
        self.seed, self.augment, self.epoch = int(seed), augment, 0

        if layout == "folders":
            hr_dir = _subdir(root, ["hr", "HR"], r"hr")
            lr_dir = _subdir(root, ["lr", "LR"], r"lr")
            hr_files, lr_files = image_files(hr_dir), image_files(lr_dir)
            hr_suf, lr_suf = [""], [f"_x{scale}", f"x{scale}", ""]
        elif layout == "realsr":
            hr_files = lr_files = image_files(root)
            hr_suf, lr_suf = ["_HR"], [f"_LR{scale}"]
        else:
            hr_dir = _subdir(root, ["test_HR", "train_HR"], r".*_?HR")
            lr_dir = _subdir(root, ["test_LR", "train_LR"], r".*_?LR")
            hr_files, lr_files = image_files(hr_dir), image_files(lr_dir)
            hr_suf, lr_suf = ["_x1", ""], [f"_x{scale}"]
        hr_map = _keyed(hr_files, hr_suf, "HR")
        # LR suffixes are tried longest first, but a key that is itself an HR key wins (e.g. "0801")
        lr_map: dict[str, Path] = {}
        for f in lr_files:
            keys = [k for k in (_strip(f.stem, [s]) for s in lr_suf) if k is not None]
            if not keys:
                continue
            key = next((k for k in keys if k in hr_map), keys[0])
            if key in lr_map:
                raise DataError(f"{f}: two LR files share the name {key!r} ({lr_map[key].name})")
            lr_map[key] = f
        for key, f in sorted(lr_map.items()):
            if key not in hr_map:
                raise DataError(f"{f}: LR file has no HR partner (key {key!r})")
        for key, f in sorted(hr_map.items()):
            if key not in lr_map:
                raise DataError(f"{f}: HR file has no LR partner at x{scale} (key {key!r})")
        if not hr_map:
            raise DataError(f"{root}: no LR/HR pairs found for layout {layout!r} at x{scale}")

        self.pairs: list[tuple[str, Path, Path]] = []
        self.hr_sizes: list[tuple[int, int]] = []
        for key in sorted(hr_map):
            hr_f, lr_f = hr_map[key], lr_map[key]
            hh, hw = _image_size(hr_f)
            lh, lw = _image_size(lr_f)
            ch, cw = hh - hh % scale, hw - hw % scale
            if (lh, lw) != (ch // scale, cw // scale):
                raise DataError(
                    f"{lr_f}: LR is {lw}x{lh} but HR {hr_f.name} is {hw}x{hh}; at x{scale} expected "
                    f"{cw // scale}x{ch // scale}"
                )
            if crop is not None and (ch < crop or cw < crop):
                raise DataError(f"{hr_f}: {hw}x{hh} is smaller than the {crop}x{crop} crop")
            self.pairs.append((key, lr_f, hr_f))
            self.hr_sizes.append((ch, cw))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        from savl.io import read_image

        key, lr_f, hr_f = self.pairs[index]
        ch, cw = self.hr_sizes[index]
        lr, hr = read_image(lr_f), read_image(hr_f)[:, :ch, :cw]
        if self.crop is not None:
            rng = _rng(self.seed, self.epoch, index)
            s, pl = self.scale, self.crop // self.scale
            top = int(rng.integers(0, lr.shape[-2] - pl + 1))
            left = int(rng.integers(0, lr.shape[-1] - pl + 1))
            lr = lr[:, top : top + pl, left : left + pl]
            hr = hr[:, top * s : (top + pl) * s, left * s : (left + pl) * s]
            if self.augment:
                k, flip = int(rng.integers(4)), bool(rng.integers(2))
                lr, hr = _dihedral(lr, k, flip), _dihedral(hr, k, flip)
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": key}


class LRFolderDataset(Dataset):
    """LR images without ground truth (RealSRSet): {"lr": (3, H, W), "name": file stem}."""

    def __init__(self, root: PathLike):
        from savl.io import image_files

        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: no such folder")
        self.root = root
        self.files = image_files(root)
        if not self.files:
            raise DataError(f"{root}: no image files in this folder")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        from savl.io import read_image

        f = self.files[index]
        return {"lr": read_image(f), "name": f.stem}


# ------------------------------------------------------------------------------- frozen validation sets
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MANIFEST = "manifest.json"


def _item_seed(seed: int, index: int) -> int:
    """A per-image seed, so one image's draw does not depend on the others (or on their number)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _hash_tree(root: Path) -> dict[str, str]:
    from savl.data.download import sha256_file

    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != _MANIFEST
    }


def _combined(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\t{files[rel]}\n".encode())
    return h.hexdigest()


def _json_atomic(path: Path, obj) -> None:
    from savl.io import write_group

    write_group({path: (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()})


class FrozenValidationSet(Dataset):
    """A synthetic LR/HR validation set drawn once from a seed and stored, so every evaluation
    of it scores the same LR images.

    `build` quantises each HR image to 8 bits, degrades it with its own generator (seeded from `seed`
    and the image index), and writes `hr/NAME.png`, `lr/NAME.png` (8-bit, the precision metrics use),
    `params.json` (the parameter record of every image) and `manifest.json` (sha256 of every file and
    one combined hash). `load` verifies every hash and never re-samples: a changed, missing or extra
    file raises DataError naming it. Items are {"lr", "hr", "name"}; `params[i]` is image i's record.
    """

    def __init__(self, path: Path, names, hr, lr, params, meta, content_hash):
        self.path, self.names, self.hr, self.lr = path, names, hr, lr
        self.params, self.meta, self.hash = params, meta, content_hash

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        return {"lr": self.lr[index], "hr": self.hr[index], "name": self.names[index]}

    @classmethod
    def build(cls, images, degradation, seed: int, path: PathLike, *, overwrite: bool = False):
        """Draw, store and return the set. `degradation`: an object `(hr, generator) -> (lr, params)`
        or a protocol name for `savl.degrade.protocols.get_protocol`. `images`: as for HRPatchDataset."""
        from savl.io import write_image

        path = Path(path)
        if path.exists() and not overwrite:
            raise DataError(f"{path}: a frozen set already exists here; load it, or pass overwrite=True")
        if isinstance(degradation, str):
            from savl.degrade.protocols import get_protocol

            degradation = get_protocol(degradation)
        name = getattr(degradation, "name", type(degradation).__name__)
        items = _named_images(images)
        names = [n for n, _ in items]
        for n in names:
            if not _SAFE_NAME.fullmatch(n):
                raise DataError(f"image name {n!r}: use letters, digits, '.', '_' or '-' only")
        if len(set(names)) != len(names):
            raise DataError("image names must be unique within a frozen set")

        if path.is_dir() and any(path.iterdir()) and not (path / _MANIFEST).is_file():
            raise DataError(f"{path}: a folder that is not a frozen set is there; it is never replaced")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not mkdtemp: its 0700 would make the finished set private; mkdir gives 0777 less the umask.
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.build"
        tmp.mkdir()
        try:
            (tmp / "hr").mkdir()
            (tmp / "lr").mkdir()
            records = []
            for i, (n, img) in enumerate(items):
                hr = (_read(img).cpu().clamp(0, 1) * 255).round() / 255  # what the PNG will hold
                g = torch.Generator().manual_seed(_item_seed(seed, i))
                lr, params = degradation(hr.unsqueeze(0), g)
                write_image(tmp / "hr" / f"{n}.png", hr, bit_depth=8)
                write_image(tmp / "lr" / f"{n}.png", lr[0].detach().cpu().clamp(0, 1), bit_depth=8)
                records.append(
                    {
                        "name": n,
                        "index": i,
                        "hr_size": list(hr.shape[-2:]),
                        "lr_size": list(lr.shape[-2:]),
                        "params": params,
                    }
                )
            _json_atomic(tmp / "params.json", {"degradation": name, "seed": int(seed), "images": records})
            files = _hash_tree(tmp)
            _json_atomic(tmp / _MANIFEST, {"files": files, "sha256": _combined(files)})
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls.load(path)

    @classmethod
    def load(cls, path: PathLike):
        """Read a stored set after checking every file against its manifest."""
        from savl.io import read_image

        path = Path(path)
        manifest_path = path / _MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{manifest_path}: no manifest; not a frozen validation set")
        try:
            manifest = json.loads(manifest_path.read_text())
            expected: dict[str, str] = manifest["files"]
            combined = manifest["sha256"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{manifest_path}: unreadable manifest") from None
        actual = _hash_tree(path)
        for rel in sorted(set(expected) | set(actual)):
            if rel not in actual:
                raise DataError(f"{path / rel}: missing from the frozen set")
            if rel not in expected:
                raise DataError(f"{path / rel}: unexpected file in the frozen set")
            if actual[rel] != expected[rel]:
                raise DataError(f"{path / rel}: changed since the set was built (sha256 {actual[rel]})")
        if _combined(actual) != combined:
            raise DataError(f"{manifest_path}: combined hash does not match the listed files")
        meta = json.loads((path / "params.json").read_text())
        records = meta["images"]
        names = [r["name"] for r in records]
        hr = [read_image(path / "hr" / f"{n}.png") for n in names]
        lr = [read_image(path / "lr" / f"{n}.png") for n in names]
        params = [r["params"] for r in records]
        info = {"degradation": meta["degradation"], "seed": meta["seed"]}
        return cls(path, names, hr, lr, params, info, combined)

    @classmethod
    def load_or_build(cls, images, degradation, seed: int, path: PathLike):
        """Load the set at `path` if one is there (checking it was drawn with this seed), else build it."""
        path = Path(path)
        if (path / _MANIFEST).is_file():
            out = cls.load(path)
            if out.meta["seed"] != int(seed):
                raise DataError(f"{path}: stored set was drawn with seed {out.meta['seed']}, not {seed}")
            return out
        return cls.build(images, degradation, seed, path)
