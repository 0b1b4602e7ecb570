"""The paper's representation experiments as functions of any encoder (DESIGN §5.1, §4 chapter 08).

An *encoder* here is anything that maps an LR batch (B, 3, h, w) in [0, 1] to a posterior with a
``.mean`` (B, m, h', w') (and ``.variance`` / ``.severity()`` where a figure needs them): a callable, or
an object with ``.encode`` (SAVL and its ablations, later baselines). Only the posterior mean is used
as the code, as in the paper. Modules are switched to eval mode for the call and restored afterwards;
every random draw goes through a generator seeded from ``seed``.

- :func:`spatial_clustering`: Table 5 (patchwise degradations, per-pixel codes, k-means, matching).
- :func:`decoupling` and :func:`format_table1`: Table 1 (HSIC, MINE, linear probes for content and
  degradation) on the embedded photos instead of SVSR.
- :func:`swap` (Fig. 12), :func:`mean_dimension_sweep` (A.6), :func:`ood_embedding` (A.7),
  :func:`severity_across_levels` (Fig. 5 analogue).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from savl.analysis._arrays import one_hot
from savl.analysis.embed import embed, knn_purity
from savl.analysis.hsic import hsic_test
from savl.analysis.mine import mine
from savl.analysis.probes import cluster_labels, linear_probe
from savl.errors import ConfigError, DataError

#: The paper's Table 1 linear-probe accuracies for SAVL on SVSR (shown as a labelled reference).
PAPER_TABLE1_SAVL = {"content_probe": 0.4997, "degradation_probe": 0.9480}
#: The paper's Table 5 clustering accuracies (type / blur / noise settings).
PAPER_TABLE5 = {
    "SAVL": {"type": 0.7244, "blur": 0.6120, "noise": 0.5760},
    "MANet": {"type": 0.4366, "blur": 0.3732, "noise": 0.3778},
    "deterministic": {"type": 0.4802, "blur": 0.3934, "noise": 0.5136},
}


# --------------------------------------------------------------------------------------------
# Plumbing shared by the protocols


def encode_fn(encoder) -> Callable[[torch.Tensor], object]:
    """The ``lr -> posterior`` function of an encoder object (``.encode``) or a plain callable."""
    if hasattr(encoder, "encode") and callable(encoder.encode):
        return encoder.encode
    if callable(encoder):
        return encoder
    raise ConfigError(f"encoder must be callable or have .encode, got {type(encoder).__name__}")


def encoder_device(encoder) -> torch.device:
    """Where the encoder's parameters live (CPU for parameter-free callables)."""
    params = getattr(encoder, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def inference(encoder):
    """No gradients, eval mode for modules; the previous training flag is restored on exit."""
    was_training = getattr(encoder, "training", None)
    if isinstance(encoder, torch.nn.Module):
        encoder.eval()
    try:
        with torch.no_grad():
            yield encode_fn(encoder)
    finally:
        if isinstance(encoder, torch.nn.Module) and was_training:
            encoder.train()


def as_image_list(images) -> list[tuple[str, torch.Tensor]]:
    """Normalise images to ``[(name, (3, H, W) float tensor)]``.

    Accepts a (3, H, W) or (B, 3, H, W) tensor, a list of tensors, or ``savl.data.sample_images()``.
    """
    if isinstance(images, torch.Tensor):
        images = [images] if images.dim() == 3 else list(images)
    out = []
    for i, item in enumerate(images):
        name, img = item if isinstance(item, tuple) else (f"image{i}", item)
        img = torch.as_tensor(img)
        if img.dim() != 3 or img.shape[0] != 3:
            raise DataError(f"{name}: expected an RGB image of shape (3, H, W), got {tuple(img.shape)}")
        out.append((str(name), img.float()))
    if not out:
        raise DataError("no images given")
    return out


def center_crop(img: torch.Tensor, size: int | None) -> torch.Tensor:
    """Central ``size`` x ``size`` crop of a (..., H, W) tensor; ``None`` keeps the image."""
    if size is None:
        return img
    h, w = img.shape[-2:]
    if size > min(h, w):
        raise DataError(f"crop {size} is larger than the image ({h}x{w})")
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top : top + size, left : left + size]


def downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The content operator D: MATLAB-compatible bicubic by 1/scale (§3.1)."""
    from savl.imresize import imresize

    return imresize(hr, scale=1.0 / scale)


def add_noise(lr: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Per-channel Gaussian noise of std ``sigma`` (on [0, 1]; none at 0), clamped to [0, 1]."""
    from savl.degrade.ops import add_gaussian_noise

    if sigma > 0:
        b = lr.shape[0]
        s = torch.full((b,), float(sigma), device=lr.device)
        lr = add_gaussian_noise(lr, s, torch.zeros(b, dtype=torch.bool, device=lr.device), generator)
    return lr.clamp(0, 1)


def degrade(hr: torch.Tensor, factor: str, value: float, generator: torch.Generator, scale: int = 4):
    """One controlled degradation of an HR batch (B, 3, H, W) -> LR in [0, 1].

    ``noise``: bicubic down, then Gaussian noise of std ``value`` (on [0, 1]); ``blur``: Gaussian blur
    of std ``value`` HR pixels (none at 0), then bicubic down.
    """
    if factor == "noise":
        return add_noise(downsample(hr, scale), value, generator)
    if factor == "blur":
        import kornia

        if value > 0:
            k = 2 * math.ceil(3 * value) + 1
            hr = kornia.filters.gaussian_blur2d(hr, (k, k), (float(value), float(value)), border_type="reflect")
        return downsample(hr, scale).clamp(0, 1)
    raise ConfigError(f"unknown degradation factor {factor!r} (expected 'noise' or 'blur')")


def pooled_mean(posterior) -> torch.Tensor:
    """Global average of the posterior mean over pixels: (B, m, h, w) -> (B, m)."""
    mean = posterior.mean
    if mean.dim() != 4:
        raise DataError(f"posterior mean must be (B, m, h, w), got {tuple(mean.shape)}")
    return mean.float().mean(dim=(2, 3))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


# --------------------------------------------------------------------------------------------
# Table 5: clustering of spatially varying degradations


def spatial_clustering(
    encoder,
    images,
    setting: str,
    seed: int = 0,
    patch: int | None = None,
    crop: int | None = None,
    fit_max: int | None = 20000,
) -> dict:
    """Table 5: patchwise degradations, per-pixel codes, k-means, accuracy after Hungarian matching.

    Each HR image (centre-cropped to ``crop`` if given) is cut into patches that receive random
    degradations of ``setting`` ("type" | "blur" | "noise") by ``savl.degrade.spatial.patchwise``;
    the posterior mean at every LR pixel is one sample; k = number of distinct labels; k-means is fit
    on at most ``fit_max`` random pixels (all pixels are then assigned). Returns ``accuracy``,
    ``chance`` (majority-label fraction, what a constant code scores), per-image ``label_map`` and
    ``predicted_map`` (lists of (h, w) int arrays, predicted ids renamed to the matched labels),
    ``lr`` (list of (3, h, w) tensors), ``names`` and ``params``.
    """
    from savl.degrade.spatial import patchwise

    imgs = as_image_list(images)
    device = encoder_device(encoder)
    feats, labs, shapes, lrs, params_all = [], [], [], [], []
    with inference(encoder) as enc:
        for i, (_name, hr) in enumerate(imgs):
            g = _generator(seed * 1000 + i)
            kwargs = {} if patch is None else {"patch": patch}
            res = patchwise(center_crop(hr, crop)[None], setting, g, **kwargs)
            lr, label_map, params = res.lr, res.labels, res.params
            mean = enc(lr.to(device)).mean.float()
            h, w = label_map.shape[-2:]
            if mean.shape[-2:] != (h, w):
                # Codes at another resolution than the labels: bring them onto the label grid.
                mean = F.interpolate(mean, size=(h, w), mode="bilinear", align_corners=False)
            feats.append(mean[0].permute(1, 2, 0).reshape(h * w, -1).cpu().numpy())
            labs.append(label_map[0].reshape(-1).cpu().numpy().astype(np.int64))
            shapes.append((h, w))
            lrs.append(lr[0].cpu())
            params_all.append(params)
    x, y = np.concatenate(feats), np.concatenate(labs)
    pred = cluster_labels(x, y, seed=seed, fit_max=fit_max)
    _, counts = np.unique(y, return_counts=True)
    label_maps, pred_maps, start = [], [], 0
    for h, w in shapes:
        label_maps.append(y[start : start + h * w].reshape(h, w))
        pred_maps.append(pred[start : start + h * w].reshape(h, w))
        start += h * w
    return {
        "setting": setting,
        "accuracy": float(np.mean(pred == y)),
        "chance": float(counts.max() / counts.sum()),
        "n_clusters": int(counts.size),
        "n_pixels": int(y.size),
        "label_map": label_maps,
        "predicted_map": pred_maps,
        "lr": lrs,
        "names": [n for n, _ in imgs],
        "params": params_all,
    }


# --------------------------------------------------------------------------------------------
# Table 1: decoupling of content and degradation


def _factor_scores(codes: np.ndarray, labels: np.ndarray, seed: int, mine_steps: int, folds: int) -> dict:
    test = hsic_test(codes, one_hot(labels))
    k = int(np.unique(labels).size)
    return {
        "hsic": test.statistic,
        "hsic_p": test.p_value,
        "mine": float(mine(codes, one_hot(labels), steps=mine_steps, batch=128, seed=seed)),
        "mine_max": math.log(k),  # I(code; label) <= H(label) = log k for balanced labels
        "probe": linear_probe(codes, labels, folds=folds, seed=seed),
        "chance": 1.0 / k,
    }


def decoupling(
    encoder,
    images,
    levels: Sequence[float],
    seed: int = 0,
    crop: int = 64,
    crops_per_image: int = 8,
    scale: int = 4,
    mine_steps: int = 500,
    folds: int = 5,
) -> dict:
    """Table 1 on the embedded photos: content = which photo, degradation = noise level.

    For every image, ``crops_per_image`` random HR crops of ``crop`` pixels are bicubic-downsampled
    by ``scale`` and given Gaussian noise at each std in ``levels`` (on [0, 1]); the code of a crop
    is its pixel-averaged posterior mean. For both factors the result holds HSIC (with its gamma
    p-value), MINE (nats; at most log k), and the ``folds``-fold linear-probe accuracy, plus chance.
    """
    imgs = as_image_list(images)
    if len(imgs) < 2 or len(levels) < 2:
        raise ConfigError("decoupling needs at least 2 images and 2 noise levels")
    if crops_per_image < folds:
        raise ConfigError(f"crops_per_image ({crops_per_image}) must be at least folds ({folds})")
    device = encoder_device(encoder)
    g = _generator(seed)
    codes, scene, noise = [], [], []
    with inference(encoder) as enc:
        for i, (_name, hr) in enumerate(imgs):
            h, w = hr.shape[-2:]
            if crop > min(h, w):
                raise DataError(f"{_name}: crop {crop} is larger than the image ({h}x{w})")
            tops = torch.randint(0, h - crop + 1, (crops_per_image,), generator=g).tolist()
            lefts = torch.randint(0, w - crop + 1, (crops_per_image,), generator=g).tolist()
            batch = torch.stack([hr[:, t : t + crop, s : s + crop] for t, s in zip(tops, lefts)])
            clean = downsample(batch, scale)  # once per image; only the noise differs between levels
            lrs = [add_noise(clean, float(level), g) for level in levels]
            # One encoder call per image (all levels): larger batches run faster on CPU.
            codes.append(pooled_mean(enc(torch.cat(lrs).to(device))).cpu().numpy())
            scene += [i] * (crops_per_image * len(levels))
            noise += [j for j in range(len(levels)) for _ in range(crops_per_image)]
    x = np.concatenate(codes).astype(np.float64)
    scene_a, noise_a = np.array(scene), np.array(noise)
    return {
        "codes": x,
        "scene": scene_a,
        "noise": noise_a,
        "levels": [float(v) for v in levels],
        "names": [n for n, _ in imgs],
        "content": _factor_scores(x, scene_a, seed, mine_steps, folds),
        "degradation": _factor_scores(x, noise_a, seed, mine_steps, folds),
    }


def format_table1(results, name: str = "this encoder", reference: bool = True) -> str:
    """Table 1's layout: one row per representation; HSIC / MINE / probe for content and degradation.

    ``results`` is one :func:`decoupling` result (its row called ``name``) or a mapping
    ``{row name: result}``. With
    ``reference`` the paper's SAVL probe accuracies on SVSR are added as a labelled row (the paper's
    HSIC/MINE values are not reproduced here, shown as "-").
    """
    if isinstance(results, dict) and "content" in results:
        results = {name: results}
    head = (
        f"{'representation':<34}| {'content (scene)':^32} | {'degradation (noise level)':^32}\n"
        f"{'':<34}| {'HSIC':>9} {'MINE nats':>10} {'probe':>9}  | {'HSIC':>9} {'MINE nats':>10} {'probe':>9}"
    )
    lines = [head, "-" * len(head.splitlines()[1])]

    def cells(r: dict | None, probe: float | None) -> str:
        if r is None:
            return f"{'-':>9} {'-':>10} {100 * probe:>8.2f}%"
        return f"{r['hsic']:>9.4f} {r['mine']:>10.3f} {100 * r['probe']:>8.2f}%"

    for name, r in results.items():
        lines.append(f"{name:<34}| {cells(r['content'], None)}  | {cells(r['degradation'], None)}")
    first = next(iter(results.values()))
    lines.append(
        f"{'chance (1 / classes)':<34}| {cells(None, first['content']['chance'])}  | "
        f"{cells(None, first['degradation']['chance'])}"
    )
    if reference:
        ref = PAPER_TABLE1_SAVL
        lines.append(
            f"{'[paper] SAVL on SVSR (reference)':<34}| {cells(None, ref['content_probe'])}  | "
            f"{cells(None, ref['degradation_probe'])}"
        )
    lines.append("Lower content and higher degradation scores mean a better-decoupled code.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figures: swap (Fig. 12), mean dimensions (A.6), OOD (A.7), severity across levels (Fig. 5)


def _batch(img: torch.Tensor) -> torch.Tensor:
    img = torch.as_tensor(img).float()
    if img.dim() == 3:
        img = img[None]
    if img.dim() != 4 or img.shape[1] != 3:
        raise DataError(f"expected an RGB image (3, H, W) or (1, 3, H, W), got {tuple(img.shape)}")
    return img


def swap(model, content_image: torch.Tensor, degradation_image: torch.Tensor, scale: int = 4) -> dict:
    """Fig. 12: re-degrade the clean HR ``content_image`` with the code of the LR ``degradation_image``.

    Calls ``model.swap(content_hr, degradation_lr)``. To show that the swapped image carries the
    degradation, the pooled codes are compared: ``code_distance_to_degradation`` (swapped vs the
    degradation source) against ``code_distance_to_clean`` (swapped vs the bicubic LR of the content).
    """
    content, source = _batch(content_image), _batch(degradation_image)
    device = encoder_device(model)
    content, source = content.to(device), source.to(device)
    with inference(model) as enc:
        swapped = model.swap(content, source)
        clean = downsample(content, scale).clamp(0, 1)
        c_sw, c_src, c_clean = (pooled_mean(enc(t)) for t in (swapped, source, clean))
    return {
        "content": content[0].cpu(),
        "degradation": source[0].cpu(),
        "clean_lr": clean[0].cpu(),
        "swapped": swapped[0].cpu(),
        "code_distance_to_degradation": float((c_sw - c_src).norm()),
        "code_distance_to_clean": float((c_sw - c_clean).norm()),
    }


def mean_dimension_sweep(
    encoder,
    image: torch.Tensor,
    factor: str,
    values: Sequence[float],
    seed: int = 0,
    top: int = 8,
    scale: int = 4,
) -> dict:
    """A.6: the pooled posterior mean as one factor ("noise" | "blur") varies over ``values``.

    Returns the pooled codes (V, m), the ``top`` dimensions with the largest variance across values,
    their values (V, top), and each top dimension's Pearson correlation with the factor.
    """
    hr = _batch(image)
    device = encoder_device(encoder)
    rows = []
    with inference(encoder) as enc:
        for v in values:
            # The same noise draw for every value: only the factor changes between rows.
            lr = degrade(hr, factor, float(v), _generator(seed), scale)
            rows.append(pooled_mean(enc(lr.to(device)))[0].cpu().numpy())
    pooled = np.stack(rows).astype(np.float64)
    top = min(top, pooled.shape[1])
    order = np.argsort(-pooled.var(axis=0), kind="stable")[:top]
    vals = np.asarray(values, dtype=np.float64)
    corr = []
    for d in order:
        col = pooled[:, d]
        ok = col.std() > 0 and vals.std() > 0
        corr.append(float(np.corrcoef(vals, col)[0, 1]) if ok else 0.0)
    return {
        "factor": factor,
        "values": vals,
        "pooled": pooled,
        "top_dims": order,
        "top_values": pooled[:, order],
        "correlation": np.array(corr),
    }


def ood_embedding(
    encoder,
    images,
    seed: int = 0,
    crop: int = 64,
    crops_per_image: int = 4,
    scale: int = 4,
    noise: float = 20 / 255,
    blur: float = 2.0,
    motion_length: float = 15.0,
    haze_beta: float = 1.5,
) -> dict:
    """A.7: embed codes of in-distribution (clean, noise, blur) and OOD (motion blur, haze) crops.

    Motion blur (``motion_length`` HR pixels at a random angle per image) and haze (``haze_beta`` over
    the vertical depth ramp) come from ``savl.degrade.spatial`` and are applied on the HR crop before
    bicubic downsampling. Returns the t-SNE ``embedding`` (n, 2) of the pooled codes, integer
    ``group`` ids with ``group_names``, the codes, and the 5-NN purity of the groups in the plane.
    """
    from savl.degrade.spatial import haze, motion_blur

    imgs = as_image_list(images)
    device = encoder_device(encoder)
    g = _generator(seed)
    names = ["clean", "noise", "blur", "motion blur (OOD)", "haze (OOD)"]
    codes, groups = [], []
    with inference(encoder) as enc:
        for _name, hr in imgs:
            h, w = hr.shape[-2:]
            if crop > min(h, w):
                raise DataError(f"{_name}: crop {crop} is larger than the image ({h}x{w})")
            tops = torch.randint(0, h - crop + 1, (crops_per_image,), generator=g).tolist()
            lefts = torch.randint(0, w - crop + 1, (crops_per_image,), generator=g).tolist()
            batch = torch.stack([hr[:, t : t + crop, s : s + crop] for t, s in zip(tops, lefts)])
            angle = float(torch.rand((), generator=g)) * math.pi
            lrs = [
                degrade(batch, "noise", 0.0, g, scale),
                degrade(batch, "noise", noise, g, scale),
                degrade(batch, "blur", blur, g, scale),
                downsample(motion_blur(batch, motion_length, angle), scale).clamp(0, 1),
                downsample(haze(batch, haze_beta), scale).clamp(0, 1),
            ]
            for k, lr in enumerate(lrs):
                codes.append(pooled_mean(enc(lr.to(device))).cpu().numpy())
                groups += [k] * crops_per_image
    x = np.concatenate(codes).astype(np.float64)
    group = np.array(groups)
    emb = embed(x, seed=seed)
    return {
        "embedding": emb,
        "group": group,
        "group_names": names,
        "codes": x,
        "purity": knn_purity(emb, group, k=5),
    }


def severity_across_levels(
    encoder,
    image: torch.Tensor,
    levels: Sequence[float],
    factor: str = "noise",
    seed: int = 0,
    scale: int = 4,
) -> dict:
    """Fig. 5 analogue: severity maps (Eq. 15) of one image degraded at each level of ``factor``.

    Eq. 15 normalises each map image-wise (its mean is 1 by construction), so the level-to-level
    trend is reported by ``mean_variance``, the un-normalised mean posterior variance.
    """
    hr = _batch(image)
    device = encoder_device(encoder)
    lrs, maps, mean_var = [], [], []
    with inference(encoder) as enc:
        for v in levels:
            lr = degrade(hr, factor, float(v), _generator(seed), scale)
            post = enc(lr.to(device))
            maps.append(post.severity()[0, 0].float().cpu().numpy())
            mean_var.append(float(post.variance.float().mean()))
            lrs.append(lr[0].cpu())
    return {
        "factor": factor,
        "levels": [float(v) for v in levels],
        "lr": lrs,
        "severity": maps,
        "mean_variance": mean_var,
    }
