"""A finished (or running) training run on disk (`Run`), and `find_run`, which finds a finished run by its config
hash. `get_or_train` (in `savl.train.loop`) trains when `find_run` finds nothing; this module never imports the
loop, so the import runs one way: loop -> run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from savl.errors import ConfigError, ModelFileError
from savl.train.config import RUN_NAME, TrainConfig, config_hash, load_config, run_name
from savl.train.records import read_metrics


@dataclass
class Run:
    """`runs/<name>/`: config.yaml, metrics.jsonl, checkpoints/, tb/, env.json, final/, done.json."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)

    @property
    def config(self) -> TrainConfig:
        return load_config(self.path / "config.yaml")

    @property
    def hash(self) -> str | None:
        done = self.done_record
        return done.get("hash") if done else None

    @property
    def done_record(self) -> dict | None:
        f = self.path / "done.json"
        if not f.is_file():
            return None
        try:
            record = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            raise ModelFileError(f"{f}: unreadable; delete it to train this run again") from None
        if not isinstance(record, dict):
            raise ModelFileError(f"{f}: not a run record; delete it to train this run again")
        return record

    @property
    def finished(self) -> bool:
        return self.done_record is not None

    @property
    def metrics(self) -> list[dict]:
        """Every logged step (metrics.jsonl) as a list of dicts."""
        return read_metrics(self.path / "metrics.jsonl")

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def env(self) -> dict:
        return json.loads((self.path / "env.json").read_text())

    def has(self, name: str) -> bool:
        return (self.final / f"{name}.safetensors").is_file()

    def _load(self, name: str, device):
        from savl.models.io import load_model

        f = self.final / f"{name}.safetensors"
        if not f.is_file():
            raise ModelFileError(f"{f}: this run has no final {name} model (stage {self.config.stage})")
        return load_model(f, map_location=device)

    def load_savl(self, device="cpu"):
        """The trained SAVL model (encoder + decoder), eval mode."""
        return self._load("savl", device)

    def load_srnet(self, device="cpu", ema: bool = True):
        """The trained SR net (the EMA weights where the stage kept an EMA, unless ema=False), eval mode."""
        if ema and self.has("srnet_ema"):
            return self._load("srnet_ema", device)
        return self._load("srnet", device)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, finished={self.finished})"


def find_run(cfg: TrainConfig, root: Path | None = None) -> Run | None:
    """A finished run under `root` (default: cfg.output) whose config hash matches."""
    root = Path(root or cfg.output)
    want = config_hash(cfg)
    named = Run(root / run_name(cfg))
    if named.finished and named.hash == want:
        return named
    if not root.is_dir():
        return None
    for d in sorted(root.iterdir()):
        r = Run(d)
        try:
            if d.is_dir() and r.finished and r.hash == want:
                return r
        except ModelFileError:  # another run's broken record does not stop the search
            continue
    return None


def run_dir(cfg: TrainConfig) -> Path:
    """`output/<name>`, after checking that the name is one folder (the config validates it too; this also
    covers configs built without validation): a run never reaches outside its own folder."""
    name = run_name(cfg)
    if not RUN_NAME.fullmatch(name):
        raise ConfigError(f"name {name!r}: not a run folder name (letters, digits, '.', '_', '-')")
    return Path(cfg.output) / name


LOCK_NAME = ".lock"


def looks_like_run(path: Path) -> bool:
    """Whether a folder is a savl run (or empty): only such a folder is ever cleared to start afresh."""
    if not path.is_dir() or path.is_symlink():
        return False
    entries = {p.name for p in path.iterdir()} - {LOCK_NAME}
    return not entries or bool(entries & {"config.yaml", "checkpoints", "done.json", "env.json", "metrics.jsonl"})


def clear_run(path: Path) -> None:
    """Delete what a run folder holds, except its lock (held by the caller: deleting it would let a second
    training take a new lock on a new file)."""
    for entry in path.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class RunLock:
    """An exclusive lock on a run folder while one training writes it: `<run>/.lock`, held with `fcntl.flock`
    (released by the kernel when the process ends, also on kill -9). A second training of the same folder
    fails at once with one line naming the holder (pid, host, start time). Where `fcntl` does not exist
    (Windows) there is no lock.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ConfigError(f"{self.folder}: cannot create the run folder ({e.strerror or e})") from None
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"{self.folder}: in use by another training ({holder}); wait for it or choose another name"
            ) from None
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
