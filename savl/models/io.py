"""Model files: safetensors weights + a JSON config (never a pickle; `.pth` files are read weights-only).

`save_model(model, path)` writes `path` (safetensors) and `path.with_suffix(".json")` (architecture, config,
savl version). `load_model(path)` rebuilds the architecture from the JSON and loads the weights.
`load_weights(model, path)` loads any supported file (safetensors, or a `.pth` through
`torch.load(weights_only=True)`) into an existing model, strips wrapper keys (`params`, `params_ema`,
`module.`) and reports a size mismatch as the hyper-parameter that differs.

The architectures `load_model` knows are listed in one table, `savl.models.registry.ARCHITECTURES`;
`register_architecture(name, builder, config_cls)` adds one at run time (a test's or a user's own model). A
model that is saved must carry its dataclass config as `model.config`.

A model file is read as untrusted input: the JSON config is checked field by field against bounds
(`savl.models.validate`) before anything is built, and weights that are not finite (NaN, inf) are refused.
The weights and their JSON are written together (both or neither).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from savl import __version__
from savl.errors import ImageError, ModelFileError, SavlError
from savl.models.validate import check_config

# Architectures added at run time by `register_architecture`; the built-in ones live in savl.models.registry.
_ADDED: dict[str, tuple[Callable, type]] = {}
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")


def register_architecture(name: str, builder: Callable, config_cls: type) -> None:
    """Make `load_model` able to rebuild `name` from its JSON config: `builder(config_cls(**cfg))`."""
    _ADDED[name] = (builder, config_cls)


def _architectures() -> dict[str, tuple[Callable, type]]:
    # The table imports every model module; read on first use so that importing `savl.models.io` stays cheap.
    from savl.models.registry import ARCHITECTURES

    return {**ARCHITECTURES, **_ADDED}


def _config_dict(model: nn.Module) -> dict:
    cfg = getattr(model, "config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise ModelFileError(f"{type(model).__name__}: has no dataclass `.config`, so it cannot be saved")
    return dataclasses.asdict(cfg)


def architecture_name(model: nn.Module) -> str:
    return getattr(model, "architecture", type(model).__name__)


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write `path` (.safetensors) and its JSON sidecar atomically. Returns the weights path."""
    from safetensors.torch import save

    from savl.io import write_group

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    meta = {
        "architecture": architecture_name(model),
        "config": _config_dict(model),
        "savl_version": __version__,
        **(extra or {}),
    }
    # safetensors refuses shared storage; contiguous clones keep the file self-contained.
    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()}
    files = {path: save(state, metadata={"format": "pt"}), path.with_suffix(".json"): _json_bytes(meta)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_group(files)
    except OSError as e:
        raise ModelFileError(f"{path.parent}: cannot write the model here ({e.strerror or e})") from None
    except ImageError as e:  # savl.io's writer names image files; this one is a model
        raise ModelFileError(str(e)) from None
    return path


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or `.pth` file, wrapper keys stripped; one-line ModelFileError otherwise."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected a model file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: empty file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelFileError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0]})") from None
    elif path.suffix in (".pth", ".pt", ".ckpt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for corrupt/unsafe pickles
            raise ModelFileError(f"{path}: cannot be read as a weights-only torch file ({type(e).__name__})") from None
    else:
        raise ModelFileError(f"{path}: unsupported model file type {path.suffix!r} (use .safetensors or .pth)")
    state = strip_wrappers(state, path)
    for key, tensor in state.items():  # a diverged training's weights: refuse them rather than output NaN
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{path}: {key} holds NaN or infinite values; the model is broken")
    return state


def strip_wrappers(state, path: Path | str = "<state>") -> dict[str, torch.Tensor]:
    """Unwrap BasicSR-style `{"params_ema": ...}` dicts and DDP's `module.` prefixes."""
    for _ in range(3):
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            key = next((k for k in WRAPPER_KEYS if k in state), None)
            if key is None:
                break
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: does not hold a flat dictionary of tensors")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def _mismatch_message(model: nn.Module, key: str, want: torch.Size, got: torch.Size, path: Path) -> str:
    """Name the hyper-parameter behind a shape mismatch: a config field equal to a mismatching model dim."""
    cfg = getattr(model, "config", None)
    fields = dataclasses.asdict(cfg) if cfg is not None and dataclasses.is_dataclass(cfg) else {}
    dims = [(w, g) for w, g in zip(want, got) if w != g] if len(want) == len(got) else []
    for w, g in dims:
        for name, value in _flat(fields):
            if isinstance(value, int) and not isinstance(value, bool) and value == w:
                return f"{path}: {name} differs (model has {w}, file has {g}; first seen in {key})"
    return f"{path}: {key} has shape {tuple(got)} in the file but {tuple(want)} in the model"


def _flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a weights file into `model`, naming the differing hyper-parameter on a size mismatch."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if sidecar.exists() and dataclasses.is_dataclass(getattr(model, "config", None)):
        saved = _read_sidecar(sidecar).get("config", {})
        mine = dict(_flat(dataclasses.asdict(model.config)))
        for name, value in _flat(saved):
            if name in mine and _norm(mine[name]) != _norm(value):
                raise ModelFileError(f"{path}: {name} differs (model has {mine[name]!r}, file has {value!r})")
    state = read_state(path)
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            raise ModelFileError(_mismatch_message(model, key, own[key].shape, tensor.shape, path))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ModelFileError(
            f"{path}: does not match {architecture_name(model)} ({what}; "
            f"{len(missing)} missing, {len(unexpected)} unexpected keys)"
        )
    model.load_state_dict(state, strict=strict)
    return model


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


#: A model's JSON config is a few kilobytes; anything much larger is not one.
MAX_SIDECAR_BYTES = 1 << 20


def _read_sidecar(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise ModelFileError(f"{path}: {path.stat().st_size} bytes is too large for a model config")
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ModelFileError(f"{path}: unreadable model config ({type(e).__name__})") from None
    if not isinstance(meta, dict) or "architecture" not in meta or "config" not in meta:
        raise ModelFileError(f"{path}: not a savl model config (needs 'architecture' and 'config')")
    if not isinstance(meta["architecture"], str):
        raise ModelFileError(f"{path}: 'architecture' must be a name, got {type(meta['architecture']).__name__}")
    return meta


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the architecture named in the JSON sidecar and load the weights (eval mode)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        raise ModelFileError(f"{sidecar}: no such file (a savl model needs its JSON config beside the weights)")
    meta = _read_sidecar(sidecar)
    architectures = _architectures()
    arch = meta["architecture"]
    if arch not in architectures:
        known = ", ".join(sorted(architectures)) or "none"
        raise ModelFileError(f"{sidecar}: unknown architecture {arch!r} (known: {known})")
    builder, config_cls = architectures[arch]
    check_config(config_cls, meta["config"], str(sidecar))  # bounds first: nothing is allocated yet
    try:
        config = _build_config(config_cls, meta["config"])
        model = builder(config)
    except SavlError as e:
        raise ModelFileError(f"{sidecar}: {e}") from None
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFileError(f"{sidecar}: config does not fit {arch} ({first})") from None
    load_weights(model, path)
    return model.to(map_location).eval()


def _build_config(config_cls: type, values: dict):
    """Rebuild a (possibly nested) dataclass config from its `asdict` form."""
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise TypeError(f"unknown field {sorted(unknown)[0]!r}")
    hints = _field_types(config_cls)
    for name, value in values.items():
        sub = hints.get(name)
        if isinstance(value, dict) and sub is not None and dataclasses.is_dataclass(sub):
            value = _build_config(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return config_cls(**kwargs)


def _field_types(config_cls: type) -> dict:
    import typing

    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # forward references that cannot be resolved: fall back to no nesting
        return {}
