"""A finished (or running) training run on disk, and `get_or_train` (DESIGN §1, §3: cached by config hash)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from savl.errors import ConfigError, ModelFileError
from savl.train.config import TrainConfig, as_config, config_hash, load_config, run_name
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


def get_or_train(config, root: str | Path | None = None, overrides=()) -> Run:
    """Return the finished run of this config (matched by `config_hash`), training it first if there is none.

    config: a TrainConfig, a dict or a YAML path. root: where runs live (default the config's `output`).
    An unfinished run of the same name is resumed from its last checkpoint.
    """
    from savl.train.loop import train

    cfg = as_config(config, overrides)
    if root is not None:
        cfg = cfg.model_copy(update={"output": str(root)})
    found = find_run(cfg)
    if found is not None:
        return found
    run_dir = Path(cfg.output) / run_name(cfg)
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("step_*"))
    if resume and (run_dir / "config.yaml").is_file():
        try:
            if config_hash(load_config(run_dir / "config.yaml")) != config_hash(cfg):
                resume = False
        except ConfigError:
            resume = False
    return train(cfg, resume=resume, fresh=not resume)
