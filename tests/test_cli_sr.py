"""`savl sr` as a Real-ESRGAN user expects it (inference_realesrgan.py): folders, --suffix, --ext, --outscale,
precision, a progress bar, per-file errors that do not stop a batch, other projects' .pth files (spandrel),
and host memory flat in the image size."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import save_tiny_x4

from savl.cli import autocast_dtype, main
from savl.io import read_image, write_image

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture
def model(tmp_path):
    return str(save_tiny_x4(tmp_path / "tiny.safetensors"))


def _smooth(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(h, w), mode="bilinear")[0]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_image(d / "a.png", _smooth(20, 24, 1))
    write_image(d / "b.jpg", _smooth(16, 12, 2))
    return d


def test_folder_creates_output_folder_with_suffix_and_kept_formats(tmp_path, folder, model, capsys):
    out = tmp_path / "results" / "x4"  # two levels that do not exist yet
    assert main(["sr", str(folder), str(out), "--model", model]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png", "b_x4.jpg"]
    assert read_image(out / "a_x4.png").shape == (3, 80, 96) and read_image(out / "b_x4.jpg").shape == (3, 64, 48)
    assert main(["sr", str(folder), str(out), "--model", model, "--suffix", "_hr", "--ext", "png"]) == 0
    assert {"a_hr.png", "b_hr.png"} <= {p.name for p in out.iterdir()}


def test_default_suffix_never_overwrites_an_input(folder, model, capsys):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["sr", str(folder), str(folder), "--model", model]) == 0  # in place: outputs beside inputs
    assert {"a_x4.png", "b_x4.jpg"} <= {p.name for p in folder.iterdir()}
    assert all((folder / name).read_bytes() == data for name, data in before.items())
    # An empty suffix into the input folder would overwrite: refused before anything is written.
    assert main(["sr", str(folder), str(folder), "--model", model, "--suffix", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert "would overwrite an input" in err and "\n" not in err
    assert all((folder / name).read_bytes() == data for name, data in before.items())


def test_ext_jpg_and_alpha_goes_to_png(tmp_path, model):
    src = tmp_path / "rgba.png"
    write_image(src, _smooth(12, 12), alpha=torch.ones(1, 12, 12))
    assert main(["sr", str(src), str(tmp_path / "o"), "--model", model, "--ext", "jpg"]) == 0
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["rgba_x4.png"]  # JPEG cannot hold alpha
    assert main(["sr", str(tmp_path / "o" / "rgba_x4.png"), str(tmp_path / "j.jpg"), "--model", model]) == 2


def test_outscale_resizes_the_x4_output_with_lanczos(tmp_path, model):
    from PIL import Image

    src = tmp_path / "p.png"
    write_image(src, _smooth(30, 40))
    assert main(["sr", str(src), str(tmp_path / "x4.png"), "--model", model]) == 0
    assert main(["sr", str(src), str(tmp_path / "o"), "--model", model, "-s", "2.5"]) == 0
    got = np.asarray(Image.open(tmp_path / "o" / "p_x2.5.png"))
    assert got.shape == (75, 100, 3)
    ref = np.asarray(Image.open(tmp_path / "x4.png").resize((100, 75), Image.LANCZOS))
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 2


def test_one_bad_file_does_not_stop_the_batch(tmp_path, folder, model, capsys):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    out = tmp_path / "out"
    assert main(["sr", str(folder), str(out), "--model", model]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png", "b_x4.jpg"]  # before and after the bad one
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "broken.png" in err[0] and "1 of 3 images failed" in err[1]


def test_progress_bar_over_files(tmp_path, folder, model, capsys):
    assert main(["sr", str(folder), str(tmp_path / "o"), "--model", model, "--progress"]) == 0
    assert "2/2" in capsys.readouterr().err


def test_precision_defaults_to_half_on_cuda_and_fp32_switch(monkeypatch, tmp_path, folder, model):
    assert autocast_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype("auto", "cuda") == torch.float16
    assert autocast_dtype("fp32", "cuda") == torch.float32

    class NoHalf:
        supports = {torch.float16: False, torch.bfloat16: False}

    assert autocast_dtype("fp16", "cuda", NoHalf()) == torch.float32
    # --fp32 and --precision run on CPU and give close results.
    assert main(["sr", str(folder / "a.png"), str(tmp_path / "f.png"), "--model", model, "--fp32"]) == 0
    assert main(["sr", str(folder / "a.png"), str(tmp_path / "b.png"), "--model", model, "--precision", "bf16"]) == 0
    assert (read_image(tmp_path / "f.png") - read_image(tmp_path / "b.png")).abs().max() < 0.05


# ----------------------------------------------------------------------------------- other projects' models
def _rrdb_state(nf=8, gc=32, blocks=1, seed=0):
    """A Real-ESRGAN-layout RRDBNet x4 state dict (BasicSR key names, {"params_ema": ...}), random weights."""
    g = torch.Generator().manual_seed(seed)

    def conv(cout, cin):
        return {"weight": torch.randn(cout, cin, 3, 3, generator=g) * 0.05, "bias": torch.zeros(cout)}

    layers = {"conv_first": conv(nf, 3)}
    for b in range(blocks):
        for r in (1, 2, 3):
            for k in range(1, 6):
                layers[f"body.{b}.rdb{r}.conv{k}"] = conv(nf if k == 5 else gc, nf + (k - 1) * gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        layers[name] = conv(nf, nf)
    layers["conv_last"] = conv(3, nf)
    return {"params_ema": {f"{k}.{p}": t for k, d in layers.items() for p, t in d.items()}}


def test_realesrgan_pth_runs_through_spandrel_and_the_same_tiling(tmp_path):
    spandrel = pytest.importorskip("spandrel")
    pth = tmp_path / "RealESRGAN_tiny.pth"
    torch.save(_rrdb_state(), pth)
    src = tmp_path / "p.png"
    write_image(src, _smooth(24, 20))
    assert main(["sr", str(src), str(tmp_path / "whole.png"), "--model", str(pth), "--tile", "none"]) == 0
    desc = spandrel.ModelLoader().load_from_file(pth)  # spandrel's own loader, whole image, as the reference
    assert desc.architecture.name == "ESRGAN" and desc.scale == 4
    with torch.no_grad():
        ref = desc(read_image(src)[None])[0]
    assert (read_image(tmp_path / "whole.png") - ref).abs().max() <= 0.5 / 255 + 1e-6
    tiled = ["--tile", "16", "--overlap", "8"]
    assert main(["sr", str(src), str(tmp_path / "tiled.png"), "--model", str(pth), *tiled]) == 0
    assert (read_image(tmp_path / "tiled.png") - ref).abs().max() < 0.05


def test_pth_without_spandrel_names_the_extra(tmp_path, monkeypatch, capsys):
    pth = tmp_path / "net.pth"
    torch.save(_rrdb_state(), pth)
    src = tmp_path / "p.png"
    write_image(src, _smooth(8, 8))
    monkeypatch.setitem(sys.modules, "spandrel", None)  # import spandrel now raises ImportError
    assert main(["sr", str(src), str(tmp_path / "o.png"), "--model", str(pth)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "net.pth" in err and "savl[spandrel]" in err
    assert not (tmp_path / "o.png").exists()


# ------------------------------------------------------------------------------------------------ memory
@pytest.mark.slow
def test_sr_host_memory_per_output_pixel_is_small():
    """The whole command at 1 and 4 output Mpx in fresh processes: the growth per output pixel (the slope, so
    torch and the model cancel) was about 85 bytes when the output was a float tensor and then float64
    quantisation temporaries; streamed into a uint8 array it must be at most 20."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        from sr_memory import measure
    finally:
        sys.path.remove(str(root / "benchmarks"))
    result = measure(root, [256, 512], 128, "png")
    assert result["bytes_per_output_pixel"] <= 20, result
