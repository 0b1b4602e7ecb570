"""`savl train CONFIG [--set key=value ...] [--resume]` (argparse wiring; the lead hooks it into savl/cli.py).

Also runnable on its own, which is what torchrun needs when the console script is not installed:
`torchrun --nproc_per_node=2 -m savl.train.command configs/smoke/stage1.yaml`.
"""

from __future__ import annotations

import argparse
import os
import sys

from savl.errors import SavlError


def cmd_train(args) -> int:
    from savl.train.config import load_config
    from savl.train.loop import train

    cfg = load_config(args.config, args.set)
    run = train(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(f"{run.path}: finished ({cfg.stage}, {cfg.schedule.iterations} iterations)")
    return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train one stage from a YAML config (torchrun for DDP)")
    p.add_argument("config", help="a YAML run config, e.g. configs/book/stage1.yaml")
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
    try:
        return args.func(args)
    except SavlError as e:
        print(f"savl: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # as `savl` itself: the machine's answer in one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"savl: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("savl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
