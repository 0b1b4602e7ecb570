"""`savl models`: list the model zoo with each card's held-out numbers, verify it, train it, show a card.

`make models` runs `savl models train`, which trains every entry whose files are missing (resuming an
interrupted run from its last checkpoint under runs/zoo/) and packages it with its card. `savl models
rescore` scores shipped models again (weights brought to the zoo's float16 storage) and rewrites their cards.
"""

from __future__ import annotations

import sys

from savl.errors import SavlError


def cmd_models(args) -> int:
    from savl import zoo

    root = args.root
    if args.action == "list":
        rows = zoo.summary_rows(root)
        width = max([len(r["name"]) for r in rows] + [4])
        for r in rows:
            mark = "*" if r["default_sr"] else " "
            state = r.get("held_out", "") if r["present"] else "not trained (savl models train " + r["name"] + ")"
            print(f"{mark} {r['name']:<{width}}  {r['kind']:<14} {r['tier']:<4} {state}")
        print("(* = the model `savl sr` uses when no --model is given; held-out split of the embedded photos)")
        return 0
    names = args.names or list(zoo.entries(root))
    if args.action == "verify":
        bad = 0
        for name in names:
            if not zoo.is_present(name, root):
                print(f"{name}: not trained")
                bad += 1
                continue
            zoo.verify(name, root)
            print(f"{name}: ok")
        return 1 if bad and args.names else 0
    if args.action == "show":
        for name in names:
            zoo.verify(name, root)
            print((zoo.model_dir(name, root) / "card.md").read_text())
        return 0
    if args.action == "rescore":
        for name in names:
            card = zoo.rescore(name, root, why=args.why)
            print(f"{name}: re-scored ({card['weights_dtype']} weights)")
        return 0
    if args.action == "train":
        from tqdm import tqdm

        if args.jobs < 1:
            raise SavlError(f"--jobs {args.jobs}: train at least one entry at a time")

        todo = [n for n in names if args.force or not zoo.is_present(n, root)]
        for name in names:
            if name not in todo:
                zoo.verify(name, root)
        if not todo:
            print("savl: every zoo model is present and matches its card; nothing to train")
            return 0
        from savl import zoo_schedule

        todo = zoo_schedule.order(todo, zoo_schedule.dependencies(todo, root))
        bar = tqdm(total=len(todo), desc="zoo", unit="model", file=sys.stderr, disable=None)

        def done(name, card):
            bar.update(1)
            print(f"{name}: trained and packaged ({zoo.model_dir(name, root)})")
            for protocol, metrics in card["held_out_metrics"].items():
                shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
                print(f"  held-out {protocol}: {shown}")

        if args.jobs > 1 and len(todo) > 1:
            zoo_schedule.train_parallel(todo, args.jobs, root=root, runs=args.runs, on_done=done)
        else:
            for name in todo:
                done(name, zoo.build(name, root=root, runs=args.runs))
        bar.close()
        return 0
    raise SavlError(f"unknown action {args.action!r}")


def add_models_parser(subparsers) -> None:
    m = subparsers.add_parser("models", help="the model zoo: list, verify, train, show, rescore")
    m.add_argument("action", nargs="?", default="list", choices=["list", "verify", "train", "show", "rescore"])
    m.add_argument("names", nargs="*", help="zoo entries (default: all)")
    m.add_argument("--root", help="zoo folder (default: $SAVL_MODELS or models/ in the repository)")
    m.add_argument("--runs", help="where training runs go (default: runs/zoo)")
    m.add_argument("--force", action="store_true", help="train again even when the model is present")
    m.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N entries at a time, one process at one thread each (an entry that starts from "
                   "another's shipped weights waits for it); `make models` uses one per core")
    m.add_argument("--why", default="", help="rescore: the reason, recorded in each card")
    m.set_defaults(func=cmd_models)
