"""Benchmark the SAVL representation: parameter counts and forward+backward time of one training step.

A step is `SAVL.forward` (encode, sample, decode, L1 + beta * KL) plus `backward`, on LR 64x64 patches with
HR 256x256 (the paper's batch is 32). Usage:

    .venv/bin/python benchmarks/savl_model.py                      # CPU, writes benchmarks/results/savl_model_cpu.json
    .venv/bin/python benchmarks/savl_model.py --device cuda        # fp32 and bf16 autocast, savl_model_cuda.json

On a small CPU the paper-size model at batch 32 takes minutes per step, so the CPU default measures the paper
size at batch 4 and the book size at batch 32 (`--cases` changes that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from savl.models.savl import SAVL
from savl.provenance import atomic_write_text, git_commit

ROOT = Path(__file__).resolve().parent.parent


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def time_step(profile: str, batch: int, device: str, dtype: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model = SAVL.build(profile).to(device).train()
    gen = torch.Generator(device=device).manual_seed(0)
    lr = torch.rand(batch, 3, 64, 64, device=device, generator=gen)
    hr = torch.rand(batch, 3, 256, 256, device=device, generator=gen)
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        model.zero_grad(set_to_none=True)
        with amp:
            loss = model(lr, hr, step=1000, generator=gen)["loss"]
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (allocator, kernels)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out = {
        "profile": profile,
        "batch": batch,
        "lr_size": 64,
        "hr_size": 256,
        "device": device,
        "dtype": dtype,
        "repeats": repeats,
        "seconds_per_step_median": statistics.median(times),
        "seconds_per_step_all": times,
    }
    if device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min_at_start"] = os.getloadavg()[0]  # other jobs share this machine's cores
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cases", nargs="*", help="profile:batch pairs (default: CPU paper:4 book:32; CUDA paper:32)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("savl_model benchmark: --device cuda asked for but torch.cuda.is_available() is False")
    cases = args.cases or (["paper:4", "book:32"] if args.device == "cpu" else ["paper:32", "book:32"])
    repeats = args.repeats or (2 if args.device == "cpu" else 10)
    dtypes = ["fp32"] if args.device == "cpu" else ["fp32", "bf16"]
    params = {}
    for profile in ("paper", "book", "smoke"):
        m = SAVL.build(profile)
        params[profile] = {"encoder": count(m.encoder), "decoder": count(m.decoder)}
    result = {
        "benchmark": "savl_model",
        "what": "SAVL training step (forward: encode, sample, decode, L1 + beta*KL; backward), LR 64x64, HR 256x256",
        "command": " ".join([Path(sys.executable).name, "benchmarks/savl_model.py", *(argv or sys.argv[1:])]),
        "git_commit": git_commit(ROOT),
        "machine": machine(),
        "parameters": params,
        "timings": [],
    }
    for case in cases:
        profile, batch = case.split(":")
        for dtype in dtypes:
            r = time_step(profile, int(batch), args.device, dtype, repeats)
            print(json.dumps(r))
            result["timings"].append(r)
    out = args.out or ROOT / "benchmarks" / "results" / f"savl_model_{args.device}.json"
    write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
