"""savl.data.hr_files: data roots, recursive search, meta_info lists, the one-line 'fetch it with' errors, and
HRFileDataset (decode on demand: the same patches as HRPatchDataset, nothing kept, Real-ESRGAN's reflect pad)."""

import pickle
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from savl.data import HRPatchDataset
from savl.data.hr_files import (
    DATA_ENV,
    HRFileDataset,
    data_roots,
    find_images,
    read_meta_info,
    training_files,
    write_meta_info,
)
from savl.errors import DataError
from savl.io import read_image


def _png(path, h, w, seed=0, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(path, format=fmt)
    return a


def test_find_images_is_recursive_sorted_and_skips_hidden(tmp_path):
    _png(tmp_path / "b.png", 4, 4)
    _png(tmp_path / "a" / "z.JPG", 4, 4, fmt="JPEG")
    _png(tmp_path / "a" / "deep" / "c.png", 4, 4)
    _png(tmp_path / ".hidden" / "x.png", 4, 4)
    _png(tmp_path / "a" / ".y.png", 4, 4)
    (tmp_path / "notes.txt").write_text("not an image")
    rel = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert rel == ["a/deep/c.png", "a/z.JPG", "b.png"]
    with pytest.raises(DataError, match="no such folder"):
        find_images(tmp_path / "absent")


def test_data_roots_from_config_env_or_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, f"{tmp_path / 'x'}:{tmp_path / 'y'}")
    assert data_roots() == [tmp_path / "x", tmp_path / "y"]
    assert data_roots(str(tmp_path / "z")) == [tmp_path / "z"]
    assert data_roots([tmp_path / "a", str(tmp_path / "b")]) == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.delenv(DATA_ENV)
    monkeypatch.setenv("SAVL_DATA_DIR", str(tmp_path / "downloads"))
    assert data_roots() == [tmp_path / "downloads"]  # where `savl data download` puts datasets


def test_meta_info_round_trip_and_strictness(tmp_path):
    files = [tmp_path / "sub" / "b_s002.png", tmp_path / "sub" / "a_s001.png", tmp_path / "c.png"]
    meta = write_meta_info(tmp_path / "meta_info.txt", files)
    assert meta.read_text() == "c.png\nsub/a_s001.png\nsub/b_s002.png\n"
    assert read_meta_info(meta) == ["c.png", "sub/a_s001.png", "sub/b_s002.png"]
    # Real-ESRGAN's lists may carry more fields after the path (e.g. a shape); only the path counts
    (tmp_path / "m2.txt").write_text("x/1.png (400,400,3)\n\ny.png\n")
    assert read_meta_info(tmp_path / "m2.txt") == ["x/1.png", "y.png"]
    (tmp_path / "m3.txt").write_text("ok.png\n../escape.png\n")
    with pytest.raises(DataError, match=r"m3.txt: line 2: '\.\./escape\.png'"):
        read_meta_info(tmp_path / "m3.txt")
    (tmp_path / "m4.txt").write_text("\n\n")
    with pytest.raises(DataError, match="lists no images"):
        read_meta_info(tmp_path / "m4.txt")
    with pytest.raises(DataError, match="outside the meta_info file's folder"):
        write_meta_info(tmp_path / "deeper" / "m.txt", files)


def test_training_files_over_several_roots_with_globs_and_meta_info(tmp_path, monkeypatch):
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    _png(r1 / "DIV2K" / "DIV2K_train_HR" / "0001.png", 8, 8)
    _png(r2 / "DIV2K" / "DIV2K_train_HR" / "0002.png", 8, 8)  # shadowed: r1 holds DIV2K already
    _png(r2 / "Flickr2K" / "Flickr2K" / "Flickr2K_HR" / "000001.png", 8, 8)
    _png(r2 / "OST" / "v2" / "sky" / "sky_1.png", 8, 8)
    _png(r2 / "OST" / "v2" / "animal" / "animal_1.png", 8, 8)
    got = training_files([r1, r2], ["DIV2K/DIV2K_train_HR", "Flickr2K/**/Flickr2K_HR", "OST"])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == [
        "r1/DIV2K/DIV2K_train_HR/0001.png",
        "r2/Flickr2K/Flickr2K/Flickr2K_HR/000001.png",
        "r2/OST/v2/animal/animal_1.png",
        "r2/OST/v2/sky/sky_1.png",
    ]
    # no folders: the roots are the image folders (searched recursively), relative to the working folder too
    assert len(training_files(r2)) == 4
    monkeypatch.chdir(tmp_path)
    assert len(training_files("r2")) == 4 and len(training_files(["r1", "r2"])) == 5
    with pytest.raises(DataError, match=r"^r3: no such folder \(data.root\)$"):
        training_files(["r1", "r3"])
    # a meta_info list (found in the second root), relative to its own folder
    write_meta_info(r2 / "lists" / "m.txt", [r2 / "lists" / "a.png"])
    _png(r2 / "lists" / "a.png", 8, 8)
    assert training_files([r1, r2], meta_info="lists/m.txt") == [r2 / "lists" / "a.png"]
    (r2 / "lists" / "a.png").unlink()
    with pytest.raises(DataError, match=r"m.txt: lists .*a.png, which does not exist"):
        training_files([r1, r2], meta_info="lists/m.txt")


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"folders": ["DIV2K/DIV2K_train_HR"]}, "fetch it with `savl data download DIV2K --root {r}`"),
        ({"folders": ["OST"]}, "`savl data download OST --root {r}` (it says where to get it by hand)"),
        (
            {"meta_info": "DF2K_OST_sub/meta_info.txt"},
            "`savl data download DIV2K --root {r}` and `savl data download Flickr2K --root {r}` and "
            "`savl data download OST --root {r}`, then `savl data prepare --root {r}`",
        ),
        ({"folders": ["my_photos"]}, "not found under {r} (set data.root or $SAVL_DATA)"),
    ],
)
def test_missing_data_is_one_line_naming_the_command(tmp_path, kwargs, expected):
    with pytest.raises(DataError) as e:
        training_files(tmp_path, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and expected.format(r=tmp_path) in msg
    assert msg.startswith(kwargs.get("meta_info") or kwargs["folders"][0])


def test_missing_prepared_list_with_the_sources_present_asks_for_prepare(tmp_path):
    for rel in ("DIV2K/DIV2K_train_HR/1.png", "Flickr2K/Flickr2K_HR/1.png", "OST/sky/1.png"):
        _png(tmp_path / rel, 8, 8)
    with pytest.raises(DataError, match=r"fetch it with `savl data prepare --root .*`$"):
        training_files(tmp_path, meta_info="DF2K_OST_sub/meta_info.txt")


def test_streamed_patches_equal_the_in_memory_ones(tmp_path):
    files = [tmp_path / "a.png", tmp_path / "sub" / "b.png"]
    _png(files[0], 40, 52, seed=1)
    _png(files[1], 61, 37, seed=2)
    stream = HRFileDataset(files, patch=32, seed=5, length=6)
    memory = HRPatchDataset(files, patch=32, seed=5, length=6, cache=True)
    for epoch in (0, 3):
        stream.set_epoch(epoch)
        memory.set_epoch(epoch)
        for i in range(6):
            a, b = stream[i]["hr"], memory[i]["hr"]
            assert a.dtype == torch.float32 and torch.equal(a, b), (epoch, i)


def test_jpeg_and_16_bit_files_decode_as_savl_io_reads_them(tmp_path):
    _png(tmp_path / "a.jpg", 48, 40, fmt="JPEG")
    a16 = np.random.default_rng(3).integers(0, 65536, (36, 36, 3), dtype=np.uint16)
    from savl.io import write_image

    write_image(tmp_path / "b.png", torch.from_numpy(a16.astype(np.float32) / 65535).permute(2, 0, 1), bit_depth=16)
    for f in ("a.jpg", "b.png"):
        ds = HRFileDataset([tmp_path / f], patch=32, seed=0, augment=False)
        full = read_image(tmp_path / f)
        hr = ds[0]["hr"]
        # the crop is a window of the file as savl.io reads it
        hits = [
            (t, l)
            for t in range(full.shape[1] - 31)
            for l in range(full.shape[2] - 31)
            if torch.equal(full[:, t : t + 32, l : l + 32], hr)
        ]
        assert hits, f


def test_small_images_are_reflect_padded_like_real_esrgan(tmp_path):
    a = _png(tmp_path / "small.png", 5, 3, seed=4)
    ds = HRFileDataset([tmp_path / "small.png"], patch=6, seed=0, augment=False)
    hr = (ds[0]["hr"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    # reflection without repeating the edge (OpenCV's BORDER_REFLECT_101): rows 0..4, then 3; columns 0,1,2,1,0,1
    rows, cols = [0, 1, 2, 3, 4, 3], [0, 1, 2, 1, 0, 1]
    assert np.array_equal(hr, a[np.ix_(rows, cols)])


def test_nothing_decoded_is_kept(tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(4)]
    for i, f in enumerate(files):
        _png(f, 96, 96, seed=i)
    ds = HRFileDataset(files, patch=32, seed=0, length=40)
    before = len(pickle.dumps(ds))
    ds[0]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ds[i]
    kept = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    # 120 reads of 110 KB images: nothing of them stays (a cache would hold >= 4 x 110 KB)
    assert kept < 64 * 1024
    assert len(pickle.dumps(ds)) == before  # what a worker receives does not grow either
    assert isinstance(ds.files, np.ndarray) and ds.files.dtype.kind == "S"
