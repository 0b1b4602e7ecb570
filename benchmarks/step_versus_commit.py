"""Benchmark: one training stage's step time at this checkout beside an older commit's, on the same machine.

    python benchmarks/step_versus_commit.py --reference e49bdaa [--stage representation] [--threads 2]
        [--rounds 4] [--steps 20] [--warmup 3] [--out benchmarks/results]

A speed target written as milliseconds ("at most 100 ms per step on 2 idle cores") holds only on the machine it
was measured on: the same representation step took about twice as long per thread on an AMD EPYC host (AVX2)
as on an Intel Xeon host (benchmarks/results/train_step_cpu.md). This benchmark turns such a target into a
ratio measured in one run: it checks the reference commit out into a temporary git worktree
(removed afterwards), then trains the stage's `book` config in a fresh process per round for each tree,
alternating which goes first, and reports the median step time of each and their paired ratio
(reference / this checkout: above 1, this checkout is faster). Each child imports `savl` from its own tree
(checked) and trains through that tree's own loop, with the same overrides: scratch output, no validation,
no checkpoints, the embedded photos, `--threads` torch threads.

It also measures, in the same run and at the same thread count, the machine's float32 matrix-product rate
(a 2048^3 `torch.mm`) and counts the stage's training FLOPs per step, so the report says how far the step is
from what the arithmetic alone would take on this machine.

Writes `step_versus_<reference, 7 digits>_<stage>.json` and `.md` under --out, atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from savl.provenance import atomic_write_text, git_commit, machine_info

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"representation": "representation.yaml"}

# Runs in the tree under test (cwd and PYTHONPATH are the tree): only the API every commit since the book
# profile has (load_config, train, Run.metrics with s_per_step), so old commits run unchanged.
CHILD = r"""
import json, statistics, sys, tempfile
from pathlib import Path
import savl
from savl.train import load_config, train
tree, config, threads, warmup, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if not Path(savl.__file__).resolve().is_relative_to(Path(tree).resolve()):
    sys.exit(f"imported savl from {savl.__file__}, not from {tree}")
with tempfile.TemporaryDirectory() as tmp:
    over = [f"output={tmp}", f"schedule.iterations={warmup + steps}", "log_every=1", "val_every=null",
            "checkpoint_every=null", "progress=none", "data.source=samples", "workers=0", f"threads={threads}"]
    run = train(load_config(Path(tree) / "configs" / "book" / config, over))
    s = [r["s_per_step"] for r in run.metrics][warmup:]
    c = [r["cpu_s_per_step"] for r in run.metrics][warmup:]
print("RESULT " + json.dumps({"s_per_step_median": statistics.median(s), "s_per_step_all": s,
                              "s_per_step_q25": statistics.quantiles(s, n=4)[0],
                              "cpu_s_per_step_median": statistics.median(c)}))
"""


def _child(tree: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-c", CHILD, str(tree), CONFIGS[args.stage], str(args.threads), str(args.warmup)]
    proc = subprocess.run([*cmd, str(args.steps)], cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: the training child failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def matmul_gflops(threads: int, n: int = 2048, reps: int = 10) -> float:
    """float32 GFLOP/s of an n^3 matrix product at `threads` threads (median of `reps` after a warm-up)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def step_gflop(stage: str) -> float:
    """Counted training FLOPs (forward + backward) of one book-size step of `stage`, in GFLOP."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from savl.models.savl import SAVL
    from savl.train.config import load_config

    if stage != "representation":
        raise ValueError(stage)
    cfg = load_config(ROOT / "configs" / "book" / CONFIGS[stage])
    n, p, s = cfg.batch, cfg.lr_patch, cfg.data.scale
    model = SAVL.build("book").train()
    lr, hr = torch.rand(n, 3, p, p), torch.rand(n, 3, s * p, s * p)
    counter = FlopCounterMode(display=False)
    with counter:
        model(lr, hr, 10)["loss"].backward()
    return counter.get_total_flops() / 1e9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="the older commit (any git revision)")
    p.add_argument("--stage", default="representation", choices=list(CONFIGS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    if args.steps < 2 or args.rounds < 1:
        print("--steps must be at least 2 (a quartile per process) and --rounds at least 1", file=sys.stderr)
        return 2
    ref_commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{args.reference}^{{commit}}"], cwd=ROOT, capture_output=True, text=True
    )
    if ref_commit.returncode != 0:
        print(f"--reference {args.reference}: not a commit of {ROOT}", file=sys.stderr)
        return 2
    ref_commit = ref_commit.stdout.strip()
    report = {
        "benchmark": "step_versus_commit",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "stage": args.stage,
        "threads": args.threads,
        "machine": machine_info(),
        "this": git_commit(ROOT, dirty=True),
        "reference": ref_commit,
        "load_average_at_start": list(os.getloadavg()),
        "rounds": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        ref_tree = Path(tmp) / "reference"
        subprocess.run(["git", "worktree", "add", "--detach", str(ref_tree), ref_commit], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            trees = {"reference": ref_tree, "this": ROOT}
            for r in range(args.rounds):
                order = ("reference", "this") if r % 2 == 0 else ("this", "reference")
                row = {}
                for name in order:
                    row[name] = _child(trees[name], args)
                    row[name]["load_after"] = list(os.getloadavg())
                    print(f"round {r + 1} {name:9s} {row[name]['s_per_step_median'] * 1e3:6.1f} ms/step "
                          f"(load {row[name]['load_after'][0]:.2f})", flush=True)  # fmt: skip
                row["ratio"] = row["reference"]["s_per_step_median"] / row["this"]["s_per_step_median"]
                report["rounds"].append(row)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=ROOT, capture_output=True)
    ratios = [row["ratio"] for row in report["rounds"]]
    this = statistics.median(row["this"]["s_per_step_median"] for row in report["rounds"])
    ref = statistics.median(row["reference"]["s_per_step_median"] for row in report["rounds"])
    quiet = [row["reference"]["s_per_step_q25"] / row["this"]["s_per_step_q25"] for row in report["rounds"]]
    report["summary"] = {
        "reference_s_per_step": ref,
        "this_s_per_step": this,
        "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        # the faster quarter of each process's steps: the least disturbed by other work on a shared host
        "reference_s_per_step_q25": statistics.median(row["reference"]["s_per_step_q25"] for row in report["rounds"]),
        "this_s_per_step_q25": statistics.median(row["this"]["s_per_step_q25"] for row in report["rounds"]),
        "ratio_q25_median": statistics.median(quiet),
        "ratio_q25_range": [min(quiet), max(quiet)],
    }
    report["matmul_gflops"] = matmul_gflops(args.threads)
    report["step_gflop"] = step_gflop(args.stage)
    report["arithmetic_floor_s"] = report["step_gflop"] / report["matmul_gflops"]
    report["load_average_at_end"] = list(os.getloadavg())
    out = Path(args.out)
    stem = f"step_versus_{ref_commit[:7]}_{args.stage}"
    atomic_write_text(out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / f"{stem}.md", _markdown(report))
    s = report["summary"]
    print(f"reference {s['reference_s_per_step'] * 1e3:.1f} ms, this {s['this_s_per_step'] * 1e3:.1f} ms: "
          f"{s['ratio_median']:.2f}x ({s['ratio_range'][0]:.2f} - {s['ratio_range'][1]:.2f}); "
          f"wrote {out / (stem + '.md')}")  # fmt: skip
    return 0


def _markdown(rep: dict) -> str:
    s, m = rep["summary"], rep["machine"]
    lines = [
        f"# {rep['stage'].capitalize()} step: this checkout beside commit {rep['reference'][:7]}",
        "",
        f"Command: `{rep['command']}`  ",
        f"Machine: {m['cpu_model']} ({m['cpu_cores']} cores), {rep['threads']} torch threads; this checkout "
        f"{rep['this']}; load average (1, 5, 15 min) {rep['load_average_at_start']} at start, "
        f"{rep['load_average_at_end']} at end.",
        "",
        "Median wall time per step over the timed steps of each fresh process (book profile, the stage's own "
        "degradation of every batch included), alternating which tree runs first:",
        "",
        "| round | reference (ms) | this (ms) | reference / this | first quartiles (ms) | load after |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for i, row in enumerate(rep["rounds"], 1):
        lines.append(
            f"| {i} | {row['reference']['s_per_step_median'] * 1e3:.1f} | {row['this']['s_per_step_median'] * 1e3:.1f}"
            f" | {row['ratio']:.2f}x | {row['reference']['s_per_step_q25'] * 1e3:.0f} / "
            f"{row['this']['s_per_step_q25'] * 1e3:.0f} | {row['this']['load_after'][0]:.2f} |"
        )
    lines += [
        "",
        f"**{s['ratio_median']:.2f}x** faster than the reference (paired ratio, median; range "
        f"{s['ratio_range'][0]:.2f} - {s['ratio_range'][1]:.2f}): {s['reference_s_per_step'] * 1e3:.1f} against "
        f"{s['this_s_per_step'] * 1e3:.1f} ms per step.",
        "",
        f"The faster quarter of each process's steps (first quartile; the steps least disturbed by other work "
        f"on a shared host): {s['reference_s_per_step_q25'] * 1e3:.1f} against {s['this_s_per_step_q25'] * 1e3:.1f}"
        f" ms, **{s['ratio_q25_median']:.2f}x** (range {s['ratio_q25_range'][0]:.2f} - {s['ratio_q25_range'][1]:.2f}).",
        "",
        f"The step counts {rep['step_gflop']:.1f} GFLOP (forward + backward, `torch.utils.flop_counter`); this "
        f"machine multiplies float32 matrices at {rep['matmul_gflops']:.0f} GFLOP/s at {rep['threads']} threads, so "
        f"the arithmetic alone would take {rep['arithmetic_floor_s'] * 1e3:.0f} ms at that rate.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
