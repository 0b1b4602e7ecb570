"""Evaluation with an explicit protocol (DESIGN §5.1, §5.4): tiled x4 inference, per-image PSNR / SSIM /
LPIPS, means, JSON with provenance, and tables laid out like the paper's Table 2.

Every number this module reports travels with `EvalProtocol.describe()`, so a table always says how it
was measured. LPIPS from a randomly initialised trunk (`LPIPS(pretrained=False)`, for tests) is reported
under the key "lpips_random_trunk" and the column "lpips_random_trunk (not LPIPS)", never as LPIPS.
Images whose PSNR is infinite (a perfect output) make the mean infinite too; JSON stores it as "inf".
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from savl.errors import ConfigError, DataError
from savl.provenance import atomic_write_text, cpu_model, git_commit, git_dirty

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported inside the functions that use it: `savl --help` builds this module's parser and should
# not pay for importing torch.

__all__ = [
    "BicubicUpsampler",  # noqa: F822 - provided by the module __getattr__ (built on first use)
    "EvalProtocol",
    "EvalResult",
    "add_eval_parser",
    "cmd_eval",
    "evaluate",
    "format_table",
    "open_eval_data",
    "provenance",
]

_LPIPS_NETS = ("alex", "vgg", "squeeze")
# Column labels and the direction of "better", as in the paper's tables.
_LABELS = {"psnr": "PSNR↑", "ssim": "SSIM↑", "lpips": "LPIPS↓", "lpips_random_trunk": "lpips_random_trunk (not LPIPS)"}
_HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "lpips_random_trunk": False}
_DIGITS = {"psnr": 2, "ssim": 4, "lpips": 4, "lpips_random_trunk": 4}


# ------------------------------------------------------------------------------------------- protocol
@dataclass
class EvalProtocol:
    """How numbers are measured (DESIGN §5.1, §5.4). `crop_border=None` means the scale (BasicSR).

    tile / overlap: LR tile side and overlap for `savl.infer.upscale` (None = whole image at once).
    lpips_net: the LPIPS backbone ("alex", "vgg", "squeeze") or None for no LPIPS.
    dataset / dataset_version: what was scored (a name and a version or content hash).
    """

    scale: int = 4
    crop_border: int | None = None
    y_channel: bool = True
    rounding: str = "8-bit"
    tile: int | None = 256
    overlap: int = 16
    lpips_net: str | None = "alex"
    dataset: str = ""
    dataset_version: str = ""

    def __post_init__(self):
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ConfigError(f"scale must be a positive integer, got {self.scale!r}")
        if self.crop_border is None:
            self.crop_border = self.scale
        if not isinstance(self.crop_border, int) or self.crop_border < 0:
            raise ConfigError(f"crop_border must be a non-negative integer, got {self.crop_border!r}")
        if self.rounding != "8-bit":
            raise ConfigError(f"rounding {self.rounding!r} is not supported; metrics use 8-bit rounding (BasicSR)")
        if self.tile is not None and (not isinstance(self.tile, int) or self.tile < 1):
            raise ConfigError(f"tile must be a positive integer or None, got {self.tile!r}")
        if not isinstance(self.overlap, int) or self.overlap < 0:
            raise ConfigError(f"overlap must be a non-negative integer, got {self.overlap!r}")
        if self.tile is not None and 2 * self.overlap >= self.tile:
            raise ConfigError(f"overlap {self.overlap} must be less than half the tile {self.tile}")
        if self.lpips_net is not None and self.lpips_net not in _LPIPS_NETS:
            raise ConfigError(f"lpips_net must be one of {', '.join(_LPIPS_NETS)} or None, got {self.lpips_net!r}")

    def describe(self, with_dataset: bool = True) -> str:
        """One line stating the protocol; printed under every table."""
        space = "Y (BT.601)" if self.y_channel else "RGB"
        tiles = "whole image" if self.tile is None else f"{self.tile}px LR tiles, overlap {self.overlap}"
        lp = f"LPIPS v0.1 {self.lpips_net} on RGB, no crop" if self.lpips_net else "no LPIPS"
        text = (
            f"x{self.scale}; PSNR/SSIM on {space}, {self.rounding} rounding, {self.crop_border}px border crop "
            f"(BasicSR); {lp}; {tiles}"
        )
        if with_dataset and self.dataset:
            version = f" ({self.dataset_version})" if self.dataset_version else ""
            text += f"; data {self.dataset}{version}"
        return text

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- result
def _json_number(v):
    """JSON has no inf/nan: a perfect image's PSNR is written as the string "inf"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return v


@dataclass
class EvalResult:
    """Per-image rows ({"name", metric: value, "output": path?}), their means and the protocol."""

    protocol: EvalProtocol
    per_image: list[dict] = field(default_factory=list)
    means: dict[str, float] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    lpips_model: str | None = None
    seconds: float = 0.0

    @property
    def has_metrics(self) -> bool:
        return bool(self.metrics)

    @property
    def names(self) -> list[str]:
        return [row["name"] for row in self.per_image]

    def summary(self) -> str:
        """One line of means (or the number of saved outputs for an LR-only set)."""
        ds = self.protocol.dataset or "dataset"
        if not self.has_metrics:
            return f"{ds}: {len(self.per_image)} images super-resolved (no ground truth, no metrics)"
        parts = [f"{_LABELS[m]} {self.means[m]:.{_DIGITS[m]}f}" for m in self.metrics]
        return f"{ds}: " + ", ".join(parts) + f" over {len(self.per_image)} images"

    def to_dict(self, provenance: Mapping | None = None) -> dict:
        return {
            "protocol": self.protocol.to_dict(),
            "protocol_description": self.protocol.describe(),
            "metrics": list(self.metrics),
            "lpips_model": self.lpips_model,
            "means": {k: _json_number(float(v)) for k, v in self.means.items()},
            "per_image": [{k: _json_number(v) for k, v in row.items()} for row in self.per_image],
            "seconds": round(self.seconds, 3),
            "provenance": dict(provenance) if provenance is not None else provenance_defaults(self.protocol),
        }

    def to_json(self, path: str | os.PathLike, provenance: Mapping | None = None) -> Path:
        """Write the result atomically. `provenance` (from `provenance(...)`) is completed with the defaults
        for any missing key: command line, git commit, hardware, torch version, checkpoint sha256, protocol."""
        full = provenance_defaults(self.protocol)
        full.update(provenance or {})
        full["protocol"] = self.protocol.to_dict()
        path = Path(path)
        _write_text_atomic(path, json.dumps(self.to_dict(full), indent=2) + "\n")
        return path


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


# ----------------------------------------------------------------------------------------- provenance
def _git_commit() -> tuple[str, bool | None]:
    """(commit, dirty) of the checkout holding this package; ("unknown", None) outside git."""
    where = Path(__file__).resolve().parent
    commit = git_commit(where)
    dirty = git_dirty(where) if commit != "unknown" else None
    if dirty is None:
        return "unknown", None
    return commit, dirty


def _cpu_model() -> str:
    cpu = cpu_model()
    if cpu != "unknown":
        return cpu
    return platform.processor() or platform.machine() or "unknown"


def hardware(device: str | torch.device | None = None) -> dict:
    """CPU model and count, and the GPU's name when the device is CUDA."""
    import torch

    info = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
    elif dev is not None and dev.type == "mps":
        info["gpu"] = "Apple MPS"
    else:
        info["gpu"] = None
    return info


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    command: Sequence[str] | None = None,
    **extra,
) -> dict:
    """What a result needs to be trusted later: command line, git commit, hardware, torch version,
    checkpoint sha256 ("none" without a checkpoint file), savl version and time (UTC)."""
    import torch

    from savl import __version__

    commit, dirty = _git_commit()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    return {
        "command": " ".join(command if command is not None else sys.argv),
        "git_commit": commit,
        "git_dirty": dirty,
        "hardware": hardware(device),
        "device": str(device) if device is not None else None,
        "torch_version": torch.__version__,
        "savl_version": __version__,
        "checkpoint": str(ckpt) if ckpt is not None else None,
        "checkpoint_sha256": _sha256(ckpt) if ckpt is not None and ckpt.is_file() else "none",
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def provenance_defaults(protocol: EvalProtocol) -> dict:
    out = provenance()
    out["protocol"] = protocol.to_dict()
    return out


# ------------------------------------------------------------------------------------------- baseline
def _bicubic_class() -> type:
    import torch
    from torch import nn

    from savl.imresize import imresize

    class BicubicUpsampler(nn.Module):
        """The "Bicubic" row of SR tables: MATLAB-compatible bicubic upscaling (`savl.imresize`, §5.4)."""

        architecture = "bicubic"

        def __init__(self, scale: int = 4):
            super().__init__()
            self.scale = int(scale)
            # a buffer so that `.to(device)` and device lookups work on a model without weights
            self.register_buffer("_anchor", torch.zeros(1), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return imresize(x, scale=self.scale)

    BicubicUpsampler.__module__, BicubicUpsampler.__qualname__ = __name__, "BicubicUpsampler"
    return BicubicUpsampler


def __getattr__(name: str):
    # `BicubicUpsampler` is an nn.Module, built on first use so that importing this module stays torch-free.
    if name == "BicubicUpsampler":
        cls = globals()[name] = _bicubic_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------------- evaluate
def _items(dataset) -> Iterable[dict]:
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, dict) or "lr" not in item:
            raise DataError(f"dataset item {i}: expected a dict with 'lr' (and 'hr', 'name')")
        yield item


def _safe_stem(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
    return keep.strip(".") or "image"


def evaluate(
    model: nn.Module,
    dataset,
    protocol: EvalProtocol | None = None,
    *,
    device: str | torch.device = "cpu",
    save_dir: str | os.PathLike | None = None,
    lpips=None,
    progress: bool = False,
) -> EvalResult:
    """Super-resolve every item of `dataset` with tiled inference and score it (DESIGN §5.1, §5.4).

    dataset: items {"lr", "name"} with "hr" for paired sets (`PairedFolderDataset`, `FrozenValidationSet`,
    `LRFolderDataset`, or any indexable of such dicts). Items without "hr" are only super-resolved (and
    saved); a set without any "hr" reports no metrics and needs `save_dir`.
    lpips: an `savl.metrics.LPIPS` to use (e.g. a random-trunk one in tests, reported as
    "lpips_random_trunk"); by default one is built for `protocol.lpips_net` when the set has ground truth,
    which raises ModelFileError offline when the trunk is not cached.
    save_dir: where to write each output as `NAME.png` (8-bit, the precision that is scored).
    """
    import torch

    from savl.infer import model_scale, upscale
    from savl.io import write_image
    from savl.metrics import LPIPS, psnr, ssim

    protocol = protocol or EvalProtocol()
    device = torch.device(device)
    try:
        declared = model_scale(model)
    except ValueError:
        declared = None
    if declared is not None and declared != protocol.scale:
        raise ConfigError(f"the model upscales x{declared} but the protocol says x{protocol.scale}")
    label = protocol.dataset or "dataset"
    if len(dataset) == 0:
        raise DataError(f"{label}: no images to evaluate")
    model = model.to(device).eval()
    out_dir = Path(save_dir) if save_dir is not None else None
    paired: bool | None = None  # decided by the first item
    rows: list[dict] = []
    seen: set[str] = set()
    start = time.perf_counter()
    items = _items(dataset)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(dataset), desc=label, unit="img", file=sys.stderr, disable=None)
    for i, item in enumerate(items):
        name = str(item.get("name", f"{i:04d}"))
        row: dict = {"name": name}
        if paired is None:
            paired = "hr" in item
            if not paired and out_dir is None:
                raise ConfigError(f"{label}: LR-only (no ground truth); give save_dir for the outputs")
            if paired and lpips is None and protocol.lpips_net is not None:
                lpips = LPIPS(protocol.lpips_net, device=device)
            if lpips is not None:
                lpips.to(device)
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
        elif ("hr" in item) != paired:
            raise DataError(f"{name}: some items have ground truth and others not; evaluate them separately")
        sr = upscale(
            model, item["lr"], tile=protocol.tile, overlap=protocol.overlap, device=device, scale=protocol.scale
        )
        if paired:
            hr = item["hr"][:3]
            if tuple(sr.shape[-2:]) != tuple(hr.shape[-2:]):
                raise DataError(
                    f"{name}: output is {sr.shape[-1]}x{sr.shape[-2]} but HR is {hr.shape[-1]}x{hr.shape[-2]} "
                    f"(LR x{protocol.scale} must equal HR)"
                )
            a, b = sr[None].to(device), hr[None].to(device)
            row["psnr"] = float(psnr(a, b, protocol.crop_border, protocol.y_channel)[0])
            row["ssim"] = float(ssim(a, b, protocol.crop_border, protocol.y_channel)[0])
            if lpips is not None:
                row[lpips.metric_name] = float(lpips(a, b)[0])
        if out_dir is not None:
            stem = _safe_stem(name)
            if stem in seen:
                stem = f"{stem}_{i:04d}"
            seen.add(stem)
            path = out_dir / f"{stem}.png"
            write_image(path, sr, bit_depth=8)
            row["output"] = str(path)
        rows.append(row)
    metrics: tuple[str, ...] = ("psnr", "ssim") + ((lpips.metric_name,) if lpips is not None else ())
    means = {m: sum(r[m] for r in rows) / len(rows) for m in metrics} if paired else {}
    return EvalResult(
        protocol=protocol,
        per_image=rows,
        means=means,
        metrics=metrics if paired else (),
        lpips_model=lpips.describe() if lpips is not None and paired else None,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------- table
def _cell(metric: str, value: float | None, best: bool) -> str:
    if value is None:
        return "–"
    text = f"{value:.{_DIGITS[metric]}f}" if math.isfinite(value) else "inf"
    return f"**{text}**" if best else text


def format_table(results: Mapping[str, EvalResult | Sequence[EvalResult]]) -> str:
    """A markdown table laid out like Table 2: one row per method, columns dataset x (PSNR, SSIM, LPIPS).

    `results` maps a method name to its result(s), one per dataset (datasets are told apart by
    `protocol.dataset`). The best value of each column is bold when there are several methods. Under the
    table: the protocol line(s) and the LPIPS backbone. LR-only results have no column (no metrics).
    """
    per_method: dict[str, dict[str, EvalResult]] = {}
    columns: dict[str, list[str]] = {}  # dataset -> metrics, in order of appearance
    protocols: dict[str, None] = {}
    lpips_models: dict[str, None] = {}
    no_gt: dict[str, None] = {}
    for method, res in results.items():
        group = [res] if isinstance(res, EvalResult) else list(res)
        per_method[method] = {}
        for r in group:
            ds = r.protocol.dataset or "dataset"
            protocols[r.protocol.describe(with_dataset=False)] = None
            if not r.has_metrics:
                no_gt[ds] = None
                continue
            if ds in per_method[method]:
                raise ConfigError(f"method {method!r} has two results for dataset {ds!r}")
            per_method[method][ds] = r
            cols = columns.setdefault(ds, [])
            cols.extend(m for m in r.metrics if m not in cols)
            if r.lpips_model:
                lpips_models[r.lpips_model] = None
    if not columns:
        raise ConfigError("no result with metrics to tabulate")

    keys = [(ds, m) for ds, ms in columns.items() for m in ms]
    values = {
        method: {(ds, m): (rs[ds].means.get(m) if ds in rs else None) for ds, m in keys}
        for method, rs in per_method.items()
    }
    best: dict[tuple[str, str], float] = {}
    if len(values) > 1:
        for k in keys:
            col = [v[k] for v in values.values() if v[k] is not None]
            if col:
                best[k] = max(col) if _HIGHER_IS_BETTER[k[1]] else min(col)

    header = "| Method | " + " | ".join(f"{ds} {_LABELS[m]}" for ds, m in keys) + " |"
    rule = "|---|" + "---:|" * len(keys)
    lines = [header, rule]
    for method, vals in values.items():
        cells = [_cell(k[1], vals[k], k in best and vals[k] == best[k]) for k in keys]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    for text in protocols:
        lines.append(f"Protocol: {text}.")
    if lpips_models:
        lines.append("LPIPS: " + "; ".join(lpips_models) + ".")
    if no_gt:
        lines.append("No ground truth (outputs only): " + ", ".join(no_gt) + ".")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ data
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


# ------------------------------------------------------------------------------------------------- CLI
def add_eval_parser(subparsers) -> None:
    """Register `savl eval` on an argparse sub-parser collection (the lead wires it into savl/cli.py)."""
    e = subparsers.add_parser(
        "eval",
        help="evaluate a model (PSNR/SSIM/LPIPS, DESIGN §5.4) on a paired folder, frozen set or dataset",
        description="Tiled x4 evaluation with BasicSR metric conventions. LR-only folders: outputs are saved.",
    )
    e.add_argument("--model", required=True, help="savl model file (.safetensors with its .json), or 'bicubic'")
    e.add_argument("--data", required=True, help="dataset name from the catalog, or a folder")
    e.add_argument("--scale", type=int, default=4)
    e.add_argument("--tile", default="256", help="LR tile side, or 'none' for whole images (default 256)")
    e.add_argument("--overlap", type=int, default=16)
    e.add_argument("--crop-border", type=int, default=None, help="pixels cropped per side (default: the scale)")
    e.add_argument("--rgb", action="store_true", help="PSNR/SSIM on RGB instead of Y")
    e.add_argument("--lpips", default="alex", choices=[*_LPIPS_NETS, "none"], help="LPIPS backbone (default alex)")
    e.add_argument("--out", help="write the result as JSON (with provenance) to this file")
    e.add_argument("--save-images", help="folder for the super-resolved images (required for LR-only data)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--root", help="dataset root for catalog names (default: $SAVL_DATA_DIR or data/downloads)")
    e.set_defaults(func=cmd_eval)


def _load_eval_model(spec: str, scale: int) -> tuple[nn.Module, Path | None]:
    if spec.lower() == "bicubic":
        return __getattr__("BicubicUpsampler")(scale), None
    from savl.models.io import load_model

    path = Path(spec)
    return load_model(path), (path if path.suffix == ".safetensors" else path.with_suffix(".safetensors"))


def cmd_eval(args) -> int:
    """`savl eval`: prints the table (or the saved outputs) and writes JSON when `--out` is given."""
    from savl.errors import ModelFileError

    tile = None if str(args.tile).lower() in ("none", "0") else _int_arg("--tile", args.tile)
    dataset, name, version, kind = open_eval_data(args.data, args.scale, getattr(args, "root", None))
    protocol = EvalProtocol(
        scale=args.scale,
        crop_border=args.crop_border,
        y_channel=not args.rgb,
        tile=tile,
        overlap=args.overlap,
        lpips_net=None if args.lpips == "none" else args.lpips,
        dataset=name,
        dataset_version=version,
    )
    device = _device(args.device)
    model, checkpoint = _load_eval_model(args.model, args.scale)
    try:
        result = evaluate(model, dataset, protocol, device=device, save_dir=args.save_images, progress=True)
    except ModelFileError as err:
        if "LPIPS" in str(err):
            raise ModelFileError(f"{err}; or pass --lpips none") from None
        raise
    method = Path(args.model).stem if checkpoint is not None else "Bicubic"
    print(f"{result.summary()} [{kind}]")
    if result.has_metrics:
        print(format_table({method: result}), end="")
    else:
        print(f"Protocol: {protocol.describe()}.")
    if args.save_images:
        print(f"outputs: {args.save_images}")
    if args.out:
        prov = provenance(checkpoint=checkpoint, device=device, command=["savl", *sys.argv[1:]], data=str(args.data))
        result.to_json(args.out, prov)
        print(f"wrote {args.out}")
    return 0


def _int_arg(flag: str, value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: expected an integer or 'none', got {value!r}") from None


def _device(name: str) -> torch.device:
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    return dev
