"""savl.viz: layout conversions checked against NumPy, figure structure checked panel by panel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from savl.errors import ImageError  # noqa: E402
from savl.viz import image_grid, label_cmap, nearest_upsample, show_labels, to_display  # noqa: E402


def test_to_display_channels_first_and_last(generator):
    img = torch.rand(3, 5, 7, generator=generator) * 1.4 - 0.2  # values outside [0, 1] get clipped
    ref = np.clip(img.numpy().astype(np.float64).transpose(1, 2, 0), 0, 1)
    np.testing.assert_array_equal(to_display(img), ref)
    np.testing.assert_array_equal(to_display(img[None]), ref)
    np.testing.assert_array_equal(to_display(ref), ref)  # already (H, W, 3)
    gray = torch.rand(1, 4, 6, generator=generator)
    np.testing.assert_array_equal(to_display(gray), gray[0].numpy().astype(np.float64))


def test_to_display_keeps_maps_unclipped():
    m = np.array([[-2.0, 0.5], [3.0, 1.0]])
    np.testing.assert_array_equal(to_display(m), m)


@pytest.mark.parametrize("shape", [(2, 5, 5), (4, 4, 4, 3), (5,), (2, 3, 5, 5)])
def test_to_display_rejects_other_shapes(shape):
    with pytest.raises(ImageError):
        to_display(np.zeros(shape))


def test_nearest_upsample_repeats_pixels():
    img = torch.arange(12, dtype=torch.float32).view(1, 2, 6) / 12  # one channel: a (2, 6) map
    up = nearest_upsample(img, 3)
    assert up.shape == (6, 18)
    np.testing.assert_array_equal(up, np.kron(img[0].numpy().astype(np.float64), np.ones((3, 3))))
    with pytest.raises(ImageError):
        nearest_upsample(img, 0)


def test_image_grid_layout_titles_and_data(generator):
    images = [torch.rand(3, 8, 8, generator=generator) for _ in range(5)] + [np.eye(5)]
    fig = image_grid(images, titles=[f"p{i}" for i in range(6)], ncols=4, colorbar=True)
    panels = [ax for ax in fig.axes if ax.get_images() and ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == [f"p{i}" for i in range(6)]
    assert sum(not ax.get_visible() for ax in fig.axes) == 2  # 2 rows x 4 columns hold 6 panels
    np.testing.assert_array_equal(panels[1].get_images()[0].get_array(), to_display(images[1]))
    np.testing.assert_array_equal(panels[5].get_images()[0].get_array(), np.eye(5))
    assert len(fig.axes) == 8 + 1  # one colour bar, for the single 2-D map
    plt.close(fig)
    with pytest.raises(ImageError):
        image_grid([])
    with pytest.raises(ImageError):
        image_grid(images, titles=["only one"])


def test_label_cmap_and_show_labels():
    cmap = label_cmap(3)
    assert cmap.N == 3 and len(set(cmap.colors)) == 3
    labels = np.array([[0, 1], [2, 2]])
    fig, ax = plt.subplots()
    show_labels(ax, torch.from_numpy(labels), ["a", "b", "c"], title="t")
    shown = ax.get_images()[0]
    np.testing.assert_array_equal(shown.get_array(), labels)
    # each class maps to its own colour: the value i sits in the middle of the i-th colour bin
    rgba = shown.to_rgba(shown.get_array())
    assert np.allclose(rgba[1, 0, :3], cmap.colors[2]) and np.allclose(rgba[0, 1, :3], cmap.colors[1])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    with pytest.raises(ImageError):
        show_labels(ax, labels, ["a", "b"])
    with pytest.raises(ImageError):
        label_cmap(0)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- seaborn plots
def _points(ax) -> np.ndarray:
    """Every scatter point drawn on ``ax`` (PathCollection offsets), as an (n, 2) array."""
    from matplotlib.collections import PathCollection

    offsets = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    return np.concatenate([np.asarray(o) for o in offsets if len(o)]) if offsets else np.zeros((0, 2))


def _hline_segments(ax, colour_index: int | None = None) -> list[tuple[float, float, float]]:
    """(x0, x1, y) of every horizontal segment drawn with hlines (LineCollections)."""
    from matplotlib.collections import LineCollection

    out = []
    for c in ax.collections:
        if isinstance(c, LineCollection):
            for seg in c.get_segments():
                if len(seg) == 2 and seg[0][1] == seg[1][1]:
                    out.append((float(seg[0][0]), float(seg[1][0]), float(seg[0][1])))
    return out


SEEDS = {"SAVL": [61.0, 59.8, 62.3], "deterministic": [48.1, 50.2, 47.7, 49.0]}


def test_spread_plot_draws_every_value_the_means_and_the_papers_lines():
    from savl.viz import spread_plot

    ax = spread_plot(SEEDS, value="accuracy (%)", reference={"SAVL": 61.2, "deterministic": 49.5})
    pts = _points(ax)
    assert len(pts) == 7
    # the points of group i sit around x = i, each group's values exactly
    for i, values in enumerate(SEEDS.values()):
        mine = pts[np.abs(pts[:, 0] - i) < 0.45]
        np.testing.assert_allclose(np.sort(mine[:, 1]), np.sort(values))
    ys = sorted(round(y, 9) for _, _, y in _hline_segments(ax))
    expected = sorted(round(v, 9) for v in (np.mean(SEEDS["SAVL"]), np.mean(SEEDS["deterministic"]), 61.2, 49.5))
    assert ys == expected
    labels = ax.get_legend_handles_labels()[1]
    assert "paper" in labels and "mean" in labels
    assert ax.get_ylabel() == "accuracy (%)"
    plt.close(ax.figure)


def test_spread_plot_from_a_dataframe_with_one_reference_and_boxes():
    import pandas as pd

    from savl.viz import spread_plot

    frame = pd.DataFrame({"photo": ["a", "a", "b", "b", "b"], "psnr": [24.0, 25.0, 22.0, 23.5, 23.0]})
    ax = spread_plot(frame, value="psnr", group="photo", reference=24.4, kind="box")
    assert len(_points(ax)) == 5
    ref_lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("paper")]
    assert len(ref_lines) == 1 and ref_lines[0].get_label() == "paper: 24.4"
    np.testing.assert_allclose(ref_lines[0].get_ydata(), [24.4, 24.4])
    assert ax.patches or len(ax.get_lines()) > 1  # the boxes
    plt.close(ax.figure)


def test_spread_plot_refuses_bad_tables():
    import pandas as pd

    from savl.errors import DataError
    from savl.viz import spread_plot

    with pytest.raises(DataError, match="no column"):
        spread_plot(pd.DataFrame({"x": [1.0]}), value="psnr", group="photo")
    with pytest.raises(DataError, match="empty"):
        spread_plot({})
    with pytest.raises(DataError, match="strip"):
        spread_plot(SEEDS, kind="violin")


def test_rate_distortion_plot_marks_means_and_one_sd_per_group():
    from matplotlib.container import ErrorbarContainer

    from savl.viz import rate_distortion_plot

    data = {
        "beta": [1e-4, 1e-4, 1e-4, 1e-2, 1e-2, 1.0],
        "seed": [0, 1, 2, 0, 1, 0],
        "kl": [2.1, 2.3, 2.6, 0.4, 0.5, 0.01],
        "rec": [0.011, 0.012, 0.010, 0.030, 0.028, 0.05],
    }
    ax = rate_distortion_plot(data)
    pts = _points(ax)
    assert len(pts) == 6
    np.testing.assert_allclose(np.sort(pts[:, 0]), np.sort(data["kl"]))
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3
    kl, rec, beta = (np.array(data[k]) for k in ("kl", "rec", "beta"))
    for container, level in zip(bars, (1e-4, 1e-2, 1.0)):
        sel = beta == level
        centre = container.lines[0]
        np.testing.assert_allclose([centre.get_xdata()[0], centre.get_ydata()[0]], [kl[sel].mean(), rec[sel].mean()])
        x_bar, y_bar = (seg.get_segments()[0] for seg in container.lines[2])
        sd_x = kl[sel].std(ddof=1) if sel.sum() > 1 else 0.0
        sd_y = rec[sel].std(ddof=1) if sel.sum() > 1 else 0.0
        np.testing.assert_allclose(x_bar[:, 0], [kl[sel].mean() - sd_x, kl[sel].mean() + sd_x])
        np.testing.assert_allclose(y_bar[:, 1], [rec[sel].mean() - sd_y, rec[sel].mean() + sd_y])
        assert container.get_label().endswith(f"({sel.sum()} run{'s' if sel.sum() > 1 else ''})")
    assert ax.get_xlabel() == "KL (nats per pixel)"
    plt.close(ax.figure)
