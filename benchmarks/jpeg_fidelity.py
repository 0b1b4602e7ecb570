"""Benchmark: how close our JPEG (kornia's differentiable codec, ``savl.degrade.ops.jpeg``) is to libjpeg.

    python benchmarks/jpeg_fidelity.py [--qualities 30 50 70 95] [--size 128] [--external PATH] [--out DIR]

Inputs: the embedded photographs (``savl.data.sample_images``, longer side shrunk to 256), a centred
``size x size`` crop of each, rounded to 8 bits. For every quality q each crop goes through kornia's codec and
through libjpeg (Pillow's JPEG encoder and decoder: standard IJG tables scaled by q, 4:2:0 chroma
subsampling, as kornia); outputs are rounded to 8 bits, as every pipeline of the library ends. Reported, as
means over the crops of per-image PSNR (dB, RGB, [0, 1] range):

* ``kornia_vs_libjpeg``: how close the two codecs' outputs are;
* ``kornia_vs_input``, ``libjpeg_vs_input``: how strong each compression is (higher = milder).

``--external PATH`` merges figures measured OUTSIDE this repository (for example with Real-ESRGAN's DiffJPEG,
whose code the repository does not contain) from a JSON file ``{"provenance": {...}, "codecs": {name:
{quality: {"vs_libjpeg": dB or null when identical, "vs_input": dB}}}}``; they are copied with their
provenance, never recomputed.
Writes ``jpeg_fidelity.json`` and ``jpeg_fidelity.md`` under ``--out`` (default benchmarks/results), atomically.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features

from savl.data import sample_images
from savl.degrade.ops import jpeg
from savl.provenance import atomic_write_text, machine_info

MAX_SIDE = 256


def photo_crops(size: int = 128) -> list[tuple[str, torch.Tensor]]:
    """Centred ``size x size`` crops of the embedded photographs (longer side 256), on 8-bit levels, (3, S, S)."""
    out = []
    for name, img in sample_images(max_side=MAX_SIDE):
        h, w = img.shape[-2:]
        if min(h, w) < size:
            continue
        y, x = (h - size) // 2, (w - size) // 2
        out.append((name, to_8bit(img[:, y : y + size, x : x + size])))
    return out


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round() / 255


def libjpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A JPEG round trip of one (3, H, W) 8-bit image through Pillow (libjpeg), default settings but quality."""
    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else -10 * np.log10(mse)


def measure(images: list[tuple[str, torch.Tensor]], qualities: list[int]) -> dict:
    batch = torch.stack([img for _, img in images])
    out = {}
    for q in qualities:
        ours = to_8bit(jpeg(batch, torch.full((len(images),), float(q))))
        ref = torch.stack([libjpeg(img, q) for _, img in images])
        rows = [(psnr(o, r), psnr(o, x), psnr(r, x)) for o, r, x in zip(ours, ref, batch)]
        out[str(q)] = {
            "kornia_vs_libjpeg": statistics.fmean(r[0] for r in rows),
            "kornia_vs_input": statistics.fmean(r[1] for r in rows),
            "libjpeg_vs_input": statistics.fmean(r[2] for r in rows),
        }
    return out


def markdown(result: dict) -> str:
    m, per_q = result["machine"], result["qualities"]
    lines = [
        "# JPEG fidelity: kornia's codec (ours) against libjpeg",
        "",
        f"{result['n_images']} photographs ({', '.join(result['images'])}), centred {result['size']}x"
        f"{result['size']} crops on 8-bit levels; mean per-image PSNR in dB (RGB); outputs rounded to 8 bits. "
        f"libjpeg: Pillow {result['pillow']} (libjpeg API {result['libjpeg']}), default settings (4:2:0).",
        "",
        "| quality | kornia vs libjpeg | kornia vs input | libjpeg vs input | kornia milder by |",
        "|---|---|---|---|---|",
    ]
    for q, r in per_q.items():
        lines.append(
            f"| {q} | {r['kornia_vs_libjpeg']:.2f} | {r['kornia_vs_input']:.2f} | {r['libjpeg_vs_input']:.2f} | "
            f"{r['kornia_vs_input'] - r['libjpeg_vs_input']:+.2f} |"
        )
    ext = result.get("external")
    if ext:
        lines += ["", "Measured outside this repository (copied with their provenance, not recomputed here):", ""]
        lines += ["| codec | quality | vs libjpeg | vs input | kornia milder by |", "|---|---|---|---|---|"]
        for codec, per in ext["codecs"].items():
            for q, r in per.items():
                mild = per_q[q]["kornia_vs_input"] - r["vs_input"] if q in per_q else float("nan")
                close = "identical" if r["vs_libjpeg"] is None else f"{r['vs_libjpeg']:.2f}"
                lines.append(f"| {codec} | {q} | {close} | {r['vs_input']:.2f} | {mild:+.2f} |")
        lines += ["", "Provenance: " + "; ".join(f"{k}: {v}" for k, v in ext["provenance"].items())]
    lines += [
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores; torch {m['torch']}; commit {m['git_commit']}; "
        f"`{m['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qualities", type=int, nargs="+", default=[30, 50, 70, 95])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--external", type=Path, default=None, help="JSON of figures measured outside the repository")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    images = photo_crops(args.size)
    result = {
        "benchmark": "jpeg_fidelity",
        "size": args.size,
        "n_images": len(images),
        "images": [n for n, _ in images],
        "pillow": Image.__version__,
        "libjpeg": features.version("jpg"),
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "qualities": measure(images, args.qualities),
        "machine": machine_info(),
    }
    if args.external is not None:
        ext = json.loads(args.external.read_text())
        if not isinstance(ext, dict) or "provenance" not in ext or "codecs" not in ext:
            raise SystemExit(f"{args.external}: expected a JSON object with 'provenance' and 'codecs'")
        result["external"] = ext
    atomic_write_text(args.out / "jpeg_fidelity.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / "jpeg_fidelity.md", markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
