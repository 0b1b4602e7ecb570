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

from savl.errors import DataError, ImageError

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


# --------------------------------------------------------------------------------------------------
# statistics over seeds and photos (seaborn; imported when first used, so `import savl.viz` stays light)


def _check_columns(frame, columns) -> None:
    missing = [c for c in columns if c is not None and c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        raise DataError(f"the table has no column(s) {', '.join(missing)}; it has {have}")
    if frame.empty:
        raise DataError("nothing to plot: the table is empty")


def _spread_frame(data, value: str, group: str, hue: str | None):
    """A long DataFrame (one row per observation) from a DataFrame or a {group: values} mapping."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        rows = [(str(g), float(v)) for g, values in dict(data).items() for v in np.ravel(values)]
        frame = pd.DataFrame(rows, columns=[group, value])
    _check_columns(frame, (group, value, hue))
    return frame


def spread_plot(
    data,
    value: str = "value",
    group: str = "group",
    reference: float | dict | None = None,
    reference_label: str = "paper",
    kind: str = "strip",
    hue: str | None = None,
    order: Sequence[str] | None = None,
    ax=None,
    ylabel: str | None = None,
):
    """The spread of a result over seeds or photos: one strip (or box) of points per ``group``, the mean of each
    group as a black bar, and the paper's value as a labelled dashed line.

    ``data``: a DataFrame with columns ``group`` and ``value`` (and ``hue`` when given; one row per seed or photo),
    or a mapping {group: values}. ``reference``: one number (a line across the plot) or {group: number} (a short
    line over each group; groups without a value get none). ``kind``: "strip" or "box" (a box per group with the
    points on top). Returns the Axes.

    Example::

        spread_plot({"SAVL": [61.0, 59.8, 62.3], "deterministic": [48.1, 50.2, 47.7]},
                    value="accuracy (%)", reference={"SAVL": 61.2, "deterministic": 49.5})
    """
    import seaborn as sns

    if kind not in ("strip", "box"):
        raise DataError(f"kind must be 'strip' or 'box', got {kind!r}")
    frame = _spread_frame(data, value, group, hue)
    order = list(order) if order is not None else list(dict.fromkeys(frame[group].astype(str)))
    frame = frame.assign(**{group: frame[group].astype(str)})
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.2, 1.1 * len(order) + 1.6), 3.2))
    if kind == "box":
        import warnings

        with warnings.catch_warnings():  # seaborn 0.13 still passes matplotlib 3.11's deprecated `vert`
            warnings.filterwarnings("ignore", message=".*vert: bool.*")
            sns.boxplot(
                data=frame, x=group, y=value, hue=hue, order=order, ax=ax, fill=False, showfliers=False, width=0.5
            )
    sns.stripplot(data=frame, x=group, y=value, hue=hue, order=order, ax=ax, dodge=hue is not None, size=5,
                  jitter=0.15, alpha=0.8, legend=hue is not None and kind == "strip")
    means = frame.groupby(group, sort=False)[value].mean()
    for i, name in enumerate(order):
        if name in means.index:
            ax.hlines(means[name], i - 0.3, i + 0.3, color="k", lw=2, zorder=5,
                      label="mean" if i == 0 else None)
    if isinstance(reference, dict):
        first = True
        for i, name in enumerate(order):
            if name in reference and reference[name] is not None:
                ref = float(reference[name])
                ax.hlines(ref, i - 0.42, i + 0.42, color="C3", ls="--", lw=1.5, zorder=6,
                          label=reference_label if first else None)
                ax.annotate(f"{ref:g}", (i + 0.44, ref), fontsize=8, color="C3", va="center")
                first = False
    elif reference is not None:
        ax.axhline(float(reference), color="C3", ls="--", lw=1.5, label=f"{reference_label}: {float(reference):g}")
    ax.set_xlabel("")
    ax.set_ylabel(ylabel or value, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8)
    return ax


def rate_distortion_plot(
    data,
    rate: str = "kl",
    distortion: str = "rec",
    group: str = "beta",
    ax=None,
    xlabel: str = "KL (nats per pixel)",
    ylabel: str = "reconstruction L1",
    group_label: str = "β",
):
    """The rate-distortion picture with its uncertainty: one point per run (seed), and for each ``group`` (the KL
    weight beta) the mean of its runs with error bars of one standard deviation (ddof 1; none for one run) in
    both coordinates, the means joined in order of the group value.

    ``data``: a DataFrame or a mapping of columns with ``rate`` (x, KL in nats per pixel), ``distortion`` (y) and
    ``group``. Returns the Axes.

    Example::

        rate_distortion_plot({"beta": [1e-4, 1e-4, 1e-2, 1e-2], "seed": [0, 1, 0, 1],
                              "kl": [2.1, 2.3, 0.4, 0.5], "rec": [0.011, 0.012, 0.030, 0.028]})
    """
    import pandas as pd
    import seaborn as sns

    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
    _check_columns(frame, (rate, distortion, group))
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 3.8))
    levels = sorted(frame[group].unique())
    palette = dict(zip(levels, sns.color_palette("viridis", len(levels))))
    sns.scatterplot(data=frame, x=rate, y=distortion, hue=group, palette=palette, ax=ax, s=28, alpha=0.6, legend=False)
    stats = frame.groupby(group)[[rate, distortion]].agg(["mean", "std", "count"]).loc[levels]
    ax.plot(stats[(rate, "mean")], stats[(distortion, "mean")], color="grey", lw=1, zorder=1)
    for level in levels:
        row = stats.loc[level]
        n = int(row[(rate, "count")])
        xerr = float(row[(rate, "std")]) if n > 1 else 0.0
        yerr = float(row[(distortion, "std")]) if n > 1 else 0.0
        ax.errorbar(row[(rate, "mean")], row[(distortion, "mean")], xerr=xerr, yerr=yerr, fmt="s", ms=6,
                    color=palette[level], mec="k", capsize=3, zorder=4,
                    label=f"{group_label} = {level:g} ({n} run{'s' if n != 1 else ''})")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, title="mean ± 1 sd", title_fontsize=8)
    return ax
