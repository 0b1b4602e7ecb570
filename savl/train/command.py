"""`savl train CONFIG [--set key=value ...] [--resume]`: CONFIG is a YAML file or the name of a config that
ships with savl (`book/representation`, `smoke/stage1`, `ablations/club`, ...; see `savl train --list`).

Also runnable on its own, which is what torchrun needs when the console script is not installed:
`torchrun --nproc_per_node=2 -m savl.train.command configs/smoke/stage1.yaml`.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from savl.errors import ConfigError


def packaged_configs() -> list[str]:
    """Names of the run configs shipped inside the package (`savl/configs/<group>/<name>.yaml`)."""
    root = resources.files("savl").joinpath("configs")
    return sorted(
        f"{group.name}/{f.name[: -len('.yaml')]}"
        for group in root.iterdir()
        if group.is_dir()
        for f in group.iterdir()
        if f.name.endswith(".yaml")
    )


def resolve_config(spec: str) -> Path:
    """A YAML file when `spec` names one, else the packaged config of that name (".yaml" optional), so
    `savl train book/representation` works from an installed wheel as from the repository."""
    path = Path(spec)
    if path.exists():
        return path
    name = spec[: -len(".yaml")] if spec.endswith(".yaml") else spec
    if name.startswith("configs/"):  # the repository path of a packaged config, run from another folder
        name = name[len("configs/") :]
    if name in packaged_configs():
        return Path(str(resources.files("savl").joinpath("configs", *name.split("/")))).with_suffix(".yaml")
    raise ConfigError(f"{spec}: no such config file, nor a config shipped with savl (see `savl train --list`)")


def cmd_train(args) -> int:
    from savl.train.config import load_config
    from savl.train.loop import train

    if args.list:
        print("\n".join(packaged_configs()))
        return 0
    if args.config is None:
        raise ConfigError("savl train: give a config file or a packaged config name (see `savl train --list`)")
    cfg = load_config(resolve_config(args.config), args.set)
    run = train(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(f"{run.path}: finished ({cfg.stage}, {cfg.schedule.iterations} iterations)")
    return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train one stage from a YAML config (torchrun for DDP)")
    p.add_argument(
        "config",
        nargs="?",
        help="a YAML run config (e.g. configs/book/stage1.yaml) or the name of one shipped with savl "
        "(e.g. book/stage1)",
    )
    p.add_argument("--list", action="store_true", help="list the configs shipped with savl and exit")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (value parsed as YAML), e.g. --set optimiser.lr=1e-4 --set profile=paper",
    )
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint, exactly")
    p.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="savl")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "train":
        argv = ["train", *argv]
    args = parser.parse_args(argv)
    from savl.cli_checks import run_reporting_errors

    return run_reporting_errors(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
