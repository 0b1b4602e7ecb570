"""Benchmark: the training data loader (hr_folder: decode on demand in DataLoader workers) in images/s.

    python benchmarks/loader.py [--workers 0,1,2] [--kinds sub,2k] [--batch 32] [--patch 256] [--batches 6]
                                [--files 48] [--tag SUFFIX] [--out DIR]

What is timed is what a training step waits for: `savl.train.data.BatchSource`'s DataLoader delivering one batch
of HR patches (decode, random crop, flip/rotation, collate), without the degradation (that runs on the training
device, see benchmarks/degrade.py). Two kinds of files, made from scikit-image's bundled photographs:
- sub: 400 x 400 PNG tiles, what `savl data prepare` writes (Real-ESRGAN's sub-images, configs/paper);
- 2k: 2040 x 1356 PNG photos, the size of DIV2K's originals (upscaled photographs: smoother than real 2K photos,
  so they decode somewhat faster than DIV2K does).
For each worker count: batches/s over `--batches` batches after one warm-up batch (worker start-up is reported on
its own), CPU seconds per image of the main process and its workers together (what a core must spend per image,
nearly independent of other load: the figure to size a GPU machine's workers with), and the workers' resident
memory after the warm-up batch and at the end (decoding on demand keeps nothing, so it must not grow).
When benchmarks/results/train_step_gpu.json exists, the report says how many cores the measured GPU step rate
needs. Writes loader_cpu<tag>.json and .md under --out (default benchmarks/results), atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from savl.provenance import atomic_write_text, machine_info

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"sub": (400, 400), "2k": (1356, 2040)}


def make_files(folder: Path, kind: str, n: int) -> list[Path]:
    """n PNG files of the kind's size from scikit-image's photographs (crops, flips, and upscaling for 2k)."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    h, w = KINDS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        im = Image.fromarray(photos[i % len(photos)])
        if im.width < w or im.height < h:
            s = max(w / im.width, h / im.height)
            im = im.resize((int(np.ceil(im.width * s)), int(np.ceil(im.height * s))), Image.BICUBIC)
        top = int(rng.integers(0, im.height - h + 1))
        left = int(rng.integers(0, im.width - w + 1))
        a = np.asarray(im)[top : top + h, left : left + w]
        a = a[:, ::-1] if i % 2 else a
        f = folder / f"{kind}_{i:04d}.png"
        Image.fromarray(np.ascontiguousarray(a)).save(f)
        files.append(f)
    return files


def _children_cpu_rss() -> tuple[float, float]:
    """(CPU seconds, resident MiB) of this process's live children (the DataLoader workers), read from /proc
    (Linux; psutil is not a dependency of savl)."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    kids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            kids |= {int(x) for x in (task / "children").read_text().split()}
        except OSError:
            pass
    cpu = rss = 0.0
    for pid in kids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page / 2**20
        except (OSError, IndexError, ValueError):
            pass  # a worker that just exited
    return cpu, rss


def bench(files: list[Path], workers: int, batch: int, patch: int, batches: int) -> dict:
    import torch

    from savl.train.config import load_config
    from savl.train.data import BatchSource

    over = ["profile=paper", "data.source=hr_folder", f"data.root={files[0].parent}", f"workers={workers}"]
    over += [f"batch={batch}", f"data.gt_size={patch}", "data.pool_size=0"]
    cfg = load_config(None, over)
    t0 = time.perf_counter()
    src = BatchSource(cfg, 0, 1, torch.device("cpu"), files=files)
    next(src._iter)  # warm-up: starts the workers and fills their queues
    startup = time.perf_counter() - t0
    cpu0, rss0 = _children_cpu_rss()
    p0 = time.process_time()
    times = []
    for _ in range(batches):
        t = time.perf_counter()
        hr = next(src._iter)["hr"]
        times.append(time.perf_counter() - t)
    assert hr.shape == (batch, 3, patch, patch)
    cpu1, rss1 = _children_cpu_rss()
    cpu = (time.process_time() - p0) + (cpu1 - cpu0)
    del src
    total = sum(times)
    return {
        "workers": workers,
        "batches": batches,
        "s_per_batch_median": statistics.median(times),
        "images_per_s": batch * batches / total,
        "startup_s": startup,
        "cpu_s_per_image": cpu / (batch * batches),
        "worker_rss_mib_after_warmup": rss0,
        "worker_rss_mib_at_end": rss1,
    }


def _gpu_need(folder: Path | None = None) -> dict | None:
    """The images/s of the fastest measured GPU training step (train_step_gpu.json beside the results)."""
    path = (folder or ROOT / "benchmarks" / "results") / "train_step_gpu.json"
    if not path.is_file():
        return None
    rep = json.loads(path.read_text())
    rows = [r for r in rep.get("results", []) if r.get("s_per_step_median")]
    if not rows:
        return None
    # a training step is the model step plus the degradation of its batch on the GPU (the loop runs them in turn)
    deg = rep.get("degradation", {}).get("s_per_batch_median", 0.0)
    best = min(rows, key=lambda r: r["s_per_step_median"])
    rate = rep["batch"] / (best["s_per_step_median"] + deg)
    return {"images_per_s": rate, "what": best.get("label", ""), "gpu": rep["machine"].get("gpu")}


def _round(xs) -> list[float]:
    return [round(x, 1) for x in xs]


def _markdown(rep: dict) -> str:
    m = rep["machine"]
    load1 = list(os.getloadavg())
    lines = [
        "# Training data loader: images/s by DataLoader workers (decode on demand)",
        "",
        f"Batches of {rep['batch']} HR patches of {rep['patch']}x{rep['patch']} from {rep['files']} PNG files per "
        "kind, through `savl.train.data.BatchSource` (decode, crop, flip/rotation, collate; the degradation runs "
        f"on the training device and is not included); median of {rep['batches']} batches after a warm-up batch.",
        "",
        "| files | workers | s / batch (median) | images / s | CPU-s / image | start-up s | worker RSS MiB "
        "(after warm-up -> end)* |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, rows in rep["results"].items():
        for r in rows:
            lines.append(
                f"| {kind} | {r['workers']} | {r['s_per_batch_median']:.3f} | {r['images_per_s']:.1f} | "
                f"{r['cpu_s_per_image'] * 1000:.1f} ms | {r['startup_s']:.1f} | "
                f"{r['worker_rss_mib_after_warmup']:.0f} -> {r['worker_rss_mib_at_end']:.0f} |"
            )
    load0 = rep["load_average_at_start"]
    lines += [
        "",
        "*Resident memory of the worker processes together; it counts the interpreter and torch pages they share "
        "with the main process (forked), so the level says little. What matters is the change from the warm-up "
        "batch to the end: a few MiB of allocator slack, where a cache of decoded images would add 0.5 MiB per "
        "sub-image and 8 MiB per 2K photo (uint8; 4x that as float32) for every file read.",
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_cores']} cores), torch {m['torch']}, commit {m['git_commit'][:10]}. "
        f"Load average (1, 5, 15 min) at start {_round(load0)}, at end {_round(load1)}: the machine is shared "
        "with other training runs, so images/s (wall time) is depressed and more workers than free cores cannot "
        "help; CPU-s / image (main process and workers together) is the figure that carries over to another "
        "machine: one core delivers about 1 / (CPU-s / image) images per second.",
        "",
    ]
    need = rep.get("gpu_need")
    for kind, rows in rep["results"].items():
        per_core = 1 / min(r["cpu_s_per_image"] for r in rows)
        line = f"- {kind}: about {per_core:.0f} images/s per core"
        if need:
            line += f"; the fastest GPU training step ({need['what']} + degradation, {need['gpu']}) takes " + (
                f"{need['images_per_s']:.0f} images/s, which needs about "
                f"{need['images_per_s'] / per_core:.1f} cores of workers"
            )
        lines.append(line + ".")
    if not need:
        lines.append(
            "- No GPU step rate was measured yet (benchmarks/results/train_step_gpu.json); rerun this script after "
            "benchmarks/gpu_benchmark.sh to compare."
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--kinds", default="sub,2k")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--files", type=int, default=48)
    p.add_argument("--tag", default="")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--render", action="store_true", help="only rewrite the .md from the .json (e.g. after a GPU run)")
    args = p.parse_args()
    out = Path(args.out)
    if args.render:
        rep = json.loads((out / f"loader_cpu{args.tag}.json").read_text())
        rep["gpu_need"] = _gpu_need(out)
        atomic_write_text(out / f"loader_cpu{args.tag}.json", json.dumps(rep, indent=2) + "\n")
        atomic_write_text(out / f"loader_cpu{args.tag}.md", _markdown(rep))
        return 0
    import torch

    torch.set_num_threads(1)  # one decode per process: the workers are the parallelism being measured
    load0 = list(os.getloadavg())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            files = make_files(Path(tmp) / kind, kind, args.files)
            results[kind] = []
            for w in (int(x) for x in args.workers.split(",")):
                r = bench(files, w, args.batch, args.patch, args.batches)
                results[kind].append(r)
                print(f"{kind:4s} workers {w}: {r['images_per_s']:.1f} images/s, "
                      f"{r['cpu_s_per_image'] * 1000:.1f} CPU-ms/image", flush=True)
    rep = {
        "benchmark": "loader",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "batch": args.batch,
        "patch": args.patch,
        "batches": args.batches,
        "files": args.files,
        "load_average_at_start": load0,
        "machine": machine_info(),
        "results": results,
        "gpu_need": _gpu_need(out),
    }
    atomic_write_text(out / f"loader_cpu{args.tag}.json", json.dumps(rep, indent=2) + "\n")
    atomic_write_text(out / f"loader_cpu{args.tag}.md", _markdown(rep))
    print(f"wrote {out / f'loader_cpu{args.tag}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
