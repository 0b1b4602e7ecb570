"""Model configs read from a JSON file are checked before anything is built: every field has the type its
dataclass declares and lies within sane bounds, so a hostile or broken file (`embed_dim: 10000000`, a negative
size, a list nested a thousand deep) fails in one line instead of asking for tens of gigabytes.

The bounds are generous around the paper's sizes (HAT-L-like SR net: embed_dim 162, 6 groups of 6 blocks,
window 16; the encoder's base 32 with multipliers up to 4), and chosen together so that the largest model
they allow stays in the order of a gigabyte of weights and buffers (see tests/test_hostile_inputs.py, which
builds that model on the meta device and counts it). Fields of architectures registered by users (unknown
names) get the generic checks only: finite numbers, integers within +-2**20, short lists, shallow nesting.
"""

from __future__ import annotations

import dataclasses
import math
import typing

from savl.errors import ModelFileError

#: field name -> (lowest, highest) for the library's configs (SR net, encoder, decoder, SAVL, discriminator).
BOUNDS: dict[str, tuple[float, float]] = {
    # SR network (DA-RHAG / HAT)
    "embed_dim": (1, 256),
    "depths": (1, 16),
    "heads": (1, 16),
    "window": (2, 32),
    "mlp_ratio": (0.0625, 4.0),
    "compress": (1, 256),
    "squeeze": (1, 256),
    "overlap": (0.0, 1.0),
    "upscale": (1, 8),
    "num_feat": (1, 256),
    "drop_path": (0.0, 0.999),
    "dsca_channel_hidden": (1, 512),
    "dsca_spatial_hidden": (1, 512),
    "gamma_init": (-100.0, 100.0),
    # encoder
    "in_channels": (1, 4),
    "code_dim": (1, 256),
    "base": (1, 256),  # the discriminator's base too (paper 64)
    "multipliers": (1, 16),
    "blocks_per_level": (1, 4),
    "groups": (1, 256),
    "split": (1, 16),
    "reduction": (1, 64),
    # decoder
    "channels": (1, 128),
    "num_blocks": (1, 16),
    "growth": (1, 64),
    "res_scale": (0.0, 10.0),
    "scale": (1, 8),
    "blur_size": (1, 63),
    "blur_sigma": (1e-3, 100.0),
    # SAVL objective
    "alpha": (0.0, 1e6),
    "lam": (0.0, 1e6),
    "beta_final": (0.0, 1e6),
    "anneal_steps": (0, 10**9),
    "club_hidden": (1, 4096),
    "club_samples": (1, 65536),
    # discriminator
    "in_ch": (1, 4),
    # baselines (savl.baselines): ReDSR, DACESR and its REE
    "blocks_per_group": (1, 16),
    "kernel_size": (1, 7),
    "degrader_blocks": (1, 16),
    "degrader_reduction": (1, 64),
    "d_state": (1, 64),
    "d_conv": (1, 8),
    "expand": (1, 4),
    "scan_chunk": (1, 256),
    "tokens": (1, 32),
    "input_size": (8, 1024),
    "lora_rank": (1, 64),
    # RRDB-SFT (Table 4's network; channels, num_blocks, growth, res_scale and scale as the decoder's)
    "sft_hidden": (1, 256),
    "kernel_components": (1, 441),
}

#: Longest list a config may hold, deepest nesting of configs, generic integer bound for unknown fields.
MAX_LIST = 16
MAX_DEPTH = 4
GENERIC_INT = 2**20
#: SR net: HAB blocks in all groups together (the paper has 36); encoder: the widest level's channels (the
#: paper's is 128) and the number of levels (the paper's 4).
MAX_BLOCKS = 48
MAX_ENCODER_WIDTH = 256
MAX_LEVELS = 6


def check_config(config_cls: type, values, where: str, depth: int = 0) -> None:
    """Raise ModelFileError (one line: `where`, the field path, the problem) unless `values` fits `config_cls`."""
    if depth > MAX_DEPTH:
        raise ModelFileError(f"{where}: configs nested more than {MAX_DEPTH} deep")
    if not isinstance(values, dict):
        raise ModelFileError(f"{where}: expected an object of {config_cls.__name__} fields, got {_kind(values)}")
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ModelFileError(f"{where}: unknown field {unknown[0]!r} for {config_cls.__name__}")
    hints = _hints(config_cls)
    for name, value in values.items():
        _check_field(f"{where}: {name}", name, hints.get(name), value, where, depth)
    _check_together(config_cls, values, where)


def _check_field(label: str, name: str, hint, value, where: str, depth: int) -> None:
    if hint is not None and dataclasses.is_dataclass(hint):
        check_config(hint, value, f"{where}: {name}", depth + 1)
        return
    origin = typing.get_origin(hint)
    sequence = origin in (tuple, list) or hint in (tuple, list)
    if sequence or (isinstance(value, list) and hint not in (int, float, bool, str)):
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise ModelFileError(f"{label}: expected a list of at most {MAX_LIST} items, got {_kind(value)}")
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        item = args[0] if args else None
        for i, v in enumerate(value):
            _check_scalar(f"{label}[{i}]", name, item, v)
        return
    _check_scalar(label, name, hint, value)


def _check_scalar(label: str, name: str, hint, value) -> None:
    if hint is bool:
        if not isinstance(value, bool):
            raise ModelFileError(f"{label}: expected true or false, got {_kind(value)}")
        return
    if hint is str:
        if not isinstance(value, str) or len(value) > 64:
            raise ModelFileError(f"{label}: expected a short string, got {_kind(value)}")
        return
    if hint is int or (hint is None and isinstance(value, int) and not isinstance(value, bool)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelFileError(f"{label}: expected an integer, got {_kind(value)}")
        lo, hi = BOUNDS.get(name, (-GENERIC_INT, GENERIC_INT))
        if not lo <= value <= hi:
            raise ModelFileError(f"{label}: {value} is outside [{lo:g}, {hi:g}]")
        return
    if hint is float or (hint is None and isinstance(value, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelFileError(f"{label}: expected a finite number, got {_kind(value)}")
        lo, hi = BOUNDS.get(name, (-1e12, 1e12))
        if not lo <= value <= hi:
            raise ModelFileError(f"{label}: {value} is outside [{lo:g}, {hi:g}]")
        return
    # A field of another type (unannotated, a union, a user's own class): only its shape is checked.
    if isinstance(value, (dict, list)):
        raise ModelFileError(f"{label}: unexpected {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ModelFileError(f"{label}: expected a finite number, got {value}")


def _check_together(config_cls: type, values: dict, where: str) -> None:
    """Limits on products of fields, where each field alone is fine but together they are not."""
    depths = values.get("depths")
    if isinstance(depths, list) and "embed_dim" in values and sum(depths) > MAX_BLOCKS:
        raise ModelFileError(f"{where}: depths hold {sum(depths)} blocks in all; at most {MAX_BLOCKS}")
    groups, per_group = values.get("groups"), values.get("blocks_per_group")
    if isinstance(groups, int) and isinstance(per_group, int) and groups * per_group > MAX_BLOCKS:
        raise ModelFileError(f"{where}: groups x blocks_per_group is {groups * per_group} blocks; at most {MAX_BLOCKS}")
    mult, base = values.get("multipliers"), values.get("base")
    if isinstance(mult, list) and len(mult) > MAX_LEVELS:
        raise ModelFileError(f"{where}: multipliers: {len(mult)} levels; at most {MAX_LEVELS}")
    if isinstance(mult, list) and mult and isinstance(base, int) and base * max(mult) > MAX_ENCODER_WIDTH:
        raise ModelFileError(
            f"{where}: base x the largest multiplier is {base * max(mult)} channels; at most {MAX_ENCODER_WIDTH}"
        )


def _hints(config_cls: type) -> dict:
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # unresolvable forward references: generic checks only
        return {}


def _kind(value) -> str:
    if isinstance(value, (dict, list)):
        return f"{type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
