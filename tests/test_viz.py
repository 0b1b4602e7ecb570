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
