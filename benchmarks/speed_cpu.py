"""Benchmark: where a book-size representation training step spends its time on the CPU, and what the measured
speed options buy (issue: speed where students and practitioners run it).

    python benchmarks/speed_cpu.py [--rounds 7] [--steps 3] [--threads 1,2] [--rounds-multi 2] [--out DIR] [--name STEM]

1. Step variants, side by side: the representation stage at the `book` profile (batch 4, 32x32 LR, the real
   encoder, decoder and SAVL loss; one fixed degraded batch so that every variant does the same work) with
   Adam as the loop builds it (for-each), Adam(fused=True), channels_last weights and inputs, and both. The
   variants run round-robin in one process per thread count, so machine load touches all alike; reported are
   medians over rounds of each variant's time divided by the baseline's time in the same round, for the
   calling thread's CPU time (with one thread, the least disturbed by other processes) and for wall time.
2. The split of a baseline step: data (a `BatchSource` batch: crops, Real-ESRGAN degradation), forward,
   backward, optimiser; and the heaviest operators of `torch.profiler` over a few steps.
3. The blur kernels' subnormal taps: the share of Real-ESRGAN kernel draws whose float32 taps are subnormal
   without the tap floor (`savl.degrade.kernels.TAP_FLOOR`), and the time of the 21x21 per-sample blur of a
   batch with such kernels against the floored ones, with and without flushing subnormals.

Writes `<--name>.json` and `.md` under --out (default `speed_cpu`). The machine's load average is recorded
beside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("baseline", "fused_adam", "channels_last", "channels_last+fused_adam", "no_mkldnn")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _build(variant: str):
    import torch

    from savl.train.config import load_config
    from savl.train.stages import Objective, build_models

    cfg = load_config(None, ["profile=book", "stage=representation"])
    torch.manual_seed(0)
    objective = Objective(cfg, build_models(cfg)).train()
    cl = variant.startswith("channels_last")
    if cl:
        objective = objective.to(memory_format=torch.channels_last)
    params = [p for p in objective.parameters() if p.requires_grad]
    o = cfg.optimiser
    opt = torch.optim.Adam(params, lr=2e-4, betas=o.betas, fused=True if "fused" in variant else None)
    return cfg, objective, opt, cl


def _child_steps(args) -> dict:
    """One process, one thread count: the variants round-robin on one fixed batch, plus the baseline's split."""
    import torch

    from savl.train.data import BatchSource

    torch.set_flush_denormal(True)  # as `savl train` runs
    torch.set_num_threads(args.threads)
    built = {v: _build(v) for v in VARIANTS}
    cfg = built["baseline"][0]
    source = BatchSource(cfg, 0, 1, torch.device("cpu"))
    lr, target, real, _ = source.next()  # (LR, loss target, the GT the LR was made from, guide)
    nhwc = torch.channels_last
    inputs = {
        False: (lr, target, real),
        True: tuple(t.contiguous(memory_format=nhwc) for t in (lr, target, real)),
    }

    def step(variant: str, i: int) -> None:
        _, objective, opt, cl = built[variant]
        x, y, c = inputs[cl]
        with torch.backends.mkldnn.flags(enabled=variant != "no_mkldnn"):
            terms = objective(x, y, i, torch.Generator().manual_seed(i), c)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()

    for v in VARIANTS:  # warm-up: first calls allocate and pick kernels
        for i in range(2):
            step(v, i)
    cpu = {v: [] for v in VARIANTS}
    wall = {v: [] for v in VARIANTS}
    load = [_load()]
    for r in range(args.rounds):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        for v in order:
            c0, w0 = time.thread_time(), time.perf_counter()
            for i in range(args.steps):
                step(v, i)
            cpu[v].append((time.thread_time() - c0) / args.steps)
            wall[v].append((time.perf_counter() - w0) / args.steps)
    load.append(_load())

    def ratios(times: dict) -> dict:
        return {
            v: {
                "median_s": statistics.median(times[v]),
                "speed_vs_baseline_median": statistics.median(b / t for b, t in zip(times["baseline"], times[v])),
                "speed_vs_baseline_range": [
                    min(b / t for b, t in zip(times["baseline"], times[v])),
                    max(b / t for b, t in zip(times["baseline"], times[v])),
                ],
            }
            for v in VARIANTS
        }

    # The split of a baseline step (data included), then the profiler's heaviest operators.
    _, objective, opt, _ = built["baseline"]
    parts = {"data": [], "forward": [], "backward": [], "optimiser": [], "step": []}
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    for i in range(args.rounds * args.steps):
        t0 = clock()
        x, y, real, _ = source.next()
        t1 = clock()
        terms = objective(x, y, i, torch.Generator().manual_seed(i), real)
        t2 = clock()
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        t3 = clock()
        opt.step()
        t4 = clock()
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            parts[k].append(v)
    split = {k: statistics.median(v) for k, v in parts.items()}
    load.append(_load())
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(3):
            x, y, real, _ = source.next()
            terms = objective(x, y, i, torch.Generator().manual_seed(i), real)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    top = [
        {"op": e.key, "self_share": e.self_cpu_time_total / total, "calls_per_step": e.count / 3}
        for e in events[:15]
    ]
    return {
        "threads": args.threads,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "clock_split": "thread CPU time" if args.threads == 1 else "wall time",
        "load_average_1_5_15": load,
        "cpu": ratios(cpu),
        "wall": ratios(wall),
        "split_s": split,
        "profile_top": top,
        "parameters": sum(p.numel() for p in built["baseline"][1].parameters()),
    }


def kernels_section(rounds: int) -> dict:
    """Subnormal taps of Real-ESRGAN's kernel draws with and without the floor, and what they cost a blur."""
    import numpy as np
    import torch

    from savl.degrade import kernels as K
    from savl.degrade import ops

    g = torch.Generator().manual_seed(0)
    records = [K.random_kernel_record(K.KernelConfig(), g) for _ in range(2000)]
    tiny = np.finfo(np.float32).tiny
    unfloored = [_kernel_with_floor(K, r, 0.0) for r in records]
    floored = [K.kernel_from_record(r) for r in records]

    def has_subnormal(k: torch.Tensor) -> bool:
        a = k.abs()
        return bool(((a > 0) & (a < tiny)).any())

    share = {
        "without_floor": sum(map(has_subnormal, unfloored)) / len(records),
        "with_floor": sum(map(has_subnormal, floored)) / len(records),
    }
    # A batch of 4 kernels that have subnormal taps without the floor, blurred on 4x3x128x128.
    idx = [i for i, k in enumerate(unfloored) if has_subnormal(k)][:4]
    x = torch.rand(4, 3, 128, 128, generator=g)
    batch = {
        "without_floor": torch.stack([unfloored[i] for i in idx]),
        "with_floor": torch.stack([floored[i] for i in idx]),
    }
    times: dict[str, list[float]] = {}
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        for name, kern in batch.items():
            ops.filter2d(x, kern)
            t = []
            for _ in range(rounds):
                c0 = time.thread_time()
                ops.filter2d(x, kern)
                t.append(time.thread_time() - c0)
            times[f"{name}, flush {'on' if flush else 'off'}"] = statistics.median(t)
    torch.set_flush_denormal(True)
    return {"records": len(records), "share_with_subnormal_taps": share, "blur_4x3x128x128_s": times, "load": _load()}


def _kernel_with_floor(K, record: dict, floor: float):
    """`kernel_from_record` with the floor given explicitly (it is the default argument of `_normalised`)."""
    original = K._normalised
    K._normalised = lambda k, floor_=floor, **kw: original(k, floor=floor_)
    try:
        return K.kernel_from_record(record)
    finally:
        K._normalised = original


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds-multi", type=int, default=2, help="rounds (of one step) with more than one thread")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="speed_cpu", help="output file stem (one per machine: speed_cpu_<machine>)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.threads = int(args.threads)
        print("RESULT " + json.dumps(_child_steps(args)))
        return 0
    import torch

    from savl.provenance import atomic_write_text, machine_info

    torch.set_num_threads(1)
    report = {"benchmark": "speed_cpu", "machine": machine_info(), "load_at_start": _load(), "steps": []}
    for n in (int(t) for t in args.threads.split(",")):
        # More than one thread on a loaded machine is slow to measure (idle workers spin): fewer rounds there.
        rounds, steps = (args.rounds, args.steps) if n == 1 else (args.rounds_multi, 1)
        cmd = [sys.executable, __file__, "--child", "--threads", str(n), "--rounds", str(rounds)]
        cmd += ["--steps", str(steps)]
        env = dict(os.environ, OMP_NUM_THREADS=str(n))
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        report["steps"].append(json.loads(line[len("RESULT ") :]))
        r = report["steps"][-1]
        print(f"{n} thread(s): baseline {r['cpu']['baseline']['median_s'] * 1000:.0f} ms CPU/step; " + ", ".join(
            f"{v} {r['cpu'][v]['speed_vs_baseline_median']:.2f}x" for v in VARIANTS[1:]), flush=True)
    report["kernels"] = kernels_section(max(5, args.rounds))
    report["load_at_end"] = _load()
    out = Path(args.out)
    atomic_write_text(out / f"{args.name}.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / f"{args.name}.md", _markdown(report))
    print(f"wrote {out / (args.name + '.md')}")
    return 0


def _markdown(rep: dict) -> str:
    m = rep["machine"]
    lines = [
        "# Representation step on the CPU: split, profile and speed options (benchmarks/speed_cpu.py)",
        "",
        f"Command: `{m['command']}`  ",
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores, torch {m['torch']}, commit `{m['git_commit']}`.  ",
        f"Load average (1, 5, 15 min) at start {rep['load_at_start']}, at end {rep['load_at_end']}: absolute "
        "times depend on what else the machine runs; the ratios come from variants run round-robin in one "
        "process.",
        "",
    ]
    for r in rep["steps"]:
        n = r["threads"]
        lines += [
            f"## {n} thread{'s' if n > 1 else ''}: speed options (representation stage, `book`, batch 4, LR 32)",
            "",
            f"{r['rounds']} rounds x {r['steps_per_round']} steps per variant, one fixed batch; load average "
            f"during the run {r['load_average_1_5_15']}. {r['parameters'] / 1e6:.2f} M parameters.",
            "",
            "| variant | CPU ms/step (calling thread) | speed vs baseline (CPU) | range | wall ms/step "
            "| speed vs baseline (wall) | range |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in VARIANTS:
            c, w = r["cpu"][v], r["wall"][v]
            lines.append(
                f"| {v} | {c['median_s'] * 1000:.1f} | {c['speed_vs_baseline_median']:.3f} | "
                f"{c['speed_vs_baseline_range'][0]:.2f} - {c['speed_vs_baseline_range'][1]:.2f} | "
                f"{w['median_s'] * 1000:.1f} | {w['speed_vs_baseline_median']:.3f} | "
                f"{w['speed_vs_baseline_range'][0]:.2f} - {w['speed_vs_baseline_range'][1]:.2f} |"
            )
        s = r["split_s"]
        lines += [
            "",
            f"Split of a baseline step with fresh data ({r['clock_split']}, medians): data "
            f"{s['data'] * 1000:.1f} ms ({s['data'] / s['step']:.0%}), forward {s['forward'] * 1000:.1f} ms "
            f"({s['forward'] / s['step']:.0%}), backward {s['backward'] * 1000:.1f} ms "
            f"({s['backward'] / s['step']:.0%}), optimiser {s['optimiser'] * 1000:.1f} ms "
            f"({s['optimiser'] / s['step']:.0%}); step {s['step'] * 1000:.1f} ms.",
            "",
            "Heaviest operators (torch.profiler, self CPU time over 3 steps with data):",
            "",
            "| operator | share of self CPU time | calls per step |",
            "|---|---|---|",
        ]
        lines += [f"| `{t['op']}` | {t['self_share']:.1%} | {t['calls_per_step']:.0f} |" for t in r["profile_top"]]
        lines.append("")
    k = rep["kernels"]
    sh = k["share_with_subnormal_taps"]
    lines += [
        "## Blur kernels: subnormal taps",
        "",
        f"Of {k['records']} Real-ESRGAN kernel draws (first-stage settings), {sh['without_floor']:.1%} have "
        f"float32 taps in the subnormal range without the tap floor, {sh['with_floor']:.1%} with it "
        "(`savl.degrade.kernels.TAP_FLOOR`). Per-sample 21x21 blur of a 4x3x128x128 batch with four such "
        f"kernels, calling thread's CPU time (median of {max(5, rep['steps'][0]['rounds'])}; load {k['load']}):",
        "",
        "| kernels | flush subnormals | ms |",
        "|---|---|---|",
    ]
    for name, t in k["blur_4x3x128x128_s"].items():
        kern, flush = name.split(", flush ")
        lines.append(f"| {kern.replace('_', ' ')} | {flush} | {t * 1000:.2f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
