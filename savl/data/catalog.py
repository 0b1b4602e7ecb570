"""The public-dataset catalog: a strict YAML registry of the datasets SAVL trains and evaluates on, their
download and a check of their layout.

`catalog.yaml` ships inside the package (`savl/data/catalog.yaml`, read with importlib.resources, so
`savl data list` works from an installed wheel; the repository's `data/catalog.yaml` is a link to it).
Downloads land in `$SAVL_DATA_DIR`, else `data/downloads/` (git-ignored) in a source checkout, else
`~/.cache/savl/data` (or `$XDG_CACHE_HOME/savl/data`) for an installed package; one folder per dataset.
Hashes and sizes are recorded only where known: a null hash is never made up, and verification then relies
on counts and layout checks.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from savl.errors import ConfigError, DataError

CATALOG_PATH = Path(str(resources.files("savl.data").joinpath("catalog.yaml")))
# A source checkout keeps downloads beside the repository's data/ folder; an installed package has none.
_CHECKOUT_DATA = Path(__file__).resolve().parents[2] / "data"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One downloadable file, saved as `<dataset folder>/<name>`."""

    name: str
    url: str | None = None
    size: int | None = Field(default=None, ge=0)
    sha256: str | None = None
    extract: bool = True
    note: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be 64 lower-case hex digits or null")
        return v

    @field_validator("name")
    @classmethod
    def _plain(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.startswith("."):
            raise ValueError("must be a plain file name")
        return v


class CountCheck(_Strict):
    """`count` image files under the folder(s) matching `path` (a glob, relative to the dataset)."""

    path: str
    count: int = Field(ge=0)
    recursive: bool = False


class PairCheck(_Strict):
    """A folder (glob, exactly one match) that must load as `PairedFolderDataset(layout, scale)`."""

    path: str
    layout: Literal["folders", "realsr", "drealsr"]
    scale: int = Field(ge=1)
    count: int | None = Field(default=None, ge=0)


class DatasetEntry(_Strict):
    """A catalogued dataset: what it holds, its terms, its files and the checks of a correct folder."""

    name: str
    description: str
    licence: str
    homepage: str | None = None
    citation: str | None = None
    layout: Literal["hr", "lr", "paired", "other"]
    scale: list[int] | None = None
    files: list[FileEntry] = []
    counts: list[CountCheck] = []
    pairs: list[PairCheck] = []
    note: str | None = None


class _Catalog(_Strict):
    version: Literal[1]
    datasets: dict[str, dict]


def _one_line(path: Path, err: ValidationError, prefix: str = "") -> ConfigError:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
    if e["type"] == "extra_forbidden":
        return ConfigError(f"{path}: unknown key {loc!r}")
    if e["type"] == "missing":
        return ConfigError(f"{path}: missing key {loc!r}")
    return ConfigError(f"{path}: {loc}: {e['msg']}")


def load_catalog(path: str | os.PathLike | None = None) -> dict[str, DatasetEntry]:
    """Read and validate the catalog; unknown or missing keys raise a one-line ConfigError."""
    path = Path(path) if path is not None else CATALOG_PATH
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: dataset catalog not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'version' and 'datasets'")
    try:
        top = _Catalog.model_validate(raw)
    except ValidationError as e:
        raise _one_line(path, e) from None
    out: dict[str, DatasetEntry] = {}
    for name, body in top.datasets.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: datasets.{name}: expected a mapping")
        try:
            out[name] = DatasetEntry.model_validate({"name": name, **body})
        except ValidationError as e:
            raise _one_line(path, e, f"datasets.{name}") from None
    return out


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: `root`, else `$SAVL_DATA_DIR`, else `data/downloads/` in a source checkout, else
    `$XDG_CACHE_HOME/savl/data` (default `~/.cache/savl/data`)."""
    if root is not None:
        return Path(root)
    env = os.environ.get("SAVL_DATA_DIR")
    if env:
        return Path(env)
    if (_CHECKOUT_DATA / "catalog.yaml").exists():
        return _CHECKOUT_DATA / "downloads"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "savl" / "data"


def _entry(name: str, catalog: dict[str, DatasetEntry] | None) -> DatasetEntry:
    catalog = load_catalog() if catalog is None else catalog
    if name not in catalog:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(catalog)}")
    return catalog[name]


def list_datasets() -> list[str]:
    """Catalogued dataset names, in catalog order (`savl data list`)."""
    return list(load_catalog())


def _count_images(folder: Path, recursive: bool) -> int:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sum(1 for p in it if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def verify(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    catalog: dict[str, DatasetEntry] | None = None,
    hashes: bool = True,
) -> dict:
    """Check a dataset folder: archive sizes/hashes where known, image counts, LR/HR pairing and sizes.

    Returns {"name", "root", "ok", "files", "counts", "pairs", "problems"}; `ok` is true when the folder
    exists, at least one check applies, and every check passes. Archives that were deleted after
    extraction are reported but are not a problem.
    """
    entry = _entry(name, catalog)
    folder = data_root(root) / name
    report: dict = {"name": name, "root": str(folder), "files": [], "counts": [], "pairs": [], "problems": []}
    problems = report["problems"]
    if not folder.is_dir():
        problems.append(f"{folder}: not downloaded")
    else:
        for f in entry.files:
            p = folder / f.name
            row = {"name": f.name, "present": p.is_file(), "size_ok": None, "sha256_ok": None}
            if row["present"]:
                if f.size is not None:
                    row["size_ok"] = p.stat().st_size == f.size
                    if not row["size_ok"]:
                        problems.append(f"{p}: size {p.stat().st_size}, expected {f.size}")
                if f.sha256 is not None and hashes:
                    from savl.data.download import sha256_file

                    row["sha256_ok"] = sha256_file(p) == f.sha256
                    if not row["sha256_ok"]:
                        problems.append(f"{p}: sha256 does not match the catalog")
            report["files"].append(row)
        for c in entry.counts:
            hits = sorted(q for q in folder.glob(c.path) if q.is_dir())
            found = sum(_count_images(q, c.recursive) for q in hits)
            ok = found == c.count
            report["counts"].append({"path": c.path, "expected": c.count, "found": found, "ok": ok})
            if not ok:
                problems.append(f"{folder / c.path}: {found} images, expected {c.count}")
        for pc in entry.pairs:
            row = {"path": pc.path, "layout": pc.layout, "scale": pc.scale, "pairs": 0, "ok": False}
            hits = sorted(q for q in folder.glob(pc.path) if q.is_dir())
            if len(hits) != 1:
                problems.append(f"{folder / pc.path}: {len(hits)} matching folders, expected 1")
            else:
                from savl.data.datasets import PairedFolderDataset

                try:
                    ds = PairedFolderDataset(hits[0], pc.scale, layout=pc.layout)
                except DataError as e:
                    problems.append(str(e))
                else:
                    row["pairs"] = len(ds)
                    row["ok"] = pc.count is None or len(ds) == pc.count
                    if not row["ok"]:
                        problems.append(f"{hits[0]}: {len(ds)} pairs, expected {pc.count}")
            report["pairs"].append(row)
        if not entry.counts and not entry.pairs and not any(f.sha256 for f in entry.files):
            problems.append(f"{name}: the catalog lists nothing to verify for this dataset")
    report["ok"] = not problems
    return report


def download_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    catalog: dict[str, DatasetEntry] | None = None,
    **fetch_options,
) -> Path:
    """Fetch (resumably, checksummed where known) and safely extract every file of a dataset into
    `<root>/<name>/`; returns that folder. `fetch_options` go to `fetch` (retries, timeout, backoff).

    Raises DataError when a file has no known URL (the message says where to get it by hand) or the
    server cannot be reached. Extraction is recorded by a marker file so a rerun skips it.
    """
    from savl.data.download import extract, fetch

    entry = _entry(name, catalog)
    if not entry.files:
        raise DataError(f"{name}: no download is known; {entry.note or 'see ' + str(entry.homepage)}")
    missing = [f.name for f in entry.files if f.url is None]
    if missing:
        hint = next((f.note for f in entry.files if f.url is None and f.note), None) or entry.note
        raise DataError(f"{name}: no known URL for {', '.join(missing)}; {hint or 'get it by hand'}")
    folder = data_root(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for f in entry.files:
        opts = {"progress": _progress(f.name), **fetch_options}
        archive = fetch(f.url, folder / f.name, sha256=f.sha256, **opts)
        marker = folder / f".{f.name}.extracted"
        stamp = f"{archive.stat().st_size}\n"
        if f.extract and not (marker.is_file() and marker.read_text() == stamp):
            extract(archive, folder)
            marker.write_text(stamp)
    return folder


def verify_dataset(name: str, root: str | os.PathLike | None = None) -> dict:
    """`savl data verify NAME`: the report of `verify`."""
    return verify(name, root)


def _progress(label: str):
    """A tqdm progress callback for fetch (to stderr; silent when tqdm is missing)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    bar = None

    def update(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=0, unit="B", unit_scale=True, desc=label, leave=False)
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return update
