"""The representation figures: swap (Fig. 12), mean dimensions against one factor (A.6), OOD embedding
(A.7) and severity across levels (Fig. 5 analogue).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from savl.analysis.embed import embed, knn_purity
from savl.analysis.encoders import encoder_device, inference, pooled_mean
from savl.analysis.inputs import _generator, as_image_list, degrade, downsample
from savl.errors import DataError


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
