"""A finished (or running) training run on disk (`Run`), and `find_run`, which finds a finished run by its config
hash. `get_or_train` (in `savl.train.loop`) trains when `find_run` finds nothing; this module never imports the
loop, so the import runs one way: loop -> run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from savl.errors import ModelFileError
from savl.train.config import TrainConfig, config_hash, load_config, run_name
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
        return json.loads(f.read_text()) if f.is_file() else None

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
        if d.is_dir() and r.finished and r.hash == want:
            return r
    return None
