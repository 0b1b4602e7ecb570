"""The SR levers tried before training the zoo: validation PSNR curves of short plain-HAT runs that differ in one
setting, beside bicubic on the same frozen validation set (the 4 held-out photos' 128-pixel centre crops, one
Real-ESRGAN draw each, as every zoo run validates).

    python benchmarks/sr_levers.py RUN_DIR... --out benchmarks/results/sr_levers.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from savl.data.datasets import FrozenValidationSet
    from savl.imresize import imresize
    from savl.metrics import psnr
    from savl.provenance import atomic_write_text
    from savl.train.run import Run

    runs = [Run(r) for r in args.runs]
    vs = FrozenValidationSet.load(runs[0].path / "valset")
    bic = []
    for i in range(len(vs)):
        item = vs[i]
        up = imresize(item["lr"][None], 4).clamp(0, 1)
        bic.append(float(psnr(up, item["hr"][None], crop_border=4, y_channel=True)[0]))
    bicubic = sum(bic) / len(bic)
    steps = sorted({r["step"] for run in runs for r in run.metrics if "val_psnr" in r})
    lines = [
        "# SR levers: validation PSNR of short plain-HAT runs (book size, batch 4, 1 thread)",
        "",
        f"Bicubic on the same validation set: {bicubic:.2f} dB. Written by `python benchmarks/sr_levers.py "
        + " ".join(Path(r).name for r in args.runs) + "` from the runs' metrics.jsonl; the runs are "
        "`savl train configs/zoo/hat_book.yaml` on the training photos with the settings below and a shortened "
        "schedule (a dash: the run was stopped before that step).",
        "",
        "| run | setting | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|---|" + "---:|" * len(steps),
    ]
    for run in runs:
        cfg = run.config
        setting = f"usm {cfg.data.usm}, lr {cfg.optimiser.lr:g}"
        val = {r["step"]: r["val_psnr"] for r in run.metrics if "val_psnr" in r}
        cells = [f"{val[s]:.2f}" if s in val else "-" for s in steps]
        lines.append(f"| {run.path.name} | {setting} | " + " | ".join(cells) + " |")
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(json.dumps({"bicubic": bicubic}))


if __name__ == "__main__":
    main()
