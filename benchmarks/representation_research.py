"""What makes the representation learn: score trained SAVL runs (and reference codes) on the held-out photos.

Each run folder (a finished `savl train` representation run) is scored by the Table 1 and Table 5 protocols
on the held-out split of the embedded photos (savl.data.split.HELD_OUT, never trained on), plus the ELBO
terms of `savl.zoo.held_out_representation_metrics`. One JSON line per scored code is appended to --out, with
the run's config (what was varied) and the machine's load, so a sweep builds up one file a chapter can read.

    python benchmarks/representation_research.py runs/rep-beta-1e-3 ... --out benchmarks/results/rep.jsonl
    python benchmarks/representation_research.py --reference untrained handcrafted --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="finished representation run folders")
    ap.add_argument("--reference", nargs="*", default=[], choices=["untrained", "handcrafted"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from savl.analysis.reference import HandcraftedCode
    from savl.models.savl import SAVL
    from savl.train.run import Run
    from savl.zoo import held_out_probe_metrics, held_out_representation_metrics

    todo = [(Path(r).name, "run", r) for r in args.runs] + [(r, r, None) for r in args.reference]
    for name, kind, path in todo:
        t0 = time.perf_counter()
        row = {"name": name, "label": args.label, "kind": kind, "eval_seed": args.seed}
        if kind == "run":
            run = Run(path)
            cfg = run.config
            model = run.load_savl()
            row.update(
                variant=cfg.model.variant,
                rec=cfg.losses.rec,
                beta_final=cfg.losses.beta_final,
                reduction=cfg.losses.reduction,
                lam=cfg.losses.lam,
                anneal_steps=cfg.losses.anneal_steps,
                steps=cfg.schedule.iterations,
                batch=cfg.batch,
                gt_size=cfg.data.gt_size,
                protocol=cfg.data.protocol,
                lr=cfg.optimiser.lr,
                seed=cfg.seed,
            )
            row.update(held_out_representation_metrics(model))
            encoder = model
        elif kind == "untrained":
            torch.manual_seed(args.seed)
            encoder = SAVL.build("book")
        else:
            encoder = HandcraftedCode()
        row.update(held_out_probe_metrics(encoder, seed=args.seed))
        row["eval_s"] = time.perf_counter() - t0
        row["load_average"] = os.getloadavg()[0]
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))


if __name__ == "__main__":
    main()
