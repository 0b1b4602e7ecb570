"""The registry of named degradation protocols that the CLI (`savl degrade`) and the book use.

A :class:`Protocol` maps a batch of HR images (B, 3, H, W) in [0, 1] and a ``torch.Generator`` to an LR
batch and one JSON-serialisable params dict per image; ``replay(hr, params)`` reproduces the LR exactly
(also after a JSON round trip of the params). Every protocol ends with clamping and 8-bit rounding, as the
LR images of the paper's data are 8-bit files. All protocols are x4.

| name | what (where in the paper) |
|---|---|
| ``realesrgan`` | the two-stage Real-ESRGAN pipeline with its default config (the training data, §4.1) |
| ``bicubic`` | MATLAB bicubic x1/4 (the content operator D, §3.1) |
| ``table5-type``, ``table5-blur``, ``table5-noise`` | random degradation per 64x64 HR patch (Table 5, A.5.1) |
| ``manet-mode1`` .. ``manet-mode5`` | MANet's spatially variant kernels at x4, noise 15 (Table 4, A.3) |
| ``ood-motion``, ``ood-haze`` | out-of-distribution motion blur and haze, then bicubic x1/4 (A.7) |

The MANet protocols generate the LR images as MANet's own test-set code does (see
:func:`savl.degrade.spatial.manet_degrade`), as the paper's Table 4 numbers come from that protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import torch

from savl.degrade import spatial
from savl.errors import ConfigError
from savl.imresize import imresize

SCALE = 4
TABLE5_PATCH = 64  # HR pixels: 16 LR pixels, a multiple of JPEG's 16x16 macroblock (see spatial.patchwise)
MANET_NOISE = 15  # the Table 4 protocol's noise level (on the 0-255 scale)
# Our ranges for the out-of-distribution protocols (A.7 gives no numbers): a motion segment of 8-24 HR pixels
# (2-6 LR pixels) in any direction; haze from light (t = 0.61 at depth 1) to dense (t = 0.14), bright airlight.
MOTION_LENGTH = (8.0, 24.0)
HAZE_BETA = (0.5, 2.0)
HAZE_AIRLIGHT = (0.7, 1.0)

Run = Callable[[torch.Tensor, "torch.Generator | None"], tuple[torch.Tensor, list[dict]]]
Replay = Callable[[torch.Tensor, Sequence[dict]], torch.Tensor]


@dataclass(frozen=True)
class Protocol:
    """A named degradation: ``protocol(hr, generator) -> (lr, params)``; ``protocol.replay(hr, params) -> lr``."""

    name: str
    scale: int
    description: str
    run: Run = field(repr=False)
    replay_fn: Replay = field(repr=False)

    def _check(self, hr: torch.Tensor) -> None:
        if not isinstance(hr, torch.Tensor) or hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
            shape = tuple(hr.shape) if isinstance(hr, torch.Tensor) else type(hr).__name__
            raise ConfigError(f"protocol {self.name}: hr must be a float (B, 3, H, W) tensor, got {shape}")
        if min(hr.shape[-2:]) < self.scale:
            raise ConfigError(f"protocol {self.name}: image {tuple(hr.shape[-2:])} is smaller than the scale")

    def __call__(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[dict]]:
        self._check(hr)
        return self.run(hr, generator)

    def replay(self, hr: torch.Tensor, params: Sequence[dict]) -> torch.Tensor:
        self._check(hr)
        if isinstance(params, dict) or not all(isinstance(p, dict) for p in params):
            raise ConfigError(f"protocol {self.name}: params must be a list of dicts, one per image")
        if len(params) != hr.shape[0]:
            raise ConfigError(f"protocol {self.name}: {len(params)} params dicts for a batch of {hr.shape[0]}")
        for i, p in enumerate(params):
            _check_finite(p, f"protocol {self.name}: params[{i}]")
            if "scale" in p and p["scale"] != self.scale:
                where = f"protocol {self.name}: params[{i}]"
                raise ConfigError(f"{where} is for x{p['scale']}, this protocol is x{self.scale}")
        return self.replay_fn(hr, list(params))


def _check_finite(value, where: str) -> None:
    """Replayed params come from a file that may have been edited: numbers must be finite (no NaN, no inf)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value} is not a finite number")


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return imresize(x, scale=1 / SCALE)


def _float(p: dict, key: str, name: str) -> float:
    if key not in p:
        raise ConfigError(f"protocol {name}: params lack the key {key!r} (have {sorted(p)})")
    return float(p[key])


# ------------------------------------------------------------------------------------------- realesrgan
@cache
def _realesrgan():
    from savl.degrade.realesrgan import RealESRGANConfig, RealESRGANDegradation

    return RealESRGANDegradation(RealESRGANConfig())


def _realesrgan_run(hr, generator):
    return _realesrgan()(hr, generator)  # the pipeline ends with 8-bit rounding itself


def _realesrgan_replay(hr, params):
    return _realesrgan().apply(hr, params)


# ---------------------------------------------------------------------------------------------- bicubic
def _bicubic_run(hr, generator):
    return _bicubic_replay(hr, None), [{"scale": SCALE} for _ in range(hr.shape[0])]


def _bicubic_replay(hr, params):
    return spatial.to_8bit(_downsample(hr))


# --------------------------------------------------------------------------------------------- Table 5
def _table5(setting: str) -> tuple[Run, Replay]:
    def run(hr, generator):
        out = spatial.patchwise(hr, setting, generator, patch=TABLE5_PATCH, scale=SCALE)
        return out.lr, out.params

    def replay(hr, params):
        return spatial.patchwise_replay(hr, params).lr

    return run, replay


# ------------------------------------------------------------------------------------------------ MANet
def _manet(mode: int) -> tuple[Run, Replay]:
    def run(hr, generator):
        lr, _, params = spatial.manet_degrade(hr, mode, generator, scale=SCALE, noise=MANET_NOISE)
        return lr, params

    def replay(hr, params):
        return spatial.manet_replay(hr, params)[0]

    return run, replay


# ---------------------------------------------------------------------------------- out of distribution
def _motion_run(hr, generator):
    params = []
    for _ in range(hr.shape[0]):
        length, u = spatial.draw_uniform(generator, *MOTION_LENGTH)[0], spatial.draw_uniform(generator, 0.0, 1.0)[0]
        params.append({"length": length, "angle": math.pi * u})
    return _motion_replay(hr, params), params


def _motion_replay(hr, params):
    for p in params:  # the kernel's side grows with the length: a hand-edited 1e6 would ask for terabytes
        length = _float(p, "length", "ood-motion")
        if not 0 <= length <= 4 * MOTION_LENGTH[1]:
            raise ConfigError(f"protocol ood-motion: length {length} is outside [0, {4 * MOTION_LENGTH[1]}]")
    blurred = torch.cat(
        [
            spatial.motion_blur(hr[i : i + 1], _float(p, "length", "ood-motion"), _float(p, "angle", "ood-motion"))
            for i, p in enumerate(params)
        ]
    )
    return spatial.to_8bit(_downsample(blurred))


def _haze_run(hr, generator):
    params = []
    for _ in range(hr.shape[0]):
        beta, airlight = (
            spatial.draw_uniform(generator, *HAZE_BETA)[0],
            spatial.draw_uniform(generator, *HAZE_AIRLIGHT)[0],
        )
        params.append({"beta": beta, "airlight": airlight, "depth": "vertical"})
    return _haze_replay(hr, params), params


def _haze_replay(hr, params):
    hazy = torch.cat(
        [
            spatial.haze(hr[i : i + 1], _float(p, "beta", "ood-haze"), _float(p, "airlight", "ood-haze"))
            for i, p in enumerate(params)
        ]
    )
    return spatial.to_8bit(_downsample(hazy))


# ------------------------------------------------------------------------------------------- registry
def _build() -> dict[str, Protocol]:
    entries: list[tuple[str, str, Run, Replay]] = [
        ("realesrgan", "Real-ESRGAN two-stage degradation, default config", _realesrgan_run,
         _realesrgan_replay),
        ("bicubic", "MATLAB bicubic x1/4", _bicubic_run, _bicubic_replay),
    ]  # fmt: skip
    for setting, what in (("type", "noise / blur / JPEG"), ("blur", "blur sigma"), ("noise", "noise std")):
        entries.append(
            (f"table5-{setting}", f"Table 5: random {what} per {TABLE5_PATCH}x{TABLE5_PATCH} HR patch, x4",
             *_table5(setting))
        )  # fmt: skip
    for mode in spatial.MANET_MODES:
        entries.append(
            (f"manet-mode{mode}", f"MANet spatially variant kernels, mode {mode}, noise {MANET_NOISE} (Table 4)",
             *_manet(mode))
        )  # fmt: skip
    entries += [
        ("ood-motion", "out of distribution (A.7): linear motion blur, then bicubic x1/4", _motion_run,
         _motion_replay),
        ("ood-haze", "out of distribution (A.7): haze with a vertical depth ramp, then bicubic x1/4", _haze_run,
         _haze_replay),
    ]  # fmt: skip
    return {name: Protocol(name, SCALE, desc, run, replay) for name, desc, run, replay in entries}


PROTOCOLS: dict[str, Protocol] = _build()


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a ConfigError listing the valid names for an unknown one."""
    try:
        return PROTOCOLS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown degradation protocol {name!r}; valid: {', '.join(PROTOCOLS)}") from None
