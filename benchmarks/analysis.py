"""Benchmark: the analysis estimators and the Table 1 / Table 5 protocols at `book` size on CPU.

    python benchmarks/analysis.py [--encoder book|smoke] [--threads 1 2] [--out DIR]

Goal (book appendix, profiles): each protocol under a minute on 2 CPU cores. The encoder is randomly initialised
(seeded): run time does not depend on training, and the accuracies it records are those of an
untrained encoder, reported only as a sanity figure (not as a result). Writes ``analysis_cpu.json``
(timings, sizes, machine) and ``analysis_cpu.md`` under ``--out`` (default benchmarks/results),
atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from savl.analysis import (
    club,
    clustering_accuracy,
    decoupling,
    embed,
    hsic_test,
    linear_probe,
    mine,
    spatial_clustering,
)
from savl.data import sample_images
from savl.models.encoder import AmortizedEncoder, EncoderConfig
from savl.provenance import atomic_write_text, machine_info

# Book-size settings: every embedded photo, 8 crops x 4 noise levels for Table 1 (384 codes);
# 256-px centre crops cut into 64-px patches for Table 5 (16 patches, 4096 LR pixels per photo).
TABLE1 = {"levels": [0.0, 10 / 255, 25 / 255, 50 / 255], "crop": 128, "crops_per_image": 8, "mine_steps": 500}
TABLE5 = {"crop": 256, "patch": 64}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_estimators(seed: int) -> dict:
    """Each estimator alone on inputs of the size the book's protocols give it."""
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((384, 64))
    scene = np.repeat(np.arange(12), 32)
    codes[:, :4] += scene[:, None] * 0.3  # some dependence, so the fits do real work
    onehot = np.eye(12)[scene]
    pixels = rng.standard_normal((12 * 64 * 64, 64))
    pixel_labels = rng.integers(0, 4, pixels.shape[0])
    rows = {
        "hsic_test (384 x 64 vs 12 classes)": lambda: hsic_test(codes, onehot),
        "mine (384 pairs, 500 steps)": lambda: mine(codes, onehot, steps=500, batch=128, seed=seed),
        "club (384 pairs, 500 steps)": lambda: club(codes, onehot, steps=500, batch=128, seed=seed),
        "linear_probe (384 x 64, 12 classes, 5 folds)": lambda: linear_probe(codes, scene, seed=seed),
        "clustering_accuracy (49152 pixels x 64, k=4, fit on 20000)": lambda: clustering_accuracy(
            pixels, pixel_labels, seed=seed, fit_max=20000
        ),
        "embed (384 x 64 -> PCA 32 -> t-SNE 2)": lambda: embed(codes, seed=seed),
    }
    return {name: timed(fn)[0] for name, fn in rows.items()}


def bench_protocols(encoder, images, seed: int, threads: int) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _bench_protocols(encoder, images, seed)
    finally:
        torch.set_num_threads(before)


def _bench_protocols(encoder, images, seed: int) -> dict:
    out = {}
    t, r = timed(lambda: decoupling(encoder, images, seed=seed, **TABLE1))
    out["table1_decoupling"] = {
        "seconds": t,
        "n_codes": int(r["codes"].shape[0]),
        "untrained_probe_content": r["content"]["probe"],
        "untrained_probe_degradation": r["degradation"]["probe"],
    }
    for setting in ("type", "blur", "noise"):
        t, r = timed(lambda s=setting: spatial_clustering(encoder, images, s, seed=seed, **TABLE5))
        out[f"table5_{setting}"] = {
            "seconds": t,
            "n_pixels": r["n_pixels"],
            "untrained_accuracy": r["accuracy"],
            "chance": r["chance"],
        }
    return out


def markdown(payload: dict) -> str:
    info, est, by_threads = payload["machine"], payload["estimators_s"], payload["protocols_by_torch_threads"]
    threads = list(by_threads)
    lines = [
        f"# Analysis toolkit timings (CPU, {payload['encoder']} encoder, randomly initialised)",
        "",
        "| estimator | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in est.items()],
        "",
        "| protocol | size | "
        + " | ".join(f"seconds, {t} torch thread{'s' if int(t) > 1 else ''}" for t in threads)
        + " | untrained-encoder figure (sanity only) |",
        "|---|---|" + "---|" * len(threads) + "---|",
    ]
    first = by_threads[threads[0]]
    t1 = first["table1_decoupling"]
    lines.append(
        f"| Table 1 decoupling | {t1['n_codes']} codes ({payload['n_images']} photos x "
        f"{TABLE1['crops_per_image']} crops x {len(TABLE1['levels'])} levels) | "
        + " | ".join(f"{by_threads[t]['table1_decoupling']['seconds']:.1f}" for t in threads)
        + f" | probes: scene {100 * t1['untrained_probe_content']:.1f} %, noise "
        f"{100 * t1['untrained_probe_degradation']:.1f} % |"
    )
    for s in ("type", "blur", "noise"):
        p = first[f"table5_{s}"]
        lines.append(
            f"| Table 5 {s} | {p['n_pixels']} LR pixels | "
            + " | ".join(f"{by_threads[t][f'table5_{s}']['seconds']:.1f}" for t in threads)
            + f" | accuracy {100 * p['untrained_accuracy']:.1f} % (chance {100 * p['chance']:.1f} %) |"
        )
    lines += [
        "",
        "The protocols run the encoder with the caller's torch thread count; on this shared machine one "
        "thread is much faster than two (spinning threads compete with other jobs), so compare the columns.",
        "",
        f"Machine: {info['cpu_model']}, {info['cpu_cores']} cores (the estimators' small fits always run on "
        f"one thread, see `savl.analysis._arrays.one_thread`), 1-min load average "
        f"{info['load_average_1min_at_start']:.1f} at start and {info['load_average_1min_at_end']:.1f} at end "
        f"(shared machine); torch {info['torch']}; commit {info['git_commit'][:10]}; `{info['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", choices=("book", "smoke"), default="book")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads for the protocols")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    info = machine_info()
    torch.manual_seed(args.seed)
    encoder = AmortizedEncoder(EncoderConfig.profile(args.encoder))
    images = sample_images()
    est = bench_estimators(args.seed)
    prot = {str(t): bench_protocols(encoder, images, args.seed, t) for t in args.threads}
    info["load_average_1min_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    payload = {
        "benchmark": "analysis_estimators_and_protocols",
        "encoder": args.encoder,
        "n_images": len(images),
        "table1_settings": TABLE1,
        "table5_settings": TABLE5,
        "machine": info,
        "estimators_s": est,
        "protocols_by_torch_threads": prot,
    }
    atomic_write_text(args.out / "analysis_cpu.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(args.out / "analysis_cpu.md", markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
