"""The embedded default photographs: colour images bundled inside installed packages (their sources and
licences are listed in book/intro.md and LICENSE).

No network is ever touched. scikit-image ships a few images inside its wheel and fetches the rest with
`pooch` on first use; only the bundled ones are listed here. Checked offline (empty `SKIMAGE_DATADIR`,
sockets blocked) with scikit-image 0.26: the names below load; `eagle`, `lily`, `kidney`, `skin` and
`palisades_of_vogt` need a download and are left out; `cat` is the same file as `chelsea`;
`colorwheel` and `logo` are graphics, not photographs; the rest of `skimage.data` is grayscale.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from functools import cache

import numpy as np
import torch

from savl.errors import ConfigError, DataError

_SKIMAGE = "scikit-image"
_SKLEARN = "scikit-learn"
_MPL = "matplotlib"

_SKLEARN_TERMS = (
    "CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/); attribution required: "
    "photo by {who} on Flickr, retrieved by Robert Layton for scikit-learn"
)


def _skimage(fn: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        out = getattr(skimage.data, fn)()
        return out[index] if index is not None else out

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data(filename, asfileobj=False)) as im:
            return np.asarray(im.convert("RGB"))

    return load


# (name, package, licence / attribution, loader). The order is the public order of sample_images().
_CATALOG: list[tuple[str, str, str, Callable[[], np.ndarray]]] = [
    (
        "astronaut",
        _SKIMAGE,
        "Eileen Collins, NASA Great Images database; no known copyright restrictions (public domain)",
        _skimage("astronaut"),
    ),
    ("chelsea", _SKIMAGE, "Chelsea the cat; CC0 by the photographer (Stefan van der Walt)", _skimage("chelsea")),
    (
        "coffee",
        _SKIMAGE,
        "Coffee cup, courtesy of Pikolo Espresso Bar; CC0 by the photographer (Rachel Michetti)",
        _skimage("coffee"),
    ),
    (
        "rocket",
        _SKIMAGE,
        "DSCOVR launch on Falcon 9, SpaceX; released into the public domain",
        _skimage("rocket"),
    ),
    (
        "hubble_deep_field",
        _SKIMAGE,
        "Hubble eXtreme Deep Field, NASA (HubbleSite); public domain",
        _skimage("hubble_deep_field"),
    ),
    (
        "retina",
        _SKIMAGE,
        "Fundus photograph of a normal left eye, Mikael Häggström (Wikimedia Commons); CC0 1.0",
        _skimage("retina"),
    ),
    (
        "immunohistochemistry",
        _SKIMAGE,
        "IHC staining, Center for Microscopy And Molecular Imaging (CMMI); no known copyright restrictions",
        _skimage("immunohistochemistry"),
    ),
    (
        "motorcycle_left",
        _SKIMAGE,
        "Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), left view, downsampled x4 by "
        "scikit-image; cite the benchmark when used",
        _skimage("stereo_motorcycle", 0),
    ),
    (
        "motorcycle_right",
        _SKIMAGE,
        "Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), right view, downsampled x4 by "
        "scikit-image; cite the benchmark when used",
        _skimage("stereo_motorcycle", 1),
    ),
    ("china", _SKLEARN, _SKLEARN_TERMS.format(who="danielbuechele"), _sklearn("china.jpg")),
    ("flower", _SKLEARN, _SKLEARN_TERMS.format(who="vultilion"), _sklearn("flower.jpg")),
    (
        "grace_hopper",
        _MPL,
        "Rear Admiral Grace M. Hopper, official U.S. Navy photograph; public domain",
        _matplotlib("grace_hopper.jpg"),
    ),
]

_NAMES = [entry[0] for entry in _CATALOG]


def _to_tensor(name: str, arr: np.ndarray) -> torch.Tensor:
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DataError(f"sample image {name!r}: expected an 8-bit RGB array, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr).transpose(2, 0, 1).copy()).float().div_(255.0)


@cache
def _load(name: str) -> torch.Tensor | None:
    """Load one photo at full size, or None (with a warning) if this installation cannot provide it."""
    loader = next(entry[3] for entry in _CATALOG if entry[0] == name)
    try:
        arr = loader()
    except Exception as e:  # an older/newer package may move a file behind a download: skip it, say so
        warnings.warn(f"sample image {name!r} is not available offline here ({e}); skipped", stacklevel=3)
        return None
    return _to_tensor(name, arr)


@cache
def _resized(name: str, max_side: int) -> torch.Tensor | None:
    img = _load(name)
    if img is None:
        return None
    h, w = img.shape[-2:]
    if max(h, w) <= max_side:
        return img
    from savl.imresize import imresize  # MATLAB bicubic with antialiasing, as for the content operator D

    s = max_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return imresize(img, size=size).clamp_(0.0, 1.0)


def _select(names: Iterable[str] | None) -> list[str]:
    if names is None:
        return list(_NAMES)
    if isinstance(names, str):
        names = [names]
    chosen = list(names)
    for n in chosen:
        if n not in _NAMES:
            raise ConfigError(f"unknown sample image {n!r}; known: {', '.join(_NAMES)}")
    return chosen


def sample_images(names: Iterable[str] | None = None, *, max_side: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """The embedded colour photographs as (name, image) pairs, image (3, H, W) float32 in [0, 1].

    names: a subset (in the given order); default all, in catalogue order. max_side: shrink each photo
    (MATLAB-style bicubic, `savl.imresize`) so its longer side is at most this many pixels, for cheap
    book runs. Loaded once per process and cached; callers get clones, so editing them is safe.
    """
    if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
        raise ConfigError(f"max_side must be a positive integer, got {max_side!r}")
    out = []
    for n in _select(names):
        img = _load(n) if max_side is None else _resized(n, max_side)
        if img is not None:
            out.append((n, img.clone()))
    return out


def sample_image_info(names: Iterable[str] | None = None) -> list[dict]:
    """Credits for the book: name, source package (and its version), licence/attribution, size (H, W)."""
    from importlib.metadata import version

    dist = {_SKIMAGE: "scikit-image", _SKLEARN: "scikit-learn", _MPL: "matplotlib"}
    info = []
    for n in _select(names):
        img = _load(n)
        if img is None:
            continue
        _, package, licence, _ = next(entry for entry in _CATALOG if entry[0] == n)
        info.append(
            {
                "name": n,
                "package": package,
                "package_version": version(dist[package]),
                "licence": licence,
                "height": int(img.shape[1]),
                "width": int(img.shape[2]),
            }
        )
    return info
