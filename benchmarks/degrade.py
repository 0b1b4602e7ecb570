"""Benchmark: the Real-ESRGAN pipeline batched versus a per-sample loop of the same records (settings: book
appendix, Real-ESRGAN).

    python benchmarks/degrade.py [--batch 32] [--size 256] [--repeats 5] [--device cpu|cuda|all] [--threads N]
                                 [--tag SUFFIX] [--out DIR]

Both paths replay the same parameter records through ``RealESRGANDegradation.apply`` (USM included), so they
do identical work; the loop differs only in running each sample alone. Writes ``degrade_<device><tag>.json``
(figures + machine) and ``degrade_<device><tag>.md`` under ``--out`` (default benchmarks/results), atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from savl.degrade.realesrgan import RealESRGANDegradation
from savl.provenance import atomic_write_text, machine_info


def gt_batch(batch: int, size: int, seed: int) -> torch.Tensor:
    """Random crops of scikit-image's bundled photographs (real textures, no download)."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    g = torch.Generator().manual_seed(seed)
    crops = []
    for i in range(batch):
        img = torch.from_numpy(photos[i % len(photos)]).permute(2, 0, 1).float() / 255
        y = int(torch.randint(0, img.shape[1] - size + 1, (), generator=g))
        x = int(torch.randint(0, img.shape[2] - size + 1, (), generator=g))
        crops.append(img[:, y : y + size, x : x + size])
    return torch.stack(crops).contiguous()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def bench(device: torch.device, batch: int, size: int, repeats: int, seed: int) -> dict:
    deg = RealESRGANDegradation()
    hr = gt_batch(batch, size, seed).to(device)
    params = deg.sample(batch, (size, size), torch.Generator().manual_seed(seed))

    def batched():
        return deg.apply(hr, params)

    def loop():
        return torch.cat([deg.apply(hr[i : i + 1], [params[i]]) for i in range(batch)])

    lr_b, lr_l = batched(), loop()  # warm-up (allocator, kernels) and agreement check
    diff = ((lr_b - lr_l).abs() * 255).round()
    # Interleaved runs, so that a change of load on a shared machine hits both paths alike.
    t_b, t_l = [], []
    for _ in range(repeats):
        t_b.append(time_once(batched, device))
        t_l.append(time_once(loop, device))
    mb, ml = statistics.median(t_b), statistics.median(t_l)
    return {
        "device": str(device),
        "batch": batch,
        "gt_size": size,
        "lr_size": list(lr_b.shape[-2:]),
        "repeats": repeats,
        "batched_s_per_batch": t_b,
        "loop_s_per_batch": t_l,
        "batched_s_median": mb,
        "loop_s_median": ml,
        "speedup_loop_over_batched": ml / mb,
        "speedup_of_fastest_runs": min(t_l) / min(t_b),
        "images_per_s_batched": batch / mb,
        "outputs_max_diff_8bit_levels": float(diff.max()),
        "outputs_fraction_differing": float((diff > 0).float().mean()),
        "first_order_resize": params[0]["resize1"],
        "second_order_resize": params[0]["resize2"],
        "final_order": params[0]["final"]["order"],
    }


def op_breakdown(device: torch.device, batch: int, size: int, seed: int) -> dict:
    """Where the gap comes from: single ops on the full GT batch, batched versus looped (one run each, warm)."""
    from savl.degrade import ops
    from savl.degrade.kernels import KernelConfig, kernel_from_record, random_kernel_record

    x = gt_batch(batch, size, seed).to(device)
    g = torch.Generator().manual_seed(seed)
    k = torch.stack([kernel_from_record(random_kernel_record(KernelConfig(), g)) for _ in range(batch)])
    q = torch.linspace(30, 95, batch)
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(batch)]
    cases = {
        "blur_21x21_per_sample": (
            lambda: ops.filter2d(x, k),
            lambda: [ops.filter2d(x[i : i + 1], k[i]) for i in range(batch)],
        ),
        "usm_sharpen": (lambda: ops.usm_sharpen(x), lambda: [ops.usm_sharpen(x[i : i + 1]) for i in range(batch)]),
        "jpeg": (lambda: ops.jpeg(x, q), lambda: [ops.jpeg(x[i : i + 1], q[i : i + 1]) for i in range(batch)]),
        "poisson_noise": (
            lambda: ops.add_poisson_noise(x, 1.0, False, gens),
            lambda: [ops.add_poisson_noise(x[i : i + 1], 1.0, False, gens[i : i + 1]) for i in range(batch)],
        ),
    }
    out = {}
    for name, (fb, fl) in cases.items():
        fb(), fl()
        out[name] = {"batched_s": time_once(fb, device), "loop_s": time_once(fl, device)}
    return out


def markdown(res: dict, info: dict) -> str:
    return "\n".join(
        [
            f"# Real-ESRGAN degradation: batched vs per-sample loop ({res['device']})",
            "",
            f"Batch {res['batch']} x 3 x {res['gt_size']}^2 GT -> {res['lr_size'][0]}^2 LR, same records on both "
            f"paths, median of {res['repeats']} runs after a warm-up.",
            "",
            "| path | s per batch (median) | images / s |",
            "|---|---|---|",
            f"| batched | {res['batched_s_median']:.3f} | {res['batch'] / res['batched_s_median']:.1f} |",
            f"| per-sample loop | {res['loop_s_median']:.3f} | {res['batch'] / res['loop_s_median']:.1f} |",
            "",
            f"Speed-up of batching: **{res['speedup_loop_over_batched']:.2f}x** (medians; fastest runs "
            f"{min(res['loop_s_per_batch']):.3f} s vs {min(res['batched_s_per_batch']):.3f} s: "
            f"{res['speedup_of_fastest_runs']:.2f}x). All runs (s): batched "
            f"{', '.join(f'{t:.2f}' for t in res['batched_s_per_batch'])}; loop "
            f"{', '.join(f'{t:.2f}' for t in res['loop_s_per_batch'])}. "
            + (
                "Both paths give identical LR images."
                if res["outputs_max_diff_8bit_levels"] == 0
                else f"Outputs differ by at most {res['outputs_max_diff_8bit_levels']:.0f} 8-bit level on "
                f"{100 * res['outputs_fraction_differing']:.3f} % of values (float summation order)."
            ),
            "",
            "Single ops on the GT batch, one warm run each (s, batched / loop): "
            + "; ".join(f"{n} {v['batched_s']:.3f} / {v['loop_s']:.3f}" for n, v in res["ops_on_the_gt_batch"].items())
            + ". Each op does the same arithmetic either way; the loop pays per-call set-up and runs many small"
            " multi-threaded ops, each of which waits for all its threads: on a loaded shared machine that wait"
            " (scheduling latency) inflates the loop's time, so compare with the single-thread run when present.",
            "",
            f"Machine: {info['cpu_model']}, {info['cpu_cores']} cores ({info['torch_threads']} torch threads), "
            f"1-min load average {info['load_average_1min_at_start']:.1f} at start and "
            f"{info.get('load_average_1min_at_end', float('nan')):.1f} at end (shared machine)"
            + (f", GPU {info['gpu']}" if "gpu" in info else "")
            + f"; torch {info['torch']}; commit {info['git_commit'][:10]}; `{info['command']}`.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--tag", default="", help="suffix of the result file names, e.g. _1thread")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    for dev in devices:
        res = bench(dev, args.batch, args.size, args.repeats, args.seed)
        res["ops_on_the_gt_batch"] = op_breakdown(dev, args.batch, args.size, args.seed)
        if hasattr(os, "getloadavg"):
            info["load_average_1min_at_end"] = os.getloadavg()[0]
        payload = {"benchmark": "realesrgan_degradation_batched_vs_loop", "machine": info, "result": res}
        atomic_write_text(args.out / f"degrade_{dev.type}{args.tag}.json", json.dumps(payload, indent=2) + "\n")
        atomic_write_text(args.out / f"degrade_{dev.type}{args.tag}.md", markdown(res, info))
        print(
            f"{dev}: batched {res['batched_s_median']:.3f} s, loop {res['loop_s_median']:.3f} s, "
            f"speed-up {res['speedup_loop_over_batched']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
