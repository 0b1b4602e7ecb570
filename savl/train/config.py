"""Strict run configurations for `savl train` (size profiles, the paper's §4.1 schedule,
Real-ESRGAN's GAN-stage losses).

Every section forbids unknown keys, so a typo or a key in the wrong section fails with one line naming the key
path and the file. `load_config(path, overrides=["optimiser.lr=1e-4"])` reads YAML, applies `--set` overrides
(values parsed as YAML) and fills the profile's defaults for whatever the file leaves out (`None`).
`config_hash(cfg)` identifies a run by what it computes: key order, output folder, run name and logging
intervals do not change it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from savl.errors import ConfigError

Profile = Literal["smoke", "book", "paper"]
Stage = Literal["representation", "joint", "frozen_l1", "gan", "redsr", "dacesr_ree", "dacesr", "rrdb_sft"]
# redsr, dacesr_ree, dacesr train the baselines (savl.baselines.objectives.STAGES): ReDSR, DACESR's REE, DACESR's SR
# net; rrdb_sft trains Table 4's guided RRDB-SFT (savl.models.rrdb_sft).
STAGES = ("representation", "joint", "frozen_l1", "gan", "redsr", "dacesr_ree", "dacesr", "rrdb_sft")

# What each profile sets when a config leaves it out. The paper's schedule (§4.1): joint 200K,
# frozen-estimator L1 800K, + perceptual + GAN 600K, batch 32, 64x64 LR patches (GT 256), lr 2e-4 / 1e-4 (GAN),
# halved every 200K. `book` fits a chapter's ~3 CPU minutes; `smoke` a test's seconds. The rrdb_sft stage
# (Table 4's guided RRDB-SFT, A.3) takes MANet's stage-2 length, 480K, in the paper profile.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {
        "batch": 32,
        "gt_size": 256,
        "val_size": 256,
        "iterations": {"representation": 200_000, "joint": 200_000, "frozen_l1": 800_000, "gan": 600_000,
                       # ReDSR: 1,000 epochs of 3,450 images in batches of 16 (its §4.1); DACESR: REE 300K, SR 500K
                       "redsr": 215_000, "dacesr_ree": 300_000, "dacesr": 500_000, "rrdb_sft": 480_000},
        "halve_every": 200_000,
        "anneal_steps": 50_000,
        "pool_size": 192,
        "val_count": 4,
    },
    "book": {
        "batch": 4,
        "gt_size": 128,
        "val_size": 128,
        # benchmarks/results/train_step_cpu.md, one thread: 0.28 / 0.72 / 0.42 / 2.2 CPU-s per step (batch 4,
        # LR 32), measured under a load average of 10-11 from other jobs, which inflates them (on one idle core:
        # 0.18-0.23 / 0.62-0.66 / 0.42-0.45 / 1.76-1.88 s), so these iterations cost about
        # 28 / 22 / 13 / 33 CPU-s: each stage stays well within a chapter's ~3 minutes.
        "iterations": {"representation": 100, "joint": 30, "frozen_l1": 30, "gan": 15,
                       "redsr": 30, "dacesr_ree": 100, "dacesr": 30, "rrdb_sft": 30},
        "halve_every": 1_000_000,
        "anneal_steps": 50,
        "pool_size": 0,
        "val_count": 2,
    },
    "smoke": {
        "batch": 2,
        "gt_size": 32,
        "val_size": 32,
        "iterations": {"representation": 4, "joint": 4, "frozen_l1": 4, "gan": 4, "redsr": 4, "dacesr_ree": 4,
                       "dacesr": 4, "rrdb_sft": 4},
        "halve_every": 2,
        "anneal_steps": 4,
        "pool_size": 0,
        "val_count": 1,
    },
}


#: A run name is one folder under `output`: no separators, no '.' or '..', not hidden.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where HR images come from and how LR inputs are made (Real-ESRGAN's pipeline by default)."""

    source: Literal["samples", "hr_folder", "paired"] = "samples"
    names: list[str] | None = None  # sample photos to train on (default: all)
    # hr_folder: data roots (one folder or a list; default $SAVL_DATA, else where `savl data download` puts
    # datasets) in which `folders` / `meta_info` are looked up; without those, the roots are the image folders.
    # paired: the one LR/HR folder.
    root: str | list[str] | None = None
    folders: list[str] | None = None  # hr_folder: image folders under a root (globs allowed), searched recursively
    meta_info: str | None = None  # hr_folder: a file listing the training images (Real-ESRGAN style); wins
    layout: Literal["folders", "realsr", "drealsr"] = "folders"  # paired folder layout
    gt_size: int | None = Field(None, ge=4)  # HR crop; the LR patch is gt_size / scale
    scale: Literal[4] = 4
    # a savl.degrade.protocols name, or a+b: one of them per batch; "manet": MANet's spatially variant kernels
    # (Table 4) with the mode drawn per image from 1-5, noise 15 (savl.train.data.ManetModes)
    protocol: str = "realesrgan"
    pool_size: int | None = Field(None, ge=0)  # 0: no pool; else a multiple of the per-rank batch
    usm: bool = True  # Real-ESRGAN sharpens the GT before degrading it and uses it as the loss target
    max_side: int | None = Field(None, ge=16)  # shrink sample photos first (cheap book runs)
    val_names: list[str] | None = None  # validation photos (default: the first `val_count` of names)
    val_count: int | None = Field(None, ge=1)
    val_size: int | None = Field(None, ge=4)  # centre crop (HR) of each validation photo
    val_protocol: str = "realesrgan"
    # A paired real set to validate on instead of the synthetic one: a folder (lr/+hr/, RealSR or DRealSR
    # layout, as `savl eval --data` reads) or a catalogued name (RealSR, DRealSR) under the data roots.
    val_data: str | None = None


class ModelConfig(_Strict):
    """Sizes come from the profile (savl.models *.profile(name)); these switch the ablations (§4.4).

    `guidance` and `encoder_from` belong to the rrdb_sft stage (Table 4, A.3): what the RRDB-SFT network is
    conditioned on ("none", "code": a frozen SAVL encoder's posterior mean, "kernel": the ground-truth kernel
    map of each batch), and for "code" the SAVL model file (a SAVL or AmortizedEncoder .safetensors) whose
    encoder is used; a relative path is read from the config file's folder. `init_from` a representation run
    (or its config) gives the encoder too. Left out (None) elsewhere, so they leave other configs' hashes alone.
    """

    variant: Literal["savl", "deterministic", "deterministic_club"] = "savl"
    channel_guidance: bool = True
    spatial_guidance: bool = True
    guidance: Literal["none", "code", "kernel"] | None = None
    encoder_from: str | None = None


class OptimiserConfig(_Strict):
    """Adam (0.9, 0.99) as the paper's §4.1; lr None -> 2e-4 (L1 stages) or 1e-4 (GAN stage)."""

    lr: float | None = Field(None, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    lr_d: float | None = Field(None, gt=0)  # discriminator (GAN stage); None -> lr
    lr_club: float = Field(1e-4, gt=0)  # the CLUB variational net (deterministic_club variant)
    # Adam's fused kernel (one pass over all parameters): None uses it where the device has one (CPU, CUDA), as
    # it measured faster on CPU (benchmarks/results/speed_cpu.md); false keeps the for-each implementation.
    fused: bool | None = None


class ScheduleConfig(_Strict):
    """Step-halving learning rate (the paper halves every 200K, §4.1): lr * 0.5^k after the k-th milestone
    (or every `halve_every`)."""

    iterations: int | None = Field(None, ge=1)
    halve_every: int | None = Field(None, ge=1)
    milestones: list[int] | None = None
    gamma: float = Field(0.5, gt=0, le=1)


class LossConfig(_Strict):
    """SAVL objective (Eq. 12-14, 29-30) and the SR losses (L1, then VGG19 perceptual + GAN).

    `reduction` says how Eq. 13 and Eq. 7 become one number ("literal": summed over pixels and channels per
    image as the paper writes them; "pixel": per-element mean L1 and per-pixel KL; "element": both per-element
    means); `beta_final` is in that reduction's units (`savl.losses.convert_beta` translates). `lam` is the
    CLUB weight of the deterministic_club variant only (reduced like the KL); the savl variant uses beta_t.
    The SR losses are per-element means whatever `reduction` says. The old key `kl_reduction` is accepted.
    """

    alpha: float = Field(1.0, ge=0)
    lam: float | None = Field(None, ge=0)
    beta_final: float = Field(5e-4, ge=0)
    anneal_steps: int | None = Field(None, ge=0)
    rec: Literal["l1", "l2", "laplace"] = "l1"  # laplace: Laplace NLL with a decoder-predicted scale
    reduction: Literal["literal", "pixel", "element"] = "pixel"
    savl_weight: float = Field(1.0, ge=0)  # joint stage: weight of the SAVL loss beside the SR loss
    sr: Literal["l1", "l2"] = "l1"
    sr_weight: float = Field(1.0, ge=0)
    perceptual: float = Field(1.0, ge=0)  # GAN stage
    perceptual_layers: dict[str, float] | None = None  # None -> conv1_2 .1, conv2_2 .1, conv3_4..conv5_4 1
    perceptual_trunk: Literal["imagenet", "random"] = "imagenet"  # random: tests only, not a perceptual loss
    gan: float = Field(0.1, ge=0)
    gan_kind: Literal["vanilla", "hinge"] = "vanilla"

    @model_validator(mode="before")
    @classmethod
    def _old_kl_reduction(cls, data: Any) -> Any:
        # `kl_reduction: pixel | element` named the same reductions before "literal" existed; its "sum" (a
        # per-image KL beside a per-element L1) is gone.
        if isinstance(data, dict) and "kl_reduction" in data:
            data = dict(data)
            old = data.pop("kl_reduction")
            if old not in ("pixel", "element"):
                raise ValueError(f"kl_reduction {old!r} is no longer offered; use reduction: literal, pixel or element")
            if data.setdefault("reduction", old) != old:
                raise ValueError(f"kl_reduction {old!r} contradicts reduction {data['reduction']!r}")
        return data


class DebugConfig(_Strict):
    """Hooks for tests: make step `nan_at_step` produce a NaN in loss term `nan_term`."""

    nan_at_step: int | None = None
    nan_term: str = "loss"


class TrainConfig(_Strict):
    """One training run (one stage)."""

    name: str | None = None  # run folder name under `output` (default: <stage>-<profile>-<hash8>); one component
    profile: Profile = "book"
    stage: Stage = "joint"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimiser: OptimiserConfig = OptimiserConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    losses: LossConfig = LossConfig()
    batch: int | None = Field(None, ge=1)  # global batch (split over DDP ranks)
    precision: Literal["fp32", "bf16"] = "fp32"
    # torch.compile each network. On a CPU at book size it pays nothing: 0.94-1.05x the eager step, after about
    # a minute (51-64 s) of compilation per stage; it is for long runs on a GPU.
    compile: bool = False
    deterministic: bool = False
    ema: float | None = Field(None, ge=0, lt=1)  # None -> 0.999 in the GAN stage, off otherwise
    log_every: int = Field(10, ge=1)
    val_every: int | None = Field(None, ge=1)  # None -> only at the end
    checkpoint_every: int | None = Field(None, ge=1)  # None -> only at the end
    keep_last: int = Field(2, ge=1)
    progress: Literal["auto", "bar", "lines", "none"] = "auto"
    seed: int = Field(0, ge=0, lt=2**63)  # torch and numpy seeds: non-negative, 64-bit
    device: str = "cpu"  # cpu, cuda, cuda:1, auto
    threads: int | None = Field(None, ge=1)  # torch.set_num_threads on CPU
    workers: int = Field(0, ge=0)  # DataLoader workers
    # On the CPU, read and degrade the next batch on a background thread during this step (the same batches).
    # None = only when training runs on one thread and the machine has another core for the batch: with as many
    # threads as cores the two compete (measured on 2 idle cores, 2 threads: 123 ms/step without, 195 ms with;
    # one thread: 150 ms with, 188 ms without; benchmarks/results/train_step_cpu.md).
    prefetch: bool | None = None
    # Trained weights held in channels-last order, so oneDNN's convolutions skip reordering every input and
    # output (benchmarks/results/train_step_cpu.md): None = on the CPU in one process (DDP needs contiguous
    # parameters). Like `threads` and fused Adam it changes only the order of float operations, so it is not
    # part of the run's identity.
    channels_last: bool | None = None
    output: str = "runs"
    # a previous stage: a run folder, a config file (trained if missing), or a model file (.safetensors, e.g. a
    # zoo model's weights) whose SR net this stage starts from
    init_from: str | None = None
    debug: DebugConfig = DebugConfig()

    @field_validator("name")
    @classmethod
    def _one_folder(cls, name: str | None) -> str | None:
        # The run folder is deleted and rewritten as a whole: its name must not reach outside `output`
        # ('.', '..', 'a/b', '/abs') nor hide ('.x').
        if name is not None and not RUN_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a run folder name (letters, digits, '.', '_', '-'; starting with a letter or "
                "digit; at most 128 characters)"
            )
        return name

    @model_validator(mode="after")
    def _fill_profile(self) -> TrainConfig:
        d = PROFILE_DEFAULTS[self.profile]
        fill = [
            (self, "batch", d["batch"]),
            (self.data, "gt_size", d["gt_size"]),
            (self.data, "val_size", d["val_size"]),
            (self.data, "pool_size", d["pool_size"]),
            (self.data, "val_count", d["val_count"]),
            (self.schedule, "iterations", d["iterations"][self.stage]),
            (self.schedule, "halve_every", d["halve_every"]),
            (self.losses, "anneal_steps", d["anneal_steps"]),
            (self.optimiser, "lr", 1e-4 if self.stage == "gan" else 2e-4),
            (self, "ema", 0.999 if self.stage == "gan" else 0.0),
        ]
        for obj, key, value in fill:
            if getattr(obj, key) is None:
                object.__setattr__(obj, key, value)  # no re-validation loop
        if self.data.gt_size % self.data.scale:
            raise ValueError(f"data.gt_size {self.data.gt_size} must be a multiple of data.scale {self.data.scale}")
        d = self.data
        if d.source == "paired" and not isinstance(d.root, str):
            raise ValueError("data.root (one folder) is required for data.source=paired")
        if d.source == "hr_folder" and not (d.root or d.folders or d.meta_info):
            raise ValueError("data.source=hr_folder needs data.root, data.folders or data.meta_info")
        if d.source != "hr_folder" and (d.folders or d.meta_info):
            raise ValueError(f"data.folders and data.meta_info apply to data.source=hr_folder, not {d.source}")
        return self

    @model_validator(mode="after")
    def _check_guidance(self) -> TrainConfig:
        m, d = self.model, self.data
        if self.stage != "rrdb_sft":
            if m.guidance is not None or m.encoder_from is not None:
                raise ValueError(f"model.guidance and model.encoder_from belong to stage rrdb_sft, not {self.stage}")
            return self
        if m.guidance is None:
            object.__setattr__(m, "guidance", "none")
        if m.encoder_from is not None and m.guidance != "code":
            raise ValueError(f"model.encoder_from is the encoder of guidance code; this config's is {m.guidance}")
        if m.guidance == "code" and m.encoder_from is None and not self.init_from:
            raise ValueError("model.guidance code needs a trained SAVL encoder: set model.encoder_from or init_from")
        if m.guidance == "kernel":
            # the kernel map exists only for MANet's protocol, and the pool would separate it from its LR image
            if d.protocol != "manet" and not (d.protocol.startswith("manet-mode") and "+" not in d.protocol):
                raise ValueError(f"model.guidance kernel needs data.protocol manet (or manet-modeN), got {d.protocol}")
            if d.source != "paired" and not d.val_protocol.startswith("manet-mode"):
                raise ValueError(f"model.guidance kernel needs data.val_protocol manet-modeN, got {d.val_protocol}")
            if d.pool_size:
                raise ValueError("model.guidance kernel cannot use data.pool_size (the pool would lose the kernel map)")
            if getattr(d, "val_data", None):
                raise ValueError("model.guidance kernel validates on a MANet-protocol set, not data.val_data")
        return self

    @model_validator(mode="after")
    def _check_lam(self) -> TrainConfig:
        # lam is the CLUB weight of the deterministic_club variant and nothing else (the savl variant's KL
        # weight is beta_t alone), so a lam elsewhere, or a CLUB weight of 0, is a mistake in the file.
        club, lam = self.model.variant == "deterministic_club", self.losses.lam
        if club and lam == 0:
            raise ValueError("losses.lam must be > 0 for model.variant deterministic_club (it is the CLUB weight)")
        if not club and lam not in (None, 0):
            raise ValueError(f"losses.lam is the CLUB weight; model.variant {self.model.variant} needs lam = 0")
        return self

    @property
    def lr_patch(self) -> int:
        return self.data.gt_size // self.data.scale

    def milestones(self) -> list[int]:
        """Steps after which the lr is multiplied by `gamma`."""
        if self.schedule.milestones is not None:
            return sorted(self.schedule.milestones)
        every = self.schedule.halve_every
        return list(range(every, self.schedule.iterations, every))

    def lr_at(self, step: int, base: float | None = None) -> float:
        """The lr used for update number `step + 1` (steps counted from 0): a pure function of the step."""
        base = self.optimiser.lr if base is None else base
        k = sum(1 for m in self.milestones() if step >= m)
        return base * self.schedule.gamma**k

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _validation_message(e: ValidationError, where: str) -> str:
    err = e.errors()[0]
    path = _loc(err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key {path!r}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {path}: {msg}" if err["loc"] else f"{where}: {msg}"


def validate(data: dict, where: str = "<config>") -> TrainConfig:
    """A TrainConfig from a plain dict; one-line ConfigError naming the key path and `where` otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a config must be a mapping, got {type(data).__name__}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_validation_message(e, where)) from None


def apply_override(data: dict, item: str, where: str = "--set") -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (`1e-4`, `true`, `[1, 2]`)."""
    if "=" not in item:
        raise ConfigError(f"{where}: override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"{where}: override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"{where}: override {item!r}: the value is not valid YAML") from None
    node = data
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        if not isinstance(node[p], dict):
            raise ConfigError(f"{where}: override {item!r}: {p!r} is not a section")
        node = node[p]
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML config") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (or start from defaults when `path` is None), apply overrides, validate.

    A relative `init_from` is resolved against the config file's folder, so configs can name their previous
    stage as `init_from: stage1.yaml`; a model file (`init_from_model_file`) always is, like
    `model.encoder_from`, so a missing one is reported where the config says it lies.
    """
    data = read_yaml(path) if path is not None else {}
    where = str(path) if path is not None else "<config>"
    for item in overrides:
        apply_override(data, item, where=f"{where} (--set)")
    cfg = validate(data, where)
    if path is not None and cfg.init_from and not Path(cfg.init_from).is_absolute():
        candidate = Path(path).parent / cfg.init_from
        if candidate.exists() or init_from_model_file(cfg) is not None:
            cfg.init_from = str(candidate.resolve())
    if path is not None and cfg.model.encoder_from and not Path(cfg.model.encoder_from).is_absolute():
        cfg.model.encoder_from = str((Path(path).parent / cfg.model.encoder_from).resolve())
    return cfg


def as_config(config: TrainConfig | dict | str | Path, overrides=()) -> TrainConfig:
    """Accept a TrainConfig, a dict, or a YAML path (what `train` and `get_or_train` take)."""
    if isinstance(config, TrainConfig):
        if overrides:
            data = config.to_dict()
            for item in overrides:
                apply_override(data, item)
            return validate(data)
        return config
    if isinstance(config, dict):
        data = json.loads(json.dumps(config))
        for item in overrides:
            apply_override(data, item)
        return validate(data)
    return load_config(config, overrides)


# Keys that do not change what a run computes (where it goes, how often it talks; test hooks, which only ever
# stop a run, so that resuming without them continues the same run).
_HASH_EXCLUDED = {
    "name",
    "output",
    "log_every",
    "progress",
    "workers",
    "prefetch",
    "channels_last",
    "threads",
    "keep_last",
    "checkpoint_every",
    "debug",
}


def init_config(cfg: TrainConfig) -> TrainConfig | None:
    """The previous stage's config when `init_from` names a YAML file; it inherits our profile, device,
    precision, seed, thread count and output root (so `--set profile=paper --set device=cuda` or `--set seed=2`
    moves the whole chain)."""
    if not cfg.init_from:
        return None
    p = Path(cfg.init_from)
    if p.suffix in (".yaml", ".yml"):
        inherited = [
            f"profile={cfg.profile}",
            f"output={cfg.output}",
            f"device={cfg.device}",
            f"precision={cfg.precision}",
            f"seed={cfg.seed}",
        ]
        if cfg.threads is not None:
            inherited.append(f"threads={cfg.threads}")
        return load_config(p, inherited)
    return None


#: Suffixes of an `init_from` that names a model file (savl.models.io format) rather than a run or a config.
MODEL_FILE_SUFFIXES = (".safetensors",)


def init_from_model_file(cfg: TrainConfig) -> Path | None:
    """The model file `init_from` names (a shipped model's weights, e.g. a zoo model's
    `models/<name>/<name>.safetensors`), or None when it names a run folder or a config file. The stage's SR net
    starts from its weights (`savl.models.io.load_weights`, which checks the architecture's config)."""
    if not cfg.init_from:
        return None
    p = Path(cfg.init_from)
    return p if p.suffix in MODEL_FILE_SUFFIXES else None


def _init_identity(cfg: TrainConfig) -> str | None:
    """A previous stage given as a config file is identified by its hash, so editing it changes ours; a model
    file by its content (another file at the same path is another run)."""
    if not cfg.init_from:
        return None
    prev = init_config(cfg)
    if prev is not None:
        return "config:" + config_hash(prev)
    model_file = init_from_model_file(cfg)
    if model_file is not None and model_file.is_file():
        return "model:sha256:" + hashlib.sha256(model_file.read_bytes()).hexdigest()
    p = Path(cfg.init_from)
    return "run:" + str(p.resolve() if p.exists() else p)


def _model_identity(model: dict) -> dict:
    """The model section as hashed: the rrdb_sft keys only where set (other configs keep their old hashes), and
    the encoder file by its content (a retrained encoder is another run)."""
    out = {k: v for k, v in model.items() if not (k in ("guidance", "encoder_from") and v is None)}
    if out.get("encoder_from"):
        p = Path(out["encoder_from"])
        if p.is_file():
            out["encoder_from"] = "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def config_hash(cfg: TrainConfig) -> str:
    """sha256 of the canonical (sorted-key) JSON of what the run computes; stable over key order."""
    data = {k: v for k, v in cfg.to_dict().items() if k not in _HASH_EXCLUDED}
    # Fused or for-each Adam make the same update in another order of float operations (like `threads`): runs
    # that differ only there are one run, and configs written before the key existed keep their hash.
    data["optimiser"].pop("fused", None)
    data["init_from"] = _init_identity(cfg)
    data["model"] = _model_identity(data["model"])
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run_name(cfg: TrainConfig) -> str:
    return cfg.name or f"{cfg.stage}-{cfg.profile}-{config_hash(cfg)[:8]}"


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
