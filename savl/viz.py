"""Figure helpers the book chapters share: tensors to displayable arrays, image and kernel grids.

Everything here only draws; it computes nothing the chapters quote. Images are (3, H, W), (1, 3, H, W) or
(H, W, 3) float tensors/arrays in [0, 1]; 2-D arrays (kernels, maps) are drawn with a colour map.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from savl.errors import ImageError

#: Distinct colours for label maps (Table 5 classes); the tab10 palette, colour-blind friendlier than jet.
LABEL_COLOURS = plt.get_cmap("tab10").colors


def to_display(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image as a float64 (H, W, 3) or (H, W) NumPy array for ``imshow``, colours clipped to [0, 1].

    Accepts (1, C, H, W) and (C, H, W) tensors/arrays with C in {1, 3} (channels first, the library's layout),
    (H, W, 3) arrays (channels last) and (H, W) maps (returned unclipped: they are drawn with a colour map).
    """
    arr = image.detach().to("cpu", torch.float64).numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[0] in (1, 3):  # channels first wins when ambiguous: the library's layout
        arr = arr.transpose(1, 2, 0)
    elif not (arr.ndim == 3 and arr.shape[-1] in (1, 3)):
        raise ImageError(f"cannot display an array of shape {arr.shape}: expected (C, H, W), (H, W, 3) or (H, W)")
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    return np.clip(arr, 0.0, 1.0)


def nearest_upsample(image: torch.Tensor | np.ndarray, factor: int) -> np.ndarray:
    """Repeat every pixel ``factor`` times along both axes, so an LR image is shown at its HR size, blocky."""
    if not isinstance(factor, int) or factor < 1:
        raise ImageError(f"upsampling factor must be a positive integer, got {factor!r}")
    arr = to_display(image)
    return arr.repeat(factor, axis=0).repeat(factor, axis=1)


def image_grid(
    images: Sequence[torch.Tensor | np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 2.6,
    cmap: str = "viridis",
    colorbar: bool = False,
) -> Figure:
    """A figure with one panel per image (row-major, ``ncols`` per row), titles above, no axis ticks.

    Colour images are shown as they are (clipped to [0, 1]); 2-D maps with ``cmap`` (and a colour bar each when
    ``colorbar``). Unused panels of the last row are hidden. Returns the figure; the caller shows it.
    """
    images = list(images)
    if not images:
        raise ImageError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ImageError(f"{len(titles)} titles for {len(images)} images")
    ncols = min(len(images), ncols or len(images))
    nrows = -(-len(images) // ncols)
    first = to_display(images[0])
    aspect = min(1.0, first.shape[0] / first.shape[1])  # wide images get shorter rows (titles need ~0.5 in)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size * aspect + 0.5) * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.set_visible(False)
            continue
        arr = to_display(images[i])
        im = ax.imshow(arr, cmap=cmap if arr.ndim == 2 else None, interpolation="nearest")
        if colorbar and arr.ndim == 2:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig


def label_cmap(n: int) -> ListedColormap:
    """A discrete colour map with ``n`` distinct colours, for label maps with values 0..n-1."""
    if not 1 <= n <= len(LABEL_COLOURS):
        raise ImageError(f"label_cmap supports 1 to {len(LABEL_COLOURS)} labels, got {n}")
    return ListedColormap(LABEL_COLOURS[:n])


def show_labels(ax, labels: torch.Tensor | np.ndarray, names: Sequence[str], title: str | None = None):
    """Draw an integer label map (H, W) with one colour per class and a legend naming ``names``."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 2:
        raise ImageError(f"a label map must be 2-D, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= len(names)):
        raise ImageError(f"labels span {arr.min()}..{arr.max()} but {len(names)} class names were given")
    cmap = label_cmap(len(names))
    im = ax.imshow(arr, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(names))]
    ax.legend(handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return im
