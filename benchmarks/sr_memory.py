"""`savl sr` host memory per output pixel: the whole command (read, tiled inference, write), in a fresh process
per image size, with a small convolutional x4 network so that the network's own working set is tiny and the
same at every size (fixed tile).

The figure is the slope of peak resident memory (VmHWM) against output pixels between two sizes, so the
constant part (Python, torch, the model and one tile's activations) cancels: bytes per output pixel above the
model's working set. Goal: at most 20. `--root` runs another checkout (e.g. the main branch) for comparison.

    python benchmarks/sr_memory.py [--sides 256,1024] [--tile 128] [--ext png] [--root PATH]
        [--out benchmarks/results/sr_memory_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import dataclasses, sys
sys.path.insert(0, {root!r})
import torch
from savl.cli import main
from savl.io import write_image
from savl.models.io import register_architecture, save_model


class TinyX4(torch.nn.Module):
    architecture = "BenchTinyX4"

    def __init__(self, config):
        super().__init__()
        self.config, self.scale = config, 4
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def forward(self, x):
        return torch.sigmoid(self.body(x))


@dataclasses.dataclass
class Cfg:
    width: int = 48


register_architecture("BenchTinyX4", TinyX4, Cfg)
torch.manual_seed(0)
model = str(save_model(TinyX4(Cfg()), {tmp!r} + "/tiny.safetensors"))
side = {side}
smooth = torch.nn.functional.interpolate(torch.rand(1, 3, side // 8, side // 8), size=(side, side), mode="bilinear")
write_image({tmp!r} + "/in.png", smooth[0])
main(["sr", {tmp!r} + "/in.png", {tmp!r} + "/out.{ext}", "--model", model, "--tile", "{tile}"])


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024  # kB -> bytes


print(status("VmHWM"))
"""


def peak_rss(root: Path, side: int, tile: int, ext: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        code = CHILD.format(root=str(root), tmp=tmp, side=side, tile=tile, ext=ext)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])


def measure(root: Path, sides: list[int], tile: int, ext: str) -> dict:
    rows = []
    for side in sides:
        t = time.perf_counter()
        peak = peak_rss(root, side, tile, ext)
        rows.append({"lr_side": side, "output_mpx": (4 * side) ** 2 / 1e6, "peak_rss_mb": peak / 2**20,
                     "seconds": time.perf_counter() - t})
    a, b = rows[0], rows[-1]
    slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) * 2**20 / ((b["output_mpx"] - a["output_mpx"]) * 1e6)
    return {"rows": rows, "bytes_per_output_pixel": slope}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", default="256,1024", help="LR sides of the two square test images")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--ext", default="png")
    p.add_argument("--root", default=str(ROOT), help="the checkout whose savl is measured")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/sr_memory_cpu.json"))
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from savl.provenance import atomic_write_text, git_commit, machine_info

    root = Path(args.root)
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "measured_commit": git_commit(root, short=True, dirty=True),
        "machine": machine_info(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "tile": args.tile,
        "ext": args.ext,
        **measure(root, [int(s) for s in args.sides.split(",")], args.tile, args.ext),
        "goal_bytes_per_output_pixel": 20,
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
