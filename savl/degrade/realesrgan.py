"""Real-ESRGAN's second-order degradation pipeline (xinntao/Real-ESRGAN, the paper's training data), batched
and replayable.

``RealESRGANDegradation(config)(hr, generator) -> (lr, params)``:

1. (optional, on by default as in Real-ESRGAN) unsharp-mask the GT; the LR is made from the sharpened GT;
2. first order: blur (kernel1) -> resize (shared scale/mode) -> Gaussian or Poisson noise -> clamp -> JPEG;
3. second order: blur (kernel2, with ``second_blur_prob``) -> resize to (H/scale * s2) -> noise -> clamp;
4. final, in one of two orders (p 0.5, shared by the batch): resize to H/scale -> sinc -> JPEG, or
   JPEG -> resize to H/scale -> sinc; the sinc is applied with ``final_sinc_prob``, else the identity;
5. clamp and round to 8 bits.

Every random choice of a batch is drawn from ``generator`` on its device as two tensors and read back in one
transfer (one host synchronisation per batch on a GPU) into ``params`` (one JSON-serialisable dict per sample,
noise included through a per-sample seed), then :meth:`RealESRGANDegradation.apply` runs the ops from
the records alone, so ``apply(hr, params)`` reproduces the LR exactly (same device type).

Departures from Real-ESRGAN's code, each a strict generalisation that costs nothing batched: the noise kind
(Gaussian or Poisson) and whether the second blur happens are drawn per sample rather than once per batch.
Resizes keep Real-ESRGAN's batch-shared scale and mode, and its unantialiased ``F.interpolate``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from savl.degrade import ops
from savl.degrade.kernels import (
    FINAL_DRAWS,
    KERNEL_DRAWS,
    KERNEL_TYPES,
    KernelConfig,
    _between,
    _pick,
    final_record_from_uniforms,
    kernel_from_record,
    kernel_record_from_uniforms,
    uniforms,
)
from savl.errors import ConfigError, ImageError

FINAL_ORDERS = ("resize_sinc_jpeg", "jpeg_resize_sinc")
_RECORD_KEYS = ("usm", "antialias", "blur1", "resize1", "noise1", "jpeg1", "blur2", "resize2", "noise2", "final")
_SEED_MAX = 2**31 - 1  # noise seeds stay exact JSON integers everywhere


def _second_stage_kernels() -> KernelConfig:
    return KernelConfig(sigma_x_range=(0.2, 1.5), sigma_y_range=(0.2, 1.5))


@dataclass
class RealESRGANConfig:
    """Real-ESRGAN's degradation settings; the defaults are its x4plus training options. Noise sigmas are in /255."""

    scale: int = 4
    kernel1: KernelConfig = field(default_factory=KernelConfig)
    kernel2: KernelConfig = field(default_factory=_second_stage_kernels)
    second_blur_prob: float = 0.8
    final_sinc_prob: float = 0.8
    final_sinc_cutoff_range: tuple[float, float] = (math.pi / 3, math.pi)
    final_order_prob: float = 0.5  # probability of resize -> sinc -> JPEG
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    resize_antialias: bool = False  # Real-ESRGAN's F.interpolate does not antialias: aliasing is part of the space
    usm_sharpen_gt: bool = True  # Real-ESRGAN degrades the USM-sharpened GT
    usm_weight: float = 0.5
    usm_threshold: float = 10.0
    usm_radius: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.kernel1, dict):
            self.kernel1 = KernelConfig.from_dict(self.kernel1)
        if isinstance(self.kernel2, dict):
            self.kernel2 = KernelConfig.from_dict(self.kernel2)
        if int(self.scale) != self.scale or self.scale < 1:
            raise ConfigError(f"RealESRGANConfig.scale must be a positive integer, got {self.scale}")
        self.scale = int(self.scale)
        for name in ("second_blur_prob", "final_sinc_prob", "final_order_prob", "gaussian_noise_prob",
                     "gray_noise_prob", "gaussian_noise_prob2", "gray_noise_prob2"):  # fmt: skip
            v = float(getattr(self, name))
            if not 0 <= v <= 1:
                raise ConfigError(f"RealESRGANConfig.{name} must lie in [0, 1], got {v}")
            setattr(self, name, v)
        for name in ("resize_prob", "resize_prob2"):
            p = tuple(float(v) for v in getattr(self, name))
            if len(p) != 3 or min(p) < 0 or abs(sum(p) - 1) > 1e-6:
                raise ConfigError(f"RealESRGANConfig.{name} must be 3 probabilities (up, down, keep) summing to 1")
            setattr(self, name, p)
        for name in ("final_sinc_cutoff_range", "resize_range", "noise_range", "poisson_scale_range", "jpeg_range",
                     "resize_range2", "noise_range2", "poisson_scale_range2", "jpeg_range2"):  # fmt: skip
            lo, hi = (float(v) for v in getattr(self, name))
            if lo > hi or lo < 0:
                raise ConfigError(f"RealESRGANConfig.{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
            setattr(self, name, (lo, hi))
        for name in ("resize_range", "resize_range2"):
            lo, hi = getattr(self, name)
            if not lo <= 1 <= hi or lo <= 0:
                raise ConfigError(f"RealESRGANConfig.{name} must contain 1 and be positive, got {(lo, hi)}")
        for name in ("jpeg_range", "jpeg_range2"):
            lo, hi = getattr(self, name)
            if lo < 1 or hi > 100:
                raise ConfigError(f"RealESRGANConfig.{name} must lie within [1, 100], got {(lo, hi)}")
        self.resize_modes = tuple(self.resize_modes)
        bad = set(self.resize_modes) - set(ops.RESIZE_MODES)
        if bad or not self.resize_modes:
            raise ConfigError(
                f"RealESRGANConfig.resize_modes must be among {ops.RESIZE_MODES}, got {self.resize_modes}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kernel1"], d["kernel2"] = self.kernel1.to_dict(), self.kernel2.to_dict()
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RealESRGANConfig:
        known = {f.name for f in fields(cls)}
        bad = set(d) - known
        if bad:
            raise ConfigError(f"RealESRGANConfig: unknown keys {sorted(bad)}")
        return cls(**d)


#: U(0, 1) draws of a batch's shared choices (resize1 kind/scale/mode, resize2 kind/scale/mode, final order and
#: final resize mode) and of one sample (blur1, noise1, jpeg1, whether blur2, blur2, noise2, final sinc, final
#: JPEG); every choice has a fixed place, used or not, so a seed always gives the same records.
_SHARED_DRAWS = 8
_SAMPLE_DRAWS = KERNEL_DRAWS + 4 + 1 + 1 + KERNEL_DRAWS + 4 + FINAL_DRAWS + 1


class _Draws:
    """Consecutive slices of one sample's uniform draws."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.at = values, 0

    def take(self, n: int) -> list[float]:
        out = self.values[self.at : self.at + n]
        self.at += n
        return out

    def done(self) -> None:
        if self.at != len(self.values):
            raise RuntimeError(f"a sample used {self.at} of its {len(self.values)} draws: _SAMPLE_DRAWS is stale")


class RealESRGANDegradation:
    """Real-ESRGAN's second-order degradation on batches (B, 3, H, W) in [0, 1], any device."""

    def __init__(self, config: RealESRGANConfig | None = None) -> None:
        self.config = config if config is not None else RealESRGANConfig()

    # ---------------------------------------------------------------------------------------------
    # Sampling: every random choice drawn at once on the generator's device, read back in one transfer
    # ---------------------------------------------------------------------------------------------
    def _resize_record(self, probs, scale_range, u) -> dict:
        kind = ("up", "down", "keep")[_pick(u[0], probs)]
        if kind == "up":
            s = _between(u[1], 1.0, scale_range[1])
        elif kind == "down":
            s = _between(u[1], scale_range[0], 1.0)
        else:
            s = 1.0
        mode = self.config.resize_modes[_pick(u[2], [1.0] * len(self.config.resize_modes))]
        return {"kind": kind, "scale": s, "mode": mode}

    @staticmethod
    def _noise_record(gauss_prob, sigma_range, poisson_range, gray_prob, u, seed: int) -> dict:
        if u[0] < gauss_prob:
            rec: dict[str, Any] = {"kind": "gaussian", "sigma": _between(u[1], *sigma_range)}
        else:
            rec = {"kind": "poisson", "scale": _between(u[2], *poisson_range)}
        rec["gray"] = bool(u[3] < gray_prob)
        rec["seed"] = int(seed)
        return rec

    def sample(self, batch_size: int, hr_size: tuple[int, int], generator: torch.Generator | None) -> list[dict]:
        """Draw the parameters of one batch: a list of ``batch_size`` JSON-serialisable records.

        Resize scales/modes and the final order are drawn once and shared by the batch (as Real-ESRGAN does);
        kernels, noise (kind, level, gray, seed) and JPEG qualities per sample. All draws of the batch are made
        as two tensors on the generator's device (``_SHARED_DRAWS + batch_size * _SAMPLE_DRAWS`` uniforms and
        two noise seeds per sample) and read back together: one host synchronisation per batch on a GPU.
        """
        c = self.config
        h, w = (int(v) for v in hr_size)
        dev = generator.device if generator is not None else "cpu"
        u = uniforms(generator, _SHARED_DRAWS + batch_size * _SAMPLE_DRAWS)
        seeds = torch.randint(0, _SEED_MAX, (batch_size * 2,), generator=generator, device=dev)
        # float64 holds every seed below 2^53 exactly, so one tensor (one transfer) carries both
        values = torch.cat([u, seeds.to(torch.float64)]).tolist()
        shared, per = values[:_SHARED_DRAWS], values[_SHARED_DRAWS : _SHARED_DRAWS + batch_size * _SAMPLE_DRAWS]
        seed_values = [int(v) for v in values[_SHARED_DRAWS + batch_size * _SAMPLE_DRAWS :]]
        resize1 = self._resize_record(c.resize_prob, c.resize_range, shared[0:3])
        resize2 = self._resize_record(c.resize_prob2, c.resize_range2, shared[3:6])
        order = FINAL_ORDERS[0] if shared[6] < c.final_order_prob else FINAL_ORDERS[1]
        final_mode = c.resize_modes[_pick(shared[7], [1.0] * len(c.resize_modes))]
        usm = (
            {"weight": c.usm_weight, "threshold": c.usm_threshold, "radius": c.usm_radius} if c.usm_sharpen_gt else None
        )
        records = []
        for i in range(batch_size):
            d = _Draws(per[i * _SAMPLE_DRAWS : (i + 1) * _SAMPLE_DRAWS])
            rec: dict[str, Any] = {"scale": c.scale, "hr_size": [h, w], "usm": usm, "antialias": c.resize_antialias}
            rec["blur1"] = kernel_record_from_uniforms(c.kernel1, d.take(KERNEL_DRAWS))
            rec["resize1"] = dict(resize1)
            rec["noise1"] = self._noise_record(
                c.gaussian_noise_prob, c.noise_range, c.poisson_scale_range, c.gray_noise_prob, d.take(4),
                seed_values[2 * i],
            )  # fmt: skip
            rec["jpeg1"] = _between(d.take(1)[0], *c.jpeg_range)
            blur2, blur2_draws = d.take(1)[0] < c.second_blur_prob, d.take(KERNEL_DRAWS)
            rec["blur2"] = kernel_record_from_uniforms(c.kernel2, blur2_draws) if blur2 else None
            rec["resize2"] = dict(resize2)
            rec["noise2"] = self._noise_record(
                c.gaussian_noise_prob2, c.noise_range2, c.poisson_scale_range2, c.gray_noise_prob2, d.take(4),
                seed_values[2 * i + 1],
            )  # fmt: skip
            rec["final"] = {
                "order": order,
                "mode": final_mode,
                "sinc": final_record_from_uniforms(
                    c.final_sinc_prob, d.take(FINAL_DRAWS), cutoff_range=c.final_sinc_cutoff_range
                ),
                "jpeg": _between(d.take(1)[0], *c.jpeg_range2),
            }
            d.done()
            records.append(rec)
        return records

    # ---------------------------------------------------------------------------------------------
    # Applying records
    # ---------------------------------------------------------------------------------------------
    def _check_hr(self, hr: torch.Tensor) -> None:
        if hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
            raise ImageError(f"hr must be a float (B, 3, H, W) batch, got {tuple(hr.shape)} {hr.dtype}")
        s = self.config.scale
        if hr.shape[-2] % s or hr.shape[-1] % s:
            raise ImageError(f"hr size {tuple(hr.shape[-2:])} is not a multiple of the scale {s}")

    def sharpen(self, hr: torch.Tensor) -> torch.Tensor:
        """Real-ESRGAN's USM-sharpened GT (the target of its L1/perceptual losses and the LR's source)."""
        c = self.config
        return ops.usm_sharpen(hr, c.usm_weight, c.usm_threshold, c.usm_radius)

    def __call__(
        self, hr: torch.Tensor, generator: torch.Generator | None = None, return_sharpened: bool = False
    ) -> tuple[torch.Tensor, list[dict]] | tuple[torch.Tensor, list[dict], torch.Tensor]:
        """Degrade a batch: ``(lr, params)`` (and the sharpened GT when ``return_sharpened``)."""
        self._check_hr(hr)
        params = self.sample(hr.shape[0], tuple(hr.shape[-2:]), generator)
        src = self.sharpen(hr) if self.config.usm_sharpen_gt else hr
        lr = self._run(src, params)
        if return_sharpened:
            return lr, params, src
        return lr, params

    def apply(self, hr: torch.Tensor, params: list[dict]) -> torch.Tensor:
        """Replay the records on ``hr`` (the original, unsharpened GT): the same LR as the call that drew them.

        Records from different batches may be mixed: samples are grouped by their batch-shared choices.
        """
        self._check_hr(hr)
        if len(params) != hr.shape[0]:
            raise ConfigError(f"{len(params)} degradation records for a batch of {hr.shape[0]} images")
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            if list(p.get("hr_size", [])) != list(hr.shape[-2:]) or p.get("scale") != self.config.scale:
                raise ConfigError(f"record {i} was drawn for size {p.get('hr_size')} x{p.get('scale')}, not this batch")
            missing = [k for k in _RECORD_KEYS if k not in p]
            if missing:
                raise ConfigError(f"degradation record {i} lacks the fields {missing}")
            check_record(p, f"degradation record {i}")
            key = repr((p["usm"], p["antialias"], p["resize1"], p["resize2"], p["final"]["order"], p["final"]["mode"]))
            groups.setdefault(key, []).append(i)
        if len(groups) == 1:
            return self._run(self._source(hr, params[0]["usm"]), params)
        out = None
        for idx in groups.values():
            lr = self._run(self._source(hr[idx], params[idx[0]]["usm"]), [params[i] for i in idx])
            if out is None:
                out = lr.new_empty((hr.shape[0], *lr.shape[1:]))
            out[idx] = lr
        return out

    # ---------------------------------------------------------------------------------------------
    @staticmethod
    def _source(hr: torch.Tensor, usm: dict | None) -> torch.Tensor:
        """The pipeline's input: the GT, USM-sharpened with the recorded settings when there are any."""
        return ops.usm_sharpen(hr, usm["weight"], usm["threshold"], usm["radius"]) if usm else hr

    @staticmethod
    def _blur(x: torch.Tensor, records: list[dict | None]) -> torch.Tensor:
        """Per-sample blur; samples whose record is None (or the pulse) are left bit-for-bit untouched."""
        idx = [i for i, r in enumerate(records) if r is not None and r["type"] != "pulse"]
        if not idx:
            return x
        kernels = torch.stack([kernel_from_record(records[i]) for i in idx])
        if len(idx) == len(records):
            return ops.filter2d(x, kernels)
        out = x.clone()
        out[idx] = ops.filter2d(x[idx], kernels)
        return out

    @staticmethod
    def _noise(x: torch.Tensor, records: list[dict]) -> torch.Tensor:
        """Per-sample Gaussian or Poisson noise from each record's seed, then clamp to [0, 1]."""
        out = x.clone()
        for kind in ("gaussian", "poisson"):
            idx = [i for i, r in enumerate(records) if r["kind"] == kind]
            if not idx:
                continue
            gens = [torch.Generator(device=x.device).manual_seed(records[i]["seed"]) for i in idx]
            gray = [records[i]["gray"] for i in idx]
            if kind == "gaussian":
                sigma = [records[i]["sigma"] / 255.0 for i in idx]
                out[idx] = ops.add_gaussian_noise(x[idx], sigma, gray, gens)
            else:
                scale = [records[i]["scale"] for i in idx]
                out[idx] = ops.add_poisson_noise(x[idx], scale, gray, gens)
        return out.clamp_(0, 1)

    def _run(self, src: torch.Tensor, params: list[dict]) -> torch.Tensor:
        """The pipeline on one group of samples sharing the batch-level choices (src already sharpened)."""
        c = self.config
        h, w = src.shape[-2:]
        aa = bool(params[0]["antialias"])
        dev = src.device
        # first order
        out = self._blur(src, [p["blur1"] for p in params])
        r1 = params[0]["resize1"]
        out = ops.resize(out, scale=r1["scale"], mode=r1["mode"], antialias=aa)
        out = self._noise(out, [p["noise1"] for p in params])
        out = ops.jpeg(out, torch.tensor([p["jpeg1"] for p in params], device=dev))
        # second order
        out = self._blur(out, [p["blur2"] for p in params])
        r2 = params[0]["resize2"]
        size2 = (max(1, int(h / c.scale * r2["scale"])), max(1, int(w / c.scale * r2["scale"])))
        out = ops.resize(out, size=size2, mode=r2["mode"], antialias=aa)
        out = self._noise(out, [p["noise2"] for p in params])
        # final: sinc and JPEG in either order
        fin = [p["final"] for p in params]
        lr_size = (h // c.scale, w // c.scale)
        q2 = torch.tensor([f["jpeg"] for f in fin], device=dev)
        if fin[0]["order"] == "resize_sinc_jpeg":
            out = ops.resize(out, size=lr_size, mode=fin[0]["mode"], antialias=aa)
            out = self._blur(out, [f["sinc"] for f in fin])
            out = ops.jpeg(out, q2)
        else:
            out = ops.jpeg(out, q2)
            out = ops.resize(out, size=lr_size, mode=fin[0]["mode"], antialias=aa)
            out = self._blur(out, [f["sinc"] for f in fin])
        return (out.clamp(0, 1) * 255).round() / 255


# Bounds of a replayed record: generous around what the sampler draws (kernels of 7-21 taps padded to 21,
# resize scales 0.15-1.5, noise sigma 1-30, JPEG 30-95, USM radius 50), tight enough that a hand-edited or
# hostile record cannot ask for gigabytes (a blur of 100001 taps, a x1000 resize, a USM radius of 1e6).
MAX_KERNEL_SIZE = 63
RESIZE_SCALE_RANGE = (1 / 64, 4.0)
MAX_USM_RADIUS = 255


def _number(where: str, value, lo: float, hi: float, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: must be {kind}, got {value!r}")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ConfigError(f"{where}: {value!r} is outside [{lo:g}, {hi:g}]")
    return value


def _one_of(where: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")


def _check_kernel(where: str, k, allow_none: bool = False) -> None:
    if k is None and allow_none:
        return
    if not isinstance(k, dict):
        raise ConfigError(f"{where}: expected a kernel record, got {type(k).__name__}")
    _one_of(f"{where}.type", k.get("type"), (*KERNEL_TYPES, "gaussian", "sinc", "pulse"))
    size = _number(f"{where}.size", k.get("size"), 1, MAX_KERNEL_SIZE, integer=True)
    if int(size) % 2 == 0:
        raise ConfigError(f"{where}.size: kernels have an odd size, got {size}")
    if k.get("pad_to") is not None:
        _number(f"{where}.pad_to", k["pad_to"], 1, MAX_KERNEL_SIZE, integer=True)
    if k["type"] == "sinc":
        _number(f"{where}.cutoff", k.get("cutoff"), 1e-3, math.pi)
    elif k["type"] != "pulse":
        for key in ("sigma_x", "sigma_y"):
            _number(f"{where}.{key}", k.get(key), 1e-3, 100.0)
        _number(f"{where}.theta", k.get("theta"), -2 * math.pi, 2 * math.pi)
        if k["type"].startswith(("generalized", "plateau")):
            _number(f"{where}.beta", k.get("beta"), 1e-3, 100.0)


def _check_resize(where: str, r) -> None:
    if not isinstance(r, dict):
        raise ConfigError(f"{where}: expected a resize record, got {type(r).__name__}")
    _one_of(f"{where}.kind", r.get("kind"), ("up", "down", "keep"))
    _number(f"{where}.scale", r.get("scale"), *RESIZE_SCALE_RANGE)
    _one_of(f"{where}.mode", r.get("mode"), ops.RESIZE_MODES)


def _check_noise(where: str, n) -> None:
    if not isinstance(n, dict):
        raise ConfigError(f"{where}: expected a noise record, got {type(n).__name__}")
    _one_of(f"{where}.kind", n.get("kind"), ("gaussian", "poisson"))
    if n["kind"] == "gaussian":
        _number(f"{where}.sigma", n.get("sigma"), 0.0, 255.0)
    else:
        _number(f"{where}.scale", n.get("scale"), 0.0, 100.0)
    _one_of(f"{where}.gray", n.get("gray"), (True, False))
    _number(f"{where}.seed", n.get("seed"), 0, 2**63 - 1, integer=True)


def check_record(p: dict, where: str = "degradation record") -> None:
    """Refuse a replayed record whose values lie outside the bounds above (one line naming the field).

    The sampler's own draws always pass; this guards `apply` against records edited by hand or by an attacker,
    before anything is allocated.
    """
    usm = p.get("usm")
    if usm is not None:
        if not isinstance(usm, dict):
            raise ConfigError(f"{where}.usm: expected null or a record, got {type(usm).__name__}")
        _number(f"{where}.usm.weight", usm.get("weight"), 0.0, 10.0)
        _number(f"{where}.usm.threshold", usm.get("threshold"), 0.0, 255.0)
        _number(f"{where}.usm.radius", usm.get("radius"), 1, MAX_USM_RADIUS, integer=True)
    _one_of(f"{where}.antialias", p.get("antialias"), (True, False))
    _check_kernel(f"{where}.blur1", p.get("blur1"))
    _check_kernel(f"{where}.blur2", p.get("blur2"), allow_none=True)
    for key in ("resize1", "resize2"):
        _check_resize(f"{where}.{key}", p.get(key))
    for key in ("noise1", "noise2"):
        _check_noise(f"{where}.{key}", p.get(key))
    _number(f"{where}.jpeg1", p.get("jpeg1"), 1.0, 100.0)
    final = p.get("final")
    if not isinstance(final, dict):
        raise ConfigError(f"{where}.final: expected a record, got {type(final).__name__}")
    _one_of(f"{where}.final.order", final.get("order"), FINAL_ORDERS)
    _one_of(f"{where}.final.mode", final.get("mode"), ops.RESIZE_MODES)
    _check_kernel(f"{where}.final.sinc", final.get("sinc"))
    _number(f"{where}.final.jpeg", final.get("jpeg"), 1.0, 100.0)


class DegradationPool:
    """Real-ESRGAN's training pool: LR/GT pairs are shuffled across batches (its `queue_size`).

    The first ``size / batch`` calls fill the pool and return their input; afterwards each call shuffles the
    pool, returns its first ``batch`` pairs and puts the incoming pairs in their place.
    """

    def __init__(self, size: int, batch: int) -> None:
        if batch < 1 or size < 1 or size % batch:
            raise ConfigError(f"pool size {size} must be a positive multiple of the batch size {batch}")
        self.size, self.batch = int(size), int(batch)
        self.lr: torch.Tensor | None = None
        self.gt: torch.Tensor | None = None
        self.filled = 0

    def __call__(
        self, lr: torch.Tensor, gt: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = lr.shape[0]
        if b != self.batch or gt.shape[0] != b:
            raise ConfigError(f"pool expects batches of {self.batch} LR/GT pairs, got {b} and {gt.shape[0]}")
        if self.lr is None:
            self.lr = lr.new_empty((self.size, *lr.shape[1:]))
            self.gt = gt.new_empty((self.size, *gt.shape[1:]))
        if self.filled < self.size:
            self.lr[self.filled : self.filled + b] = lr
            self.gt[self.filled : self.filled + b] = gt
            self.filled += b
            return lr, gt
        perm = torch.randperm(
            self.size, generator=generator, device=generator.device if generator is not None else "cpu"
        )
        perm = perm.to(self.lr.device)
        self.lr, self.gt = self.lr[perm], self.gt[perm]
        out_lr, out_gt = self.lr[:b].clone(), self.gt[:b].clone()
        self.lr[:b], self.gt[:b] = lr, gt
        return out_lr, out_gt
