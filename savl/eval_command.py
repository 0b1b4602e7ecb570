"""`savl eval --model M --data D` (argparse wiring; savl/cli.py adds it to the `savl` command).

Kept apart from `savl.evaluate` so that the evaluation itself knows nothing about argparse; importing this
module stays torch-free, since `savl --help` builds its parser.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from savl.data.resolve import open_eval_data
from savl.errors import ConfigError
from savl.evaluate import _LPIPS_NETS, EvalProtocol, evaluate, format_table
from savl.provenance import provenance

if TYPE_CHECKING:
    from torch import nn

__all__ = ["add_eval_parser", "cmd_eval"]


def add_eval_parser(subparsers) -> None:
    """Register `savl eval` on an argparse sub-parser collection (the lead wires it into savl/cli.py)."""
    e = subparsers.add_parser(
        "eval",
        help="evaluate a model (PSNR/SSIM/LPIPS, BasicSR conventions) on a paired folder, frozen set or dataset",
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
        from savl.evaluate import BicubicUpsampler

        return BicubicUpsampler(scale), None
    from savl.cli_checks import require_sr_model
    from savl.models.io import load_model

    path = Path(spec)
    model = load_model(path)
    require_sr_model(model, path)  # an encoder, SAVL model or discriminator cannot be evaluated as SR
    return model, (path if path.suffix == ".safetensors" else path.with_suffix(".safetensors"))


def _check_writable(out: Path) -> None:
    """Fail before the evaluation, not after it, when the result cannot be written to `out`."""
    import os
    import secrets

    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{out.name}.{secrets.token_hex(4)}.probe"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot be written ({e.strerror or e})") from None


def cmd_eval(args) -> int:
    """`savl eval`: prints the table (or the saved outputs) and writes JSON when `--out` is given."""
    from savl.cli_checks import device as checked_device
    from savl.errors import ModelFileError

    tile = None if str(args.tile).lower() in ("none", "0") else _int_arg("--tile", args.tile)
    if not 1 <= args.scale <= 8:  # the output grows with the square of the scale
        raise ConfigError(f"--scale {args.scale}: must lie in [1, 8]")
    if args.out:
        _check_writable(Path(args.out))
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
    device = checked_device(args.device)
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
