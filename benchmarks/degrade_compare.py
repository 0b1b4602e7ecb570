"""Benchmark: the Real-ESRGAN degradation of a book-size batch, this checkout against another one (before/after).

    python benchmarks/degrade_compare.py --before /path/to/other/checkout [--rounds 9] [--batches 10]

Each round runs one fresh process per checkout (the other checkout's `savl` on its PYTHONPATH, alternating
which goes first), which degrades `--batches` batches of 4x3x128x128 HR crops of the sample photos (the book
profile's batch) with `RealESRGANDegradation` and a seeded generator, on one thread, with subnormals flushed as
the `savl` command does and, in a second measurement, without. Reported: the calling thread's CPU time per batch
(median over the process's batches), and the median over rounds of before / after in the same round. Both
checkouts draw their own parameters from the same seeds, so the batches differ in content but follow the same
distribution. Writes degrade_compare.{json,md} under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, statistics, sys, time
import torch
flush, records = sys.argv[1] == "1", json.loads(open(sys.argv[2]).read())
torch.set_flush_denormal(flush)
torch.set_num_threads(1)
from savl.degrade.realesrgan import RealESRGANDegradation
from skimage import data
img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
g = torch.Generator().manual_seed(0)
def crops():
    ys = torch.randint(0, 512 - 128, (4,), generator=g).tolist()
    xs = torch.randint(0, 512 - 128, (4,), generator=g).tolist()
    return torch.stack([img[:, y : y + 128, x : x + 128] for y, x in zip(ys, xs)]).contiguous()
deg = RealESRGANDegradation()
deg.apply(crops(), records[0])
apply, sample = [], []
for params in records:
    hr = crops()
    t0 = time.thread_time()
    deg.apply(hr, params)
    t1 = time.thread_time()
    deg.sample(4, (128, 128), g)
    apply.append(t1 - t0)
    sample.append(time.thread_time() - t1)
print("RESULT " + json.dumps([statistics.mean(apply), statistics.mean(sample)]))
"""


def _child(tree: Path, flush: bool, records: Path) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "1" if flush else "0", str(records)],
        cwd=tree, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="another checkout of the repository (its root)")
    p.add_argument("--before-label", help="what the other checkout is (default: its git commit)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from savl.provenance import atomic_write_text, git_commit, machine_info

    before = Path(args.before).resolve()
    import tempfile

    import torch

    from savl.degrade.realesrgan import RealESRGANDegradation

    # One set of parameter records for both checkouts (the record format is shared), so both do the same work.
    g = torch.Generator().manual_seed(0)
    records = [RealESRGANDegradation().sample(4, (128, 128), g) for _ in range(args.batches)]
    records_file = Path(tempfile.mkdtemp()) / "records.json"
    records_file.write_text(json.dumps(records))
    report = {
        "benchmark": "degrade_compare",
        "machine": machine_info(),
        "before_commit": args.before_label or git_commit(before),
        "load_at_start": [round(v, 2) for v in os.getloadavg()],
        "results": {},
    }
    for flush in (True, False):
        t = {"before": [], "after": []}
        for r in range(args.rounds):
            order = (("before", before), ("after", ROOT))
            for name, tree in order if r % 2 == 0 else order[::-1]:
                t[name].append(_child(tree, flush, records_file))
        key = "flush subnormals" if flush else "subnormals not flushed"
        for i, part in enumerate(("apply", "sample")):
            ratio = [b[i] / a[i] for b, a in zip(t["before"], t["after"])]
            report["results"][f"{part}, {key}"] = {
                "before_s": statistics.median(b[i] for b in t["before"]),
                "after_s": statistics.median(a[i] for a in t["after"]),
                "speed_ratio_median": statistics.median(ratio),
                "speed_ratio_range": [min(ratio), max(ratio)],
                "load": [round(v, 2) for v in os.getloadavg()],
            }
        print(key, report["results"][f"apply, {key}"], flush=True)
    m = report["machine"]
    lines = [
        "# Real-ESRGAN degradation of a book batch, before and after (benchmarks/degrade_compare.py)",
        "",
        f"Command: `{m['command']}`  ",
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores, 1 torch thread, torch {m['torch']}; after = commit "
        f"`{m['git_commit']}`, before = commit `{report['before_commit']}`. Load average at start "
        f"{report['load_at_start']}: the machine was shared (a model training ran throughout), so absolute times "
        "are inflated; the two checkouts alternate round by round.",
        "",
        f"Batch: 4 crops of 128x128 (the book profile); {args.batches} batches of parameter records drawn once and "
        f"replayed by both checkouts (`apply`: USM, both orders, JPEG, the same work), {args.rounds} rounds; "
        "`sample` is each checkout's own drawing of a batch's records. The calling thread's CPU time per batch "
        "(mean over the batches of a process, median over rounds).",
        "",
        "| setting | before (ms/batch) | after (ms/batch) | before / after | range | load after |",
        "|---|---|---|---|---|---|",
    ]
    for key, r in report["results"].items():
        lines.append(
            f"| {key} | {r['before_s'] * 1000:.1f} | {r['after_s'] * 1000:.1f} | **{r['speed_ratio_median']:.2f}x** | "
            f"{r['speed_ratio_range'][0]:.2f} - {r['speed_ratio_range'][1]:.2f} | {r['load']} |"
        )
    lines.append("")
    out = Path(args.out)
    atomic_write_text(out / "degrade_compare.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "degrade_compare.md", "\n".join(lines))
    print(f"wrote {out / 'degrade_compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
