"""The model zoo: small trained models shipped in the repository, each with a card that says how it was made.

Train or load. A chapter that draws a conclusion from a trained model loads it from the zoo instead of
training it within its few minutes; `make models` (``savl models train --tier cpu``) retrains the zoo's cpu tier,
resumably (`make models-long`: the long tier). Weights are stored in float16 (`ship_weights`), and a card's
held-out numbers are those of the stored weights.

Layout (``models/`` at the repository root, or ``$SAVL_MODELS``)::

    models/zoo.yaml                     the entries: name -> config, overrides, which artefact, kind, tier
                                        (cpu, long or gpu: TIERS)
    models/<name>/<name>.safetensors    weights (savl.models.io format, float16)
    models/<name>/<name>.json           architecture + config
    models/<name>/metrics.jsonl         the training log
    models/<name>/card.json             command, config + hash, commit, hardware, wall time, data split,
                                        held-out metrics, sha256 of every file above
    models/<name>/card.md               the same card for people (written from card.json)

`load(name)` verifies every file of the model against its card (a mismatch is a one-line ModelFileError),
and trains the model when its files are missing, saying so, instead of failing. Runs that `build` trains go
to ``runs/zoo/`` (resumable: an interrupted `make models` continues from the last checkpoint).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from savl.book import models_dir, runs_dir
from savl.errors import ConfigError, DataError, ModelFileError
from savl.provenance import atomic_write_text, git_commit, machine_info

REPO_ROOT = Path(__file__).resolve().parent.parent
ZOO_FILE = "zoo.yaml"
KINDS = ("sr", "representation")
# cpu: the zoo `make models` retrains (about 90 minutes on 2 cores); long: longer CPU runs kept as a record of
# what more steps buy (`make models-long`); gpu: models trained on a GPU.
TIERS = ("cpu", "long", "gpu")
# Held-out SR evaluation: each held-out photo degraded this many times (independent draws), fixed seed.
HELD_OUT_DRAWS = 3
HELD_OUT_SEED = 2026
# The frozen held-out SR sets the shipped cards were scored on (see held_out_sr_set).
SHIPPED_HELD_OUT = REPO_ROOT / "data" / "heldout"


def zoo_root(root: str | os.PathLike | None = None) -> Path:
    """The zoo folder: `root`, else `savl.book.models_dir()` ($SAVL_MODELS, or models/ at the repository root;
    the same rule as the chapters)."""
    if root is not None:
        return Path(root)
    return models_dir()


def runs_root(runs: str | os.PathLike | None = None) -> Path:
    """Where `build` trains: `runs`, else `savl.book.runs_dir()` / "zoo" ($SAVL_RUNS or runs/ at the root)."""
    if runs is not None:
        return Path(runs)
    return runs_dir() / "zoo"


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo: the run config that trains it and what of the run is shipped.

    config: a YAML path relative to the repository root (or absolute); overrides: `--set` items applied on top.
    artefact: which final model of the run is shipped ("srnet", "srnet_ema" or "savl").
    kind: "sr" (scored by PSNR/SSIM against bicubic) or "representation" (scored by its ELBO terms).
    """

    name: str
    config: str
    artefact: str
    kind: str
    tier: str = "cpu"
    description: str = ""
    overrides: tuple[str, ...] = ()
    default_sr: bool = False

    def config_path(self, base: Path = REPO_ROOT) -> Path:
        p = Path(self.config)
        return p if p.is_absolute() else base / p

    def train_config(self, base: Path = REPO_ROOT):
        from savl.train.config import load_config

        return load_config(self.config_path(base), list(self.overrides))


def _entry(name: str, raw, where: Path) -> ZooEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: entry {name!r} must be a mapping")
    known = {f.name for f in dataclasses.fields(ZooEntry)} - {"name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: entry {name!r}: unknown key {unknown[0]!r}")
    for key in ("config", "artefact", "kind"):
        if key not in raw:
            raise ConfigError(f"{where}: entry {name!r}: missing key {key!r}")
    if raw["kind"] not in KINDS:
        raise ConfigError(f"{where}: entry {name!r}: kind must be one of {', '.join(KINDS)}")
    if raw.get("tier", "cpu") not in TIERS:
        raise ConfigError(f"{where}: entry {name!r}: tier must be one of {', '.join(TIERS)}")
    if raw["artefact"] not in ("srnet", "srnet_ema", "savl"):
        raise ConfigError(f"{where}: entry {name!r}: artefact must be srnet, srnet_ema or savl")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}: entry name {name!r}: use letters, digits, '-' and '_' only")
    values = dict(raw)
    values["overrides"] = tuple(values.get("overrides") or ())
    return ZooEntry(name=name, **values)


def entries(root: str | os.PathLike | None = None) -> dict[str, ZooEntry]:
    """The zoo's entries, in file order, from `<root>/zoo.yaml`."""
    path = zoo_root(root) / ZOO_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no zoo list (the model zoo ships in the repository's models/ folder)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: expected a mapping 'models: {{name: {{config: ..., ...}}}}'")
    return {name: _entry(name, raw, path) for name, raw in models.items()}


def entry(name: str, root: str | os.PathLike | None = None) -> ZooEntry:
    known = entries(root)
    if name not in known:
        raise ConfigError(f"no model {name!r} in the zoo (known: {', '.join(known) or 'none'})")
    return known[name]


def model_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return zoo_root(root) / name


def weights_path(name: str, root: str | os.PathLike | None = None) -> Path:
    return model_dir(name, root) / f"{name}.safetensors"


def sha256(path: Path) -> str:
    """Hex sha256 of a file (the hash a card lists for it)."""
    from savl.data.download import sha256_file

    return sha256_file(path)


def read_card(name: str, root: str | os.PathLike | None = None) -> dict | None:
    """The model's card.json, or None when the model has none (not trained yet)."""
    path = model_dir(name, root) / "card.json"
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: unreadable model card") from None
    if not isinstance(card, dict) or not isinstance(card.get("files"), dict):
        raise ModelFileError(f"{path}: not a model card (no 'files' with their sha256)")
    return card


def is_present(name: str, root: str | os.PathLike | None = None) -> bool:
    """True when the card and every file it lists exist (their hashes are checked by `verify`)."""
    card = read_card(name, root)
    return card is not None and all((model_dir(name, root) / f).is_file() for f in card["files"])


def verify(name: str, root: str | os.PathLike | None = None) -> dict:
    """Check every file the card lists against its sha256; return the card. One-line ModelFileError otherwise."""
    card = read_card(name, root)
    folder = model_dir(name, root)
    if card is None:
        raise ModelFileError(f"{folder / 'card.json'}: missing; train the model with `savl models train {name}`")
    for rel, want in card["files"].items():
        path = folder / rel
        if not path.is_file():
            raise ModelFileError(f"{path}: missing (listed in its card); retrain with `savl models train {name}`")
        got = sha256(path)
        if got != want:
            raise ModelFileError(
                f"{path}: sha256 {got[:12]}... does not match its card ({want[:12]}...); the file is corrupt or "
                f"was changed: restore it (git checkout) or retrain with `savl models train {name}`"
            )
    return card


def load(name: str, device: str = "cpu", root: str | os.PathLike | None = None, train_if_missing: bool = True):
    """The zoo model `name` (eval mode), after verifying its files against its card.

    When the model's files are missing it is trained first (with a message on stderr), unless
    `train_if_missing` is False (then ModelFileError)."""
    from savl.models.io import load_model

    if not is_present(name, root):
        if not train_if_missing:
            raise ModelFileError(f"{model_dir(name, root)}: model {name!r} is not in the zoo; `savl models train`")
        print(
            f"savl: zoo model {name!r} is missing from {model_dir(name, root)}; training it now "
            f"(the same as `savl models train {name}`)",
            file=sys.stderr,
        )
        build(name, root=root)
    verify(name, root)
    return load_model(weights_path(name, root), map_location=device).eval()


def default_sr_model(root: str | os.PathLike | None = None) -> str:
    """The name of the zoo model `savl sr` uses when no --model is given (the entry marked default_sr)."""
    for e in entries(root).values():
        if e.default_sr:
            return e.name
    raise ConfigError(f"{zoo_root(root) / ZOO_FILE}: no entry is marked default_sr")


# ------------------------------------------------------------------------------------------ held-out sets
# What a zoo SR model is scored on: the Real-ESRGAN pipeline (what it trained on, drawn afresh on photos it
# never saw) and MANet's spatially variant protocol (Table 4: modes 1-5, noise 15), one draw per mode.
SR_PROTOCOLS = {"realesrgan": ("realesrgan",), "manet": tuple(f"manet-mode{m}" for m in range(1, 6))}
# Largest HR side scored per protocol (a centre crop; None = the whole photo). MANet's per-pixel kernels
# cost 441 taps a pixel, so its sets use 256 x 256 centre crops (about 6 x 6 of its 40-pixel blocks).
HELD_OUT_CROP: dict[str, int | None] = {"realesrgan": None, "manet": 256}


def held_out_sr_set(protocol: str = "realesrgan", cache: str | os.PathLike | None = None, draws: int | None = None,
                    crop: int | None = None):
    """The frozen held-out SR set of one degradation protocol: each held-out photo (savl.data.split.HELD_OUT),
    centre-cropped to at most `crop` pixels a side (None: whole) and to a multiple of 4, degraded `draws` times
    (default HELD_OUT_DRAWS) by `protocol`, seed HELD_OUT_SEED. Built once and cached (every file hashed) under
    `cache` (default runs/heldout/).

    With no `cache`, a copy shipped in the repository (SHIPPED_HELD_OUT, data/heldout/) is read first: the
    cards were scored on those sets, and a set drawn afresh can differ from them (the Real-ESRGAN sampler's
    draws changed when it was batched), so shipping the frozen files keeps every card's numbers reproducible."""
    from savl.data import FrozenValidationSet, sample_images
    from savl.data.split import HELD_OUT, SPLIT_NAME

    draws = HELD_OUT_DRAWS if draws is None else draws
    images = []
    for name, img in sample_images(HELD_OUT):
        H, W = img.shape[-2:]
        h, w = (min(H, crop or H) // 4 * 4, min(W, crop or W) // 4 * 4)
        top, left = (H - h) // 2, (W - w) // 2
        images += [(f"{name}-{k}", img[:3, top : top + h, left : left + w]) for k in range(draws)]
    folder = f"{SPLIT_NAME}-{protocol}-{draws}x{crop or 'full'}"
    if cache is None and (SHIPPED_HELD_OUT / folder / "manifest.json").is_file():
        shipped = FrozenValidationSet.load(SHIPPED_HELD_OUT / folder)
        if shipped.meta["seed"] != HELD_OUT_SEED:
            raise DataError(f"{SHIPPED_HELD_OUT / folder}: drawn with seed {shipped.meta['seed']}, "
                            f"not {HELD_OUT_SEED}")
        return shipped
    base = Path(cache) if cache is not None else runs_root().parent / "heldout"
    return FrozenValidationSet.load_or_build(images, protocol, HELD_OUT_SEED, base / folder)


def held_out_sr_metrics(model, protocol: str = "realesrgan", device: str = "cpu", cache=None) -> dict:
    """PSNR / SSIM (Y, 4-px border, 8-bit; BasicSR's protocol) of `model` and of bicubic on the held-out sets of
    `protocol` (a key of SR_PROTOCOLS), averaged over every image of its sets."""
    from savl.data.split import SPLIT_NAME
    from savl.evaluate import BicubicUpsampler, EvalProtocol, evaluate

    if protocol not in SR_PROTOCOLS:
        raise ConfigError(f"unknown held-out protocol {protocol!r} (use {', '.join(SR_PROTOCOLS)})")
    ours, bicubic, hashes = [], [], []
    for name in SR_PROTOCOLS[protocol]:
        draws = HELD_OUT_DRAWS if protocol == "realesrgan" else 1
        data = held_out_sr_set(name, cache, draws=draws, crop=HELD_OUT_CROP[protocol])
        proto = EvalProtocol(tile=None, lpips_net=None, dataset=f"{SPLIT_NAME} held-out, {protocol}",
                             dataset_version=data.hash[:16])
        tag = "" if len(SR_PROTOCOLS[protocol]) == 1 else f"{name}:"
        ours += [dict(r, name=tag + r["name"]) for r in evaluate(model, data, proto, device=device).per_image]
        bicubic += [dict(r, name=tag + r["name"]) for r in evaluate(BicubicUpsampler(4), data, proto).per_image]
        hashes.append(data.hash[:16])
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    return {
        "protocol": proto.describe(with_dataset=False),
        "sets": list(SR_PROTOCOLS[protocol]),
        "hr_crop": HELD_OUT_CROP[protocol],
        "set_hashes": hashes,
        "images": len(ours),
        "psnr": mean(ours, "psnr"),
        "ssim": mean(ours, "ssim"),
        "bicubic_psnr": mean(bicubic, "psnr"),
        "bicubic_ssim": mean(bicubic, "ssim"),
        "psnr_gain_over_bicubic": mean(ours, "psnr") - mean(bicubic, "psnr"),
        "per_image_psnr": {r["name"]: r["psnr"] for r in ours},
        "per_image_bicubic_psnr": {r["name"]: r["psnr"] for r in bicubic},
    }


def held_out_representation_metrics(model, device: str = "cpu", crops: int = 24, size: int = 128) -> dict:
    """The ELBO terms of a SAVL model on held-out crops degraded by the Real-ESRGAN pipeline (fixed seed):
    reconstruction L1 of the re-degraded image, KL in nats per LR pixel, and the same L1 with the code
    replaced by zeros (the prior's mean), which shows how much the code carries."""
    import torch

    from savl.data import sample_images
    from savl.data.split import HELD_OUT
    from savl.degrade.protocols import get_protocol

    g = torch.Generator().manual_seed(HELD_OUT_SEED)
    degrade = get_protocol("realesrgan")
    photos = [img[:3] for _, img in sample_images(HELD_OUT)]
    model = model.to(device).eval()
    rec, rec_zero, kl = [], [], []
    with torch.no_grad():
        for i in range(crops):
            img = photos[i % len(photos)]
            top = int(torch.randint(0, img.shape[-2] - size + 1, (1,), generator=g))
            left = int(torch.randint(0, img.shape[-1] - size + 1, (1,), generator=g))
            hr = img[None, :, top : top + size, left : left + size]
            lr, _ = degrade(hr, g)
            lr = lr.clamp(0, 1).to(device)
            post = model.encoder(lr)
            code = post.mean
            y_hat = model.decoder(hr.to(device), code)
            y_zero = model.decoder(hr.to(device), torch.zeros_like(code))
            rec.append(float((y_hat - lr).abs().mean()))
            rec_zero.append(float((y_zero - lr).abs().mean()))
            if post.logvar is not None:
                kl.append(float((0.5 * (post.mean**2 + post.logvar.exp() - 1 - post.logvar)).sum(1).mean()))
    out = {"crops": crops, "crop_size": size, "rec_l1": sum(rec) / crops, "rec_l1_zero_code": sum(rec_zero) / crops}
    if kl:
        out["kl_nats_per_pixel"] = sum(kl) / len(kl)
    return out


#: Table 1's noise levels (std on [0, 1]) for the held-out probes.
PROBE_LEVELS = (0.0, 10 / 255, 25 / 255, 50 / 255)


def held_out_probe_metrics(encoder, seed: int = 0, crops: int = 16, mine_steps: int = 100,
                           spatial_encoder=None) -> dict:
    """Table 1 and Table 5 on the held-out photos (never trained on), for any encoder of savl.analysis.
    `spatial_encoder` (default: `encoder`) is the one Table 5 clusters, for a global code that needs a code
    per pixel (savl.baselines.representations.SlidingCode).

    Table 1: 64-pixel HR crops (`crops` per photo), bicubic x1/4, Gaussian noise at PROBE_LEVELS; the pooled
    posterior mean's 5-fold linear-probe accuracy for the photo (content, chance 1/4) and the noise level
    (degradation, chance 1/4), and HSIC. Table 5: per-pixel codes of the 256-pixel centre crops with random
    patchwise degradations (type / blur / noise), k-means accuracy after Hungarian matching, and what a
    constant code scores (the majority label's share).
    """
    from savl.analysis import decoupling, spatial_clustering
    from savl.data import sample_images
    from savl.data.split import HELD_OUT

    photos = [(n, img[:3]) for n, img in sample_images(HELD_OUT)]
    t1 = decoupling(encoder, photos, PROBE_LEVELS, seed=seed, crop=64, crops_per_image=crops, mine_steps=mine_steps)
    out = {
        "eval_seed": seed,
        "t1_content_probe": t1["content"]["probe"],
        "t1_noise_probe": t1["degradation"]["probe"],
        "t1_content_hsic": t1["content"]["hsic"],
        "t1_noise_hsic": t1["degradation"]["hsic"],
        "t1_chance": t1["content"]["chance"],
    }
    for setting in ("type", "blur", "noise"):
        res = spatial_clustering(spatial_encoder or encoder, photos, setting, seed=seed, crop=256)
        out[f"t5_{setting}"] = res["accuracy"]
        out[f"t5_{setting}_chance"] = res["chance"]
    return out


# ------------------------------------------------------------------------------------------- build / card
def _wall_time(run) -> float | None:
    """Wall seconds of training, from the log (s_per_step over each logging interval)."""
    rows = [r for r in run.metrics if "s_per_step" in r and "step" in r]
    if not rows:
        return None
    total, last = 0.0, 0
    for r in rows:
        total += r["s_per_step"] * (r["step"] - last)
        last = r["step"]
    return total


def _hardware(env: dict) -> dict:
    """Where the run trained, from its env.json (the packaging machine's CPU model where env.json has none)."""
    from savl.provenance import cpu_model

    keys = ("device", "device_name", "threads", "world_size", "torch", "python", "platform")
    out = {k: env[k] for k in keys if k in env}
    out.setdefault("cpu_model", env.get("cpu_model") or cpu_model())
    return out


# Weights are stored in half precision: the zoo's models are small, so this halves the repository's share of
# them, and a card's held-out numbers are those of the stored (rounded) weights, which load back into float32.
SHIPPED_DTYPE = "float16"
_FP16_MAX = 65504.0


def ship_weights(src: Path, dst: Path) -> str:
    """Write the weights of `src` to `dst` (atomically) with every float32 tensor stored as float16; a tensor
    whose values float16 cannot hold (magnitude above 65,504) stays float32. Returns the dtype written
    ("float16", or "mixed" when a tensor had to stay float32)."""
    import torch
    from safetensors.torch import save_file

    from savl.models.io import read_state

    state, kept = {}, 0
    for key, t in read_state(src).items():
        if t.dtype == torch.float32 and t.numel() and float(t.abs().max()) <= _FP16_MAX:
            t = t.to(torch.float16)
        elif t.dtype == torch.float32:
            kept += t.numel() > 0
        state[key] = t.contiguous()
    tmp = dst.with_name(f".{dst.name}.tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, dst)
    return "mixed" if kept else SHIPPED_DTYPE


def _score(e: ZooEntry, model, device: str = "cpu") -> dict:
    """The card's held-out metrics of a zoo model (see `package`)."""
    if e.kind == "sr" and getattr(model, "architecture", "") == "RRDBSFTNet":
        # Table 4's guided network is scored on the MANet sets only, each image with its own kernel map.
        from savl.table4 import table4_metrics

        sets = {n: held_out_sr_set(n, draws=1, crop=HELD_OUT_CROP["manet"]) for n in SR_PROTOCOLS["manet"]}
        return {"manet": table4_metrics(model, sets, device)}
    if e.kind == "sr":
        from savl.baselines.representations import PROBE_STRIDE, PROBE_WINDOW, probe_encoders

        held_out = {p: held_out_sr_metrics(model, p, device) for p in SR_PROTOCOLS}
        # A baseline's own representation (ReDSR's code, DACESR's REE embedding) goes through the same
        # Table 1 / Table 5 probes as the representation models; Table 5 reads it on sliding windows.
        encoders = probe_encoders(model)
        if encoders is not None:
            pooled, sliding = encoders
            held_out["probes"] = dict(
                held_out_probe_metrics(pooled.to(device), spatial_encoder=sliding.to(device)),
                representation=f"{model.architecture}: {'code' if model.architecture == 'ReDSRNet' else 'REE'}",
                t5_window=PROBE_WINDOW, t5_stride=PROBE_STRIDE,
            )
        return held_out
    return {
        "realesrgan_crops": held_out_representation_metrics(model, device),
        "probes": held_out_probe_metrics(model),
    }


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def package(e: ZooEntry, run, root: str | os.PathLike | None = None, command: str | None = None,
            device: str = "cpu", note: str = "") -> dict:
    """Copy the run's shipped artefact into the zoo (weights in half precision, `ship_weights`), score the
    stored weights on the held-out split, write its card."""
    from savl.data.split import describe as split_record
    from savl.models.io import load_model
    from savl.train.config import config_hash

    folder = model_dir(e.name, root)
    src = run.final / f"{e.artefact}.safetensors"
    if not src.is_file():
        raise ModelFileError(f"{src}: the run has no final {e.artefact} model to ship as {e.name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    copies = {
        f"{e.name}.json": src.with_suffix(".json"),
        "metrics.jsonl": run.path / "metrics.jsonl",
    }
    for rel, path in copies.items():
        tmp = folder / f".{rel}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, folder / rel)
    dtype = ship_weights(src, folder / f"{e.name}.safetensors")
    files = [f"{e.name}.safetensors", *copies]  # what the card lists, with their sha256
    model = load_model(folder / f"{e.name}.safetensors", map_location=device).eval()
    held_out = _score(e, model, device)
    cfg = run.config
    env = run.env if (run.path / "env.json").is_file() else {}
    card = {
        "name": e.name,
        "description": e.description,
        "kind": e.kind,
        "tier": e.tier,
        "architecture": json.loads((folder / f"{e.name}.json").read_text()).get("architecture"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "command": command or f"savl models train {e.name}",
        "zoo_config": e.config,
        "overrides": list(e.overrides),
        "config_hash": config_hash(cfg),
        "config": cfg.to_dict(),
        "iterations": cfg.schedule.iterations,
        "commit": env.get("commit") or git_commit(),
        "commit_dirty": env.get("dirty"),
        "training_started": env.get("started"),
        "hardware": _hardware(env) if env else machine_info(),
        "training_wall_time_s": _wall_time(run),
        "data_split": split_record(),
        "weights_dtype": dtype,
        "held_out_metrics": held_out,
        "packaged": _utc_now(),
        "packaged_at_commit": git_commit(),
        "note": note,
        "files": {rel: sha256(folder / rel) for rel in files},
    }
    _write_card(folder, card)
    return card


def _write_card(folder: Path, card: dict) -> None:
    atomic_write_text(folder / "card.json", json.dumps(card, indent=1, sort_keys=False) + "\n")
    atomic_write_text(folder / "card.md", card_markdown(card))


def rescore(name: str, root: str | os.PathLike | None = None, device: str = "cpu", why: str = "") -> dict:
    """Score a shipped model again (after the held-out protocol or the storage changed) and rewrite its card.

    The weights are first brought to the zoo's storage (`ship_weights`: float16) if they are not already; the
    card keeps its training provenance (command, config, commit, hardware, wall time) and gets the new held-out
    metrics and file hashes, with a `rescored` record saying when, at which commit and why."""
    from savl.models.io import load_model

    card = verify(name, root)
    e = entry(name, root)
    folder, weights = model_dir(name, root), weights_path(name, root)
    # Scored from a converted copy, which replaces the shipped file only with its new card: an interrupted
    # rescore leaves the model as it was.
    staged = folder / f".{name}.rescore.safetensors"
    shutil.copyfile(weights.with_suffix(".json"), staged.with_suffix(".json"))
    try:
        card["weights_dtype"] = ship_weights(weights, staged)
        card["held_out_metrics"] = _score(e, load_model(staged, map_location=device).eval(), device)
        os.replace(staged, weights)
    finally:
        staged.unlink(missing_ok=True)
        staged.with_suffix(".json").unlink(missing_ok=True)
    card["files"] = {rel: sha256(folder / rel) for rel in card["files"]}
    card["rescored"] = {"at": _utc_now(), "commit": git_commit(), "why": why}
    _write_card(folder, card)
    return card


def zoo_dependency(cfg, root: str | os.PathLike | None = None) -> str | None:
    """The zoo entry whose weights file the run config starts from (`init_from: .../models/<name>/<name>.safetensors`
    in this zoo), or None (a run, a config, another file, or none)."""
    from savl.train.config import init_from_model_file

    model_file = init_from_model_file(cfg)
    if model_file is None:
        return None
    name = model_file.stem
    same = model_file.resolve() == weights_path(name, root).resolve()
    return name if same and name in entries(root) else None


def build(name: str, root: str | os.PathLike | None = None, runs: str | os.PathLike | None = None,
          device: str = "cpu") -> dict:
    """Train (or resume) the entry's run under `runs` and package it into the zoo; return the card.

    An entry that starts from another zoo model's weights (`init_from` its `.safetensors`, e.g. the stage-3
    model from the shipped stage-2 one) gets that model first: trained when missing, else verified against its
    card, so it starts from the shipped file."""
    from savl.train import get_or_train

    e = entry(name, root)
    cfg = e.train_config()
    dep = zoo_dependency(cfg, root)
    if dep is not None and dep != name:
        if not is_present(dep, root):
            print(f"savl: {name} starts from zoo model {dep!r}, which is missing; training it first", file=sys.stderr)
            build(dep, root=root, runs=runs, device=device)
        verify(dep, root)  # the run's hash names that file's content (savl.train.config.config_hash)
    start = time.perf_counter()
    run = get_or_train(cfg, root=runs_root(runs))
    print(f"savl: {name}: trained in {time.perf_counter() - start:.0f} s; scoring on the held-out split",
          file=sys.stderr)
    return package(e, run, root, device=device)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def card_markdown(card: dict) -> str:
    """The card for people: what the model is, how to reproduce it, and its held-out numbers."""
    hw = card.get("hardware") or {}
    lines = [
        f"# {card['name']}",
        "",
        card.get("description", ""),
        "",
        f"- kind: {card['kind']}; tier: {card['tier']}; architecture: {card['architecture']}; "
        f"parameters: {card['parameters']:,}",
        f"- reproduce: `{card['command']}` (config `{card['zoo_config']}`"
        + (f", overrides {card['overrides']}" if card["overrides"] else "")
        + f"; hash {card['config_hash'][:12]})",
        f"- trained at commit {card['commit']} on {hw.get('cpu_model', 'unknown CPU')} "
        f"({hw.get('threads', hw.get('torch_threads', '?'))} threads, {hw.get('device', 'cpu')}), "
        f"{card['iterations']} iterations, wall time {_fmt(card.get('training_wall_time_s'))} s",
        f"- data: trains on split {card['data_split']['name']} train = {', '.join(card['data_split']['train'])}; "
        f"held out = {', '.join(card['data_split']['held_out'])}",
        "",
    ]
    if card.get("weights_dtype"):
        lines += [f"- weights stored as {card['weights_dtype']} (loaded into float32); the metrics below are theirs"]
    if card.get("rescored"):
        r = card["rescored"]
        lines += [f"- re-scored {r['at']} at commit {r['commit']}" + (f": {r['why']}" if r.get("why") else "")]
    if card.get("note"):
        lines += [f"- note: {card['note']}"]
    lines += [
        "",
        "## Held-out metrics",
        "",
    ]
    for protocol, metrics in card["held_out_metrics"].items():
        lines.append(f"### {protocol}")
        lines.append("")
        for k, v in metrics.items():
            if not isinstance(v, dict):
                lines.append(f"- {k}: {_fmt(v)}")
        lines.append("")
    lines += ["## Files (sha256)", ""] + [f"- `{f}`: {h}" for f, h in card["files"].items()]
    return "\n".join(lines) + "\n"


def summary_rows(root: str | os.PathLike | None = None) -> list[dict]:
    """One row per zoo entry: name, kind, tier, present, and the headline held-out numbers of its card."""
    rows = []
    for name, e in entries(root).items():
        card = read_card(name, root) if is_present(name, root) else None
        row = {"name": name, "kind": e.kind, "tier": e.tier, "present": card is not None,
               "default_sr": e.default_sr, "description": e.description}
        if card is not None:
            row["parameters"] = card["parameters"]
            row["iterations"] = card["iterations"]
            row["wall_time_s"] = card.get("training_wall_time_s")
            sr = {p: m for p, m in card["held_out_metrics"].items() if "psnr" in m}  # not a baseline's probes
            if sr:
                row["held_out"] = "; ".join(
                    f"{p}: PSNR {m['psnr']:.2f} dB (bicubic {m['bicubic_psnr']:.2f})" for p, m in sr.items()
                )
            rep = card["held_out_metrics"].get("realesrgan_crops")
            if rep:
                row["held_out"] = f"rec L1 {rep['rec_l1']:.4f} (zero code {rep['rec_l1_zero_code']:.4f})"
        rows.append(row)
    return rows


def seed_cards(family: str, root: str | os.PathLike | None = None) -> list[dict]:
    """The cards of the shipped seeds of one family: entries named `<family>-s<N>` whose files are present, in
    seed order (each card has its seed under "config"). A chapter aggregates them (mean and spread over seeds)
    and says how many seeds there are; an entry listed but not shipped is left out."""
    return [read_card(name, root) for _, name in _family_seeds(family, root) if is_present(name, root)]


def _family_seeds(family: str, root: str | os.PathLike | None = None) -> list[tuple[int, str]]:
    import re

    pattern = re.compile(rf"{re.escape(family)}-s(\d+)")
    found = [(int(m.group(1)), name) for name in entries(root) if (m := pattern.fullmatch(name))]
    return sorted(found)


def missing_seeds(family: str, root: str | os.PathLike | None = None) -> list[str]:
    """The entries `<family>-s<N>` that the zoo lists but does not ship yet (no card or a missing file), in seed
    order: what a chapter names as not trained when it shows the seeds that exist."""
    return [name for _, name in _family_seeds(family, root) if not is_present(name, root)]


def chain_iterations(name: str, root: str | os.PathLike | None = None) -> int:
    """Training steps of a zoo entry counted over its whole chain: its own iterations plus those of the stage it
    starts from (`init_from` a config: that config's chain; a zoo model's weights file `<entry>/<entry>.safetensors`:
    that entry's chain; a run folder: that run's config). A frozen encoder from `model.encoder_from` is not
    counted (another model)."""
    from savl.train.config import init_config, init_from_model_file, load_config

    def chain(cfg) -> int:
        steps = cfg.schedule.iterations
        if not cfg.init_from:
            return steps
        prev = init_config(cfg)
        if prev is not None:
            return steps + chain(prev)
        model_file = init_from_model_file(cfg)
        if model_file is not None and model_file.stem in entries(root):
            # a zoo model's weights (models/<entry>/<entry>.safetensors, in this zoo or in the repository's)
            return steps + chain_iterations(model_file.stem, root)
        run_config = Path(cfg.init_from) / "config.yaml"
        if model_file is None and run_config.is_file():
            return steps + chain(load_config(run_config))
        raise ConfigError(f"{cfg.init_from}: cannot count the steps of the stage {name!r} starts from")

    return chain(entry(name, root).train_config())
