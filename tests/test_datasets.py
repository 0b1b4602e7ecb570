"""savl.data.datasets: crops checked by brute-force search with numpy, pairs against the files written,
frozen sets against a fresh draw and a replay, and tampering detected by hash."""

import json

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import DataLoader

from savl.data import (
    FrozenValidationSet,
    HRPatchDataset,
    LRFolderDataset,
    PairedFolderDataset,
    degrade_batch,
)
from savl.errors import ConfigError, DataError
from savl.io import read_image, write_image


def _img(h, w, seed, *, levels=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (3, h, w), generator=g).float() / (levels - 1)


class NoisyAveragePool:
    """A tiny stand-in degradation with the library's interface: 2x2 mean, then Gaussian noise of a
    random strength, rounded to 8 bits. `apply` replays a record exactly."""

    name = "test-avgpool-noise"

    def __call__(self, hr, generator):
        sig = torch.rand(hr.shape[0], generator=generator) * 0.05
        seeds = torch.randint(0, 2**31 - 1, (hr.shape[0],), generator=generator)
        params = [{"sigma": float(s), "noise_seed": int(n)} for s, n in zip(sig, seeds)]
        return self.apply(hr, params), params

    def apply(self, hr, params):
        lr = torch.nn.functional.avg_pool2d(hr, 2)
        out = []
        for x, p in zip(lr, params):
            g = torch.Generator().manual_seed(p["noise_seed"])
            out.append(x + p["sigma"] * torch.randn(x.shape, generator=g))
        return (torch.stack(out).clamp(0, 1) * 255).round() / 255


# -------------------------------------------------------------------------------------------- patches
def _find(patch: torch.Tensor, image: torch.Tensor) -> list[tuple[int, bool, int, int]]:
    """Every (k, flip, top, left) with patch == dihedral(image window) (numpy brute force)."""
    img = image.permute(1, 2, 0).numpy()
    p = patch.permute(1, 2, 0).numpy()
    s = p.shape[0]
    windows = sliding_window_view(img, (s, s, 3))[:, :, 0]  # (H-s+1, W-s+1, s, s, 3)
    hits = []
    for k in range(4):
        for flip in (False, True):
            # undo: patch = flip(rot90(window, k)) -> window = rot90(unflip(patch), -k)
            q = p[:, ::-1] if flip else p
            q = np.rot90(q, -k, axes=(0, 1))
            eq = np.all(windows == q, axis=(2, 3, 4))
            hits += [(k, flip, int(t), int(l)) for t, l in zip(*np.nonzero(eq))]
    return hits


def test_patches_are_dihedral_windows_of_the_image_and_cover_all_eight():
    image = _img(40, 52, seed=1)
    ds = HRPatchDataset([image], patch=16, length=64, seed=3)
    ops, tops, lefts = set(), set(), set()
    for i in range(len(ds)):
        hr = ds[i]["hr"]
        assert hr.shape == (3, 16, 16) and hr.dtype == torch.float32
        hits = _find(hr, image)
        assert len(hits) == 1, i  # random content: exactly one place and orientation
        k, flip, t, l = hits[0]
        ops.add((k, flip))
        tops.add(t)
        lefts.add(l)
    assert len(ops) == 8
    assert min(tops) >= 0 and max(tops) <= 40 - 16 and min(lefts) >= 0 and max(lefts) <= 52 - 16
    assert len(tops) > 10 and len(lefts) > 10


def test_patches_are_seeded_per_item_and_epoch():
    images = [("a", _img(30, 30, 1)), ("b", _img(24, 40, 2))]
    ds = HRPatchDataset(images, patch=8, length=10, seed=5)
    first = [ds[i]["hr"] for i in range(10)]
    again = [ds[i]["hr"] for i in reversed(range(10))][::-1]  # order of access does not matter
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(_find(first[i], images[i % 2][1]) for i in range(10))  # item i uses image i mod n
    ds.set_epoch(1)
    assert not all(torch.equal(a, ds[i]["hr"]) for i, a in enumerate(first))
    other = HRPatchDataset(images, patch=8, length=10, seed=6)
    assert not all(torch.equal(a, other[i]["hr"]) for i, a in enumerate(first))
    plain = HRPatchDataset(images, patch=8, length=10, seed=5, augment=False)
    assert all(_find(plain[i]["hr"], images[i % 2][1])[0][:2] == (0, False) for i in range(10))


def test_patches_from_a_folder_match_the_files(tmp_path):
    img = _img(20, 26, 7)
    write_image(tmp_path / "x.png", img)
    write_image(tmp_path / "small.png", _img(6, 30, 8))
    with pytest.raises(DataError, match="small.png"):
        HRPatchDataset(tmp_path, patch=8)
    (tmp_path / "small.png").unlink()
    ds = HRPatchDataset(tmp_path, patch=8, length=3, seed=0, cache=True)
    assert len(ds) == 3 and _find(ds[2]["hr"], img)
    with pytest.raises(ConfigError):
        HRPatchDataset(tmp_path, patch=0)


def test_degrade_batch_matches_a_direct_call():
    ds = HRPatchDataset([_img(32, 32, 1)], patch=16, length=4, seed=0)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    deg = NoisyAveragePool()
    lr, hr, params = degrade_batch(batch, deg, torch.Generator().manual_seed(9))
    ref, ref_params = deg(batch["hr"], torch.Generator().manual_seed(9))
    assert torch.equal(hr, batch["hr"]) and torch.equal(lr, ref) and params == ref_params
    assert lr.shape == (4, 3, 8, 8)
    with pytest.raises(DataError, match="B, 3, H, W"):
        degrade_batch(torch.zeros(3, 8, 8), deg, None)


# ---------------------------------------------------------------------------------------------- pairs
def _pair(scale, lr_hw, seed, extra=(0, 0)):
    """LR random; HR = LR blown up by pixel repetition (+ extra rows/cols to be mod-cropped)."""
    lr = _img(*lr_hw, seed)
    hr = lr.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    hr = torch.nn.functional.pad(hr, (0, extra[1], 0, extra[0]), value=0.5)
    return lr, hr


def test_folder_layout_pairs_by_name_and_mod_crops(tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "LR").mkdir()
    lr1, hr1 = _pair(4, (6, 8), 1, extra=(3, 2))  # HR 27 x 34 -> cropped to 24 x 32
    lr2, hr2 = _pair(4, (5, 5), 2)
    write_image(tmp_path / "hr" / "0801.png", hr1)
    write_image(tmp_path / "LR" / "0801x4.png", lr1)  # DIV2K naming
    write_image(tmp_path / "hr" / "b.png", hr2)
    write_image(tmp_path / "LR" / "b.png", lr2)  # same-name naming
    ds = PairedFolderDataset(tmp_path, 4)
    assert len(ds) == 2 and [ds[i]["name"] for i in range(2)] == ["0801", "b"]
    item = ds[0]
    assert torch.equal(item["lr"], read_image(tmp_path / "LR" / "0801x4.png"))
    assert torch.equal(item["hr"], hr1[:, :24, :32])
    assert torch.equal(ds[1]["hr"], hr2)


def test_realsr_and_drealsr_layouts(tmp_path):
    real = tmp_path / "Canon" / "Test" / "4"
    real.mkdir(parents=True)
    for i in range(3):
        lr, hr = _pair(4, (4 + i, 6), 10 + i)
        write_image(real / f"Canon_00{i}_HR.png", hr)
        write_image(real / f"Canon_00{i}_LR4.png", lr)
    write_image(real / "Canon_000_LR2.png", _img(8, 12, 0))  # another scale's file is ignored
    ds = PairedFolderDataset(real, 4, layout="realsr")
    assert [ds[i]["name"] for i in range(3)] == ["Canon_000", "Canon_001", "Canon_002"]
    assert torch.equal(ds[2]["lr"], _pair(4, (6, 6), 12)[0])

    d = tmp_path / "Test_x4"
    (d / "test_HR").mkdir(parents=True)
    (d / "test_LR").mkdir()
    lr, hr = _pair(4, (5, 7), 20)
    write_image(d / "test_HR" / "DSC_0001_x1.png", hr)
    write_image(d / "test_LR" / "DSC_0001_x4.png", lr)
    ds = PairedFolderDataset(d, 4, layout="drealsr")
    assert len(ds) == 1 and ds[0]["name"] == "DSC_0001" and torch.equal(ds[0]["hr"], hr)


def test_bad_pairs_name_the_first_bad_file(tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    lr, hr = _pair(4, (4, 4), 1)
    write_image(tmp_path / "hr" / "a.png", hr)
    write_image(tmp_path / "lr" / "a.png", _img(5, 4, 3))  # wrong LR size
    with pytest.raises(DataError, match=r"a\.png: LR is 4x5 but HR a\.png is 16x16; at x4 expected 4x4"):
        PairedFolderDataset(tmp_path, 4)
    write_image(tmp_path / "lr" / "a.png", lr)
    write_image(tmp_path / "hr" / "lonely.png", hr)
    with pytest.raises(DataError, match="lonely.png: HR file has no LR partner"):
        PairedFolderDataset(tmp_path, 4)
    (tmp_path / "hr" / "lonely.png").unlink()
    write_image(tmp_path / "lr" / "stray.png", lr)
    with pytest.raises(DataError, match="stray.png: LR file has no HR partner"):
        PairedFolderDataset(tmp_path, 4)
    with pytest.raises(ConfigError, match="layout"):
        PairedFolderDataset(tmp_path, 4, layout="div2k")
    with pytest.raises(ConfigError, match="multiple"):
        PairedFolderDataset(tmp_path, 4, crop=10)
    with pytest.raises(DataError, match="sub-folder"):
        PairedFolderDataset(tmp_path / "hr", 4)


def test_paired_crops_stay_aligned_under_augmentation(tmp_path):
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    lr, hr = _pair(2, (12, 15), 4)
    write_image(tmp_path / "hr" / "a.png", hr)
    write_image(tmp_path / "lr" / "a.png", lr)
    ds = PairedFolderDataset(tmp_path, 2, crop=8, seed=1, augment=True)
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        assert item["lr"].shape == (3, 4, 4) and item["hr"].shape == (3, 8, 8)
        up = item["lr"].repeat_interleave(2, 1).repeat_interleave(2, 2)
        assert torch.equal(up, item["hr"])  # same place, same orientation
        seen.add(tuple(_find(item["hr"], hr)[0][:2]))
    assert len(seen) > 3


def test_lr_folder(tmp_path):
    imgs = {"b": _img(5, 6, 1), "a": _img(7, 3, 2)}
    for n, x in imgs.items():
        write_image(tmp_path / f"{n}.png", x)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = LRFolderDataset(tmp_path)
    assert [ds[i]["name"] for i in range(len(ds))] == ["a", "b"]
    assert torch.equal(ds[1]["lr"], imgs["b"])
    with pytest.raises(DataError, match="missing: no such folder"):
        LRFolderDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no image files"):
        LRFolderDataset(tmp_path / "empty")


# ------------------------------------------------------------------------------------ frozen val sets
def _images():
    return [("one", _img(16, 20, 1, levels=1000)), ("two", _img(12, 12, 2, levels=1000))]


def test_frozen_set_build_load_replay(tmp_path):
    deg = NoisyAveragePool()
    built = FrozenValidationSet.build(_images(), deg, seed=11, path=tmp_path / "val")
    loaded = FrozenValidationSet.load(tmp_path / "val")
    assert loaded.names == ["one", "two"] and len(loaded) == 2 and loaded.hash == built.hash
    assert loaded.meta == {"degradation": "test-avgpool-noise", "seed": 11}
    for i, (_, src) in enumerate(_images()):
        item = loaded[i]
        assert torch.equal(item["hr"], built[i]["hr"]) and torch.equal(item["lr"], built[i]["lr"])
        hr8 = (src * 255).round() / 255  # stored HR is the 8-bit image the LR was drawn from
        assert torch.equal(item["hr"], hr8)
        replay = deg.apply(hr8[None], loaded.params[i])[0]
        assert torch.equal(item["lr"], replay)
        assert item["lr"].shape == (3, src.shape[1] // 2, src.shape[2] // 2)
    # per-image generators: image 1's draw does not depend on image 0 being there
    solo = FrozenValidationSet.build(_images(), deg, seed=11, path=tmp_path / "solo")
    assert solo.params == loaded.params
    with pytest.raises(DataError, match="already exists"):
        FrozenValidationSet.build(_images(), deg, seed=11, path=tmp_path / "val")
    assert FrozenValidationSet.load_or_build(_images(), deg, 11, tmp_path / "val").hash == built.hash
    with pytest.raises(DataError, match="seed 11, not 12"):
        FrozenValidationSet.load_or_build(_images(), deg, 12, tmp_path / "val")


def test_frozen_set_hash_is_reproducible_and_seed_dependent(tmp_path):
    deg = NoisyAveragePool()
    a = FrozenValidationSet.build(_images(), deg, seed=3, path=tmp_path / "a")
    b = FrozenValidationSet.build(_images(), deg, seed=3, path=tmp_path / "b")
    c = FrozenValidationSet.build(_images(), deg, seed=4, path=tmp_path / "c")
    assert a.hash == b.hash and len(a.hash) == 64
    assert a.hash != c.hash
    for rel in ["hr/one.png", "lr/two.png", "params.json"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_frozen_set_detects_tampering(tmp_path):
    deg = NoisyAveragePool()
    FrozenValidationSet.build(_images(), deg, seed=0, path=tmp_path / "v")
    lr_file = tmp_path / "v" / "lr" / "two.png"
    original = lr_file.read_bytes()
    x = read_image(lr_file)
    x[0, 0, 0] = 1.0 - x[0, 0, 0]
    write_image(lr_file, x)
    with pytest.raises(DataError, match=r"lr/two\.png: changed since the set was built"):
        FrozenValidationSet.load(tmp_path / "v")
    lr_file.write_bytes(original)
    FrozenValidationSet.load(tmp_path / "v")
    (tmp_path / "v" / "hr" / "extra.png").write_bytes(original)
    with pytest.raises(DataError, match="extra.png: unexpected file"):
        FrozenValidationSet.load(tmp_path / "v")
    (tmp_path / "v" / "hr" / "extra.png").unlink()
    (tmp_path / "v" / "params.json").unlink()
    with pytest.raises(DataError, match="params.json: missing"):
        FrozenValidationSet.load(tmp_path / "v")
    with pytest.raises(DataError, match="no manifest"):
        FrozenValidationSet.load(tmp_path)


def test_frozen_set_with_the_real_esrgan_pipeline_replays_exactly(tmp_path):
    from savl.data import sample_images
    from savl.degrade.realesrgan import RealESRGANDegradation

    deg = RealESRGANDegradation()
    imgs = [(n, x[:, 100:164, 100:196]) for n, x in sample_images(["chelsea"])]
    fv = FrozenValidationSet.build(imgs, deg, seed=0, path=tmp_path / "v")
    again = FrozenValidationSet.build(imgs, deg, seed=0, path=tmp_path / "w")
    assert fv.hash == again.hash
    for i in range(len(fv)):
        item = fv[i]
        assert item["lr"].shape == (3, 16, 24)
        replay = deg.apply(item["hr"][None], fv.params[i])[0].clamp(0, 1)
        assert float((replay - item["lr"]).abs().max()) < 0.5 / 255  # the stored 8-bit LR, replayed
    json_params = json.loads((tmp_path / "v" / "params.json").read_text())
    assert json_params["images"][0]["params"] == fv.params[0]


def test_frozen_set_from_a_protocol_name(tmp_path):
    fv = FrozenValidationSet.build(_images()[:1], "bicubic", seed=0, path=tmp_path / "b")
    assert fv.meta["degradation"] == "bicubic" and fv[0]["lr"].shape == (3, 4, 5)
