"""One place for what results files record about where they came from: CPU model, git commit, hardware, the
`provenance` record of an evaluation, and the atomic write that puts them on disk (benchmarks,
`savl.evaluate`, training runs and the book share these)."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import secrets
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or ``"unknown"`` where that cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip()


def git_dirty(path: str | os.PathLike[str] | None = None) -> bool | None:
    """Whether tracked files differ from the commit checked out at ``path`` (default: this package's
    repository); ``None`` outside a git checkout or without git."""
    cwd = Path(path) if path is not None else _REPO_ROOT
    try:
        return bool(_git(cwd, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(path: str | os.PathLike[str] | None = None, short: bool | int = False, dirty: bool = False) -> str:
    """The commit checked out at ``path`` (default: this package's repository), or ``"unknown"`` outside a
    git checkout or without git. ``short``: ``True`` for git's short hash, an int for that many digits.
    ``dirty``: append ``+dirty`` when tracked files differ from the commit."""
    cwd = Path(path) if path is not None else _REPO_ROOT
    args = ["rev-parse"]
    if short is True:
        args.append("--short")
    elif short:
        args.append(f"--short={int(short)}")
    try:
        commit = _git(cwd, *args, "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return commit + ("+dirty" if dirty and git_dirty(cwd) else "")


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file in the same folder, then ``os.replace`` it onto ``path``: readers
    never see a half-written file, and the temporary file is removed when anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    mode = os.stat(tmp).st_mode
    try:
        write(tmp)
        if os.stat(tmp).st_mode != mode:  # some writers (safetensors) recreate the file as 0600
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_temporary(path: Path) -> str:
    """An empty new file beside `path`, mode 0666 less the umask as open() would create it (mkstemp's 0600
    would make every result private)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: no free temporary name beside it")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write` of a text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def machine_info() -> dict:
    """What a benchmark result records about where it ran: CPU, cores, threads, load, versions, commit, command."""
    import platform
    import sys

    import torch

    info = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _git_commit() -> tuple[str, bool | None]:
    """(commit, dirty) of the checkout holding this package; ("unknown", None) outside git."""
    where = Path(__file__).resolve().parent
    commit = git_commit(where)
    dirty = git_dirty(where) if commit != "unknown" else None
    if dirty is None:
        return "unknown", None
    return commit, dirty


def _cpu_model() -> str:
    cpu = cpu_model()
    if cpu != "unknown":
        return cpu
    return platform.processor() or platform.machine() or "unknown"


def hardware(device: str | torch.device | None = None) -> dict:
    """CPU model and count, and the GPU's name when the device is CUDA."""
    import torch

    info = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(dev)
    elif dev is not None and dev.type == "mps":
        info["gpu"] = "Apple MPS"
    else:
        info["gpu"] = None
    return info


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    command: Sequence[str] | None = None,
    **extra,
) -> dict:
    """What a result needs to be trusted later: command line, git commit, hardware, torch version,
    checkpoint sha256 ("none" without a checkpoint file), savl version and time (UTC)."""
    import torch

    from savl import __version__

    commit, dirty = _git_commit()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    return {
        "command": " ".join(command if command is not None else sys.argv),
        "git_commit": commit,
        "git_dirty": dirty,
        "hardware": hardware(device),
        "device": str(device) if device is not None else None,
        "torch_version": torch.__version__,
        "savl_version": __version__,
        "checkpoint": str(ckpt) if ckpt is not None else None,
        "checkpoint_sha256": _sha256(ckpt) if ckpt is not None and ckpt.is_file() else "none",
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
