"""Small helpers every chapter shares: environment banner and seeding, device and profile checks, and where
the project's folders are.

Every chapter opens with the same three cells (the introduction explains them once): an import of these
helpers, the ``parameters`` cell that papermill overrides, and a cell that checks the injected values with
:func:`check_profile` and :func:`resolve_device`, seeds and prints the environment with
:func:`print_environment`, and picks the sizes that scale with the profile with :func:`by_profile`.

Paths are resolved from the repository root, never from the working directory, so a chapter runs the same
from ``book/`` (the book build, JupyterLab) and from the root (``papermill book/NN.ipynb ...``):
:func:`repo_root`, :func:`runs_dir` (cached training runs; ``SAVL_RUNS`` overrides it), :func:`models_dir`
(the model zoo; ``SAVL_MODELS`` overrides it) and :func:`results_dir` (committed results with provenance).
"""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

import savl
from savl import provenance
from savl.errors import ConfigError

#: The run profiles, cheapest first: ``smoke`` (tests, seconds per chapter), ``book`` (the rendered book, minutes
#: per chapter on two CPU cores) and ``paper`` (the paper's sizes and schedules, GPUs); see the book's appendix.
PROFILES: tuple[str, ...] = ("smoke", "book", "paper")

_REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    """The root of the checkout this package was imported from (where ``configs/``, ``book/`` and ``runs/`` are)."""
    return _REPO_ROOT


def _from_env(variable: str, default: str) -> Path:
    # one rule for every folder: an environment variable wins; a relative path is taken from the root
    value = os.environ.get(variable, "").strip()
    path = Path(value).expanduser() if value else Path(default)
    return path if path.is_absolute() else _REPO_ROOT / path


def runs_dir() -> Path:
    """Where cached training runs live: ``$SAVL_RUNS`` if set (relative to the root), else ``<root>/runs``."""
    return _from_env("SAVL_RUNS", "runs")


def models_dir() -> Path:
    """The model zoo folder: ``$SAVL_MODELS`` if set (relative to the root), else ``<root>/models``."""
    return _from_env("SAVL_MODELS", "models")


def results_dir() -> Path:
    """Committed results of full-size runs, each JSON file with its provenance: ``<root>/results``."""
    return _REPO_ROOT / "results"


def configs_dir(profile: str | None = None) -> Path:
    """``<root>/configs``, or the folder of one profile's configurations (checked with :func:`check_profile`)."""
    return _REPO_ROOT / "configs" if profile is None else _REPO_ROOT / "configs" / check_profile(profile)


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is one of :data:`PROFILES`, else raise a one-line :class:`ConfigError`."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
    return profile


def by_profile(profile: str, **values: Any) -> Any:
    """Pick the value for ``profile`` from keyword arguments, e.g. ``by_profile(p, smoke=64, book=4096)``.

    A profile without its own value falls back to the next cheaper one that has a value (``paper`` uses
    ``book``'s size unless told otherwise), so chapters only spell out what differs.
    """
    check_profile(profile)
    unknown = sorted(set(values) - set(PROFILES))
    if unknown:
        raise ConfigError(f"by_profile got unknown profile name(s) {', '.join(unknown)}")
    for name in reversed(PROFILES[: PROFILES.index(profile) + 1]):
        if name in values:
            return values[name]
    raise ConfigError(f"by_profile has no value for profile {profile!r} or a cheaper one")


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """Turn a ``device`` parameter into a :class:`torch.device` that exists on this machine.

    ``"auto"`` picks CUDA when available, else CPU. Asking for a CUDA or MPS device that is not there is a
    :class:`ConfigError` (one line) rather than a silent fallback, so a GPU run never quietly runs on CPU.
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"invalid device {device!r}: {str(err).splitlines()[0]}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"device {device!r} requested but MPS is not available on this machine")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {device!r}: use cpu, cuda, cuda:N, mps or auto")
    return dev


def git_commit(path: str | os.PathLike[str] | None = None) -> str:
    """The commit checked out at ``path`` (default: this package's repository), ``+dirty`` when tracked
    files differ from it, or ``"unknown"`` outside a git checkout or without git."""
    return provenance.git_commit(path if path is not None else _REPO_ROOT, dirty=True)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (all devices)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global state is what third-party code draws from
    torch.manual_seed(seed)  # also seeds every CUDA device


def environment(seed: int, device: str | torch.device = "cpu") -> dict[str, str | int]:
    """The facts a chapter's first cell records: versions, commit, device and seed (no side effects)."""
    dev = resolve_device(device)
    info: dict[str, str | int] = {
        "savl": savl.__version__,
        "commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(dev),
        "seed": seed,
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def print_environment(seed: int = 0, device: str | torch.device = "cpu") -> dict[str, str | int]:
    """Seed everything with ``seed``, print the environment (versions, commit, device, seed) and return it."""
    seed_everything(seed)
    info = environment(seed, device)
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}} : {value}")
    return info


def markdown_table(header, rows, align: str | None = None, caption: str | None = None):
    """A table for a chapter: `header` (column titles), `rows` (sequences of cells, formatted by the caller),
    `align` one letter per column ("l", "r" or "c"; default all left), an optional caption below. Returned as
    IPython's Markdown, which MyST-NB renders as a real table in the book and JupyterLab shows as one."""
    from IPython.display import Markdown

    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r", "c"}:
        raise ValueError(f"align {align!r} needs one of l/r/c per column ({len(header)})")
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)!r} has {len(row)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return Markdown("\n".join(lines) + (f"\n\n{caption}" if caption else ""))
