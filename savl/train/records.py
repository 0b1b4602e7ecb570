"""What a run writes besides checkpoints: metrics.jsonl, TensorBoard events (when the optional TensorBoard is
installed), env.json, progress output.

Only rank 0 writes. The progress display is a tqdm bar on a terminal and one printed line every `log_every`
steps elsewhere (notebooks executed by papermill, CI logs), so logs stay readable.
"""

from __future__ import annotations

import json
import platform
import socket
import sys
import time
import warnings
from pathlib import Path

import torch

from savl import __version__
from savl.provenance import atomic_write_text, git_dirty
from savl.provenance import git_commit as provenance_commit


def atomic_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def git_commit() -> dict:
    root = Path(__file__).resolve().parents[2]
    sha = provenance_commit(root)
    if sha == "unknown":
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": git_dirty(root)}


def environment(device: torch.device, world: int) -> dict:
    """Versions, device, commit: written to env.json at the start of a run."""
    import numpy

    env = {
        "savl": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "world_size": world,
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **git_commit(),
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    except Exception as e:  # a torchvision built for another torch raises RuntimeError on import
        env["torchvision"] = f"unusable ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
    return env


class MetricsLog:
    """Appends one JSON object per logged step to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # Lines logged after the checkpoint we resume from describe steps that will be redone.
            keep = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
            atomic_text(self.path, "".join(line + "\n" for line in keep))
        elif self.path.exists():
            self.path.unlink()
        self._file = self.path.open("a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is the optional `train` extra: metrics.jsonl has everything
                warnings.warn(
                    "TensorBoard is not installed (pip install 'savl[train]'): metrics go to metrics.jsonl only",
                    stacklevel=2,
                )
            else:
                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.tb is not None:
            step = record["step"]
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, step)

    def image(self, tag: str, img: torch.Tensor, step: int) -> None:
        if self.tb is not None:
            self.tb.add_image(tag, img.clamp(0, 1), step)

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", float("inf"))
    except json.JSONDecodeError:
        return float("inf")


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Progress:
    """tqdm on a terminal; elsewhere a line every `every` steps (and at the end)."""

    def __init__(self, mode: str, total: int, start: int, every: int, enabled: bool, desc: str):
        self.every, self.total, self.desc = every, total, desc
        bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.lines = enabled and (mode == "lines" or (mode == "auto" and not bar))
        self.bar = None
        if enabled and bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True)

    def update(self, step: int, record: dict | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if record is not None:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "lr", "val_psnr")})
        elif self.lines and record is not None:
            shown = " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float))
            print(f"[{self.desc}] step {step}/{self.total} {shown}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
