"""savl.data.prepare and `savl data prepare`: Real-ESRGAN's tiles (hand-computed offsets, pixels checked against
the source), multi-scale copies (sizes, names, Lanczos), the DF2K + OST pipeline on a tiny generated tree and
its meta_info list, reruns that redo nothing, and one-line errors."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from savl.cli import main
from savl.data import prepare
from savl.data.hr_files import read_meta_info
from savl.errors import DataError


def _png(path, h, w, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return a


def fake_tree(root):
    """A tiny DF2K + OST tree laid out as the downloads and the OST release are."""
    _png(root / "DIV2K" / "DIV2K_train_HR" / "0001.png", 70, 90, 1)
    _png(root / "DIV2K" / "DIV2K_train_HR" / "0002.png", 64, 64, 2)
    _png(root / "Flickr2K" / "Flickr2K" / "Flickr2K_HR" / "000001.png", 80, 56, 3)
    _png(root / "OST" / "OutdoorSceneTrain_v2" / "sky" / "sky_0001.png", 50, 60, 4)
    _png(root / "OST" / "OutdoorSceneTrain_v2" / "animal" / "animal_0001.png", 40, 40, 5)
    return root


def test_tile_offsets_by_hand():
    # 650 = 400 + 250: 0, 200 fit; 650 - 600 = 50 > 0 uncovered -> a tile flush with the end at 250
    assert prepare.tile_starts(650) == [0, 200, 250]
    assert prepare.tile_starts(600) == [0, 200]  # 200 + 400 = 600: nothing left over
    assert prepare.tile_starts(650, thresh=50) == [0, 200]  # 50 left, not more than thresh
    assert prepare.tile_starts(400) == [0] and prepare.tile_starts(250) == [0]


def test_subimages_are_the_source_windows(tmp_path):
    a = _png(tmp_path / "in" / "deep" / "x.png", 65, 50)
    tiles = prepare.make_subimages(tmp_path / "in", tmp_path / "out", crop=40, step=20)
    # rows: 0, 20 (+ 25 for the 5 left at the bottom); columns: 0 (+ 10 for the 10 left at the right)
    expected = [(t, l) for t in (0, 20, 25) for l in (0, 10)]
    assert [p.relative_to(tmp_path / "out").as_posix() for p in tiles] == [
        f"deep/x_s{k:03d}.png" for k in range(1, 7)
    ]
    for p, (t, l) in zip(tiles, expected):
        assert np.array_equal(np.asarray(Image.open(p)), a[t : t + 40, l : l + 40]), p.name
    # an image smaller than the crop is one tile, whole
    b = _png(tmp_path / "small" / "s.png", 30, 20)
    (tile,) = prepare.make_subimages(tmp_path / "small", tmp_path / "out2", crop=40, step=20)
    assert np.array_equal(np.asarray(Image.open(tile)), b)


def test_multiscale_copies_sizes_names_and_lanczos(tmp_path):
    a = _png(tmp_path / "src" / "p.png", 90, 120)
    files = prepare.make_multiscale([tmp_path / "src"], tmp_path / "ms", shortest_edge=40)
    assert [f.name for f in files] == ["pT0.png", "pT1.png", "pT2.png", "pT3.png"]
    # 120 x 90 at 3/4, 1/2, 1/3 (truncated) and with the shortest edge at 40: 53 x 40 (53.3 truncated)
    assert [Image.open(f).size for f in files] == [(90, 67), (60, 45), (40, 30), (53, 40)]
    want = np.asarray(Image.fromarray(a).resize((60, 45), Image.LANCZOS))
    assert np.array_equal(np.asarray(Image.open(files[1])), want)
    with pytest.raises(DataError, match="clashes"):
        _png(tmp_path / "src2" / "p.png", 10, 10)
        prepare.make_multiscale([tmp_path / "src", tmp_path / "src2"], tmp_path / "ms2")


def test_paper_preparation_on_a_fake_tree_and_rerun(tmp_path):
    root = fake_tree(tmp_path / "data")
    meta = prepare.prepare_paper_data(root, crop=48, step=24, shortest_edge=40)
    assert meta == root / "DF2K_OST_sub" / "meta_info.txt"
    names = read_meta_info(meta)
    assert len(names) == len(set(names)) and all((meta.parent / n).is_file() for n in names)
    # counted by hand from tile_starts(side, 48, 24) (one tile per side <= 48):
    # DF2K originals 90x70 -> 3x2, 64x64 -> 2x2, 56x80 -> 2x3; OST 60x50 -> 2x2, 40x40 -> 1
    # multi-scale (3/4, 1/2, 1/3, shortest edge 40): 67x52 -> 2x2, 45x35, 30x23 -> 1, 1, 51x40 -> 2x1;
    # 48x48 -> 1, 32x32, 21x21 -> 1, 1, 40x40 -> 1; 42x60 -> 1x2, 28x40 -> 1, 18x26 -> 1, 40x57 -> 1x2
    groups = {"DF2K_HR_sub": 6 + 4 + 6, "DF2K_multiscale_sub": (4 + 1 + 1 + 2) + 4 + (2 + 1 + 1 + 2), "OST_sub": 4 + 1}
    for g, n in groups.items():
        assert sum(1 for x in names if x.startswith(g + "/")) == n, g
    assert len(names) == sum(groups.values())
    assert "OST_sub/OutdoorSceneTrain_v2/sky/sky_0001_s004.png" in names  # OST's folders are kept
    # a second run redoes nothing (files untouched)
    stamps = {n: os.stat(meta.parent / n).st_mtime_ns for n in names}
    prepare.prepare_paper_data(root, crop=48, step=24, shortest_edge=40)
    assert {n: os.stat(meta.parent / n).st_mtime_ns for n in names} == stamps
    assert not list(root.rglob(".*.tmp"))


def test_cli_prepare_and_its_one_line_errors(tmp_path, capsys):
    root = fake_tree(tmp_path / "data")
    args = ["data", "prepare", "--root", str(root), "--crop", "48", "--step", "24", "--shortest-edge", "40"]
    assert main([*args, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"{root / 'DF2K_OST_sub' / 'meta_info.txt'}: 39 training images"
    # --from: any folders, into --out
    mine = tmp_path / "mine"
    assert main(["data", "prepare", "--from", str(root / "OST"), "--out", str(mine), "--crop", "48", "--step=24"]) == 0
    assert read_meta_info(mine / "meta_info.txt")[0] == "sub/OST/OutdoorSceneTrain_v2/animal/animal_0001_s001.png"
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "prepare", "--root", str(empty), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "DIV2K/DIV2K_train_HR: not found under" in err and f"`savl data download DIV2K --root {empty}`" in err
    assert main(["data", "prepare", "--from", str(root), "--out", str(root / "inside"), "--quiet"]) == 2
    assert "must not be inside" in capsys.readouterr().err


def test_subimages_of_a_camera_jpeg_follow_its_exif_orientation(tmp_path):
    from savl.io import read_image

    src = tmp_path / "in" / "cam.jpg"
    src.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(src, exif=exif)
    upright = (read_image(src) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert upright.shape == (50, 30, 3)
    tiles = prepare.make_subimages(tmp_path / "in", tmp_path / "out", crop=40, step=20)
    assert len(tiles) == 2  # rows 0 and 10 of the upright 50 x 30 picture
    for p, top in zip(tiles, (0, 10)):
        assert np.array_equal(np.asarray(Image.open(p)), upright[top : top + 40])
