"""What the representation chapters state about shipped zoo models: seed statistics of their cards, the measured
Fig. 12 criterion, the A.6 monotonicity and subspace overlap, and the research sweep's rows.

* Seeds: a family of the zoo (``savl.zoo.seed_cards``) is one model trained at several seeds; a chapter reports
  the mean and the sample standard deviation (ddof 1) over the seeds, and differences between families with
  their standard error, never one seed's number as the family's.
* Fig. 12 (paper App. A.5.2): the hybrid (content of photo A decoded with the code of photo B's degraded LR) must
  keep A's content and carry *no texture of B*. Measured here as the Pearson correlation of the hybrid's high
  frequencies (luma minus its Gaussian blur) with those of B's clean bicubic LR, beside the same correlation with
  A's: near 0 for B and high for A is the paper's claim.
* A.6: a top-variance dimension of the pooled posterior mean "moves monotonically" with a swept degradation when
  |Spearman| is high *and* it moves by more than the content does: the range over the sweep is given in units
  of that dimension's spread across photos, so that a flat line cannot pass as support.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from savl.errors import DataError

#: The probe keys of a representation card (savl.zoo.held_out_probe_metrics) that the tables report.
PROBE_KEYS = ("t1_content_probe", "t1_noise_probe", "t5_type", "t5_blur", "t5_noise")

#: The paper's Table 1 probe accuracies (SVSR) for SAVL and its two representation ablations (Sec. 4.4).
PAPER_TABLE1 = {
    "SAVL": {"t1_content_probe": 0.4997, "t1_noise_probe": 0.9480},
    "deterministic": {"t1_content_probe": 0.9404, "t1_noise_probe": 0.8148},
    "deterministic + CLUB": {"t1_content_probe": 0.3644, "t1_noise_probe": 0.2000},
}
#: The paper's Table 5 clustering accuracies, all four columns (its CLUB column included).
PAPER_TABLE5_ALL = {
    "SAVL": {"t5_type": 0.7244, "t5_blur": 0.6120, "t5_noise": 0.5760},
    "MANet": {"t5_type": 0.4366, "t5_blur": 0.3732, "t5_noise": 0.3778},
    "deterministic": {"t5_type": 0.4802, "t5_blur": 0.3934, "t5_noise": 0.5136},
    "deterministic + CLUB": {"t5_type": 0.4168, "t5_blur": 0.3248, "t5_noise": 0.3764},
}
#: The paper's Table 2 PSNR (dB) of the full model and the two DSCA ablations on its four test sets.
PAPER_TABLE2_PSNR = {
    "full": {"DIV2K": 20.03, "RealSR": 25.80, "DRealSR": 28.27, "SVSR": 25.13},
    "without channel modulation": {"DIV2K": 19.89, "RealSR": 25.13, "DRealSR": 27.78, "SVSR": 24.70},
    "without spatial modulation": {"DIV2K": 20.01, "RealSR": 25.69, "DRealSR": 28.24, "SVSR": 25.09},
}


# ----------------------------------------------------------------------------------------------- seeds
def card_node(card: dict, path: Sequence[str]):
    """What is at ``path`` (keys from the card's top) of one card; DataError naming the card otherwise."""
    node = card
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise DataError(f"model card {card.get('name', '?')!r} has no {'/'.join(path)}")
        node = node[key]
    return node


def card_value(card: dict, path: Sequence[str]) -> float:
    """The number at ``path`` of one card (see card_node)."""
    return float(card_node(card, path))


def seed_summary(values: Iterable[float]) -> dict:
    """mean, sd (ddof 1; 0 for one value), n, min, max and the values of one quantity over seeds."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise DataError("no seeds to summarise")
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "n": int(v.size),
        "min": float(v.min()),
        "max": float(v.max()),
        "values": v.tolist(),
    }


def family_summary(cards: Sequence[dict], section: Sequence[str], keys: Sequence[str]) -> dict:
    """{key: seed_summary} over the cards of one family, reading ``card[*section][key]``."""
    return {k: seed_summary(card_value(c, [*section, k]) for c in cards) for k in keys}


def difference(a: dict, b: dict) -> dict:
    """Mean of a minus mean of b, with the standard error of that difference (Welch: sqrt(sa^2/na + sb^2/nb))
    and ``resolved`` = |difference| larger than twice its standard error (False when either has one seed)."""
    d = a["mean"] - b["mean"]
    se = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"])
    return {"diff": d, "se": se, "resolved": bool(a["n"] > 1 and b["n"] > 1 and abs(d) > 2 * se)}


def mean_sd(s: dict, scale: float = 100.0, digits: int = 1) -> str:
    """'61.2 ± 1.3' (scaled) for a seed_summary; just the value for one seed (a row or sentence says how many)."""
    if s["n"] == 1:
        return f"{scale * s['mean']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['sd']:.{digits}f}"


def diff_text(d: dict, a: dict, b: dict, scale: float = 100.0, digits: int = 1, unit: str = " points") -> str:
    """A `difference` in words: '+2.5 ± 0.8 points', '..., not resolved' when |d| <= 2 se, and no error bar
    (and never resolved) when either side has a single seed."""
    value = f"{scale * d['diff']:+.{digits}f}{unit}"
    if a["n"] < 2 or b["n"] < 2:
        return value + " (one seed on a side: no error bar, not resolved)"
    return f"{scale * d['diff']:+.{digits}f} ± {scale * d['se']:.{digits}f}{unit}" + (
        "" if d["resolved"] else ", not resolved"
    )


def seeds(n: int) -> str:
    """'1 seed', '3 seeds'."""
    return f"{n} seed" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------------------------- Fig. 12 swap
def high_pass(img: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """The high frequencies of an image's luma: luma minus its Gaussian blur (std ``sigma`` pixels), (h, w)."""
    import kornia

    x = torch.as_tensor(img).float()
    x = x[None] if x.dim() == 3 else x
    y = x.mean(1, keepdim=True)
    k = 2 * math.ceil(3 * sigma) + 1
    low = kornia.filters.gaussian_blur2d(y, (k, k), (sigma, sigma), border_type="reflect")
    return (y - low)[0, 0]


def hf_correlation(a: torch.Tensor, b: torch.Tensor, border: int = 2) -> float:
    """Pearson correlation of the high frequencies of two images of one size (a ``border`` left out)."""
    ha, hb = high_pass(a), high_pass(b)
    if ha.shape != hb.shape:
        raise DataError(f"hf_correlation needs images of one size, got {tuple(ha.shape)} and {tuple(hb.shape)}")
    if border:
        ha, hb = ha[border:-border, border:-border], hb[border:-border, border:-border]
    x, y = ha.flatten().double(), hb.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    return float(x @ y) / den if den > 0 else 0.0


def swap_texture(model, content_hr: torch.Tensor, source_hr: torch.Tensor, source_lr: torch.Tensor,
                 scale: int = 4) -> dict:
    """Fig. 12 measured: decode the clean HR of A (``content_hr``) with the code of B's degraded LR
    (``source_lr``, B's clean HR is ``source_hr``). Returns the ``hybrid`` LR, ``hf_corr_content`` (its high
    frequencies against A's bicubic LR) and ``hf_corr_source`` (against B's bicubic LR: B's texture leaking
    through the code), and the same two correlations of the degraded source itself as a reference."""
    from savl.analysis.inputs import downsample

    a = torch.as_tensor(content_hr).float()
    b = torch.as_tensor(source_hr).float()
    a, b = (a[None] if a.dim() == 3 else a), (b[None] if b.dim() == 3 else b)
    lr_b = torch.as_tensor(source_lr).float()
    lr_b = lr_b[None] if lr_b.dim() == 3 else lr_b
    if a.shape != b.shape:
        raise DataError(f"swap_texture needs content and source crops of one size, got {tuple(a.shape)}, "
                        f"{tuple(b.shape)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        hybrid = model.swap(a.to(device), lr_b.to(device)).cpu().clamp(0, 1)
    model.train(was_training)
    clean_a, clean_b = downsample(a, scale).clamp(0, 1), downsample(b, scale).clamp(0, 1)
    return {
        "hybrid": hybrid[0],
        "hf_corr_content": hf_correlation(hybrid, clean_a),
        "hf_corr_source": hf_correlation(hybrid, clean_b),
        "source_hf_corr_source": hf_correlation(lr_b, clean_b),
        "source_hf_corr_content": hf_correlation(lr_b, clean_a),
    }


# ------------------------------------------------------------------------------------------------- A.6
def monotonicity(sweep: dict, content_sd: np.ndarray | None = None) -> dict:
    """A.6 for one ``savl.analysis.mean_dimension_sweep`` result: per top dimension its |Spearman| with the swept
    value, its range (max - min) over the sweep, and, given ``content_sd`` (per-dimension spread of the pooled
    code across photos, shape (m,)), that range in units of it. ``best`` is the top dimension with the largest
    |Spearman| (ties: the larger range)."""
    from scipy import stats

    vals = np.asarray(sweep["values"], dtype=np.float64)
    top = np.asarray(sweep["top_values"], dtype=np.float64)
    if len(vals) < 3:
        raise DataError("monotonicity needs at least 3 swept values")
    rho, rng = [], []
    for j in range(top.shape[1]):
        col = top[:, j]
        r = stats.spearmanr(vals, col).statistic if np.ptp(col) > 0 else 0.0
        rho.append(abs(float(r)))
        rng.append(float(np.ptp(col)))
    rho, rng = np.array(rho), np.array(rng)
    out = {"dims": np.asarray(sweep["top_dims"]), "abs_spearman": rho, "range": rng}
    if content_sd is not None:
        sd = np.asarray(content_sd, dtype=np.float64)[out["dims"]]
        out["range_over_content_sd"] = rng / np.maximum(sd, 1e-12)
    best = int(np.lexsort((-rng, -np.round(rho, 6)))[0])  # ties in |rho| (float noise at 1) go by range
    out["best"] = best
    out["n_monotone"] = int((rho >= 0.9).sum())
    return out


def subspace_overlap(sweep_a: dict, sweep_b: dict) -> float:
    """Share of dimensions the two sweeps' top sets have in common (0: disjoint subspaces, 1: the same)."""
    a, b = set(np.asarray(sweep_a["top_dims"]).tolist()), set(np.asarray(sweep_b["top_dims"]).tolist())
    return len(a & b) / max(1, min(len(a), len(b)))


def pooled_codes(encoder, images: Sequence[torch.Tensor], factor: str, value: float, seed: int = 0,
                 scale: int = 4) -> np.ndarray:
    """Pooled posterior means (n, m) of HR images degraded alike (``savl.analysis.inputs.degrade``)."""
    from savl.analysis.encoders import encoder_device, inference, pooled_mean
    from savl.analysis.inputs import _generator, degrade

    device = encoder_device(encoder)
    rows = []
    with inference(encoder) as enc:
        for img in images:
            hr = torch.as_tensor(img).float()
            hr = hr[None] if hr.dim() == 3 else hr
            lr = degrade(hr, factor, float(value), _generator(seed), scale)
            rows.append(pooled_mean(enc(lr.to(device)))[0].cpu().numpy())
    return np.stack(rows).astype(np.float64)


def grid_codes(encoder, images: Sequence[torch.Tensor], noise_levels: Sequence[float], blur_sigmas: Sequence[float],
               crop: int = 64, crops_per_image: int = 4, seed: int = 0, scale: int = 4) -> dict:
    """Pooled codes of HR crops under every (blur, noise) pair of a grid, for a t-SNE coloured by either factor
    (the paper's Fig. 6/8 show codes grouping by degradation). From each image, `crops_per_image` random
    `crop`-pixel crops (seeded); each crop is blurred by a Gaussian of std `sigma` HR pixels (none at 0),
    bicubic-downsampled by `scale` and given Gaussian noise of std `level` (savl.analysis.inputs), then encoded
    and averaged over pixels. The same crops and noise draws for every encoder at one seed.

    Returns {"codes": (n, m), "noise": (n,), "blur": (n,), "photo": (n,)} with integer labels (indices into
    `noise_levels`, `blur_sigmas` and `images`), n = images x crops x blurs x levels."""
    from savl.analysis.encoders import encoder_device, inference, pooled_mean
    from savl.analysis.inputs import _generator, add_noise, degrade

    g = _generator(seed)
    batches = []
    for p, img in enumerate(images):
        hr = torch.as_tensor(img).float()[:3]
        h, w = hr.shape[-2:]
        if min(h, w) < crop:
            raise DataError(f"grid_codes: image {p} is {h} x {w}, smaller than the {crop}-pixel crop")
        tops = torch.randint(0, h - crop + 1, (crops_per_image,), generator=g).tolist()
        lefts = torch.randint(0, w - crop + 1, (crops_per_image,), generator=g).tolist()
        batches.append((p, torch.stack([hr[:, t : t + crop, left : left + crop] for t, left in zip(tops, lefts)])))
    device = encoder_device(encoder)
    codes, noise, blur, photo = [], [], [], []
    with inference(encoder) as enc:
        for p, hr in batches:
            for b, sigma in enumerate(blur_sigmas):
                blurred = degrade(hr, "blur", float(sigma), g, scale)
                for n, level in enumerate(noise_levels):
                    lr = add_noise(blurred, float(level), g)
                    codes.append(pooled_mean(enc(lr.to(device))).cpu().numpy())
                    noise += [n] * len(hr)
                    blur += [b] * len(hr)
                    photo += [p] * len(hr)
    return {
        "codes": np.concatenate(codes).astype(np.float64),
        "noise": np.asarray(noise),
        "blur": np.asarray(blur),
        "photo": np.asarray(photo),
    }


# -------------------------------------------------------------------------------------- research sweep
def read_jsonl(path: str | Path) -> list[dict] | None:
    """The rows of a JSON-lines results file, or None when the file does not exist; one-line DataError naming
    the file and line when a line is not JSON."""
    path = Path(path)
    if not path.is_file():
        return None
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{path}:{i}: not a JSON line") from None
    return rows
