"""SR network speed and memory (issue: DA-RHAG network; issue 10 item 7: the cost of DSCA).

0. Guidance cost: forward + backward (L1) of plain HAT and of DA-RHAG (both guidances, without spatial, without
   channel) with the same backbone size, measured round-robin in one run so that machine load affects all
   alike; reported as the median over rounds of each variant's time divided by plain HAT's in the same round,
   for the process CPU time (what the step computes; with one thread the least affected by other processes
   on a shared machine) and for the wall-clock time.
   The posterior is computed once beforehand (the SR network's own cost, as in the frozen-encoder stages); a
   last variant runs the encoder inside the step too, for the joint stage.
1. Training step: forward + backward time and peak memory of the DA-RHAG network, the fused attention path
   (`scaled_dot_product_attention`) against a straightforward reference (materialised softmax attention, same
   weights, fp32, eager), as a ratio measured in one run. CPU: a small batch of the chosen profile; CUDA (when
   present): batch 32 of 64x64 LR at paper size, fp32 and bf16 autocast, channels_last, torch.compile, with MFU
   from the FLOP count.
2. `savl sr` memory: peak resident memory of tiled inference on a 512x512 and a 2048x2048 LR image at the same
   tile size, each in a fresh process; the working memory (peak minus the input/output buffers, which must grow
   with the image) should stay flat.

    python benchmarks/srnet.py [--profile book] [--batch 2] [--repeats 3] [--rounds 9]
        [--out benchmarks/results/srnet_cpu.json]      # also writes the .md beside it
    python benchmarks/srnet.py --only guidance --threads 1 --rounds 15   # re-measure item 0 alone, in place
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from savl.models.srnet import DARHAGNet, SRNetConfig  # noqa: E402
from savl.provenance import atomic_write_text, git_commit, machine_info  # noqa: E402


def machine() -> dict:
    info = machine_info()
    info["git_commit"] = git_commit(ROOT, dirty=True)
    return info


def _proc_status(key: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


class _Reference(torch.nn.Module):
    """The same network run through the materialised-attention path."""

    def __init__(self, net: DARHAGNet):
        super().__init__()
        self.net = net

    def forward(self, lr):
        return self.net(lr, reference=True)


def step_time(model, lr, hr, repeats: int, dtype=None) -> tuple[float, float]:
    """Median seconds of forward + backward (L1 loss), and peak memory in MB (CUDA) or max RSS growth (CPU)."""
    device = lr.device
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        rss0 = _proc_status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size (VmHWM) to now
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = (model(lr).float() - hr).abs().mean()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i > 0:  # the first iteration warms up allocators and kernels
            times.append(time.perf_counter() - t)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = _proc_status("VmHWM") - rss0
    return sorted(times)[len(times) // 2], peak


def bench_guidance_cost(profile: str, batch: int, patch: int, rounds: int) -> dict:
    """Item 0 of the module docstring: per-variant median seconds and median per-round ratio to plain HAT."""
    torch.manual_seed(0)
    cfg = SRNetConfig.profile(profile)
    nets = {
        "plain HAT": DARHAGNet(cfg.replace(channel_guidance=False, spatial_guidance=False)),
        "DA-RHAG, both guidances": DARHAGNet(cfg),
        "DA-RHAG, without spatial": DARHAGNet(cfg.replace(spatial_guidance=False)),
        "DA-RHAG, without channel": DARHAGNet(cfg.replace(channel_guidance=False)),
    }
    backbone = nets["plain HAT"].sr.state_dict()
    for net in nets.values():
        net.sr.load_state_dict(backbone)  # same backbone weights everywhere
        net.train()
    lr = torch.rand(batch, 3, patch, patch)
    hr = torch.rand(batch, 3, 4 * patch, 4 * patch)
    with torch.no_grad():
        posterior = nets["DA-RHAG, both guidances"].posterior(lr)
    guided = nets["DA-RHAG, both guidances"]
    steps = {name: (lambda net=net: net(lr, posterior)) for name, net in nets.items()}
    steps["DA-RHAG, both guidances, encoder in the step"] = lambda: guided(lr)
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds + 1):
        for name, forward in steps.items():
            for net in nets.values():
                net.zero_grad(set_to_none=True)
            t, c = time.perf_counter(), time.process_time()
            (forward() - hr).abs().mean().backward()
            if r > 0:  # round 0 warms up
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    rows = []
    for name in steps:
        cpu_ratios = [a / b for a, b in zip(cpu[name], cpu["plain HAT"])]
        wall_ratios = [a / b for a, b in zip(wall[name], wall["plain HAT"])]
        rows.append(
            {
                "variant": name,
                "median_cpu_seconds": median(cpu[name]),
                "median_cpu_ratio_to_plain_hat": median(cpu_ratios),
                "cpu_ratio_range": [min(cpu_ratios), max(cpu_ratios)],
                "median_seconds": median(wall[name]),
                "median_ratio_to_plain_hat": median(wall_ratios),
                "wall_ratio_range": [min(wall_ratios), max(wall_ratios)],
                "parameters": nets.get(name, guided).parameter_counts()["total"],
            }
        )
    return {
        "profile": profile,
        "batch": batch,
        "lr_patch": patch,
        "rounds": rounds,
        "command": " ".join(["python", "benchmarks/srnet.py", *sys.argv[1:]]),
        "machine": machine(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "rows": rows,
        "load_average_1min_at_end": os.getloadavg()[0],
    }


def forward_flops(model, lr) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(lr).abs().mean().backward()
    return float(counter.get_total_flops())


def bench_step(profile: str, batch: int, patch: int, repeats: int, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    net = DARHAGNet(SRNetConfig.profile(profile)).to(device)
    lr = torch.rand(batch, 3, patch, patch, device=device)
    hr = torch.rand(batch, 3, patch * 4, patch * 4, device=device)
    rows = []
    flops = forward_flops(net, lr[:1]) * batch
    variants = [
        ("reference (materialised attention, fp32, eager)", _Reference(net), None),
        ("fused SDPA, fp32, eager", net, None),
    ]
    if device.type == "cuda":
        variants.append(("fused SDPA, bf16 autocast", net, torch.bfloat16))
        cl = net.to(memory_format=torch.channels_last)
        variants.append(("fused SDPA, bf16, channels_last", cl, torch.bfloat16))
        variants.append(("fused SDPA, bf16, torch.compile", torch.compile(cl), torch.bfloat16))
    for name, model, dtype in variants:
        seconds, peak = step_time(model, lr, hr, repeats, dtype)
        row = {"variant": name, "seconds_per_step": seconds, "peak_mb": peak, "train_flops_per_step": flops}
        if device.type == "cuda":
            row["achieved_tflops"] = flops / seconds / 1e12
        rows.append(row)
    base = rows[0]["seconds_per_step"]
    for row in rows:
        row["speedup_vs_reference"] = base / row["seconds_per_step"]
    return rows


_SR_CHILD = """
import sys, torch
sys.path.insert(0, {root!r})
from savl.infer import upscale
from savl.models.srnet import DARHAGNet, SRNetConfig

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024  # kB -> MB

torch.manual_seed(0)
net = DARHAGNet(SRNetConfig.profile({profile!r})).eval()
img = torch.rand(3, {side}, {side})
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the current RSS
    f.write("5")
out = upscale(net, img, tile={tile}, overlap=min(16, {tile} // 4))
buffers = (out.numel() * 2 + out[0].numel()) * 4 / 2**20  # output, blend accumulator and weights
print(status("VmHWM") - base, buffers)
"""


def bench_sr_memory(profile: str, sides: list[int], tile: int) -> list[dict]:
    rows = []
    for side in sides:
        code = _SR_CHILD.format(root=str(ROOT), profile=profile, side=side, tile=tile)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        growth, buffers = (float(v) for v in out.stdout.split())
        rows.append(
            {
                "lr_side": side,
                "tile": tile,
                "profile": profile,
                "seconds": time.perf_counter() - t,
                "peak_rss_growth_mb": growth,
                "image_buffers_mb": buffers,
                "working_memory_mb": growth - buffers,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="book")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=9, help="round-robin rounds of the guidance-cost comparison")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--only", choices=["guidance"], help="re-measure one section and update --out in place")
    p.add_argument("--sr-profile", default="smoke")
    p.add_argument("--sr-sides", default="512,2048")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/srnet_cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.only == "guidance":
        results = json.loads(out.read_text())
        results["guidance_cost"] = bench_guidance_cost(args.profile, args.batch, args.patch, args.rounds)
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")
        atomic_write_text(out.with_suffix(".md"), markdown(results, out.name))
        print(markdown(results, out.name))
        return
    results = {
        "command": " ".join(["python", "benchmarks/srnet.py", *sys.argv[1:]]),
        "machine": machine(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "guidance_cost": bench_guidance_cost(args.profile, args.batch, args.patch, args.rounds),
        "train_step": {
            "profile": args.profile,
            "batch": args.batch,
            "lr_patch": args.patch,
            "device": "cpu",
            "rows": bench_step(args.profile, args.batch, args.patch, args.repeats, torch.device("cpu")),
        },
    }
    if torch.cuda.is_available():
        results["train_step_cuda"] = {
            "profile": "paper",
            "batch": 32,
            "lr_patch": 64,
            "rows": bench_step("paper", 32, 64, args.repeats, torch.device("cuda")),
        }
    sides = [int(s) for s in args.sr_sides.split(",")]
    results["sr_memory"] = bench_sr_memory(args.sr_profile, sides, args.tile)
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(results, out.name))
    print(markdown(results, out.name))


def markdown(r: dict, json_name: str) -> str:
    g, s = r["guidance_cost"], r["train_step"]

    def provenance(rec: dict, run: dict) -> list[str]:
        m = run["machine"]
        return [
            f"Command: `{run['command']}`  ",
            f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads, "
            f"{m.get('gpu', 'no GPU')}, torch {m['torch']}, commit `{m['git_commit']}`, {run['date_utc']} UTC.  ",
            "The machine was shared with other sessions' jobs (1-minute load average "
            f"{m['load_average_1min_at_start']:.1f} at the start, {rec['load_average_1min_at_end']:.1f} at the end), "
            "so absolute times are inflated and noisy; ratios come from one run, variants interleaved.",
        ]

    lines = [
        "# SR network step time and tiled-inference memory (benchmarks/srnet.py)",
        "",
        *provenance(r, r),
        f"Raw figures: `{json_name}`.",
        "",
        f"## DSCA's cost: forward + backward (L1), `{g['profile']}` profile, batch {g['batch']}, "
        f"{g['lr_patch']}x{g['lr_patch']} LR, {g['rounds']} rounds",
        "",
        *(provenance(g, g) if "command" in g else []),
        "",
        "| variant | params | median CPU s/step | CPU time / plain HAT | range | median wall s/step "
        "| wall time / plain HAT | range |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in g["rows"]:
        lines.append(
            f"| {row['variant']} | {row['parameters'] / 1e6:.3f} M | {row['median_cpu_seconds']:.3f} | "
            f"{row['median_cpu_ratio_to_plain_hat']:.2f} | {row['cpu_ratio_range'][0]:.2f} - "
            f"{row['cpu_ratio_range'][1]:.2f} | {row['median_seconds']:.3f} | {row['median_ratio_to_plain_hat']:.2f} | "
            f"{row['wall_ratio_range'][0]:.2f} - {row['wall_ratio_range'][1]:.2f} |"
        )
    lines += [
        "",
        "Ratios are medians over rounds of the variant's time divided by plain HAT's time in the same round. "
        "The posterior is computed once before the loop except in the last row, which also runs the amortized "
        "encoder forward and backward (the joint stage). DSCA's spatial term is folded into q.k as two extra "
        "channels per head (`savl.models.hat.FactoredBias`): no per-window bias tensor is built.",
        "",
        f"## Training step, attention paths: `{s['profile']}` profile, batch {s['batch']}, "
        f"{s['lr_patch']}x{s['lr_patch']} LR",
        "",
        "| attention path | s/step | speed vs reference |",
        "|---|---|---|",
    ]
    for row in s["rows"]:
        lines.append(f"| {row['variant']} | {row['seconds_per_step']:.3f} | {row['speedup_vs_reference']:.2f} |")
    lines += [
        "",
        "On CPU, an additive float mask that requires grad (the relative position bias) sends PyTorch's SDPA "
        "down its math kernel, so both paths do about the same work in training.",
        "",
        "## `savl sr` memory: tiled inference",
        "",
        "| LR side | tile | network | peak RSS growth | of which image buffers | working memory |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["sr_memory"]:
        lines.append(
            f"| {row['lr_side']} | {row['tile']} | `{row['profile']}` | {row['peak_rss_growth_mb']:.0f} MB | "
            f"{row['image_buffers_mb']:.0f} MB | {row['working_memory_mb']:.0f} MB |"
        )
    lines += [
        "",
        "The working memory (beyond the output and blend buffers, which must grow with the image) should stay flat.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
