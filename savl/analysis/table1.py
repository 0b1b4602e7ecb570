"""Table 1: how well a code separates content from degradation (HSIC, MINE and linear probes)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from savl.analysis._arrays import one_hot
from savl.analysis.encoders import encoder_device, inference, pooled_mean
from savl.analysis.hsic import hsic_test
from savl.analysis.inputs import _generator, add_noise, as_image_list, downsample
from savl.analysis.mine import mine
from savl.analysis.probes import linear_probe
from savl.errors import ConfigError, DataError

#: The paper's Table 1 linear-probe accuracies for SAVL on SVSR (shown as a labelled reference).
PAPER_TABLE1_SAVL = {"content_probe": 0.4997, "degradation_probe": 0.9480}


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
