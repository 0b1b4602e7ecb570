"""Benchmark: MAConv's two code paths (grouped convs for two equal splits, or one conv per split) in training.

    python benchmarks/maconv_paths.py [--threads 2] [--rounds 30] [--out benchmarks/results]

Both paths compute the same function with the same weights (tests/test_encoder.py checks them against
MAConv's definition). In one process, on one fixed book batch (4 LR patches of 32x32, their 128x128 HR), the
book-profile SAVL model is trained with channels-last weights and fused Adam as the training loop does on the
CPU, switching the path every 5 timed steps (one untimed step after each switch), `--rounds` times. Measured:
the representation step (forward, backward and Adam update of encoder and decoder; no data degradation) and
the encoder's forward + backward alone. One process and short alternations, because on a shared host the
speed of the same code drifts by 20 % from one minute to the next; each median is over 5 x rounds steps.

Writes `maconv_paths.json` and `.md` under --out, atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from savl.provenance import atomic_write_text, cpu_model, git_commit

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("per_split", "paired")


def measure(threads: int, rounds: int) -> dict:
    import torch

    from savl.models import blocks
    from savl.models.savl import SAVL

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model = SAVL.build("book").train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), fused=True)
    gen = torch.Generator().manual_seed(0)
    lr, hr = torch.rand(4, 3, 32, 32, generator=gen), torch.rand(4, 3, 128, 128, generator=gen)
    convs = [m for m in model.modules() if isinstance(m, blocks.MAConv)]
    if not all(m.paired for m in convs):
        raise RuntimeError("the book encoder's MAConvs should all take the paired path")

    def use(path: str) -> None:
        for m in convs:
            m.paired = path == "paired"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(lr, hr, 10)["loss"].backward()
        opt.step()

    def encoder() -> None:
        post = model.encoder(lr)
        (post.mu.square().mean() + post.logvar.mean()).backward()
        model.zero_grad(set_to_none=True)

    times: dict[str, dict[str, list[float]]] = {"step": {p: [] for p in PATHS}, "encoder": {p: [] for p in PATHS}}
    for fn in (step, encoder):
        for path in PATHS:
            use(path)
            for _ in range(3):
                fn()
    for r in range(rounds):
        for path in PATHS if r % 2 == 0 else PATHS[::-1]:
            use(path)
            for name, fn in (("step", step), ("encoder", encoder)):
                fn()
                for _ in range(5):
                    t = time.perf_counter()
                    fn()
                    times[name][path].append(time.perf_counter() - t)
    use("paired")
    out = {}
    for name, by in times.items():
        med = {p: statistics.median(v) for p, v in by.items()}
        out[name] = {"median_s": med, "per_split_over_paired": med["per_split"] / med["paired"], "all_s": by}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    load = list(os.getloadavg())
    res = measure(args.threads, args.rounds)
    report = {
        "benchmark": "maconv_paths",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "commit": git_commit(ROOT, dirty=True),
        "load_average_at_start": load,
        "load_average_at_end": list(os.getloadavg()),
        "results": res,
    }
    lines = [
        "# MAConv: grouped convs (paired) against one conv per split, in training",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['cpu']} ({report['cores']} cores), {args.threads} torch threads; commit "
        f"{report['commit']}; load average {load} at start, {report['load_average_at_end']} at end.",
        "",
        "Median over the timed steps (book profile, one fixed batch, channels-last weights, fused Adam):",
        "",
        "| measured | per split (ms) | paired (ms) | per split / paired |",
        "|---|---:|---:|---:|",
    ]
    labels = {"step": "representation step (no degradation)", "encoder": "encoder forward + backward"}
    for name, r in res.items():
        m = r["median_s"]
        lines.append(
            f"| {labels[name]} | {m['per_split'] * 1e3:.1f} | {m['paired'] * 1e3:.1f} | "
            f"{r['per_split_over_paired']:.2f}x |"
        )
    out = Path(args.out)
    atomic_write_text(out / "maconv_paths.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "maconv_paths.md", "\n".join(lines) + "\n")
    for name, r in res.items():
        print(f"{labels[name]}: {r['per_split_over_paired']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
