"""Resolve `savl eval --data` to a dataset: a local folder (frozen validation set, `lr/` + `hr/`, the RealSR
or DRealSR layout, or LR images only) or a catalogued dataset name, with a version tag for the result."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from savl.errors import DataError

__all__ = ["open_eval_data"]


def _fingerprint(files: Iterable[Path], root: Path) -> str:
    """A short version tag for a folder: sha256 of the relative names and sizes of its image files."""
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}\n".encode())
    return "files-" + h.hexdigest()[:12]


class _Concat:
    """Several datasets read as one (e.g. RealSR's Canon and Nikon test folders)."""

    def __init__(self, parts: list):
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i: int) -> dict:
        for p in self.parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise IndexError(i)


def _paired_layout(folder: Path) -> str | None:
    import re

    subdirs = [p.name for p in folder.iterdir() if p.is_dir()]
    lower = {s.lower() for s in subdirs}
    if "hr" in lower and "lr" in lower:
        return "folders"
    if any(re.fullmatch(r".*_?HR", s, re.I) for s in subdirs) and any(
        re.fullmatch(r".*_?LR", s, re.I) for s in subdirs
    ):
        return "drealsr"
    if any(p.stem.endswith("_HR") for p in folder.iterdir() if p.is_file()):
        return "realsr"
    return None


def _open_folder(folder: Path, scale: int):
    """(dataset, kind, version) for a local folder: frozen set, paired layouts, or LR images only."""
    from savl.data import FrozenValidationSet, LRFolderDataset, PairedFolderDataset
    from savl.io import image_files

    if (folder / "manifest.json").is_file():
        fs = FrozenValidationSet.load(folder)
        return fs, "frozen", "sha256-" + fs.hash[:12]
    layout = _paired_layout(folder)
    if layout is not None:
        ds = PairedFolderDataset(folder, scale, layout=layout)
        files = [p for _, lr, hr in ds.pairs for p in (lr, hr)]
        return ds, f"paired ({layout})", _fingerprint(files, folder)
    files = image_files(folder)
    if files:
        return LRFolderDataset(folder), "lr-only", _fingerprint(files, folder)
    raise DataError(f"{folder}: no images, no lr/ and hr/ folders, no frozen-set manifest")


def _open_catalog(name: str, scale: int, root: str | os.PathLike | None):
    from savl.data import LRFolderDataset, PairedFolderDataset, data_root, load_catalog
    from savl.io import image_files

    entry = load_catalog()[name]
    folder = data_root(root) / name
    if not folder.is_dir():
        raise DataError(f"{folder}: {name} is not downloaded (see `savl data download {name}`)")
    if entry.layout == "paired":
        checks = [pc for pc in entry.pairs if pc.scale == scale]
        if not checks:
            raise DataError(f"{name}: the catalog lists no x{scale} test folders")
        parts, files = [], []
        for pc in checks:
            hits = sorted(q for q in folder.glob(pc.path) if q.is_dir())
            if len(hits) != 1:
                raise DataError(f"{folder / pc.path}: {len(hits)} matching folders, expected 1")
            ds = PairedFolderDataset(hits[0], scale, layout=pc.layout)
            parts.append(ds)
            files += [p for _, lr, hr in ds.pairs for p in (lr, hr)]
        return (parts[0] if len(parts) == 1 else _Concat(parts)), "paired", _fingerprint(files, folder)
    if entry.layout == "lr":
        dirs = []
        for c in entry.counts:
            for hit in sorted(q for q in folder.glob(c.path) if q.is_dir()):
                tree = [hit, *sorted(q for q in hit.rglob("*") if q.is_dir())] if c.recursive else [hit]
                dirs += [d for d in tree if image_files(d)]
        if not dirs:
            raise DataError(f"{folder}: no image folders found for {name}")
        parts = [LRFolderDataset(d) for d in dirs]
        files = [f for p in parts for f in p.files]
        return (parts[0] if len(parts) == 1 else _Concat(parts)), "lr-only", _fingerprint(files, folder)
    raise DataError(
        f"{name}: an HR-only dataset; build a frozen validation set from it (savl.data.FrozenValidationSet.build) "
        "and pass that folder to --data"
    )


def open_eval_data(data: str, scale: int = 4, root: str | os.PathLike | None = None):
    """Resolve `--data`: a folder (frozen set, `lr/`+`hr/`, RealSR or DRealSR layout, or LR images only) or a
    catalogued dataset name. Returns (dataset, name, version, kind)."""
    from savl.data import list_datasets

    path = Path(data)
    if path.is_dir():
        ds, kind, version = _open_folder(path, scale)
        return ds, path.resolve().name, version, kind
    if data in list_datasets():
        ds, kind, version = _open_catalog(data, scale, root)
        return ds, data, version, kind
    raise DataError(f"{data}: neither a folder nor a catalogued dataset (see `savl data list`)")
