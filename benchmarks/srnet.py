"""SR network speed and memory (issue: DA-RHAG network).

1. Training step: forward + backward time and peak memory of the DA-RHAG network, the fused attention path
   (`scaled_dot_product_attention`) against a straightforward reference (materialised softmax attention, same
   weights, fp32, eager), as a ratio measured in one run. CPU: a small batch of the chosen profile; CUDA (when
   present): batch 32 of 64x64 LR at paper size, fp32 and bf16 autocast, channels_last, torch.compile, with MFU
   from the FLOP count.
2. `savl sr` memory: peak resident memory of tiled inference on a 512x512 and a 2048x2048 LR image at the same
   tile size, each in a fresh process; the working memory (peak minus the input/output buffers, which must grow
   with the image) should stay flat.

    python benchmarks/srnet.py [--profile book] [--batch 2] [--repeats 3] [--out benchmarks/results/srnet_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from savl.models.srnet import DARHAGNet, SRNetConfig  # noqa: E402
from savl.provenance import atomic_write_text, cpu_model, git_commit  # noqa: E402


def machine() -> dict:
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["commit"] = git_commit(ROOT, short=10)
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
    p.add_argument("--sr-profile", default="smoke")
    p.add_argument("--sr-sides", default="512,2048")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/srnet_cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    results = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
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
    out = Path(args.out)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
