"""`savl models`: list the model zoo with each card's held-out numbers, verify it, train it, show a card.

`make models` runs `savl models train --tier cpu`, which trains every entry of that tier whose files are missing
(resuming an interrupted run from its last checkpoint under runs/zoo/) and packages it with its card. `savl models
rescore` scores shipped models again (weights brought to the zoo's float16 storage) and rewrites their cards.
"""

from __future__ import annotations

import sys

from savl.errors import SavlError


def cmd_models(args) -> int:
    from savl import zoo

    root = args.root
    args.action = args.action or "list"  # `savl models` alone
    if args.action == "list":
        rows = [r for r in zoo.summary_rows(root) if args.tier in (None, r["tier"])]
        width = max([len(r["name"]) for r in rows] + [4])
        for r in rows:
            mark = "*" if r["default_sr"] else " "
            state = r.get("held_out", "") if r["present"] else "not trained (savl models train " + r["name"] + ")"
            print(f"{mark} {r['name']:<{width}}  {r['kind']:<14} {r['tier']:<4} {state}")
        print("(* = the model `savl sr` uses when no --model is given; held-out split of the embedded photos)")
        return 0
    names = args.names or [n for n, e in zoo.entries(root).items() if args.tier in (None, e.tier)]
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


ACTIONS = {
    "list": "list the zoo with each card's held-out numbers (the default)",
    "verify": "check every file against its card",
    "train": "train every entry whose files are missing and write its card",
    "show": "print cards",
    "rescore": "score shipped models again (weights brought to float16 storage) and rewrite their cards",
}


def add_models_parser(subparsers) -> None:
    import argparse

    from savl.zoo import TIERS

    def common(p, suppress: bool) -> None:
        # On an action, an option left out must not reset one given before the action (`savl models --root X
        # verify`), hence SUPPRESS there.
        d = {"default": argparse.SUPPRESS} if suppress else {}
        p.add_argument("--root", help="zoo folder (default: $SAVL_MODELS or models/ in the repository)", **d)
        p.add_argument("--tier", choices=TIERS,
                       help="only the entries of this tier when no names are given (`make models`: cpu)", **d)

    m = subparsers.add_parser("models", help="the model zoo: " + ", ".join(ACTIONS))
    common(m, suppress=False)
    m.set_defaults(func=cmd_models, action="list", names=[], runs=None, force=False, jobs=1, why="")
    actions = m.add_subparsers(dest="action", metavar="ACTION", title="actions (default: list)")
    for action, text in ACTIONS.items():
        a = actions.add_parser(action, help=text, description=text)
        a.add_argument("names", nargs="*", help="zoo entries (default: all, or all of --tier)")
        common(a, suppress=True)
        if action == "train":
            a.add_argument("--runs", help="where training runs go (default: runs/zoo)")
            a.add_argument("--force", action="store_true", help="train again even when the model is present")
            a.add_argument("--jobs", type=int, default=1, metavar="N",
                           help="train N entries at a time, one process at one thread each (an entry that starts "
                           "from another's shipped weights waits for it); `make models` uses one per core")
        if action == "rescore":
            a.add_argument("--why", default="", help="the reason, recorded in each card")
