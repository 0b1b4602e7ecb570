"""Checks of command-line values shared by the subcommands (device, seed, tile overlap, the kind of model), so
that a bad value is one line naming the option, before any work starts.

torch is imported inside the functions: `savl --help` builds the parser without it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from savl.errors import ConfigError, ImageError, ModelFileError, SavlError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Seeds are stored as signed 64-bit integers by torch; anything outside [0, 2**63) is refused up front.
SEED_LIMIT = 2**63


def seed_arg(value: str) -> int:
    """argparse type of `--seed`: an integer in [0, 2**63)."""
    try:
        seed = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if not 0 <= seed < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must lie in [0, 2**63), got {value}")
    return seed


def overlap_arg(value: str) -> int:
    """argparse type of `--overlap`: a non-negative integer (context pixels added around each tile's core)."""
    try:
        overlap = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if overlap < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {overlap}")
    return overlap


def device(name: str) -> torch.device:
    """`--device`: cpu, cuda, cuda:N, mps or auto (CUDA when there is one, else the CPU); one line otherwise."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r}: not a device (use cpu, cuda, cuda:N, mps or auto)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {name}: not supported (use cpu, cuda, cuda:N, mps or auto)")
    return dev


def require_sr_model(model: nn.Module, path: str | Path) -> int:
    """The model's scale, or a one-line error when it is not a super-resolution network (an encoder, a SAVL
    model, a decoder, a discriminator)."""
    from savl.infer import model_scale

    try:
        return model_scale(model)
    except ValueError:
        kind = getattr(model, "architecture", type(model).__name__)
        raise ModelFileError(
            f"{path}: {kind} is not a super-resolution network "
            "(give an SR net, e.g. a run's final/srnet_ema.safetensors)"
        ) from None


#: Below this side an image may be too small for a network (an encoder's coarsest level of one pixel cannot
#: be group-normalised): such a failure is reported as the image's size, in one line.
SMALL_SIDE = 16


def small_image_error(path, shape, error: Exception) -> ImageError | None:
    """The one-line error for a network that cannot take an image this small, or None when the image is not
    small (then `error` is a real problem and the caller re-raises it)."""
    h, w = int(shape[-2]), int(shape[-1])
    if min(h, w) >= SMALL_SIDE:
        return None
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ImageError(f"{path}: {w}x{h} is too small for this model ({first})")


def run_reporting_errors(func, args) -> int:
    """`func(args)` as a command runs it: a SavlError or the machine's OSError (a full disk, a folder that is a
    file, no permission) is one line on stderr and exit code 2; Ctrl-C is "interrupted" and 130."""
    import sys

    try:
        return func(args)
    except SavlError as e:
        print(f"savl: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"savl: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("savl: interrupted", file=sys.stderr)
        return 130
