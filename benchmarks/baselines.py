"""Benchmark: the baselines beside SAVL's SR nets at book size: parameters, forward GFLOPs, training cost per step.

    python benchmarks/baselines.py [--steps 3] [--warmup 1] [--out DIR]

Training cost: each entry trains `warmup + steps` steps through the real loop (`savl.train.train`, book profile,
batch 4 of 32 x 32 LR patches made by the Real-ESRGAN pipeline) in this one process, one after the other, and
reports the median CPU seconds per step (process time of all threads, which a loaded machine affects less than
wall time) and wall seconds per step. Entries: plain HAT and DA-RHAG (SAVL's guided SR net, frozen encoder)
in the L1 stage, ReDSR's one stage, DACESR's REE stage and its SR stage.

Parameters and GFLOPs: of the network that runs at test time (ReDSR: encoder + generator; DACESR: SR net +
REE), counted by `torch.utils.flop_counter` on one 64 x 64 LR input (multiply-adds x 2 of convolutions and
matrix products; the elementwise work of DACESR's selective scan is not in that count), at book and paper
sizes. Writes `baselines_cpu.json` and `.md` under --out (default benchmarks/results), atomically.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from savl.provenance import atomic_write_text, cpu_model, git_commit

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = {
    "HAT (plain)": ("configs/book/stage2.yaml", ["model.channel_guidance=false", "model.spatial_guidance=false"]),
    "DA-RHAG (SAVL)": ("configs/book/stage2.yaml", []),
    "ReDSR": ("configs/baselines/redsr.yaml", []),
    "DACESR REE": ("configs/baselines/dacesr_ree.yaml", ["batch=4"]),
    "DACESR": ("configs/baselines/dacesr.yaml", []),
}


def networks(profile: str) -> dict[str, torch.nn.Module]:
    from savl.baselines.dacesr import DACESRConfig, DACESRNet
    from savl.baselines.redsr import ReDSRConfig, ReDSRNet
    from savl.models.srnet import DARHAGNet, SRNetConfig

    sr = SRNetConfig.profile(profile)
    return {
        "HAT (plain)": DARHAGNet(sr.replace(channel_guidance=False, spatial_guidance=False)),
        "DA-RHAG (SAVL)": DARHAGNet(sr),
        "ReDSR": ReDSRNet(ReDSRConfig.profile(profile)),
        "DACESR": DACESRNet(DACESRConfig.profile(profile)),
    }


def gflops(net: torch.nn.Module, side: int = 64) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, side, side)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.eval()(x)
    return counter.get_total_flops() / 1e9


def train_cost(config: str, extra: list[str], steps: int, warmup: int) -> dict:
    from savl.train import load_config, train

    with tempfile.TemporaryDirectory() as tmp:
        over = [
            f"output={tmp}",
            "profile=book",
            f"schedule.iterations={warmup + steps}",
            "log_every=1",
            "val_every=null",
            "checkpoint_every=null",
            "progress=none",
            "init_from=null",
            *extra,
        ]
        run = train(load_config(ROOT / config, over))
        metrics = run.metrics[warmup:]
        return {
            "cpu_s_per_step": statistics.median(r["cpu_s_per_step"] for r in metrics),
            "s_per_step": statistics.median(r["s_per_step"] for r in metrics),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    torch.manual_seed(0)
    sizes = {}
    for profile in ("book", "paper"):
        for name, net in networks(profile).items():
            side = 64 if profile == "book" or name != "DACESR" else 32  # paper DACESR at 64x64 is minutes on CPU
            sizes.setdefault(name, {})[profile] = {
                "params_m": sum(q.numel() for q in net.parameters()) / 1e6,
                "gflops": gflops(net, side),
                "lr_side": side,
            }
    cost = {}
    for name, (config, extra) in ENTRIES.items():
        t = time.time()
        cost[name] = train_cost(config, extra, args.steps, args.warmup)
        print(f"{name}: {cost[name]} ({time.time() - t:.0f} s)", flush=True)
    record = {
        "commit": git_commit(),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "warmup": args.warmup,
        "sizes": sizes,
        "train_cost_book": cost,
        "note": "taken on a shared 2-core machine under load (other sessions training): compare the CPU seconds",
    }
    lines = [
        "# Baselines beside SAVL's SR nets (benchmarks/baselines.py)",
        "",
        f"Commit {record['commit']}, {record['cpu']}, {record['threads']} threads; {record['note']}.",
        "",
        "| network | params book (M) | GFLOPs book (64x64 LR) | params paper (M) | GFLOPs paper | CPU-s/step book |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in sizes.items():
        b, pp = s["book"], s["paper"]
        paper_flops = f"{pp['gflops']:.1f}" + ("" if pp["lr_side"] == 64 else f" ({pp['lr_side']}x{pp['lr_side']})")
        lines.append(
            f"| {name} | {b['params_m']:.3f} | {b['gflops']:.2f} | {pp['params_m']:.2f} | {paper_flops} | "
            f"{cost[name]['cpu_s_per_step']:.2f} |"
        )
    lines.append(f"| DACESR REE (training only) | | | | | {cost['DACESR REE']['cpu_s_per_step']:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "baselines_cpu.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(args.out / "baselines_cpu.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
