"""One place for what results files record about where they came from: CPU model, git commit, and the
atomic write that puts them on disk (benchmarks, `savl.evaluate`, training runs and the book share these)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``, so readers
    never see a half-written file; the temporary file is removed when anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
