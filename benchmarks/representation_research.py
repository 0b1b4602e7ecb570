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


def _loads(rows) -> str:
    """The machine's load while the rows were scored (rows written before it was recorded: the range then)."""
    loads = [r["load_average"] for r in rows if "load_average" in r]
    if not loads:
        return "load not recorded."
    return f"load averages of {min(loads):.0f}-{max(loads):.0f} on 2 cores while these were scored."


def report(jsonl: Path, title: str = "What makes the representation learn: the sweep, scored on the held-out photos",
           note: str = "") -> str:
    """The sweep as a Markdown table (one row per scored code), for benchmarks/results/."""
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]

    def pct(r, k):
        return f"{100 * r[k]:.1f}" if k in r else "-"

    lines = [
        f"# {title}",
        "",
        *([note, ""] if note else []),
        "Written by `python benchmarks/representation_research.py ... --out "
        f"{jsonl.as_posix()}` (then `--report`). Probes: `savl.zoo.held_out_probe_metrics` on the 4 held-out "
        "photos (Table 1: 64 crops per noise level, chance 25 %; Table 5: k-means accuracy, constant code "
        "shown as 'const'). One seed per row; " + _loads(rows),
        "",
        "| code | likelihood | training degradations | beta (pixel) | anneal steps | steps | KL nats/px "
        "| L1 (zero code) "
        "| T1 content % | T1 noise % | T5 type % | T5 blur % | T5 noise % |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        kl = f"{r['kl_nats_per_pixel']:.3f}" if "kl_nats_per_pixel" in r else "-"
        l1 = f"{r['rec_l1']:.4f} ({r['rec_l1_zero_code']:.4f})" if "rec_l1" in r else "-"
        proto = r.get("protocol", "-").replace("+", " + ")
        lines.append(
            f"| {r['name']} | {r.get('rec', '-')} | {proto} | {r.get('beta_final', '-')} "
            f"| {r.get('anneal_steps', '-')} | {r.get('steps', '-')} "
            f"| {kl} | {l1} | {pct(r, 't1_content_probe')} | {pct(r, 't1_noise_probe')} | {pct(r, 't5_type')} "
            f"| {pct(r, 't5_blur')} | {pct(r, 't5_noise')} |"
        )
    if rows:
        r = rows[0]
        lines.append(
            f"| const (majority label) | - | - | - | - | - | - | - | - | - | {pct(r, 't5_type_chance')} "
            f"| {pct(r, 't5_blur_chance')} | {pct(r, 't5_noise_chance')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="finished representation run folders, or checkpoint folders of runs")
    ap.add_argument("--reference", nargs="*", default=[], choices=["untrained", "handcrafted"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="")
    ap.add_argument("--report", action="store_true", help="write <out>.md from the rows in --out and stop")
    ap.add_argument("--title", default=None, help="the report's heading (with --report)")
    ap.add_argument("--note", default="", help="a paragraph under the heading: how the rows were made")
    args = ap.parse_args(argv)
    if args.report:
        out = Path(args.out)
        kw = {"title": args.title} if args.title else {}
        out.with_suffix(".md").write_text(report(out, note=args.note, **kw))
        return
    torch.set_num_threads(1)
    from savl.analysis.reference import HandcraftedCode
    from savl.models.io import load_model
    from savl.models.savl import SAVL
    from savl.train.run import Run
    from savl.zoo import held_out_probe_metrics, held_out_representation_metrics

    todo = [(Path(r).name, "run", r) for r in args.runs] + [(r, r, None) for r in args.reference]
    for name, kind, path in todo:
        t0 = time.perf_counter()
        row = {"name": name, "label": args.label, "kind": kind, "eval_seed": args.seed}
        if kind == "run":
            p = Path(path)
            if p.parent.name == "checkpoints":  # a checkpoint of a run: runs/<name>/checkpoints/step_000500
                run, step = Run(p.parent.parent), int(p.name.split("_")[-1])
                model = load_model(p / "savl.safetensors").eval()
                row["name"] = f"{run.path.name}@{step}"
            else:
                run = Run(p)
                model = run.load_savl()
                step = run.config.schedule.iterations
            cfg = run.config
            row.update(
                variant=cfg.model.variant,
                rec=cfg.losses.rec,
                beta_final=cfg.losses.beta_final,
                reduction=cfg.losses.reduction,
                lam=cfg.losses.lam,
                anneal_steps=cfg.losses.anneal_steps,
                steps=step,
                schedule_steps=cfg.schedule.iterations,
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
