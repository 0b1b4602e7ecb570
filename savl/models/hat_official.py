"""Load published HAT weights (XPixelGroup/HAT's BasicSR `.pth` files) into `savl.models.hat.HAT`.

Our HAT computes what the official one computes, but its state dict is laid out differently:

- the groups are `groups.N` where the official code has `layers.N.residual_group` (blocks, OCAB) and
  `layers.N.conv` (the group's last convolution); the first LayerNorm is `patch_norm` (official
  `patch_embed.norm`); the channel-attention block's convolutions are `conv_block.body.{0,2}` and
  `conv_block.body.3.body.{1,3}` (official `conv_block.cab.{0,2}` and `conv_block.cab.3.attention.{1,3}`);
- the official model stores its relative-position indices as buffers (`relative_position_index_SA`,
  `relative_position_index_OCA`); ours are computed and not saved;
- OCAB's bias table is indexed in another order. Both implementations give every (query, key) pair of an
  overlapping window a table row that depends only on the pair's 2-D offset, and both are bijections onto the
  (w + ow - 1)^2 rows; the official index is `(key - query) + (w - ow + 1)` per axis, rows of width
  (w + ow - 1), with negative values counting from the end of the table. The window-attention (HAB) tables
  use the same order in both, so only OCAB's rows are permuted.

`load_official_hat(path_or_state_dict)` reads the file with `torch.load(weights_only=True)`, takes
`params_ema` (or `params`, or the key named), infers the architecture from the tensor shapes (embed_dim,
depths, heads, window, overlap, mlp_ratio, compress/squeeze ratios, upscale, num_feat), renames the keys,
permutes the OCAB tables and returns a plain HAT in eval mode. Every published model of the HAT repository
uses `img_range: 1.` and the pixel-shuffle upsampler, which is what our HAT implements; HAT-S is embed_dim
144, compress and squeeze ratios 24; HAT and Real_HAT_GAN are 180, 3 and 30; HAT-L has 12 groups.

Usage (the files are published with the HAT repository; nothing is downloaded here)::

    from savl.models.hat_official import load_official_hat
    hat = load_official_hat("HAT-S_SRx4.pth")            # a plain x4 HAT-S, eval mode, on the CPU
    sr = hat(lr)                                         # lr: (B, 3, h, w) in [0, 1]
    load_official_hat("HAT_SRx4.pth", model=net.sr)      # into an existing HAT of the same sizes, e.g. the
                                                         # backbone of a DARHAGNet built with HAT's sizes

A file that cannot be read, is not an official HAT state dict, or does not fit `model` raises a one-line
`savl.errors.ModelFileError` naming the file.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from savl.errors import ModelFileError
from savl.models.hat import HAT, overlapping_relative_position_index, relative_position_index

OFFICIAL_KEYS = ("params_ema", "params")  # what BasicSR saves: the EMA weights first, as HAT's test configs use

_BLOCK = re.compile(r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.(.+)$")
_OCAB = re.compile(r"^layers\.(\d+)\.residual_group\.overlap_attn\.(.+)$")
_GROUP_CONV = re.compile(r"^layers\.(\d+)\.conv\.(weight|bias)$")
_TOP = re.compile(r"^(conv_first|norm|conv_after_body|conv_before_upsample\.0|upsample\.\d+|conv_last)\.(weight|bias)$")
_CAB = {
    "conv_block.cab.0.": "conv_block.body.0.",
    "conv_block.cab.2.": "conv_block.body.2.",
    "conv_block.cab.3.attention.1.": "conv_block.body.3.body.1.",
    "conv_block.cab.3.attention.3.": "conv_block.body.3.body.3.",
}
_INDEX_BUFFERS = ("relative_position_index_SA", "relative_position_index_OCA")


def official_window_index(window: int) -> torch.Tensor:
    """The official HAB index (w*w, w*w): (query - key) + (w - 1) per axis, rows of width 2w - 1."""
    return relative_position_index(window)  # the same rule as ours (checked against the file when it has one)


def official_overlap_index(window: int, overlap_window: int) -> torch.Tensor:
    """The official OCAB index (w*w, ow*ow) into a (w + ow - 1)^2 table, negative entries wrapped.

    Per axis the offset is key - query shifted by w - ow + 1 (it can be negative); rows have width w + ow - 1.
    The official code indexes the table with these signed values, which count from the end of the table.
    """
    span = window + overlap_window - 1
    q = torch.arange(window)
    k = torch.arange(overlap_window)
    d = k[None, :] - q[:, None] + (window - overlap_window + 1)  # (w, ow): signed per-axis offset
    index = d[:, None, :, None] * span + d[None, :, None, :]  # (qy, qx, ky, kx)
    return index.reshape(window * window, overlap_window * overlap_window) % (span * span)


def _table_permutation(ours: torch.Tensor, official: torch.Tensor, rows: int, what: str) -> torch.Tensor:
    """perm with our_table = official_table[perm], so that every (query, key) pair gets the same bias."""
    perm = torch.full((rows,), -1, dtype=torch.long)
    perm[ours.flatten()] = official.flatten()
    if (perm < 0).any() or not torch.equal(perm[ours.flatten()], official.flatten()):
        raise ModelFileError(f"{what}: the two index layouts are not a relabelling of one table")  # a bug, not a file
    return perm


def _read(source, key: str | None) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(source, dict):
        raw, where = source, "<state dict>"
    else:
        path = Path(os.fspath(source))
        where = str(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                raw = load_file(str(path))
            except (SafetensorError, OSError, ValueError) as e:
                raise ModelFileError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0]})") from None
        else:
            try:
                raw = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # corrupt, truncated or unsafe pickles raise many types
                raise ModelFileError(
                    f"{path}: cannot be read as a weights-only torch file ({type(e).__name__})"
                ) from None
    if not isinstance(raw, dict):
        raise ModelFileError(f"{where}: holds a {type(raw).__name__}, not a dictionary of tensors")
    if key is not None:
        if key not in raw:
            raise ModelFileError(f"{where}: has no {key!r} entry (it has {', '.join(map(str, list(raw)[:5]))})")
        state = raw[key]
    else:
        found = next((k for k in OFFICIAL_KEYS if k in raw), None)
        state = raw[found] if found is not None else raw
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{where}: does not hold a flat dictionary of tensors under params_ema or params")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    return state, where


def _shape(state: dict, key: str, where: str) -> torch.Size:
    if key not in state:
        raise ModelFileError(f"{where}: not an official HAT state dict (no {key!r})")
    return state[key].shape


def infer_hat_config(state: dict[str, torch.Tensor], where: str = "<state dict>") -> dict:
    """HAT(...) keyword arguments read off the shapes of an official-layout state dict."""
    if "absolute_pos_embed" in state:
        raise ModelFileError(f"{where}: absolute position embeddings (ape=True) are not supported by savl's HAT")
    embed_dim, in_ch = _shape(state, "conv_first.weight", where)[:2]
    depths: list[int] = []
    heads: list[int] = []
    while f"layers.{len(depths)}.conv.weight" in state:
        i = len(depths)
        blocks = {int(m.group(2)) for k in state if (m := _BLOCK.match(k)) and int(m.group(1)) == i}
        if not blocks or blocks != set(range(len(blocks))):
            raise ModelFileError(f"{where}: group {i} has no hybrid attention blocks numbered from 0")
        depths.append(len(blocks))
        heads.append(_shape(state, f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table", where)[1])
    if not depths:
        raise ModelFileError(f"{where}: not an official HAT state dict (no 'layers.0.conv.weight')")
    prefix = "layers.0.residual_group."
    rows = _shape(state, prefix + "blocks.0.attn.relative_position_bias_table", where)[0]
    window = (math.isqrt(rows) + 1) // 2
    if (2 * window - 1) ** 2 != rows:
        raise ModelFileError(f"{where}: window-attention table has {rows} rows, not (2w - 1)^2")
    rows_oca = _shape(state, prefix + "overlap_attn.relative_position_bias_table", where)[0]
    span = math.isqrt(rows_oca)
    overlap_window = span - window + 1
    if span * span != rows_oca or overlap_window <= window:
        raise ModelFileError(f"{where}: OCAB table has {rows_oca} rows, not (w + ow - 1)^2 with ow > w = {window}")
    hidden = _shape(state, prefix + "blocks.0.mlp.fc1.weight", where)[0]
    compressed = _shape(state, prefix + "blocks.0.conv_block.cab.0.weight", where)[0]
    squeezed = _shape(state, prefix + "blocks.0.conv_block.cab.3.attention.1.weight", where)[0]
    if embed_dim % compressed or embed_dim % squeezed:
        raise ModelFileError(f"{where}: channel-attention widths {compressed}, {squeezed} do not divide {embed_dim}")
    if "conv_before_upsample.0.weight" not in state:
        raise ModelFileError(f"{where}: only HAT's pixel-shuffle upsampler is supported (no conv_before_upsample)")
    num_feat = _shape(state, "conv_before_upsample.0.weight", where)[0]
    ups = sorted(int(k.split(".")[1]) for k in state if re.fullmatch(r"upsample\.\d+\.weight", k))
    outs = [state[f"upsample.{i}.weight"].shape[0] // num_feat for i in ups]
    if outs and all(o == 4 for o in outs):
        upscale = 2 ** len(outs)
    elif outs == [9]:
        upscale = 3
    else:
        raise ModelFileError(f"{where}: upsampler convolutions with {outs} x num_feat outputs are not HAT's")
    return {
        "embed_dim": int(embed_dim),
        "depths": depths,
        "heads": heads,
        "window": int(window),
        "mlp_ratio": hidden / embed_dim,
        "compress": int(embed_dim // compressed),
        "squeeze": int(embed_dim // squeezed),
        "overlap": (overlap_window - window) / window,
        "upscale": upscale,
        "in_ch": int(in_ch),
        "num_feat": int(num_feat),
    }


def official_to_savl(
    state: dict[str, torch.Tensor], window: int, overlap_window: int, where: str = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Rename an official-layout HAT state dict to ours and permute every OCAB bias table."""
    sa, oca = official_window_index(window), official_overlap_index(window, overlap_window)
    for name, expected in zip(_INDEX_BUFFERS, (sa, oca)):
        rows = (2 * window - 1) ** 2 if name.endswith("SA") else (window + overlap_window - 1) ** 2
        stored = state.get(name)
        # the file keeps the official signed values; ours are wrapped into [0, rows)
        if stored is not None and (stored.shape != expected.shape or not torch.equal(stored.long() % rows, expected)):  # noqa: E501
            raise ModelFileError(f"{where}: {name} is not the index HAT builds for window {window}")
    perm_sa = _table_permutation(relative_position_index(window), sa, (2 * window - 1) ** 2, "window attention")
    perm_oca = _table_permutation(
        overlapping_relative_position_index(window, overlap_window),
        oca,
        (window + overlap_window - 1) ** 2,
        "OCAB",
    )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _INDEX_BUFFERS:
            continue
        if m := _BLOCK.match(key):
            rest = m.group(3)
            for old, new in _CAB.items():
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
            if rest == "attn.relative_position_bias_table":
                value = value[perm_sa]
            new_key = f"groups.{m.group(1)}.blocks.{m.group(2)}.{rest}"
        elif m := _OCAB.match(key):
            if m.group(2) == "relative_position_bias_table":
                value = value[perm_oca]
            new_key = f"groups.{m.group(1)}.overlap_attn.{m.group(2)}"
        elif m := _GROUP_CONV.match(key):
            new_key = f"groups.{m.group(1)}.conv.{m.group(2)}"
        elif key.startswith("patch_embed.norm."):
            new_key = "patch_norm." + key[len("patch_embed.norm.") :]
        elif _TOP.match(key):
            new_key = key
        else:
            raise ModelFileError(f"{where}: unexpected key {key!r} for an official HAT state dict")
        out[new_key] = value
    return out


def load_official_hat(
    source: str | os.PathLike | dict, model: HAT | None = None, key: str | None = None, strict: bool = True
) -> HAT:
    """A plain `HAT` with the weights of an official HAT file or state dict (e.g. HAT-S_SRx4.pth).

    `source`: a `.pth` path (read with weights_only=True), a `.safetensors` path, or a state dict, either flat
    or BasicSR-wrapped (`params_ema` is taken before `params`; `key` names another). `model`: an existing HAT
    to load into (its sizes must match); None builds one from the shapes (`infer_hat_config`). Returns the
    model in eval mode. Any problem is a one-line `ModelFileError` naming the file.
    """
    state, where = _read(source, key)
    cfg = infer_hat_config(state, where)
    overlap_window = cfg["window"] + int(cfg["window"] * cfg["overlap"])
    converted = official_to_savl(state, cfg["window"], overlap_window, where)
    if model is None:
        model = HAT(**cfg)
    own = model.state_dict()
    for k, v in converted.items():
        if k in own and own[k].shape != v.shape:
            raise ModelFileError(f"{where}: {k} has shape {tuple(v.shape)} in the file, {tuple(own[k].shape)} here")
    missing = [k for k in own if k not in converted]
    unexpected = [k for k in converted if k not in own]
    if strict and (missing or unexpected):
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ModelFileError(f"{where}: does not match the HAT model ({what}; {len(missing)} missing)")
    model.load_state_dict(converted, strict=strict)
    return model.eval()
