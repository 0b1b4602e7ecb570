"""Evaluation with an explicit protocol (BasicSR's metric conventions, as the paper reports them): tiled x4
inference, per-image PSNR / SSIM / LPIPS, means, JSON with provenance, and tables laid out like the paper's
Table 2. Where the data comes from (`open_eval_data`) is savl.data.resolve, what a result records about its
origin (`provenance`) is savl.provenance, and the `savl eval` parser is savl.eval_command.

Every number this module reports travels with `EvalProtocol.describe()`, so a table always says how it
was measured. LPIPS from a randomly initialised trunk (`LPIPS(pretrained=False)`, for tests) is reported
under the key "lpips_random_trunk" and the column "lpips_random_trunk (not LPIPS)", never as LPIPS.
Images whose PSNR is infinite (a perfect output) make the mean infinite too; JSON stores it as "inf".
An image that cannot be used (unreadable, too small for the border crop, LR and HR sizes that do not match)
is skipped with a one-line message and listed under "skipped"; the others are still evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from savl.data.resolve import open_eval_data
from savl.errors import ConfigError, DataError, SavlError
from savl.provenance import atomic_write_text, hardware, provenance

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported inside the functions that use it: `savl --help` builds this module's parser and should
# not pay for importing torch.

# `open_eval_data` (savl.data.resolve), `provenance` and `hardware` (savl.provenance) are re-exported here,
# where callers have always found them; the `savl eval` parser lives in savl.eval_command.
__all__ = [
    "BicubicUpsampler",  # noqa: F822 - provided by the module __getattr__ (built on first use)
    "EvalProtocol",
    "EvalResult",
    "evaluate",
    "format_table",
    "hardware",
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
    """How numbers are measured (BasicSR conventions). `crop_border=None` means the scale (BasicSR).

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
    skipped: list[dict] = field(default_factory=list)  # {"name", "reason"} of images that could not be used

    @property
    def has_metrics(self) -> bool:
        return bool(self.metrics)

    @property
    def names(self) -> list[str]:
        return [row["name"] for row in self.per_image]

    def summary(self) -> str:
        """One line of means (or the number of saved outputs for an LR-only set)."""
        ds = self.protocol.dataset or "dataset"
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        if not self.has_metrics:
            return f"{ds}: {len(self.per_image)} images super-resolved (no ground truth, no metrics){skipped}"
        parts = [f"{_LABELS[m]} {self.means[m]:.{_DIGITS[m]}f}" for m in self.metrics]
        return f"{ds}: " + ", ".join(parts) + f" over {len(self.per_image)} images{skipped}"

    def to_dict(self, provenance: Mapping | None = None) -> dict:
        return {
            "protocol": self.protocol.to_dict(),
            "protocol_description": self.protocol.describe(),
            "metrics": list(self.metrics),
            "lpips_model": self.lpips_model,
            "means": {k: _json_number(float(v)) for k, v in self.means.items()},
            "per_image": [{k: _json_number(v) for k, v in row.items()} for row in self.per_image],
            "skipped": [dict(row) for row in self.skipped],
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
def _items(dataset) -> Iterable[tuple[int, dict | SavlError]]:
    """(index, item), or (index, the error) for an item that cannot be read (the caller skips it)."""
    for i in range(len(dataset)):
        try:
            item = dataset[i]
        except SavlError as e:
            yield i, e
            continue
        if not isinstance(item, dict) or "lr" not in item:
            raise DataError(f"dataset item {i}: expected a dict with 'lr' (and 'hr', 'name')")
        yield i, item


def _input_folders(dataset) -> set[Path]:
    """Folders the dataset reads its images from, as far as it tells (folder datasets, frozen sets)."""
    out: set[Path] = set()
    for part in getattr(dataset, "parts", [dataset]):
        for f in getattr(part, "files", []):
            out.add(Path(f).resolve().parent)
        for pair in getattr(part, "pairs", []):
            out.update(Path(p).resolve().parent for p in pair[1:])
        root = getattr(part, "path", None)
        if root is not None:
            out.update((Path(root) / sub).resolve() for sub in ("lr", "hr"))
    return out


def _skip(skipped: list[dict], name: str, reason: SavlError | str, progress: bool) -> None:
    reason = str(reason)
    skipped.append({"name": name, "reason": reason})
    if progress:
        print(f"savl: skipped {name}: {reason}", file=sys.stderr)
    else:
        import warnings

        warnings.warn(f"skipped {name}: {reason}", stacklevel=3)


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
    """Super-resolve every item of `dataset` with tiled inference and score it (BasicSR metric conventions).

    dataset: items {"lr", "name"} with "hr" for paired sets (`PairedFolderDataset`, `FrozenValidationSet`,
    `LRFolderDataset`, or any indexable of such dicts). Items without "hr" are only super-resolved (and
    saved); a set without any "hr" reports no metrics and needs `save_dir`.
    lpips: an `savl.metrics.LPIPS` to use (e.g. a random-trunk one in tests, reported as
    "lpips_random_trunk"); by default one is built for `protocol.lpips_net` when the set has ground truth,
    which raises ModelFileError offline when the trunk is not cached.
    save_dir: where to write each output as `NAME.png` (8-bit, the precision that is scored).
    """
    import torch

    from savl.infer import model_scale
    from savl.io import write_image
    from savl.metrics import LPIPS

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
    out_dir = Path(save_dir) if save_dir is not None else None
    if out_dir is not None and out_dir.resolve() in _input_folders(dataset):
        raise ConfigError(f"{out_dir}: holds the images being evaluated; save the outputs in another folder")
    model = model.to(device).eval()
    paired: bool | None = None  # decided by the first item
    rows: list[dict] = []
    skipped: list[dict] = []
    seen: set[str] = set()
    start = time.perf_counter()
    items = _items(dataset)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(dataset), desc=label, unit="img", file=sys.stderr, disable=None)
    for i, item in items:
        if isinstance(item, SavlError):
            _skip(skipped, f"item {i}", item, progress)
            continue
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
        try:
            sr = _score(item, name, paired, protocol, model, device, lpips, row)
        except SavlError as e:
            _skip(skipped, name, e, progress)
            continue
        if out_dir is not None:
            stem = _safe_stem(name)
            if stem in seen:
                stem = f"{stem}_{i:04d}"
            seen.add(stem)
            path = out_dir / f"{stem}.png"
            write_image(path, sr, bit_depth=8)
            row["output"] = str(path)
        rows.append(row)
    if not rows:
        first = skipped[0]
        raise DataError(f"{label}: no image could be used ({len(skipped)} skipped; {first['name']}: {first['reason']})")
    metrics: tuple[str, ...] = ("psnr", "ssim") + ((lpips.metric_name,) if lpips is not None else ())
    means = {m: sum(r[m] for r in rows) / len(rows) for m in metrics} if paired else {}
    return EvalResult(
        protocol=protocol,
        per_image=rows,
        means=means,
        metrics=metrics if paired else (),
        lpips_model=lpips.describe() if lpips is not None and paired else None,
        seconds=time.perf_counter() - start,
        skipped=skipped,
    )


def _score(item: dict, name: str, paired: bool, protocol: EvalProtocol, model, device, lpips, row: dict):
    """Super-resolve one item and (paired) fill its metrics into `row`; SavlError when the item is unusable."""
    from savl.cli_checks import small_image_error
    from savl.infer import upscale
    from savl.metrics import psnr, ssim

    lr = item["lr"]
    if paired:
        hr = item["hr"][:3]
        if tuple(hr.shape[-2:]) != tuple(s * protocol.scale for s in lr.shape[-2:]):
            raise DataError(
                f"LR is {lr.shape[-1]}x{lr.shape[-2]} but HR is {hr.shape[-1]}x{hr.shape[-2]} "
                f"(LR x{protocol.scale} must equal HR)"
            )
        if min(hr.shape[-2:]) <= 2 * protocol.crop_border:
            raise DataError(
                f"HR {hr.shape[-1]}x{hr.shape[-2]} leaves nothing after the {protocol.crop_border}px border crop"
            )
    try:
        sr = upscale(model, lr, tile=protocol.tile, overlap=protocol.overlap, device=device, scale=protocol.scale)
    except (ValueError, RuntimeError) as e:
        small = small_image_error(name, lr.shape, e)
        if small is None:
            raise
        raise small from None
    if paired:
        if tuple(sr.shape[-2:]) != tuple(hr.shape[-2:]):
            raise DataError(f"output is {sr.shape[-1]}x{sr.shape[-2]} but HR is {hr.shape[-1]}x{hr.shape[-2]}")
        a, b = sr[None].to(device), hr[None].to(device)
        row["psnr"] = float(psnr(a, b, protocol.crop_border, protocol.y_channel)[0])
        row["ssim"] = float(ssim(a, b, protocol.crop_border, protocol.y_channel)[0])
        if lpips is not None:
            row[lpips.metric_name] = float(lpips(a, b)[0])
    return sr


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
