"""Training checkpoints: model weights as safetensors (`savl.models.io.save_model`), everything else (optimisers,
EMA, discriminator, step, RNG states, the degradation pool) in `torch.load(weights_only=True)`-loadable files.

Layout: `checkpoints/step_000010/{<model>.safetensors, <model>.json, state.pt, rank0.pt, rank1.pt, ...}`.
A checkpoint is assembled in a hidden temporary folder and renamed into place, so a folder named `step_*`
is always complete; the newest `keep_last` are kept. Per-rank files hold what differs between DDP ranks
(RNG states, the pool). The learning-rate schedule is a pure function of the step (config.lr_at), so the
step is its whole state.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from savl.errors import ModelFileError

_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "state.pt").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def tmp_dir(root: Path, step: int) -> Path:
    return root / f".step_{step:06d}.tmp"


def prepare(root: Path, step: int) -> Path:
    """Rank 0: a fresh temporary folder for the checkpoint of `step`."""
    tmp = tmp_dir(root, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _save_torch(obj, path: Path) -> None:
    part = path.with_name(path.name + ".part")
    torch.save(obj, part)
    part.replace(path)


def write_rank_state(tmp: Path, rank: int, state: dict) -> None:
    _save_torch(state, tmp / f"rank{rank}.pt")


def finalise(tmp: Path, root: Path, step: int, models: dict, state: dict, keep_last: int) -> Path:
    """Rank 0: write models + shared state into `tmp`, rename it to step_XXXXXX, prune old checkpoints."""
    from savl.models.io import save_model

    for name, model in models.items():
        save_model(model, tmp / f"{name}.safetensors")
    _save_torch(state, tmp / "state.pt")
    final = step_dir(root, step)
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)
    for _, old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(path: Path, name: str = "state.pt") -> dict:
    f = path / name
    if not f.is_file():
        raise ModelFileError(f"{f}: no such checkpoint file")
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or unsafe pickles raise many types
        raise ModelFileError(f"{f}: cannot be read as a weights-only checkpoint ({type(e).__name__})") from None


# ------------------------------------------------------------------------------------------------ RNG
def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    """Every random stream a step draws from: torch CPU/CUDA, numpy, python, and the loop's own generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global stream is what we save)
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        # python's state is a tuple of ints: stored as a tensor so weights_only loading accepts it
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    for k, g in generators.items():
        g.set_state(state["generators"][k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
