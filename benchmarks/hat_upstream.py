"""Benchmark: our HAT (savl/models/hat.py) beside upstream HAT's own code (XPixelGroup/HAT, hat/archs/hat_arch.py),
same sizes and the same weights, on the CPU.

    python benchmarks/hat_upstream.py --upstream DIR [--rounds 5] [--threads 1] [--out benchmarks/results]
    python benchmarks/hat_upstream.py --upstream DIR --fresh-only [--fresh-rounds 5]   (only 3., into --out's JSON)

DIR holds upstream's `hat_arch.py` and whatever it imports (BasicSR's registry and `to_2tuple`/`trunc_normal_`,
einops): the upstream file is never copied into this repository. The upstream model is built at the `book`
sizes (embed 48, groups of 2 blocks, 3 heads, window 8, compress 3, squeeze 12, MLP ratio 2, overlap 0.5,
64 features before the pixel shuffle, as upstream fixes) with random weights, and its state dict is loaded
into ours through `savl.models.hat_official.load_official_hat`; the outputs must agree before anything is
timed.

1. Forward + backward (L1 against a random target, training mode, no drop-path) at book size: batch 4 of 32x32
   LR patches; once as the training loop runs it (NCHW), once with our weights and input channels-last.
2. Inference on one 256x256 LR image, whole and tiled with Real-ESRGAN's meaning (core 128, 16 pixels of
   context: 4 tiles). Ours runs `savl.infer.upscale` (cores blended with a raised cosine, weights held
   channels-last on the CPU as it does); upstream's tiles are cut and pasted as Real-ESRGAN's `tile_process`
   does, each padded to a multiple of the window by reflection as HAT's test code does.
3. The same two inferences as a `savl sr` call runs them: each (model, mode) in a fresh process of its own,
   every round, the two models' processes one after the other in alternating order; each child builds both
   models (same weights), runs a 32x32 warm-up (first-call set-up), then times one call and records the growth
   of its maximum resident set (peak memory) over what it held before the call.

Why both 2 and 3: in one process the timings depend on what ran before them. Upstream's tiled call, which
allocates more large temporaries per tile, got 29 % faster once the whole-image rounds had grown the heap, ours
15 %, so the in-process tiled ratio (2) depends on the order of the measurements; a fresh process per call (3)
is what a user's one-image `savl sr` meets, and the same for both models in every round.

Times are the calling thread's CPU time (one thread by default: the least disturbed by other processes on a
shared machine) and wall time, the two models alternating round by round; ratios are medians over rounds of
upstream's time divided by ours in the same round (above 1: ours is faster). The load average is recorded.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BOOK = {"embed_dim": 48, "depths": (2, 2), "heads": 3, "window": 8, "compress": 3, "squeeze": 12}
SCALE = 4


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _upstream_module(folder: str):
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("upstream_hat_arch", Path(folder) / "hat_arch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(folder: str):
    """(ours, upstream) with the same weights, in eval mode."""
    from savl.models.hat import HAT
    from savl.models.hat_official import load_official_hat

    up = _upstream_module(folder)
    torch.manual_seed(0)
    theirs = up.HAT(
        upscale=SCALE, in_chans=3, img_size=64, window_size=BOOK["window"], compress_ratio=BOOK["compress"],
        squeeze_factor=BOOK["squeeze"], conv_scale=0.01, overlap_ratio=0.5, img_range=1.0,
        depths=BOOK["depths"], embed_dim=BOOK["embed_dim"], num_heads=(BOOK["heads"],) * len(BOOK["depths"]),
        mlp_ratio=2, upsampler="pixelshuffle", resi_connection="1conv", drop_path_rate=0.0,
    )  # fmt: skip
    ours = HAT(**BOOK, mlp_ratio=2.0, overlap=0.5, upscale=SCALE, num_feat=64)
    load_official_hat(theirs.state_dict(), model=ours)
    return ours.eval(), theirs.eval()


def upstream_tiled(model, img: torch.Tensor, tile: int, pad: int, window: int) -> torch.Tensor:
    """Real-ESRGAN's tiling: each core with `pad` pixels of context, run, and the core's output pasted."""
    _, c, h, w = img.shape
    out = img.new_zeros(1, c, h * SCALE, w * SCALE)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            a0, a1, b0, b1 = max(y0 - pad, 0), min(y1 + pad, h), max(x0 - pad, 0), min(x1 + pad, w)
            patch = img[..., a0:a1, b0:b1]
            ph, pw = (-patch.shape[-2]) % window, (-patch.shape[-1]) % window
            if ph or pw:
                patch = F.pad(patch, (0, pw, 0, ph), mode="reflect")
            pred = model(patch)
            oy, ox = (y0 - a0) * SCALE, (x0 - b0) * SCALE
            out[..., y0 * SCALE : y1 * SCALE, x0 * SCALE : x1 * SCALE] = pred[
                ..., oy : oy + (y1 - y0) * SCALE, ox : ox + (x1 - x0) * SCALE
            ]
    return out


def _infer(kind: str, model, lr: torch.Tensor, mode: str) -> torch.Tensor:
    from savl.infer import upscale

    with torch.no_grad():
        if kind == "ours":
            return upscale(model, lr[0], tile=None if mode == "whole" else 128, overlap=16, scale=SCALE)[None]
        if mode == "whole":
            return model(lr)
        return upstream_tiled(model, lr, 128, 16, BOOK["window"])


def _paired(run_ours, run_theirs, rounds: int) -> dict:
    cpu = {"ours": [], "upstream": []}
    wall = {"ours": [], "upstream": []}
    run_ours(), run_theirs()  # warm-up
    for r in range(rounds):
        pairs = (("ours", run_ours), ("upstream", run_theirs))
        for name, fn in pairs if r % 2 == 0 else pairs[::-1]:
            c0, w0 = time.thread_time(), time.perf_counter()
            fn()
            cpu[name].append(time.thread_time() - c0)
            wall[name].append(time.perf_counter() - w0)

    def summary(t: dict) -> dict:
        ratio = [u / o for u, o in zip(t["upstream"], t["ours"])]
        return {
            "ours_s": statistics.median(t["ours"]),
            "upstream_s": statistics.median(t["upstream"]),
            "speed_ratio_median": statistics.median(ratio),
            "speed_ratio_range": [min(ratio), max(ratio)],
        }

    return {"cpu": summary(cpu), "wall": summary(wall), "rounds": rounds, "load": _load()}


def _fresh_child(folder: str, kind: str, mode: str) -> dict:
    """One timed inference (and its peak memory growth) in this fresh process."""
    ours, theirs = build(folder)
    lr = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    model = ours if kind == "ours" else theirs
    _infer(kind, model, lr[..., :32, :32], "whole")  # first-call allocations outside the measurement
    before = _high_water_kb()
    c0, w0 = time.thread_time(), time.perf_counter()
    _infer(kind, model, lr, mode)
    cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
    return {"cpu_s": cpu, "wall_s": wall, "peak_growth_mb": (_high_water_kb() - before) / 1024, "load": _load()}


def _high_water_kb() -> int:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over from the parent
    across fork and exec, so a child of a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="folder with upstream's hat_arch.py and its imports")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--fresh-rounds", type=int, default=None, help="rounds of fresh-process calls (default --rounds)")
    p.add_argument("--fresh-child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--fresh-only", action="store_true", help="re-measure only the fresh-process calls into --out")
    args = p.parse_args()
    torch.set_flush_denormal(True)  # as the savl command runs
    torch.set_num_threads(args.threads)
    if args.fresh_child:
        print("RESULT " + json.dumps(_fresh_child(args.upstream, *args.fresh_child)))
        return 0
    from savl.provenance import machine_info

    out = Path(args.out)
    if args.fresh_only:
        report = json.loads((out / "hat_upstream_cpu.json").read_text())
        report["fresh_command"] = " ".join([Path(sys.executable).name, *sys.argv])
        report["fresh_commit"] = machine_info()["git_commit"]
        return _fresh(args, report, out)
    report = {"benchmark": "hat_upstream", "machine": machine_info(), "load_at_start": _load(), "sizes": BOOK}
    ours, theirs = build(args.upstream)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        report["max_abs_difference_64x64"] = float((ours(x) - theirs(x)).abs().max())
    if report["max_abs_difference_64x64"] > 1e-4:
        print(f"outputs differ by {report['max_abs_difference_64x64']}: not the same network", file=sys.stderr)
        return 1

    # 1. forward + backward at book size
    lr, target = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 128, 128, generator=g)

    def fwd_bwd(model, x=None):
        x = lr if x is None else x

        def run():
            model.zero_grad(set_to_none=True)
            F.l1_loss(model(x), target).backward()

        return run

    ours.train(), theirs.train()
    report["forward_backward_book_b4_lr32"] = _paired(fwd_bwd(ours), fwd_bwd(theirs), args.rounds * 2)
    print("fwd+bwd", report["forward_backward_book_b4_lr32"]["cpu"], flush=True)
    # The same with our weights and input channels-last (what a training loop could set; the loop does not yet).
    ours_cl = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    run_cl = fwd_bwd(ours_cl, lr.contiguous(memory_format=torch.channels_last))
    report["forward_backward_book_b4_lr32_channels_last"] = _paired(run_cl, fwd_bwd(theirs), args.rounds * 2)
    print("fwd+bwd channels_last", report["forward_backward_book_b4_lr32_channels_last"]["cpu"], flush=True)
    ours.eval(), theirs.eval()

    # 2. inference on a 256x256 LR image
    img = torch.rand(1, 3, 256, 256, generator=g)
    for mode in ("whole", "tiled"):
        a, b = _infer("ours", ours, img, mode), _infer("upstream", theirs, img, mode)
        diff = float((a - b.clamp(0, 1)).abs().max()) if mode == "whole" else None
        res = _paired(lambda m=mode: _infer("ours", ours, img, m), lambda m=mode: _infer("upstream", theirs, img, m),
                      args.rounds)  # fmt: skip
        res["max_abs_difference"] = diff
        report[f"inference_256_{mode}"] = res
        print(mode, res["cpu"], flush=True)

    return _fresh(args, report, out)


def _fresh(args, report: dict, out: Path) -> int:
    """3. Each (model, mode) in a fresh process per round, interleaved; then write the report."""
    from savl.provenance import atomic_write_text

    rounds = args.fresh_rounds or args.rounds
    report["fresh_load_at_start"] = _load()
    runs = {f"{kind}_{mode}": [] for mode in ("whole", "tiled") for kind in ("ours", "upstream")}
    for r in range(rounds):
        for mode in ("whole", "tiled"):
            for kind in ("ours", "upstream") if r % 2 == 0 else ("upstream", "ours"):
                cmd = [sys.executable, __file__, "--upstream", args.upstream, "--threads", str(args.threads)]
                proc = subprocess.run(cmd + ["--fresh-child", kind, mode], capture_output=True, text=True, cwd=ROOT)
                if proc.returncode:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return 1
                line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
                runs[f"{kind}_{mode}"].append(json.loads(line[7:]))
        print(f"fresh round {r + 1}/{rounds}", {k: round(v[-1]["cpu_s"], 3) for k, v in runs.items()}, flush=True)
    fresh = {"rounds": rounds}
    for mode in ("whole", "tiled"):
        o, u = runs[f"ours_{mode}"], runs[f"upstream_{mode}"]
        res = {}
        for key in ("cpu_s", "wall_s"):
            ratio = [b[key] / a[key] for a, b in zip(o, u)]
            res[key] = {
                "ours_s": statistics.median(a[key] for a in o),
                "upstream_s": statistics.median(b[key] for b in u),
                "speed_ratio_median": statistics.median(ratio),
                "speed_ratio_range": [min(ratio), max(ratio)],
                "ratios": ratio,
            }
        for kind, rs in (("ours", o), ("upstream", u)):
            mb = [x["peak_growth_mb"] for x in rs]
            res[f"{kind}_peak_growth_mb"] = {"median": statistics.median(mb), "range": [min(mb), max(mb)], "all": mb}
        res["loads"] = [x["load"] for x in o + u]
        fresh[mode] = res
    report["fresh_process"] = fresh
    report["inference_256_peak_growth_mb"] = {
        f"{kind}_{mode}": fresh[mode][f"{kind}_peak_growth_mb"]["median"]
        for mode in ("whole", "tiled")
        for kind in ("ours", "upstream")
    }
    report["load_at_end"] = _load()
    atomic_write_text(out / "hat_upstream_cpu.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "hat_upstream_cpu.md", _markdown(report))
    print(f"wrote {out / 'hat_upstream_cpu.md'}")
    return 0


def _markdown(rep: dict) -> str:
    m = rep["machine"]
    mem = rep["inference_256_peak_growth_mb"]
    lines = [
        "# Our HAT beside upstream HAT's code (benchmarks/hat_upstream.py)",
        "",
        f"Command: `{m['command']}`  ",
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores, {m['torch_threads']} torch thread(s), torch "
        f"{m['torch']}, commit `{m['git_commit']}`.  ",
        "Upstream: XPixelGroup/HAT `hat/archs/hat_arch.py` (commit 1638a9a), run outside this repository.  ",
        f"Load average (1, 5, 15 min) at start {rep['load_at_start']}, at end {rep['load_at_end']}: the machine was "
        "shared (a model training ran throughout), so absolute times are inflated; the two models alternate "
        "round by round, and the ratios compare them in the same round.",
        "",
        f"Same weights: outputs on a 2x3x64x64 input differ by at most {rep['max_abs_difference_64x64']:.1e}.",
        "",
        "| measurement | ours (CPU s) | upstream (CPU s) | upstream / ours, CPU time | range | upstream / ours, "
        "wall time | load during |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = (
        ("forward + backward, book size, batch 4, 32x32 LR", "forward_backward_book_b4_lr32"),
        ("the same, our weights and input channels-last", "forward_backward_book_b4_lr32_channels_last"),
        ("inference, 256x256 LR, whole image", "inference_256_whole"),
        ("inference, 256x256 LR, tiles of 128 + 16 context (4 tiles)", "inference_256_tiled"),
    )
    for label, key in rows:
        r = rep[key]
        c, w = r["cpu"], r["wall"]
        lines.append(
            f"| {label} | {c['ours_s']:.3f} | {c['upstream_s']:.3f} | **{c['speed_ratio_median']:.2f}x** | "
            f"{c['speed_ratio_range'][0]:.2f} - {c['speed_ratio_range'][1]:.2f} | {w['speed_ratio_median']:.2f}x | "
            f"{r['load']} |"
        )
    lines += [
        "",
        "In one process, the inference rows above come after the forward + backward rounds, and the tiled row after "
        "the whole-image rounds (see the module docstring for why that matters).",
        "",
    ]
    fresh = rep.get("fresh_process")
    if fresh is not None:
        lines += [
            f"The same inferences as `savl sr` runs them, each call in a fresh process of its own, {fresh['rounds']} "
            "rounds, the two models alternating (`fresh_process` in the JSON; peak memory = growth of the "
            "process's maximum resident set during the call):",
            "",
            "| 256x256 LR | ours (CPU s) | upstream (CPU s) | upstream / ours, CPU time | range | upstream / ours, "
            "wall time | ours peak MB (range) | upstream peak MB (range) | load during |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for mode, label in (("whole", "whole image"), ("tiled", "tiles of 128 + 16 (4 tiles)")):
            f = fresh[mode]
            c, w, mo, mu = f["cpu_s"], f["wall_s"], f["ours_peak_growth_mb"], f["upstream_peak_growth_mb"]
            loads = [x[0] for x in f["loads"]]
            lines.append(
                f"| {label} | {c['ours_s']:.3f} | {c['upstream_s']:.3f} | **{c['speed_ratio_median']:.2f}x** | "
                f"{c['speed_ratio_range'][0]:.2f} - {c['speed_ratio_range'][1]:.2f} | "
                f"{w['speed_ratio_median']:.2f}x | {mo['median']:.0f} ({mo['range'][0]:.0f} - {mo['range'][1]:.0f}) "
                f"| {mu['median']:.0f} ({mu['range'][0]:.0f} - {mu['range'][1]:.0f}) | "
                f"1-min load {min(loads):.1f} - {max(loads):.1f} |"
            )
    else:
        lines += [
            "Peak memory of one 256x256 inference (growth of the process's maximum resident set, fresh process):",
            "",
            "| mode | ours (MB) | upstream (MB) |",
            "|---|---|---|",
            f"| whole image | {mem['ours_whole']:.0f} | {mem['upstream_whole']:.0f} |",
            f"| tiled (128 + 16) | {mem['ours_tiled']:.0f} | {mem['upstream_tiled']:.0f} |",
        ]
    lines += [
        "",
        "Targets (issue 18): inference at least 1.5x upstream's speed at no more peak memory; forward + backward "
        "at least 1.2x.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
