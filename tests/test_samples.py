"""savl.data.samples: the embedded photos, checked against an independent decode with Pillow."""

import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from savl.data import sample_image_info, sample_images, samples
from savl.errors import ConfigError

EXPECTED = {
    "astronaut": (512, 512),
    "chelsea": (300, 451),
    "coffee": (400, 600),
    "rocket": (427, 640),
    "hubble_deep_field": (872, 1000),
    "retina": (1411, 1411),
    "immunohistochemistry": (512, 512),
    "motorcycle_left": (500, 741),
    "motorcycle_right": (500, 741),
    "china": (427, 640),
    "flower": (427, 640),
    "grace_hopper": (600, 512),
}


def test_all_bundled_photos_load_offline_as_rgb_in_unit_range(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network use in a test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    samples._load.cache_clear()
    samples._resized.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a photo skipped for want of a download would warn
        imgs = sample_images()
    assert [n for n, _ in imgs] == list(EXPECTED)  # all twelve load here, none needs the network
    assert len(imgs) >= 8
    for name, img in imgs:
        assert img.dtype == torch.float32 and img.ndim == 3 and img.shape[0] == 3, name
        assert tuple(img.shape[1:]) == EXPECTED[name], name
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0, name
        # 8-bit sources: every value sits on the k/255 grid
        q = img * 255
        assert torch.equal(q, q.round()), name
        # colour, not gray replicated three times
        assert float((img[0] - img[1]).abs().mean()) > 1e-3, name


def _pillow(path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def test_pixels_match_an_independent_pillow_decode():
    import matplotlib
    import skimage
    import sklearn

    skdir = Path(skimage.__file__).parent / "data"
    files = {
        "astronaut": skdir / "astronaut.png",
        "coffee": skdir / "coffee.png",
        "motorcycle_right": skdir / "motorcycle_right.png",
        "china": Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
        "grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    }
    got = dict(sample_images(list(files)))
    for name, path in files.items():
        ref = _pillow(path)
        if path.suffix == ".png":
            assert torch.equal(got[name], ref), name
        else:  # JPEG: decoders may differ by a code value or two
            assert float((got[name] - ref).abs().mean()) < 2 / 255, name


def test_deterministic_cached_and_safe_to_edit():
    a = dict(sample_images(["chelsea", "flower"]))
    a["chelsea"].zero_()  # callers get clones: this must not leak into the cache
    b = dict(sample_images(["flower", "chelsea"]))
    assert float(b["chelsea"].sum()) > 0
    assert torch.equal(a["flower"], b["flower"])
    assert [n for n, _ in sample_images(["flower", "chelsea"])] == ["flower", "chelsea"]


def test_info_matches_images():
    imgs = sample_images()
    info = sample_image_info()
    assert [d["name"] for d in info] == [n for n, _ in imgs]
    for d, (_, img) in zip(info, imgs):
        assert (d["height"], d["width"]) == tuple(img.shape[1:])
        assert d["package"] in {"scikit-image", "scikit-learn", "matplotlib"}
        assert d["licence"] and d["package_version"]
    by_name = {d["name"]: d for d in info}
    assert "CC BY 2.0" in by_name["china"]["licence"] and "danielbuechele" in by_name["china"]["licence"]
    assert "CC BY 2.0" in by_name["flower"]["licence"] and "vultilion" in by_name["flower"]["licence"]
    assert by_name["grace_hopper"]["package"] == "matplotlib"


def test_bad_requests_raise_config_error():
    with pytest.raises(ConfigError, match="lena"):
        sample_images(["astronaut", "lena"])
    with pytest.raises(ConfigError, match="max_side"):
        sample_images(max_side=0)


def test_max_side_shrinks_like_an_antialiased_bicubic():
    (_, small), (_, small_square) = sample_images(["rocket", "astronaut"], max_side=128)
    assert tuple(small.shape) == (3, 85, 128)  # 427 x 640 -> round(427 * 0.2) = 85
    assert tuple(small_square.shape) == (3, 128, 128)
    assert 0.0 <= float(small.min()) and float(small.max()) <= 1.0
    # Second implementation: Pillow's bicubic also widens its kernel when shrinking (antialiasing).
    ((_, full),) = sample_images(["rocket"])
    arr = (full.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    ref = np.asarray(Image.fromarray(arr).resize((128, 85), Image.BICUBIC)).astype(np.float32) / 255
    ref = torch.from_numpy(ref).permute(2, 0, 1)
    assert float((small - ref).abs().mean()) < 0.02
    # small images are returned unchanged
    ((_, chelsea),) = sample_images(["chelsea"], max_side=1000)
    assert tuple(chelsea.shape) == (3, 300, 451)
