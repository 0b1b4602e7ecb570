"""The `savl` command: degrade, data, sr, severity, train, eval, export, models.

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
    if args.action == "prepare":
        return _data_prepare(args)
    if args.name is None:
        raise SavlError(f"savl data {args.action}: give a dataset name (see `savl data list`)")
    if args.action == "download":
        path = data.download_dataset(args.name, root=args.root)
        print(f"{args.name}: {path}")
        return 0
    report = data.verify_dataset(args.name, root=args.root)
    print(json.dumps(report, indent=2, default=str))
    return 0 if report.get("ok", False) else 1


def _data_prepare(args) -> int:
    """`savl data prepare`: Real-ESRGAN's preparation of DF2K + OST under the data root (multi-scale DF2K,
    sub-images, meta_info.txt), or, with --from, sub-images (and --multiscale copies) of any folders."""
    from savl.data import prepare

    if args.name is not None:
        raise SavlError(f"savl data prepare: takes no dataset name ({args.name!r}); it prepares DF2K + OST, or --from")
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else None
    opts = {"crop": args.crop, "step": args.step, "thresh": args.thresh, "workers": args.workers, "progress": say}
    if not args.sources:
        meta = prepare.prepare_paper_data(args.root, args.out, shortest_edge=args.shortest_edge, **opts)
    else:
        if args.out is None:
            raise SavlError("savl data prepare --from: give --out (the folder for the sub-images)")
        from savl.data.hr_files import META_INFO, write_meta_info

        out = Path(args.out)
        sources = [Path(f) for f in args.sources]
        for f in sources:
            if not f.is_dir():
                raise SavlError(f"{f}: no such folder")
            if out.resolve() == f.resolve() or out.resolve().is_relative_to(f.resolve()):
                raise SavlError(f"{out}: the output folder must not be inside the input folder {f}")
        if args.multiscale:
            multi = out / "multiscale"
            prepare.make_multiscale(sources, multi, args.workers, say, args.shortest_edge)
            sources.append(multi)
        tiles = []
        names = [f.name for f in sources]
        for i, f in enumerate(sources):
            sub = f.name if names.count(f.name) == 1 else f"{f.name}_{i}"
            tiles += prepare.make_subimages(f, out / "sub" / sub, **opts)
        meta = write_meta_info(out / META_INFO, tiles)
    n = sum(1 for line in meta.read_text().splitlines() if line.strip())
    print(f"{meta}: {n} training images")
    return 0


# ---------------------------------------------------------------------------------------------- sr, severity
def _folder_inputs(src: Path, dst: Path) -> list[Path]:
    """The image files of folder `src`, after checking that the output `dst` can be a folder."""
    from savl.io import image_files

    files = image_files(src)
    if not files:
        raise SavlError(f"{src}: no image files in this folder")
    if dst.exists() and not dst.is_dir():
        raise SavlError(f"{dst}: exists and is not a folder (the input is a folder)")
    return files


def _inputs(src: Path, dst: Path, suffix: str = ".png") -> list[tuple[Path, Path]]:
    """(input, output) pairs for a file or a folder; a folder maps to a folder of the same stems."""

    if src.is_dir():
        return [(f, dst / (f.stem + suffix)) for f in _folder_inputs(src, dst)]
    return [(src, dst / (src.stem + suffix) if dst.is_dir() else dst)]


def _tile_arg(value: str):
    if value in ("auto", "none"):
        return value
    if value.isdigit() and int(value) >= 16:
        return value
    raise argparse.ArgumentTypeError(f"expected an integer >= 16, 'auto' or 'none', got {value!r}")


def _load_model(path: str, device: str):
    """A savl model (.safetensors with its JSON config beside it), or another project's weights file
    (.pth/.pt/.ckpt, or .safetensors without a savl config) through spandrel, an optional extra."""
    import torch

    from savl.models.io import load_model

    p = Path(path)
    if p.suffix in (".pth", ".pt", ".ckpt") or (p.suffix == ".safetensors" and not p.with_suffix(".json").exists()):
        from savl.models.foreign import load_foreign_model

        return load_foreign_model(p, device)
    return load_model(path, map_location=torch.device(device))


def sr_model(spec: str | None, device: str):
    """The network `savl sr` runs for `--model SPEC`; without one, the zoo's default SR model (`savl models`
    marks it), after checking its files against its card. A zoo entry can also be named: `--model hat-book`."""
    from savl import zoo

    if spec is None or (not Path(spec).exists() and _is_zoo_name(spec)):
        name = spec or zoo.default_sr_model()
        model = zoo.load(name, device=device, train_if_missing=False)
        print(f"savl: using zoo model {name!r} ({zoo.model_dir(name)}/card.md)", file=sys.stderr)
        return model
    return _load_model(spec, device)


def _is_zoo_name(spec: str) -> bool:
    from savl import zoo

    try:
        return spec in zoo.entries()
    except SavlError:
        return False


def autocast_dtype(precision: str, device: str, model=None):
    """The compute precision of `savl sr`: "auto" is bf16 on CUDA where supported, else fp16 there, and fp32
    elsewhere (CPU autocast gains little); a model that declares it cannot run a half type gets fp32."""
    import torch

    if precision == "auto":
        if torch.device(device).type != "cuda":
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if getattr(model, "supports", {}).get(dtype, True) is False:
        return torch.float32
    return dtype


_WRITABLE = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def _sr_jobs(src: Path, dst: Path, suffix: str, ext: str) -> list[tuple[Path, Path, bool]]:
    """(input, output, output named by the user) triples. A folder maps to a folder (created) of
    `<stem><suffix>.<ext>`; a single file goes to `dst` when that names an image file, else into the folder
    `dst`. Refuses an output that is an input, and two inputs that would write the same file."""

    def name(f: Path) -> str:
        e = f.suffix.lower() if ext == "auto" else "." + ext
        return f.stem + suffix + (e if e in _WRITABLE else ".png")

    if src.is_dir():
        jobs = [(f, dst / name(f), False) for f in _folder_inputs(src, dst)]
    elif dst.suffix.lower() in _WRITABLE and not dst.is_dir():
        jobs = [(src, dst, True)]
    else:
        jobs = [(src, dst / name(src), False)]
    inputs = {f.resolve() for f, _, _ in jobs}
    seen: dict[Path, Path] = {}
    for f, out, _ in jobs:
        if out.resolve() in inputs:
            raise SavlError(f"{out}: would overwrite an input image; give another --suffix or output folder")
        if out.resolve() in seen:
            raise SavlError(f"{out}: both {seen[out.resolve()].name} and {f.name} would be written there")
        seen[out.resolve()] = f
    return jobs


def _sr_one(model, src: Path, dst: Path, named: bool, args, dtype) -> str:
    import numpy as np
    import torch

    from savl.cli_checks import small_image_error
    from savl.infer import model_scale, resample, upscale_to_array
    from savl.io import read_image, write_samples

    rgb, info = read_image(src, with_info=True)
    if info.alpha is not None and dst.suffix.lower() in (".jpg", ".jpeg") and not named:
        dst = dst.with_suffix(".png")  # as Real-ESRGAN: an image with alpha goes to PNG (a named .jpg fails)
        if dst.resolve() == src.resolve():
            raise SavlError(f"{dst}: would overwrite the input image; give another --suffix or output folder")
    x = rgb[:1] if info.gray else rgb
    if info.alpha is not None:  # gray + alpha goes through as RGB + alpha and comes back gray below
        x = torch.cat([rgb, info.alpha], 0)
    # Keep 16 bits where the output format can hold them (PNG, TIFF); other formats get 8.
    depth = info.bit_depth if dst.suffix.lower() in (".png", ".tif", ".tiff") else 8
    tile = None if args.tile == "none" else ("auto" if args.tile == "auto" else int(args.tile))
    try:
        out = upscale_to_array(
            model, x, bit_depth=depth, tile=tile, overlap=args.overlap, dtype=dtype, device=args.device
        )
    except (ValueError, RuntimeError) as e:
        small = small_image_error(src, x.shape, e)
        if small is None:
            raise
        raise small from None
    if info.gray and info.alpha is not None:  # back to gray + alpha: the mean of the three channels, rounded
        grey = (out[..., :3].sum(-1, dtype=np.uint32) + 1) // 3
        out = np.stack([grey.astype(out.dtype), out[..., 3]], -1)
    h, w = rgb.shape[-2:]
    if args.outscale is not None and args.outscale != model_scale(model):
        # As Real-ESRGAN's --outscale: the network's output resized to int(outscale * input size), Lanczos.
        out = resample(out, max(1, int(h * args.outscale)), max(1, int(w * args.outscale)))
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_samples(dst, out)
    return f"{src} -> {dst} ({w}x{h} -> {out.shape[1]}x{out.shape[0]})"


def cmd_sr(args) -> int:
    from tqdm import tqdm

    from savl.cli_checks import device, require_sr_model
    from savl.infer import OutOfMemoryError, model_scale

    args.device = str(device(args.device))  # 'auto' becomes cuda or cpu; an unusable device is one line
    model = sr_model(args.model, args.device)
    require_sr_model(model, args.model or "the zoo's default model")  # not an encoder, SAVL model, discriminator
    if args.outscale is not None and args.outscale <= 0:
        raise SavlError(f"--outscale must be positive, got {args.outscale}")
    scale = args.outscale if args.outscale is not None else model_scale(model)
    suffix = args.suffix if args.suffix is not None else f"_x{scale:g}"
    jobs = _sr_jobs(Path(args.input), Path(args.output), suffix, args.ext)
    dtype = autocast_dtype("fp32" if args.fp32 else args.precision, args.device, model)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    failed = []
    bar = tqdm(jobs, desc="savl sr", unit="image", disable=not progress, file=sys.stderr)
    for src, dst, named in bar:
        try:
            line = _sr_one(model, src, dst, named, args, dtype)
        except (SavlError, OutOfMemoryError) as e:
            # One bad file does not stop a batch: report it, go on, and exit 2 at the end.
            oom = f"{src}: out of memory (try a smaller --tile)"
            message = str(e).splitlines()[0] if isinstance(e, SavlError) else oom
            if len(jobs) == 1:
                raise SavlError(message) from None
            tqdm.write(f"savl: error: {message}", file=sys.stderr)
            failed.append(src)
            continue
        if progress:
            bar.set_postfix_str(src.name)
        else:
            print(line)
    bar.close()
    if failed:
        raise SavlError(f"{len(failed)} of {len(jobs)} images failed (listed above); the others were written")
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
    model = _load_model(args.model, str(dev))
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


# ---------------------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from savl.export import export_onnx

    model = sr_model(args.model, "cpu")
    image = None
    if args.image:
        from savl.io import read_image

        image = read_image(args.image)
    report = export_onnx(model, args.onnx, image=image, atol=args.atol, multiple=args.multiple)
    h, w = report.checked_on
    print(
        f"{args.model} -> {report.path} (x{report.scale}; input height and width: any multiple of "
        f"{report.size_multiple}); checked on a {w}x{h} image with {report.runtime}: "
        f"max abs difference from PyTorch {report.max_abs_diff:.2e}"
    )
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

    da = sub.add_parser(
        "data",
        help="public datasets: list, download, verify, prepare",
        description="prepare: Real-ESRGAN's training-data preparation of DF2K + OST under --root (multi-scale "
        "DF2K, 400x400 sub-images every 200 pixels, DF2K_OST_sub/meta_info.txt for configs/paper), or of the "
        "folders given with --from into --out.",
    )
    da.add_argument("action", choices=["list", "download", "verify", "prepare"])
    da.add_argument("name", nargs="?")
    da.add_argument("--root", help="where datasets live (default: $SAVL_DATA_DIR or data/downloads)")
    da.add_argument("--out", help="prepare: output folder (default <root>/DF2K_OST_sub)")
    da.add_argument("--from", dest="sources", action="append", help="prepare: a folder of HR images (repeatable)")
    da.add_argument("--multiscale", action="store_true", help="prepare --from: add the multi-scale copies")
    da.add_argument("--crop", type=int, default=400, help="prepare: sub-image side (default 400)")
    da.add_argument("--step", type=int, default=200, help="prepare: sub-image stride (default 200)")
    da.add_argument("--thresh", type=int, default=0, help="prepare: uncovered border that gets an edge tile")
    da.add_argument("--shortest-edge", type=int, default=400, help="prepare: last multi-scale copy")
    da.add_argument("--workers", type=int, default=1, help="prepare: processes (default 1)")
    da.add_argument("--quiet", action="store_true", help="prepare: no progress lines")
    da.set_defaults(func=cmd_data)

    s = sub.add_parser(
        "sr",
        help="super-resolve an image or a folder with a saved model",
        description="Super-resolve an image, or every image of a folder into an output folder (created). "
        "Tiling follows Real-ESRGAN: --tile is the side of each tile's core and --overlap the context added "
        "on each side, so an H x W image runs ceil(H/tile) * ceil(W/tile) tiles.",
    )
    s.add_argument("input", help="an image file or a folder of images")
    s.add_argument("output", help="an output image file, or a folder (created) for <stem><suffix>.<ext>")
    s.add_argument(
        "--model",
        default=None,
        help="a .safetensors model written by savl (JSON config beside it), a zoo model's name (savl models), "
        "or another project's .pth (Real-ESRGAN, HAT, SwinIR, ...) through the optional spandrel extra; "
        "default: the zoo's default SR model",
    )
    s.add_argument(
        "--tile",
        type=_tile_arg,
        default="256",
        help="LR side of each tile's core, excluding the overlap (as Real-ESRGAN's --tile); 'auto' or 'none' "
        "(whole image); default 256",
    )
    s.add_argument(
        "--overlap",
        "--tile-pad",
        type=overlap_arg,
        default=16,
        help="LR pixels of context added on each inner side of a tile and blended (Real-ESRGAN's --tile_pad)",
    )
    s.add_argument("-s", "--outscale", type=float, help="final scale: the model's output resized (Lanczos)")
    s.add_argument("--suffix", help="added to each output's stem (default _x<scale>, e.g. photo_x4.png)")
    s.add_argument(
        "--ext",
        choices=["auto", "png", "jpg", "tif", "webp"],
        default="auto",
        help="output format of a folder's outputs; auto keeps the input's (PNG where savl cannot write it, and for "
        "alpha where JPEG was asked for)",
    )
    s.add_argument("--device", default="cpu")
    s.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="auto: bf16 (else fp16) autocast on CUDA, fp32 elsewhere; a tile with NaN/Inf is redone in fp32",
    )
    s.add_argument("--fp32", action="store_true", help="full precision everywhere (same as --precision fp32)")
    s.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="same as --precision bf16")
    s.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar over the files (default: when stderr is a terminal; else one line per file)",
    )
    s.set_defaults(func=cmd_sr)

    sv = sub.add_parser("severity", help="the Eq. 15 severity map of an LR image (PNG + raw .npy)")
    sv.add_argument("input")
    sv.add_argument("output")
    sv.add_argument("--model", required=True)
    sv.add_argument("--device", default="cpu")
    sv.set_defaults(func=cmd_severity)

    ex = sub.add_parser(
        "export",
        help="export a model to ONNX (dynamic height/width), checked against PyTorch",
        description="Export an SR model to ONNX with dynamic input height and width (multiples of the model's "
        "window and encoder factor, recorded in the file's metadata), then run the file on a test image and "
        "compare it with PyTorch. Needs the 'export' extra (onnx, onnxscript, onnxruntime).",
    )
    ex.add_argument("model", help="a savl .safetensors model, or another project's .pth (spandrel extra)")
    ex.add_argument("--onnx", required=True, help="the .onnx file to write")
    ex.add_argument("--image", help="the LR test image (default: a crop of scikit-image's astronaut)")
    ex.add_argument("--atol", type=float, default=1e-3, help="largest accepted max abs difference (default 1e-3)")
    ex.add_argument("--multiple", type=int, help="override the size multiple of H and W")
    ex.set_defaults(func=cmd_export)

    from savl.eval_command import add_eval_parser
    from savl.train.command import add_train_parser
    from savl.zoo_command import add_models_parser

    add_train_parser(sub)
    add_eval_parser(sub)
    add_models_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from savl.cli_checks import run_reporting_errors

    def parse_and_run(argv):
        # inside the error handling: building the parser imports the training code (and torch), and Ctrl-C
        # there is an interruption too
        args = build_parser().parse_args(argv)
        from savl.infer import flush_subnormals

        flush_subnormals()  # before any parallel work, so PyTorch's worker threads inherit it
        return args.func(args)

    return run_reporting_errors(parse_and_run, argv)


if __name__ == "__main__":
    sys.exit(main())
