"""The `savl` command: degrade, data, sr, severity, train, eval.

Every user-facing failure is a `SavlError`: printed as one line, exit code 2, no traceback. No command writes
over one of its inputs or sends two inputs to one output, and the files written for one input (an image and
its `.json` record or `.npy` values) appear together or not at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from savl import __version__
from savl.cli_checks import overlap_arg, seed_arg
from savl.errors import SavlError


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SavlError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SavlError(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError:
        raise SavlError(f"{path}: not valid JSON (not UTF-8 text)") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise SavlError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise SavlError(f"{path}: not valid JSON (nested too deep)") from None
    if not isinstance(obj, dict):
        raise SavlError(f"{path}: expected a JSON object")
    return obj


# --------------------------------------------------------------------------------------------- degrade
def _degrade_one(src: Path, dst: Path, protocol_name: str, seed: int, replay: dict | None) -> None:
    import torch

    from savl.degrade.protocols import get_protocol
    from savl.io import encode_image, read_image, write_group

    hr = read_image(src).unsqueeze(0)
    if replay is not None:
        name = replay.get("protocol", protocol_name)
        if not isinstance(name, str):
            raise SavlError(f"{src}: the parameter record's 'protocol' must be a name, got {type(name).__name__}")
        protocol = get_protocol(name)
        if "params" not in replay:
            raise SavlError(f"{src}: the parameter record has no 'params' entry")
        lr = protocol.replay(hr, replay["params"])
        params = replay["params"]
        seed = replay.get("seed", seed)
    else:
        protocol = get_protocol(protocol_name)
        lr, params = protocol(hr, torch.Generator().manual_seed(seed))
    record = {
        "protocol": protocol.name,
        "seed": seed,
        "input": str(src),
        "input_size": list(hr.shape[-2:]),
        "output_size": list(lr.shape[-2:]),
        "savl_version": __version__,
        "params": params,
    }
    image = encode_image(dst, lr[0].clamp(0, 1))
    write_group({dst: image, dst.with_suffix(".json"): (json.dumps(record, indent=2) + "\n").encode()})
    print(f"{src} -> {dst} ({protocol.name}, {hr.shape[-1]}x{hr.shape[-2]} -> {lr.shape[-1]}x{lr.shape[-2]})")


def cmd_degrade(args) -> int:
    from savl.cli_checks import SEED_LIMIT
    from savl.io import check_output_paths, image_files

    src, dst = Path(args.input), Path(args.output)
    replay = _read_json(Path(args.params)) if args.params else None
    if src.is_dir():
        files = image_files(src)
        if not files:
            raise SavlError(f"{src}: no image files in this folder")
        if replay is not None:
            raise SavlError(f"{args.params}: --params replays one image; give a single input file")
        if dst.exists() and not dst.is_dir():
            raise SavlError(f"{dst}: exists and is not a folder (the input is a folder)")
        if args.seed + len(files) - 1 >= SEED_LIMIT:
            raise SavlError(f"--seed {args.seed}: the folder's {len(files)} files take seeds up to 2**63; lower it")
        pairs = [(f, dst / (f.stem + ".png")) for f in files]
        check_output_paths(pairs, sidecars=(".json",))
        dst.mkdir(parents=True, exist_ok=True)
        for i, (f, out) in enumerate(pairs):
            # Each file gets its own seed so that one image's draw does not depend on the others.
            _degrade_one(f, out, args.protocol, args.seed + i, None)
    else:
        if dst.is_dir():
            dst = dst / (src.stem + ".png")
        check_output_paths([(src, dst)], sidecars=(".json",))
        _degrade_one(src, dst, args.protocol, args.seed, replay)
    return 0


# ------------------------------------------------------------------------------------------------ data
def cmd_data(args) -> int:
    from savl import data

    if args.action == "list":
        for name in data.list_datasets():
            print(name)
        return 0
    if args.name is None:
        raise SavlError(f"savl data {args.action}: give a dataset name (see `savl data list`)")
    if args.action == "download":
        path = data.download_dataset(args.name, root=args.root)
        print(f"{args.name}: {path}")
        return 0
    report = data.verify_dataset(args.name, root=args.root)
    print(json.dumps(report, indent=2, default=str))
    return 0 if report.get("ok", False) else 1


# ---------------------------------------------------------------------------------------------- sr, severity
def _inputs(src: Path, dst: Path, suffix: str = ".png") -> list[tuple[Path, Path]]:
    """(input, output) pairs for a file or a folder; a folder maps to a folder of the same stems."""
    from savl.io import image_files

    if src.is_dir():
        files = image_files(src)
        if not files:
            raise SavlError(f"{src}: no image files in this folder")
        if dst.exists() and not dst.is_dir():
            raise SavlError(f"{dst}: exists and is not a folder (the input is a folder)")
        return [(f, dst / (f.stem + suffix)) for f in files]
    return [(src, dst / (src.stem + suffix) if dst.is_dir() else dst)]


def _tile_arg(value: str):
    if value in ("auto", "none"):
        return value
    if value.isdigit() and int(value) >= 16:
        return value
    raise argparse.ArgumentTypeError(f"expected an integer >= 16, 'auto' or 'none', got {value!r}")


def _load_model(path: str, device):
    from savl.models.io import load_model

    return load_model(path, map_location=device)


def cmd_sr(args) -> int:
    import torch

    from savl.cli_checks import check_overlap, device, require_sr_model, small_image_error
    from savl.infer import upscale
    from savl.io import check_output_paths, read_image, write_image

    tile = None if args.tile == "none" else ("auto" if args.tile == "auto" else int(args.tile))
    check_overlap(tile, args.overlap)
    dev = device(args.device)
    pairs = _inputs(Path(args.input), Path(args.output))
    check_output_paths(pairs)
    model = _load_model(args.model, dev)
    require_sr_model(model, args.model)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    for src, dst in pairs:
        rgb, info = read_image(src, with_info=True)
        x = rgb[:1] if info.gray else rgb
        if info.alpha is not None:  # gray + alpha goes through as RGB + alpha and comes back gray
            x = torch.cat([rgb, info.alpha], 0)
        try:
            out = upscale(model, x, tile=tile, overlap=args.overlap, dtype=dtype, device=dev)
        except (ValueError, RuntimeError) as e:
            small = small_image_error(src, x.shape, e)
            if small is None:
                raise
            raise small from None
        colour = out[:3].mean(0, keepdim=True) if info.gray else out[:3]
        alpha = out[-1:] if info.alpha is not None else None
        # Keep 16 bits where the output format can hold them (PNG, TIFF); other formats get 8.
        depth = info.bit_depth if dst.suffix.lower() in (".png", ".tif", ".tiff") else 8
        write_image(dst, colour, bit_depth=depth, alpha=alpha, gray=info.gray)
        print(f"{src} -> {dst} ({rgb.shape[-1]}x{rgb.shape[-2]} -> {out.shape[-1]}x{out.shape[-2]})")
    return 0


def _npy_bytes(values) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, values)
    return buf.getvalue()


def cmd_severity(args) -> int:
    from savl.cli_checks import device, small_image_error
    from savl.infer import severity_map
    from savl.io import check_output_paths, encode_image, read_image, write_group

    dev = device(args.device)
    pairs = _inputs(Path(args.input), Path(args.output))
    check_output_paths(pairs, sidecars=(".npy",))
    model = _load_model(args.model, dev)
    for src, dst in pairs:
        lr = read_image(src)
        try:
            sev, colour = severity_map(model, lr, device=dev)
        except (ValueError, RuntimeError) as e:
            small = small_image_error(src, lr.shape, e)
            if small is None:
                raise
            raise small from None
        raw = dst.with_suffix(".npy")
        write_group({dst: encode_image(dst, colour), raw: _npy_bytes(sev.numpy())})
        print(f"{src} -> {dst} (+ {raw.name}; severity {sev.min():.3f} .. {sev.max():.3f})")
    return 0


# ------------------------------------------------------------------------------------------------ main
class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit 2, like every other error of the command (sub-parsers inherit it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="savl", description="SAVL: degradations, training, evaluation, inference.")
    p.add_argument("--version", action="version", version=f"savl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("degrade", help="degrade an image (or a folder) with a named protocol")
    d.add_argument("input", help="HR image file or folder")
    d.add_argument("output", help="output image file or folder (a .json parameter record is written beside)")
    d.add_argument("--seed", type=seed_arg, default=0)
    d.add_argument("--protocol", default="realesrgan", help="realesrgan, bicubic, table5-type, manet-mode3, ...")
    d.add_argument("--params", help="replay a parameter record written by an earlier run (single file)")
    d.set_defaults(func=cmd_degrade)

    da = sub.add_parser("data", help="public datasets: list, download, verify")
    da.add_argument("action", choices=["list", "download", "verify"])
    da.add_argument("name", nargs="?")
    da.add_argument("--root", help="where datasets live (default: $SAVL_DATA_DIR or data/downloads)")
    da.set_defaults(func=cmd_data)

    s = sub.add_parser("sr", help="super-resolve an image or a folder with a saved model")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--model", required=True, help="a .safetensors model written by savl (JSON config beside it)")
    s.add_argument("--tile", type=_tile_arg, default="256", help="LR tile side, 'auto' or 'none'")
    s.add_argument("--overlap", type=overlap_arg, default=16)
    s.add_argument("--device", default="cpu")
    s.add_argument("--bf16", action="store_true", help="bf16 autocast (falls back to fp32 on NaN/Inf)")
    s.set_defaults(func=cmd_sr)

    sv = sub.add_parser("severity", help="the Eq. 15 severity map of an LR image (PNG + raw .npy)")
    sv.add_argument("input")
    sv.add_argument("output")
    sv.add_argument("--model", required=True)
    sv.add_argument("--device", default="cpu")
    sv.set_defaults(func=cmd_severity)

    from savl.eval_command import add_eval_parser
    from savl.train.command import add_train_parser
    from savl.zoo_command import add_models_parser

    add_train_parser(sub)
    add_eval_parser(sub)
    add_models_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:  # building the parser imports the training code (and torch): Ctrl-C there is an interruption too
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SavlError as e:
        print(f"savl: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's answer (a full disk, a folder that is a file, no permission): one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"savl: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("savl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
