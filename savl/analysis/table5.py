"""Table 5: clustering of spatially varying degradations from per-pixel codes (k-means, Hungarian matching)."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from savl.analysis.encoders import encoder_device, inference
from savl.analysis.inputs import _generator, as_image_list, center_crop
from savl.analysis.probes import cluster_labels

#: The paper's Table 5 clustering accuracies (type / blur / noise settings).
PAPER_TABLE5 = {
    "SAVL": {"type": 0.7244, "blur": 0.6120, "noise": 0.5760},
    "MANet": {"type": 0.4366, "blur": 0.3732, "noise": 0.3778},
    "deterministic": {"type": 0.4802, "blur": 0.3934, "noise": 0.5136},
}


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
