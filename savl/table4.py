"""Scoring the guided RRDB-SFT of the paper's Table 4 (A.3) on MANet-protocol sets, beside bicubic.

Table 4 runs one SR network, RRDB-SFT (`savl.models.rrdb_sft`), under different guidances on MANet's spatially
variant kernels (modes 1-5, x4, noise 15) and reports PSNR / SSIM on Y. A guided network cannot go through
`savl.evaluate.evaluate`, which calls `model(lr)`: the kernel guidance needs each image's own ground-truth
kernel map. Here every item of a frozen set (`savl.data.FrozenValidationSet`, e.g. the zoo's held-out
`manet-modeN` sets) gets the map of the draw that made it, replayed from the params the set stores and checked
against its stored LR (`replayed_kernel_map`); the code guidance codes the LR with the network's frozen
encoder; "none" gets nothing. Metrics are `savl.metrics` (8-bit rounding, Y of BT.601, a border of `scale`
pixels cropped: BasicSR's convention, as everywhere in the book); the bicubic row is MATLAB bicubic
(`savl.imresize`) of the same LR images. Whole images at once (no tiles: the held-out crops are small).

With the zoo's held-out sets::

    from savl import zoo
    sets = {n: zoo.held_out_sr_set(n, draws=1, crop=zoo.HELD_OUT_CROP["manet"]) for n in zoo.SR_PROTOCOLS["manet"]}
    table4_metrics(model, sets)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from savl.errors import ConfigError, DataError
from savl.imresize import imresize
from savl.metrics import psnr, ssim
from savl.models.rrdb_sft import replayed_kernel_map


def guidance_of(model) -> str:
    """The model's guidance ("none", "code", "kernel"); a model without one is scored as unguided."""
    return getattr(getattr(model, "config", None), "guidance", "none")


@torch.no_grad()
def score_guided(model, dataset, device: str | torch.device = "cpu", scale: int = 4) -> list[dict]:
    """One row per item: {"name", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim"} (Y, `scale`-pixel border).

    `dataset`: a frozen MANet-protocol set (items {"lr", "hr", "name"} and `params[i]`, the draw of item i).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    kernel = guidance_of(model) == "kernel"
    if kernel and not hasattr(dataset, "params"):
        raise ConfigError("kernel guidance needs a frozen set that stores each image's params (FrozenValidationSet)")
    if len(dataset) == 0:
        raise DataError("no images to score")
    rows = []
    for i in range(len(dataset)):
        item = dataset[i]
        lr, hr = item["lr"][None].to(device), item["hr"][:3][None].to(device)
        if tuple(hr.shape[-2:]) != (lr.shape[-2] * scale, lr.shape[-1] * scale):
            sizes = f"LR {tuple(lr.shape[-2:])} x{scale} does not equal HR {tuple(hr.shape[-2:])}"
            raise DataError(f"{item['name']}: {sizes}")
        if kernel:
            try:
                guide = replayed_kernel_map(item["hr"][:3], item["lr"], dataset.params[i]).to(device)
            except ConfigError as e:
                raise ConfigError(f"{item['name']}: {e}") from None
            sr = model(lr, guide)
        else:
            sr = model(lr)
        bic = imresize(lr, scale=scale)
        sr, bic = sr.clamp(0, 1).float(), bic.clamp(0, 1).float()
        rows.append(
            {
                "name": str(item["name"]),
                "psnr": float(psnr(sr, hr, scale, True)[0]),
                "ssim": float(ssim(sr, hr, scale, True)[0]),
                "bicubic_psnr": float(psnr(bic, hr, scale, True)[0]),
                "bicubic_ssim": float(ssim(bic, hr, scale, True)[0]),
            }
        )
    return rows


def _means(rows: list[dict]) -> dict[str, float]:
    keys = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def table4_metrics(model, sets: Mapping[str, object], device: str | torch.device = "cpu", scale: int = 4) -> dict:
    """Table 4's numbers for one model: PSNR / SSIM (Y) per set (one per MANet mode) and over all images, with
    bicubic's beside, in the layout of `savl.zoo.held_out_sr_metrics` (psnr, ssim, bicubic_psnr, bicubic_ssim,
    psnr_gain_over_bicubic, per_image_psnr, per_image_bicubic_psnr) plus "guidance" and "per_set"."""
    if not sets:
        raise DataError("no sets to score")
    rows, per_set = [], {}
    for name, data in sets.items():
        got = score_guided(model, data, device, scale)
        per_set[name] = _means(got)
        rows += [dict(r, name=f"{name}:{r['name']}") for r in got]
    mean = _means(rows)
    return {
        "guidance": guidance_of(model),
        "protocol": f"x{scale}; PSNR/SSIM on Y (BT.601), 8-bit rounding, {scale}px border crop (BasicSR); whole image",
        "sets": list(sets),
        "set_hashes": [getattr(d, "hash", "")[:16] for d in sets.values()],
        "images": len(rows),
        **mean,
        "psnr_gain_over_bicubic": mean["psnr"] - mean["bicubic_psnr"],
        "per_set": per_set,
        "per_image_psnr": {r["name"]: r["psnr"] for r in rows},
        "per_image_bicubic_psnr": {r["name"]: r["bicubic_psnr"] for r in rows},
    }
