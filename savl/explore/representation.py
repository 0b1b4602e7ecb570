"""Explorers for chapters 4 and 8: what a trained SAVL encoder says about one photo, and the swap experiment.

* :func:`severity_explorer` (chapter 4): a photo (an embedded one, or a file the reader names), one uniform
  degradation of a chosen type and strength, and the encoder's answer: the severity map of paper Eq. 15, the
  posterior mean (its three principal components over the pixels, as colours) and the posterior variance.
* :func:`swap_explorer` (chapter 8, paper Fig. 12): the clean content of one photo decoded with the code of
  another photo's degraded LR, for several models side by side (``savl.analysis.figures.swap``).

The models are arguments (anything with ``.encode``; for the swap, ``.swap`` as ``savl.models.savl.SAVL``),
so a chapter passes its zoo or cached models. Degradations are Table 5's classes (``savl.degrade.spatial``)
applied to the whole image: blur on the HR image, MATLAB bicubic x1/4, JPEG and noise on the LR, 8-bit
rounding. One control, ``strength`` in [0, 1], sets the level of every type (:func:`degradation_level`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from savl.analysis.encoders import encoder_device, inference
from savl.analysis.figures import swap
from savl.errors import ConfigError, ImageError
from savl.explore.widgets import Choice, Explorer, Slider, Text
from savl.viz import to_display

#: Degradation types of the explorers: "none" is the content operator alone (bicubic x1/4, 8-bit).
KINDS = ("none", "noise", "blur", "jpeg")
#: HR sides are cropped to a multiple of this (the encoder's U-shape and JPEG's 16 x 16 macroblocks at x4).
MULTIPLE = 16


def degradation_level(kind: str, strength: float):
    """The Table 5 class (savl.degrade.spatial.PatchClass) for ``kind`` at ``strength`` in [0, 1]: noise std
    0.3 * strength on [0, 1] (0 to 77/255), blur sigma 0.1 + 3.9 * strength HR pixels (Table 5's 0.1 to 4),
    JPEG quality 95 - 85 * strength (95 to 10). "none" is noise of std 0."""
    from savl.degrade.spatial import PatchClass

    if kind not in KINDS:
        raise ConfigError(f"unknown degradation {kind!r}; choose one of {', '.join(KINDS)}")
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"strength must lie in [0, 1], got {strength}")
    if kind == "none":
        return PatchClass("noise", 0.0)
    if kind == "noise":
        return PatchClass("noise", 0.3 * strength)
    if kind == "blur":
        return PatchClass("blur", 0.1 + 3.9 * strength)
    return PatchClass("jpeg", round(95 - 85 * strength))


def degrade_photo(hr: torch.Tensor, kind: str, strength: float, seed: int = 0) -> torch.Tensor:
    """LR (1, 3, H/4, W/4) of ``hr`` ((3, H, W) or (1, 3, H, W)) under one degradation over the whole image."""
    from savl.degrade.spatial import patchwise

    hr = hr if hr.dim() == 4 else hr[None]
    level = degradation_level(kind, strength)
    cell = max(hr.shape[-2:])  # one cell covers the image: the class acts everywhere
    cell += (-cell) % 64
    return patchwise(hr, [level], torch.Generator().manual_seed(seed), patch=cell).lr


def load_photo(photo: str = "", path: str = "", max_side: int = 192) -> tuple[str, torch.Tensor]:
    """(name, HR (3, H, W)): the file at ``path`` when given, else the embedded photo ``photo``; shrunk (MATLAB
    bicubic) so its longer side is at most ``max_side`` and cropped centrally to multiples of 16."""
    from savl.imresize import imresize
    from savl.io import read_image

    if path:
        name, img = path, read_image(path)
    else:
        from savl.data import sample_images

        found = sample_images([photo])
        if not found:
            raise ImageError(f"embedded photo {photo!r} is not available")
        name, img = found[0]
    h, w = img.shape[-2:]
    if max(h, w) > max_side:
        img = imresize(img[None], scale=max_side / max(h, w))[0].clamp(0, 1)
        h, w = img.shape[-2:]
    hc, wc = h // MULTIPLE * MULTIPLE, w // MULTIPLE * MULTIPLE
    if min(hc, wc) < MULTIPLE:
        raise ImageError(f"{name}: {h} x {w} pixels; the explorer needs at least {MULTIPLE} x {MULTIPLE}")
    top, left = (h - hc) // 2, (w - wc) // 2
    return name, img[:, top : top + hc, left : left + wc].contiguous()


def principal_colours(mean: torch.Tensor) -> np.ndarray:
    """(h, w, 3) in [0, 1]: the posterior mean (m, h, w) projected on its first three principal components over
    the pixels, each stretched to [0, 1] (a constant component is shown as 0.5)."""
    m, h, w = mean.shape
    x = mean.reshape(m, h * w).T.double()
    x = x - x.mean(0, keepdim=True)
    k = min(3, m)
    _, _, vt = torch.linalg.svd(x, full_matrices=False)
    comps = x @ vt[:k].T  # (hw, k)
    lo, hi = comps.min(0).values, comps.max(0).values
    span = hi - lo
    scaled = torch.where(span > 1e-12, (comps - lo) / torch.where(span > 1e-12, span, 1.0), 0.5)
    if k < 3:
        scaled = torch.cat([scaled, torch.full((h * w, 3 - k), 0.5, dtype=scaled.dtype)], 1)
    return scaled.reshape(h, w, 3).numpy()


def _encoder_of(model):
    """What maps an LR image to a posterior: ``model`` itself when it has ``.encode`` (SAVL) or is an encoder,
    else the ``.encoder`` of an SR network (savl.models.srnet.DARHAGNet); plain HAT has none."""
    if hasattr(model, "encode"):
        return model
    if hasattr(model, "encoder"):
        if model.encoder is None:
            raise ConfigError(f"{type(model).__name__} has no encoder (plain HAT), so no posterior to show")
        return model.encoder
    return model


def posterior_maps(model, lr: torch.Tensor) -> dict:
    """The encoder's answer for one LR image (1, 3, h, w): ``severity`` (Eq. 15, (h, w)), ``variance`` (the
    channel-mean sigma^2, (h, w); zeros for a deterministic code), ``mean_rgb`` (:func:`principal_colours`),
    ``kl_per_pixel`` (Eq. 7 divided by the pixel count, nats) and ``deterministic``."""
    encoder = _encoder_of(model)
    with inference(encoder) as encode:
        post = encode(lr.to(encoder_device(encoder)))
    h, w = post.mean.shape[-2:]
    return {
        "severity": post.severity()[0, 0].float().cpu().numpy(),
        "variance": post.variance.mean(1)[0].float().cpu().numpy(),
        "mean_rgb": principal_colours(post.mean[0].float().cpu()),
        "kl_per_pixel": float(post.kl()[0]) / (h * w),
        "deterministic": bool(getattr(post, "deterministic", False)),
    }


def severity_view(
    model, photo: str = "", path: str = "", kind: str = "noise", strength: float = 0.5, seed: int = 0,
    max_side: int = 192,
) -> dict:
    """Load the photo (:func:`load_photo`), degrade it (:func:`degrade_photo`) and encode it
    (:func:`posterior_maps`); the result also holds ``lr``, ``name`` and ``level`` (the degradation's name)."""
    name, hr = load_photo(photo, path, max_side)
    lr = degrade_photo(hr, kind, strength, seed)
    out = posterior_maps(model, lr)
    out.update(lr=lr[0], name=name, level="bicubic only" if kind == "none" else degradation_level(kind, strength).name)
    return out


def draw_severity(result: dict, axes) -> None:
    """Four panels: the LR, the Eq. 15 severity, the posterior mean's principal colours, the mean variance."""
    from pathlib import Path

    axes[0].imshow(to_display(result["lr"]), interpolation="nearest")
    axes[0].set_title(f"{Path(result['name']).name}\n{result['level']}", fontsize=8)
    panels = [
        (axes[1], result["severity"], "magma", "severity (Eq. 15)"),
        (axes[3], result["variance"], "viridis", f"mean $\\sigma^2$, KL {result['kl_per_pixel']:.2f} nats/px"),
    ]
    for ax, img, cmap, title in panels:
        im = ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        ax.set_title(title if not result["deterministic"] else "deterministic code:\nno variance", fontsize=8)
    axes[2].imshow(result["mean_rgb"], interpolation="nearest")
    axes[2].set_title("posterior mean\n(3 principal components)", fontsize=8)
    for ax in axes[:4]:
        ax.set_xticks([])
        ax.set_yticks([])


def _photo_names(photos: Sequence[str] | None) -> tuple[str, ...]:
    if photos is None:
        from savl.data import sample_images

        photos = [n for n, _ in sample_images()]
    photos = tuple(photos)
    if not photos:
        raise ConfigError("the explorer needs at least one photo name")
    return photos


def severity_explorer(model, photos: Sequence[str] | None = None, max_side: int = 192, seed: int = 0) -> Explorer:
    """Chapter 4's explorer: photo (embedded name, or a path typed by the reader, which wins when given),
    degradation type (:data:`KINDS`) and strength in [0, 1]; four panels (:func:`draw_severity`).

    Example::

        model = run.load_savl("cpu")                       # or any model with .encode
        ex = severity_explorer(model, photos=["astronaut", "coffee"])
        fig = ex.view(photo="coffee", kind="blur", strength=0.6)
        fig = ex.view(path="my_photo.png", kind="none")    # a photo of the reader's own
        twin = static_twin(ex, [{"kind": "noise"}, {"kind": "blur"}, {"kind": "jpeg"}])
        live = interactive(ex)                             # JupyterLab: display(live.box)
    """
    names = _photo_names(photos)
    return Explorer(
        title="Severity and posterior of a SAVL encoder",
        controls={
            "photo": Choice(names, names[0], label="photo"),
            "path": Text("", label="or a file", placeholder="path to an image (overrides the photo)"),
            "kind": Choice(KINDS, "noise", label="degradation"),
            "strength": Slider(0.0, 1.0, 0.5, step=0.05, label="strength"),
        },
        compute=lambda photo, path, kind, strength: severity_view(model, photo, path, kind, strength, seed, max_side),
        draw=draw_severity,
        panels=4,
        panel_size=(2.3, 2.6),
    )


def swap_view(
    models: Mapping[str, object], content: str, source: str, kind: str = "noise", strength: float = 0.5,
    seed: int = 0, max_side: int = 128,
) -> dict:
    """Paper Fig. 12 for each model: the clean HR of photo ``content`` decoded with the code of photo ``source``
    degraded by (``kind``, ``strength``). Returns ``clean_lr`` (bicubic LR of the content), ``source_lr``,
    ``level`` and ``swaps``: {model name: savl.analysis.figures.swap's dict (swapped image, code distances)}."""
    if not models:
        raise ConfigError("swap_view needs at least one model")
    _, content_hr = load_photo(content, "", max_side)
    _, source_hr = load_photo(source, "", max_side)
    source_lr = degrade_photo(source_hr, kind, strength, seed)
    swaps = {name: swap(m, content_hr, source_lr) for name, m in models.items()}
    first = next(iter(swaps.values()))
    level = "bicubic only" if kind == "none" else degradation_level(kind, strength).name
    return {"clean_lr": first["clean_lr"], "source_lr": source_lr[0], "level": level, "swaps": swaps,
            "content": content, "source": source}


def draw_swap(result: dict, axes) -> None:
    """Panels: the content's bicubic LR, the degradation source, then one swapped image per model, titled with
    its code distances to the source (d_src) and to the clean content (d_clean)."""
    axes[0].imshow(to_display(result["clean_lr"]), interpolation="nearest")
    axes[0].set_title(f"content: {result['content']}\n(bicubic LR)", fontsize=8)
    axes[1].imshow(to_display(result["source_lr"]), interpolation="nearest")
    axes[1].set_title(f"code source: {result['source']}\n{result['level']}", fontsize=8)
    for ax, (name, sw) in zip(axes[2:], result["swaps"].items()):
        ax.imshow(to_display(sw["swapped"]), interpolation="nearest")
        ax.set_title(
            f"{name}\nd_src {sw['code_distance_to_degradation']:.2f}, d_clean {sw['code_distance_to_clean']:.2f}",
            fontsize=8,
        )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def swap_explorer(
    models: Mapping[str, object], photos: Sequence[str] | None = None, max_side: int = 128, seed: int = 0
) -> Explorer:
    """Chapter 8's explorer: content photo, degradation source photo, degradation type and strength; one panel
    per model beside the content and the source (:func:`draw_swap`). ``models`` maps a label to a model with
    ``.swap`` and ``.encode`` (savl.models.savl.SAVL and its deterministic variants).

    Example::

        models = {"SAVL": savl_model, "deterministic": det_model, "deterministic + CLUB": club_model}
        ex = swap_explorer(models, photos=["astronaut", "coffee", "chelsea"])
        fig = ex.view(content="astronaut", source="coffee", kind="noise", strength=0.4)
        twin = static_twin(ex, [{"kind": "noise"}, {"kind": "blur"}])
        live = interactive(ex)                             # JupyterLab: display(live.box)
    """
    names = _photo_names(photos)
    models = dict(models)
    if not models:
        raise ConfigError("swap_explorer needs at least one model")
    no_swap = [name for name, m in models.items() if not callable(getattr(m, "swap", None))]
    if no_swap:
        raise ConfigError(f"swap needs models with .swap (SAVL and its variants); not: {', '.join(no_swap)}")
    return Explorer(
        title="Swap: content of one photo, degradation code of another",
        controls={
            "content": Choice(names, names[0], label="content photo"),
            "source": Choice(names, names[1 % len(names)], label="degradation source"),
            "kind": Choice(KINDS, "noise", label="degradation"),
            "strength": Slider(0.0, 1.0, 0.5, step=0.05, label="strength"),
        },
        compute=lambda content, source, kind, strength: swap_view(
            models, content, source, kind, strength, seed, max_side
        ),
        draw=draw_swap,
        panels=2 + len(models),
        panel_size=(2.1, 2.5),
    )
