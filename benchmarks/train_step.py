"""Benchmark: training-step speed and peak memory of every stage (the paper's schedule, §4.1 and A.4), and
the projected wall time of the paper's schedule.

    python benchmarks/train_step.py [--profile book] [--device cpu|cuda] [--steps 6] [--warmup 2] [--out DIR]
    python benchmarks/train_step.py --profile paper --device cuda --precision bf16 --compile   (on a GPU)
    python benchmarks/train_step.py --stages representation --threads 2 --rounds 3 \
        --versus prefetch=false --versus channels_last=false                 (A/B: paired ratios of step times)

Each stage runs in its own process through the real loop (`savl.train.train`: data degradation on the device,
forward, backward, optimiser, EMA/discriminator where the stage has them), so the figures are what a run sees.
Time per step is the median over the timed steps after `--warmup`; peak memory is the process's maximum RSS
on CPU, `torch.cuda.max_memory_allocated` on CUDA. Training FLOPs per image of the paper-size networks are
counted with `torch.utils.flop_counter` on the meta device (no compute), which gives MFU on a GPU and the
projected schedule time from an explicit throughput assumption when no GPU was measured.
Writes `train_step_<device>.json` and `.md` under --out (default benchmarks/results), atomically.

    python benchmarks/train_step.py --compare --device cuda --allow-compile        (benchmarks/gpu_benchmark.sh)
    python benchmarks/train_step.py --compare --profile smoke --batch 2 --lr-patch 16   (the same on a CPU, tiny)

--compare times the joint and frozen-L1 steps of the paper-size networks (batch 32, 64x64 LR by default) on
random batches in one process, under each speed option (VARIANTS: bf16 autocast, SDPA or FlexAttention,
channels_last, torch.compile) beside the naive reference (fp32, eager, materialised attention), with images/s,
peak memory, compile time, MFU against the device's bf16 peak (PEAK_TFLOPS, sourced) and the projected
1.6 M-iteration schedule; it writes after every measurement and skips what would overrun --budget-s.
Writes `train_step_gpu.*` on CUDA, `train_step_compare_cpu.*` on a CPU (or --name).
--ddp-check (under torchrun) starts the process group savl.train.distributed would (NCCL on CUDA, gloo on CPU)
and checks an all-reduce and two DDP steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from savl.provenance import atomic_write_text, cpu_model, git_commit

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"representation": "representation", "joint": "stage1", "frozen_l1": "stage2", "gan": "stage3"}
PAPER_ITERATIONS = {"joint": 200_000, "frozen_l1": 800_000, "gan": 600_000}  # the paper, §4.1
# Dense peak throughput (TFLOP/s, no 2:4 sparsity) of GPUs we may meet, for MFU, matched by a substring of
# torch.cuda.get_device_name (first match wins, so the NVL / PCIe parts come before the SXM ones). Sources: NVIDIA's
# data sheets, which quote Tensor Core figures with sparsity: H200 SXM "BFLOAT16 1,979 TFLOPS", "TF32 989",
# "FP32 67" (H200 NVL: 1,671 / 835 / 60); H100 SXM 1,979 / 989 / 67 (H100 PCIe 1,513 / 756 / 51); A100
# (SXM and PCIe) 624 / 312 / 19.5 (its data sheet gives dense and sparse; dense is half of the sparse figure).
PEAK_TFLOPS = {
    "H200 NVL": {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "H200": {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.5, "tf32": 378.0, "fp32": 51.0},
    "H100": {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}
PEAK_SOURCE = "NVIDIA data sheets (dense = half the quoted 2:4-sparsity Tensor Core figure)"


def _one(args) -> dict:
    """Child process: train one stage for warmup + steps and report its timings (JSON on stdout)."""
    import resource

    import torch

    from savl.train import load_config, train
    from savl.train.data import BatchSource

    # The training thread's CPU time from one batch to the next: the step's critical path when another core is
    # free (with `prefetch` the next batch is made on another thread and does not count here).
    marks, make = [], BatchSource.next

    def marked(self, *a, **k):
        marks.append(time.thread_time())
        return make(self, *a, **k)

    BatchSource.next = marked
    cfg_path = ROOT / "configs" / args.profile / f"{STAGES[args.one]}.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        over = [
            f"output={tmp}",
            f"profile={args.profile}",
            f"device={args.device}",
            f"precision={args.precision}",
            f"compile={str(args.compile).lower()}",
            f"schedule.iterations={args.warmup + args.steps}",
            "log_every=1",
            "val_every=null",
            "checkpoint_every=null",
            "progress=none",
            "init_from=null",  # speed does not depend on where the weights come from
            # nor on where the HR patches come from (configs/paper read DF2K + OST, which a benchmark need not have)
            "data.source=samples",
            "data.meta_info=null",
            "workers=0",
        ]
        if args.one == "gan":
            # the book config drops the perceptual term offline; time it with a random trunk (same cost)
            over += ["losses.perceptual=1.0", "losses.perceptual_trunk=random"]
        if args.threads:
            over.append(f"threads={args.threads}")
        over += args.set or []
        cfg = load_config(cfg_path, over)
        if torch.cuda.is_available() and args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        run = train(cfg)
        steps = [r["s_per_step"] for r in run.metrics][args.warmup :]
        cpu = [r["cpu_s_per_step"] for r in run.metrics][args.warmup :]
        thread = [b - a for a, b in zip(marks, marks[1:])][args.warmup :]
        if args.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        models = {}
        for name in ("srnet", "savl", "discriminator"):
            if run.has(name):
                m = run._load(name, "cpu")
                models[name] = sum(p.numel() for p in m.parameters())
        return {
            "stage": args.one,
            "settings": args.set or [],
            "prefetch": cfg.prefetch,
            "profile": args.profile,
            "device": args.device,
            "precision": args.precision,
            "compile": args.compile,
            "batch": cfg.batch,
            "lr_patch": cfg.lr_patch,
            "threads": torch.get_num_threads(),
            "s_per_step_median": statistics.median(steps),
            "s_per_step_all": steps,
            "cpu_s_per_step_median": statistics.median(cpu),
            "main_thread_cpu_s_per_step_median": statistics.median(thread) if thread else None,
            "iterations_per_s": 1 / statistics.median(steps),
            "images_per_s": cfg.batch / statistics.median(steps),
            "peak_memory_mib": peak,
            "peak_memory_kind": "cuda max_memory_allocated" if args.device.startswith("cuda") else "process max RSS",
            "parameters": models,
        }


def train_flops_per_image(profile: str, lr_patch: int) -> dict:
    """Forward+backward FLOPs per LR patch of each stage's trainable networks, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from savl.train.config import load_config
    from savl.train.stages import Objective, build_models

    out = {}
    for stage in ("joint", "frozen_l1"):
        cfg = load_config(None, [f"profile={profile}", f"stage={stage}"])
        with torch.device("meta"):
            models = build_models(cfg)
            objective = Objective(cfg, models)
            lr = torch.rand(1, 3, lr_patch, lr_patch)
            hr = torch.rand(1, 3, 4 * lr_patch, 4 * lr_patch)
        counter = FlopCounterMode(display=False)
        with counter:
            objective(lr, hr, step=1, generator=None)["loss"].backward()
        out[stage] = counter.get_total_flops()
    return out


def _machine(device: str) -> dict:
    import torch

    cpu = cpu_model()
    if cpu == "unknown":
        cpu = platform.processor() or "unknown"
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0], "torch": torch.__version__}
    # other processes share small machines: the load tells how far wall times are inflated
    info["load_average_1_5_15"] = list(os.getloadavg())
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    commit = git_commit(ROOT)
    info["commit"] = None if commit == "unknown" else commit
    return info


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _projection(flops: dict, measured: dict | None, gpu: str | None, precision: str) -> dict:
    """Projected wall time of the paper's 1.6 M-iteration schedule (batch 32, 64x64 LR).

    With a measured paper-size step time we use it. Otherwise we state an explicit estimate: the counted
    training FLOPs at an assumed 30 % MFU of one H100 in bf16 (989 dense TFLOP/s), which window attention
    and small convolutions rarely beat; the paper's own figure (8 x RTX 3090, about 96 h) is listed beside.
    """
    batch = 32
    per_step = {s: flops["joint" if s == "joint" else "frozen_l1"] * batch for s in PAPER_ITERATIONS}
    # GAN stage: generator as frozen_l1 plus a discriminator/VGG pass; 1.5x is our stated allowance
    per_step["gan"] *= 1.5
    out = {"train_flops_per_step": per_step, "paper_reported_hours": 96.0, "paper_hardware": "8 x RTX 3090"}
    if measured:
        hours = sum(measured[s] * PAPER_ITERATIONS[s] for s in PAPER_ITERATIONS if s in measured) / 3600
        out.update({"basis": f"measured paper-size step times on {gpu} ({precision})", "hours": hours})
        return out
    mfu, peak = 0.30, 989e12
    secs = {s: per_step[s] / (mfu * peak) for s in PAPER_ITERATIONS}
    out.update(
        {
            "basis": "estimate: counted FLOPs at an assumed 30% MFU of one H100 (bf16, 989 TFLOP/s dense)",
            "assumed_s_per_step": secs,
            "hours": sum(secs[s] * PAPER_ITERATIONS[s] for s in PAPER_ITERATIONS) / 3600,
        }
    )
    return out


# ---------------------------------------------------------------------------------------------------------------
# --compare: the paper-size joint and frozen-L1 steps under each speed option, beside a naive reference, one process

# (name, precision, compile, attention, channels_last); the first is the naive reference.
VARIANTS = {
    "naive": ("fp32", False, "materialised", False),
    "fp32-sdpa": ("fp32", False, "sdpa", False),
    "bf16-materialised": ("bf16", False, "materialised", False),
    "bf16-sdpa": ("bf16", False, "sdpa", False),
    "bf16-sdpa-cl": ("bf16", False, "sdpa", True),
    "bf16-sdpa-compile": ("bf16", True, "sdpa", False),
    # FlexAttention (savl.models.hat.set_flex_attention): its kernels are compiled even when the model is not
    "bf16-flex": ("bf16", False, "flex", False),
    "bf16-flex-compile": ("bf16", True, "flex", False),
}
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "bf16-flex-compile"]  # what fits the 8-minute GPU call
COMPARE_STAGES = ("joint", "frozen_l1")


def peak_tflops(device_name: str | None) -> tuple[str, dict] | tuple[None, None]:
    """(table key, peaks) of the first PEAK_TFLOPS entry whose key is in the device name."""
    for key, peaks in PEAK_TFLOPS.items():
        if device_name and key in device_name:
            return key, peaks
    return None, None


def step_flops(profile: str, lr_patch: int, stages=("joint", "frozen_l1", "gan")) -> dict:
    """Model FLOPs (forward + backward, matmuls and convolutions as torch.utils.flop_counter counts them) of one
    training step per LR patch, on the meta device, with the materialised attention (the same count for every
    variant: MFU is model FLOPs per second over the peak). The GAN step adds the VGG19 perceptual loss and the
    U-Net discriminator's generator and discriminator passes (Real-ESRGAN's stage)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from savl.losses import PerceptualLoss, gan_loss
    from savl.train.config import load_config
    from savl.train.stages import Objective, build_models

    out = {}
    with _attention("materialised"):
        for stage in stages:
            cfg = load_config(None, [f"profile={profile}", f"stage={stage}"])
            with torch.device("meta"):
                models = build_models(cfg)
                objective = Objective(cfg, models)
                perceptual = PerceptualLoss(weights=None) if stage == "gan" else None
                lr = torch.rand(1, 3, lr_patch, lr_patch)
                hr = torch.rand(1, 3, 4 * lr_patch, 4 * lr_patch)
            counter = FlopCounterMode(display=False)
            with counter:
                terms = objective(lr, hr, step=1, generator=None)
                loss = terms["loss"]
                if stage == "gan":
                    disc, sr = models["discriminator"], terms["sr"]
                    loss = loss + perceptual(sr, hr) + gan_loss(disc(sr), True, for_discriminator=False)
                loss.backward()
                if stage == "gan":
                    disc(torch.cat([hr, sr.detach()])).mean().backward()
            out[stage] = counter.get_total_flops()
    return out


class _attention:
    """Context: the whole model attends through SDPA (as shipped), materialises softmax(QK^T + bias) V, or uses
    FlexAttention (on CUDA; elsewhere savl.models.hat keeps SDPA)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __enter__(self):
        import savl.models.hat as hat

        self.hat, self.orig = hat, hat.attention
        self.flex = hat.set_flex_attention(self.kind == "flex")
        if self.kind == "materialised":
            orig = self.orig
            hat.attention = lambda q, k, v, bias, scale, reference: orig(q, k, v, bias, scale, True)
        return self

    def __exit__(self, *exc):
        self.hat.attention = self.orig
        self.hat.set_flex_attention(self.flex)


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure_variant(stage: str, variant: str, args, dev) -> dict:
    """Build the stage's paper-size (or --profile) networks, run warm-up + timed optimiser steps on random
    batches; median s/step, compile time (first steps beyond the median), peak memory."""
    import contextlib

    import torch

    from savl.train.config import load_config
    from savl.train.stages import Objective, build_models

    precision, compiled, attention, channels_last = VARIANTS[variant]
    torch.manual_seed(0)
    cfg = load_config(None, [f"profile={args.profile}", f"stage={stage}"])
    models = build_models(cfg)
    for m in models.values():
        m.to(dev).train()
    objective = Objective(cfg, models).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    objective.to(memory_format=fmt)
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-4, betas=(0.9, 0.99))
    if compiled:
        torch._dynamo.reset()
        for m in models.values():
            for child in m.children():
                child.compile()  # per child, as the training loop compiles (state-dict keys stay plain)
    g = torch.Generator(device=dev).manual_seed(1)
    b, p = args.batch, args.lr_patch
    lr = torch.rand(b, 3, p, p, device=dev, generator=g).contiguous(memory_format=fmt)
    target = torch.rand(b, 3, 4 * p, 4 * p, device=dev, generator=g).contiguous(memory_format=fmt)
    noise = torch.Generator(device=dev).manual_seed(2)
    cast = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)

    def step(i: int) -> float:
        _sync(dev)
        t = time.perf_counter()
        with cast:
            terms = objective(lr, target, i, noise)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        _sync(dev)
        return time.perf_counter() - t

    with _attention(attention):
        warm = [step(i) for i in range(args.warmup)]
        times = [step(args.warmup + i) for i in range(args.steps)]
    med = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    if attention == "flex" and dev.type != "cuda":
        attention = "sdpa (flex: CUDA only)"
    return {
        "stage": stage,
        "variant": variant,
        "precision": precision,
        "compile": compiled,
        "attention": attention,
        "channels_last": channels_last,
        "s_per_step_median": med,
        "s_per_step_all": times,
        "warmup_s": warm,
        # the first steps beyond a steady one: graph capture + code generation when compiled
        "compile_s": (sum(warm) - med * len(warm)) if compiled or attention == "flex" else None,
        "images_per_s": b / med,
        "peak_memory_gib": peak,
    }


def measure_degradation(args, dev) -> dict:
    """The Real-ESRGAN pipeline on one batch of HR patches on the device (the loop runs it before every step)."""
    import torch

    from savl.degrade.realesrgan import RealESRGANConfig, RealESRGANDegradation

    deg = RealESRGANDegradation(RealESRGANConfig(scale=4, usm_sharpen_gt=True))
    g = torch.Generator(device=dev).manual_seed(3)
    hr = torch.rand(args.batch, 3, 4 * args.lr_patch, 4 * args.lr_patch, device=dev, generator=g)
    times = []
    for _ in range(args.warmup + args.steps):
        _sync(dev)
        t = time.perf_counter()
        deg(hr, g, return_sharpened=True)
        _sync(dev)
        times.append(time.perf_counter() - t)
    times = times[args.warmup :]
    return {"s_per_batch_median": statistics.median(times), "s_per_batch_all": times}


def compare(args) -> int:
    """--compare: every variant of both stages in this process; results are written after each measurement,
    so a run cut short by its time limit still leaves what it measured."""
    import gc

    import torch

    t_start = time.perf_counter()
    dev = torch.device(args.device)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if variants[0] != "naive":
        variants = ["naive", *[v for v in variants if v != "naive"]]  # the reference is always measured, first
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    key, peaks = peak_tflops(gpu)
    out = Path(args.out)
    name = args.name or ("train_step_gpu" if dev.type == "cuda" else "train_step_compare_cpu")
    report = {
        "benchmark": "train_step --compare",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": _machine(args.device),
        "profile": args.profile,
        "batch": args.batch,
        "lr_patch": args.lr_patch,
        "steps": args.steps,
        "warmup": args.warmup,
        "peak": {"device": key, "tflops": peaks, "source": PEAK_SOURCE, "table": PEAK_TFLOPS},
        "results": [],
        "skipped": [],
    }
    if args.ddp_report and Path(args.ddp_report).is_file():
        report["ddp_check"] = json.loads(Path(args.ddp_report).read_text())

    def save() -> None:
        _write(out / f"{name}.json", json.dumps(report, indent=2) + "\n")
        _write(out / f"{name}.md", _compare_markdown(report))

    t0 = time.perf_counter()
    report["step_flops_per_lr_patch"] = step_flops(args.profile, args.lr_patch)
    report["flop_count_s"] = time.perf_counter() - t0
    report["degradation"] = measure_degradation(args, dev)
    save()
    for variant in variants:
        if VARIANTS[variant][1] and not args.allow_compile:
            report["skipped"].append({"variant": variant, "why": "compile not requested (--allow-compile)"})
            continue
        for stage in COMPARE_STAGES:
            left = args.budget_s - (time.perf_counter() - t_start)
            need = args.compile_reserve_s if VARIANTS[variant][1] or VARIANTS[variant][2] == "flex" else 0
            if left <= need:
                why = f"time budget ({left:.0f} s left)"
                report["skipped"].append({"variant": variant, "stage": stage, "why": why})
                save()
                continue
            try:
                r = measure_variant(stage, variant, args, dev)
            except torch.OutOfMemoryError as e:
                r = None
                report["skipped"].append({"variant": variant, "stage": stage, "why": f"out of memory ({e})"[:300]})
            gc.collect()  # the variant's networks and optimiser state go before the next is built
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            if r is None:
                save()
                continue
            flops = report["step_flops_per_lr_patch"][stage] * args.batch
            r["model_tflops_per_s"] = flops / r["s_per_step_median"] / 1e12
            r["mfu_bf16_peak"] = r["model_tflops_per_s"] / peaks["bf16"] if peaks else None
            r["label"] = f"{stage} {variant}"
            report["results"].append(r)
            print(
                f"{stage:9s} {variant:18s} {r['s_per_step_median']:.4f} s/step  {r['images_per_s']:8.1f} images/s"
                + (f"  MFU {r['mfu_bf16_peak']:.1%}" if peaks else "")
                + (f"  peak {r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] is not None else "")
                + (f"  compile {r['compile_s']:.0f} s" if r["compile_s"] is not None else ""),
                flush=True,
            )
            report["projection"] = _compare_projection(report)
            save()
    report["wall_s"] = time.perf_counter() - t_start
    report["projection"] = _compare_projection(report)
    save()
    print(f"wrote {out / (name + '.md')}")
    return 0


def _compare_projection(rep: dict) -> dict:
    """The paper's 1.6 M iterations on one device at the measured rates: per stage, the model step of the fastest
    variant (and of the naive reference) plus the measured degradation of a batch; the GAN stage, not timed here,
    is scaled from the frozen-L1 step by the counted FLOP ratio."""
    flops = rep["step_flops_per_lr_patch"]
    deg = rep["degradation"]["s_per_batch_median"]
    by = {}
    for r in rep["results"]:
        by.setdefault(r["variant"], {})[r["stage"]] = r["s_per_step_median"]
    complete = {v: s for v, s in by.items() if all(k in s for k in COMPARE_STAGES)}
    if not complete:
        return {}
    ratio = flops["gan"] / flops["frozen_l1"]

    def hours(s: dict) -> float:
        per = {"joint": s["joint"], "frozen_l1": s["frozen_l1"], "gan": s["frozen_l1"] * ratio}
        return sum((per[k] + deg) * PAPER_ITERATIONS[k] for k in PAPER_ITERATIONS) / 3600

    best = min(complete, key=lambda v: complete[v]["joint"] + complete[v]["frozen_l1"])
    out = {
        "best_variant": best,
        "best_hours": hours(complete[best]),
        "gan_over_frozen_flop_ratio": ratio,
        "degradation_s_per_step": deg,
        "paper_reported_hours": 96.0,
        "paper_hardware": "8 x RTX 3090",
    }
    if "naive" in complete:
        out["naive_hours"] = hours(complete["naive"])
        out["speedup_best_over_naive"] = {
            k: complete["naive"][k] / complete[best][k] for k in COMPARE_STAGES
        }
    return out


def _compare_markdown(rep: dict) -> str:
    m = rep["machine"]
    dev = m.get("gpu") or f"{m['cpu']} ({m['cores']} cores)"
    f = rep.get("step_flops_per_lr_patch", {})
    peak = rep["peak"]
    lines = [
        f"# Training step on {dev}: speed options vs a naive reference",
        "",
        f"Command: `{rep['command']}`  ",
        f"Machine: {dev}, torch {m['torch']}, commit {m['commit']}; profile {rep['profile']}, batch {rep['batch']}, "
        f"LR patch {rep['lr_patch']}x{rep['lr_patch']} (GT {4 * rep['lr_patch']}), median of {rep['steps']} timed "
        f"steps after {rep['warmup']} warm-up steps, random inputs, Adam.",
        "",
    ]
    if f:
        lines += [
            "Model FLOPs per LR patch (forward + backward, counted on the meta device with the materialised "
            "attention): "
            + ", ".join(f"{k} {v / 1e9:.4g} GFLOP" for k, v in f.items())
            + ".",
            "",
        ]
    if peak["tflops"]:
        lines += [
            f"MFU = model FLOPs per second / the {peak['device']} bf16 dense peak {peak['tflops']['bf16']} TFLOP/s "
            f"({peak['source']}), for every row (fp32 rows included, so they compare on one scale).",
            "",
        ]
    lines += [
        "PyTorch's defaults otherwise: fp32 matrix products in full fp32 (TF32 off), cuDNN convolutions allowed "
        "TF32, cudnn.benchmark off (as `savl train` runs). naive = fp32, eager, attention materialised as "
        "softmax(QK^T + bias) V; sdpa = torch.nn.functional.scaled_dot_product_attention with the additive bias "
        "(DSCA's severity term folded into q and k); flex = FlexAttention with the position bias and shift mask "
        "in its score_mod (savl.models.hat.set_flex_attention; its kernels are compiled, on CUDA only); "
        "cl = channels_last; compile = torch.compile per child module, as `compile: true` does (compile s = the "
        "warm-up steps' time beyond steady steps).",
        "",
    ]
    lines += [
        "| stage | variant | precision | attention | channels_last | compile | s/step | images/s | model TFLOP/s "
        "| MFU (bf16 peak) | peak GiB | compile s | vs naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    naive = {r["stage"]: r["s_per_step_median"] for r in rep["results"] if r["variant"] == "naive"}
    for r in rep["results"]:
        mfu = f"{r['mfu_bf16_peak']:.1%}" if r.get("mfu_bf16_peak") is not None else "n/a"
        mem = f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") is not None else "n/a"
        comp = f"{r['compile_s']:.0f}" if r.get("compile_s") is not None else ""
        vs = f"{naive[r['stage']] / r['s_per_step_median']:.2f}x" if r["stage"] in naive else ""
        lines.append(
            f"| {r['stage']} | {r['variant']} | {r['precision']} | {r['attention']} | {r['channels_last']} | "
            f"{r['compile']} | {r['s_per_step_median']:.4f} | {r['images_per_s']:.1f} | "
            f"{r['model_tflops_per_s']:.1f} | {mfu} | {mem} | {comp} | {vs} |"
        )
    for s in rep["skipped"]:
        lines.append(f"\nNot measured: {s['variant']} {s.get('stage', '')}: {s['why']}.")
    d = rep.get("degradation")
    if d:
        lines += [
            "",
            f"Real-ESRGAN degradation of one batch on the device (before every step, not in the rows above): "
            f"{d['s_per_batch_median']:.4f} s.",
        ]
    proj = rep.get("projection") or {}
    if proj:
        lines += [
            "",
            "## The paper's schedule (1.6 M iterations: joint 200K, frozen-L1 800K, GAN 600K) on this one device",
            "",
            f"At the measured rates (model step + degradation per step; the GAN stage scaled from the frozen-L1 "
            f"step by its counted FLOP ratio {proj['gan_over_frozen_flop_ratio']:.2f}): **{proj['best_hours']:.1f} h** "
            f"with {proj['best_variant']}"
            + (f", {proj['naive_hours']:.1f} h with the naive reference" if "naive_hours" in proj else "")
            + f"; the paper reports about {proj['paper_reported_hours']:.0f} h on {proj['paper_hardware']} "
            "(48 h for the representation, 48 h for the SR network: appendix A.8; the hardware: §4.1).",
        ]
        mfus = [r["mfu_bf16_peak"] for r in rep["results"] if r.get("mfu_bf16_peak") is not None]
        if mfus:
            lines.append(f"Best MFU measured: {max(mfus):.1%} of the bf16 peak (goal: at least 35 %).")
        if "speedup_best_over_naive" in proj:
            sp = proj["speedup_best_over_naive"]
            lines.append(
                "Speed-up of " + proj["best_variant"] + " over the naive reference: "
                + ", ".join(f"{k} {v:.2f}x" for k, v in sp.items()) + " (goal: at least 3x)."
            )
    ddp = rep.get("ddp_check")
    if ddp:
        lines += [
            "",
            f"DDP check (torchrun, {ddp['world_size']} process(es) on {ddp['device']}): backend {ddp['backend']} "
            f"(savl.train.distributed.backend_for says {ddp['expected_backend']}), process group up in "
            f"{ddp['init_s']:.1f} s, all-reduce {'correct' if ddp['all_reduce_ok'] else 'WRONG'}, DDP weights "
            f"{'equal' if ddp['ddp_weights_equal_across_ranks'] else 'DIFFERENT'} on every rank after two steps.",
        ]
    if "wall_s" in rep:
        lines += ["", f"Whole run: {rep['wall_s']:.0f} s (FLOP counting {rep['flop_count_s']:.0f} s)."]
    return "\n".join(lines) + "\n"


def ddp_check(args) -> int:
    """--ddp-check, under torchrun: the process group savl.train.distributed would start (NCCL on CUDA, gloo on
    CPU), an all-reduce, and two DDP steps of a small network whose gradients must agree on every rank.
    Rank 0 writes the JSON report --ddp-report."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from savl.train.distributed import backend_for

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if args.device.startswith("cuda") else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = backend_for(dev)
    t0 = time.perf_counter()
    dist.init_process_group(backend=backend)
    init_s = time.perf_counter() - t0
    x = torch.full((4,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    ok_sum = bool(torch.all(x == world * (world + 1) / 2))
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 3, 3, padding=1))
    model = DDP(net.to(dev), device_ids=[dev] if dev.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        inp = torch.rand(2, 3, 32, 32, device=dev, generator=torch.Generator(device=dev).manual_seed(rank))
        opt.zero_grad()
        model(inp).square().mean().backward()
        opt.step()
    w = net[0].weight.detach().flatten()[:8].clone()
    ws = [torch.empty_like(w) for _ in range(world)]
    dist.all_gather(ws, w)
    same = all(torch.equal(ws[0], v) for v in ws)
    if rank == 0:
        report = {
            "backend": dist.get_backend(),
            "expected_backend": backend,
            "world_size": world,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "init_s": init_s,
            "all_reduce_ok": ok_sum,
            "ddp_weights_equal_across_ranks": same,
        }
        _write(Path(args.ddp_report), json.dumps(report, indent=2) + "\n")
        print("DDP " + json.dumps(report))
    ok = ok_sum and same and dist.get_backend() == backend
    dist.destroy_process_group()
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="book", choices=["smoke", "book", "paper"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config override for every stage's run")
    p.add_argument("--versus", action="append", metavar="KEY=VALUE",
                   help="A/B: also run each stage with these overrides, alternating, --rounds times (paired ratios)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the --versus A/B")
    p.add_argument("--one", choices=list(STAGES), help=argparse.SUPPRESS)
    c = p.add_argument_group("--compare: the paper-size joint and frozen-L1 steps under each speed option")
    c.add_argument("--compare", action="store_true", help="measure the variants beside the naive reference")
    c.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    c.add_argument("--batch", type=int, default=32)
    c.add_argument("--lr-patch", type=int, default=64)
    c.add_argument("--allow-compile", action="store_true", help="measure the torch.compile variants")
    c.add_argument("--budget-s", type=float, default=420.0, help="skip what would start after this many seconds")
    c.add_argument("--compile-reserve-s", type=float, default=150.0, help="time a compiled variant needs")
    c.add_argument("--name", help="output file stem (default train_step_gpu on CUDA, train_step_compare_cpu on CPU)")
    c.add_argument("--ddp-report", help="--compare: include this DDP check report; --ddp-check: write it here")
    p.add_argument("--ddp-check", action="store_true", help="under torchrun: process group, all-reduce, DDP steps")
    args = p.parse_args()
    if args.ddp_check:
        return ddp_check(args)
    if args.compare:
        if args.profile == "book":
            args.profile = "paper" if args.device.startswith("cuda") else args.profile
        return compare(args)
    if args.one:
        print("RESULT " + json.dumps(_one(args)))
        return 0

    if args.versus:
        return versus(args)
    load_before = list(os.getloadavg())
    results = []
    for stage in args.stages.split(","):
        r = _child(args, stage, args.set or [])
        if r is None:
            return 1
        results.append(r)
        print(f"{stage:15s} {r['s_per_step_median']:.3f} s/step  {r['peak_memory_mib']:.0f} MiB", flush=True)

    flops = train_flops_per_image("paper", 64)
    measured = None
    if args.profile == "paper":
        measured = {r["stage"]: r["s_per_step_median"] for r in results}
        for r in results:
            dev = _machine(args.device).get("gpu", "")
            peak = next((v for k, v in PEAK_TFLOPS.items() if k in dev), {}).get(args.precision)
            f = flops["joint" if r["stage"] == "joint" else "frozen_l1"] * r["batch"]
            if peak and r["stage"] in ("joint", "frozen_l1"):
                r["mfu"] = f / r["s_per_step_median"] / (peak * 1e12)
    machine = _machine(args.device)
    report = {
        "benchmark": "train_step",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "load_average_at_start": load_before,
        "results": results,
        "paper_train_flops_per_lr_patch_64": flops,
        "paper_schedule_projection": _projection(flops, measured, machine.get("gpu"), args.precision),
    }
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    out = Path(args.out)
    _write(out / f"train_step_{dev}.json", json.dumps(report, indent=2) + "\n")
    _write(out / f"train_step_{dev}.md", _markdown(report))
    print(f"wrote {out / f'train_step_{dev}.json'}")
    return 0


def _child(args, stage: str, settings: list[str]) -> dict | None:
    """Run one stage in a child process with these config overrides; its RESULT (None after an error)."""
    cmd = [sys.executable, __file__, "--one", stage, "--profile", args.profile, "--device", args.device]
    cmd += ["--precision", args.precision, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--compile"] if args.compile else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += [a for kv in settings for a in ("--set", kv)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return None
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def versus(args) -> int:
    """A/B: each stage with --set (A) and with --set plus --versus (B), one child each, alternating order round by
    round; per round the ratio B / A of the median step time (above 1: A is faster)."""
    a_set, b_set = args.set or [], (args.set or []) + args.versus
    report = {
        "benchmark": "train_step_versus",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "a": a_set,
        "b": b_set,
        "load_average_at_start": list(os.getloadavg()),
        "stages": {},
    }
    for stage in args.stages.split(","):
        runs: dict[str, list] = {"a": [], "b": []}
        for r in range(args.rounds):
            for name in ("a", "b") if r % 2 == 0 else ("b", "a"):
                res = _child(args, stage, a_set if name == "a" else b_set)
                if res is None:
                    return 1
                res["load"] = list(os.getloadavg())
                runs[name].append(res)
        summary = {}
        for key in ("s_per_step_median", "cpu_s_per_step_median", "main_thread_cpu_s_per_step_median"):
            ratio = [b[key] / a[key] for a, b in zip(runs["a"], runs["b"])]
            summary[key] = {
                "a": statistics.median(x[key] for x in runs["a"]),
                "b": statistics.median(x[key] for x in runs["b"]),
                "b_over_a_median": statistics.median(ratio),
                "b_over_a_range": [min(ratio), max(ratio)],
            }
        report["stages"][stage] = {"summary": summary, "runs": runs}
        w = summary["s_per_step_median"]
        print(f"{stage}: A {w['a']:.3f} s/step, B {w['b']:.3f} s/step, B/A {w['b_over_a_median']:.2f}x "
              f"({w['b_over_a_range'][0]:.2f} - {w['b_over_a_range'][1]:.2f})", flush=True)  # fmt: skip
    report["load_average_at_end"] = list(os.getloadavg())
    report["machine"] = _machine(args.device)
    _write(Path(args.out) / "train_step_versus.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {Path(args.out) / 'train_step_versus.json'}")
    return 0


def _markdown(rep: dict) -> str:
    m, proj = rep["machine"], rep["paper_schedule_projection"]
    lines = [
        "# Training step: speed and peak memory per stage",
        "",
        f"Command: `{rep['command']}`  ",
        f"Machine: {m.get('gpu') or m['cpu']} ({m['cores']} cores), torch {m['torch']}, commit {m['commit']}",
        "",
        f"Load average (1, 5, 15 min) at start {rep['load_average_at_start']}, at end "
        f"{m['load_average_1_5_15']}: wall times on a shared machine are inflated by other processes; "
        "CPU-s/step (process CPU time, all threads) is the figure to compare across machines.",
        "",
        "| stage | profile | device | precision | compile | batch | LR patch | s/step | CPU-s/step | it/s | images/s "
        "| peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["results"]:
        lines.append(
            f"| {r['stage']} | {r['profile']} | {r['device']} | {r['precision']} | {r['compile']} | {r['batch']} | "
            f"{r['lr_patch']} | {r['s_per_step_median']:.3f} | {r['cpu_s_per_step_median']:.2f} | "
            f"{r['iterations_per_s']:.2f} | "
            f"{r['images_per_s']:.1f} | {r['peak_memory_mib']:.0f} |"
        )
    f = rep["paper_train_flops_per_lr_patch_64"]
    lines += [
        "",
        "Times include the Real-ESRGAN degradation of each batch on the training device (median of the timed "
        "steps); peak memory is " + rep["results"][0]["peak_memory_kind"] + ".",
        "",
        "## The paper's schedule (1.6 M iterations, batch 32, 64x64 LR)",
        "",
        f"Counted training FLOPs (forward + backward) per 64x64 LR patch, paper-size networks: joint "
        f"{f['joint'] / 1e9:.0f} GFLOP, frozen-estimator SR {f['frozen_l1'] / 1e9:.0f} GFLOP.",
        "",
        f"Projection ({proj['basis']}): **{proj['hours']:.1f} h** for the three stages on one GPU; the paper "
        f"reports about {proj['paper_reported_hours']:.0f} h on {proj['paper_hardware']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
