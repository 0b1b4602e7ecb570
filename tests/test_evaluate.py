"""savl.evaluate: tiled evaluation reports what savl.metrics computes on the same outputs; JSON provenance;
LR-only folders; folder/catalog resolution; the Table 2 layout; the `savl eval` handler."""

import hashlib
import json
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from savl.cli import main as cli_main
from savl.errors import ConfigError, DataError, ModelFileError
from savl.evaluate import (
    BicubicUpsampler,
    EvalProtocol,
    EvalResult,
    evaluate,
    format_table,
    open_eval_data,
)
from savl.imresize import imresize
from savl.infer import upscale
from savl.io import read_image
from savl.io import write_image as _write_image
from savl.metrics import LPIPS, psnr, ssim


# ------------------------------------------------------------------------------------- a tiny x4 model
@dataclass
class TinyConfig:
    upscale: int = 4


class TinySR(nn.Module):
    """A 1x1 colour mix followed by bilinear x4: a real, non-trivial, deterministic SR network for tests."""

    architecture = "test_tiny_sr"

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.mix = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return F.interpolate(self.mix(x), scale_factor=self.config.upscale, mode="bilinear", align_corners=False)


def _tiny_model(seed=0) -> TinySR:
    g = torch.Generator().manual_seed(seed)
    m = TinySR(TinyConfig())
    with torch.no_grad():
        m.mix.weight.copy_(torch.eye(3)[:, :, None, None] + 0.05 * torch.randn(3, 3, 1, 1, generator=g))
        m.mix.bias.copy_(0.01 * torch.randn(3, generator=g))
    return m


@pytest.fixture(scope="module")
def tiny_registered():
    from savl.models.io import register_architecture

    register_architecture(TinySR.architecture, TinySR, TinyConfig)
    return TinySR


def write_image(path, img):
    """savl.io.write_image into a folder created on demand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_image(path, img)


def _smooth_image(g, h, w):
    """A smooth random colour image (low-frequency noise upsampled) so SR has something to get right."""
    base = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g)
    return F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)[0]


@pytest.fixture()
def paired_folder(tmp_path):
    """root/hr/NAME.png and root/lr/NAMEx4.png (DIV2K naming), LR = MATLAB bicubic of HR, 8-bit PNGs."""
    g = torch.Generator().manual_seed(0)
    root = tmp_path / "pairs"
    for i, (h, w) in enumerate([(64, 96), (80, 64), (48, 48)]):
        hr = _smooth_image(g, h, w)
        write_image(root / "hr" / f"img{i}.png", hr)
        write_image(root / "lr" / f"img{i}x4.png", imresize(read_image(root / "hr" / f"img{i}.png"), scale=0.25))
    return root


# ------------------------------------------------------------------------------------------- protocol
def test_protocol_defaults_and_description():
    p = EvalProtocol(dataset="RealSR", dataset_version="v3")
    assert (p.scale, p.crop_border, p.y_channel, p.rounding, p.tile, p.overlap, p.lpips_net) == (
        4,
        4,
        True,
        "8-bit",
        256,
        16,
        "alex",
    )
    text = p.describe()
    assert "\n" not in text
    for part in ("x4", "Y (BT.601)", "8-bit", "4px border crop", "LPIPS v0.1 alex", "256px LR tiles", "RealSR (v3)"):
        assert part in text
    assert EvalProtocol(scale=2).crop_border == 2
    assert "RealSR" not in p.describe(with_dataset=False)


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": 0}, {"crop_border": -1}, {"rounding": "float"}, {"tile": 16, "overlap": 8}, {"lpips_net": "resnet"}],
)
def test_protocol_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        EvalProtocol(**kwargs)


# ------------------------------------------------------------------------------------------- evaluate
def test_reported_metrics_equal_direct_computation(paired_folder):
    from savl.data import PairedFolderDataset

    ds = PairedFolderDataset(paired_folder, 4)
    model = _tiny_model()
    # small tiles so the tiled path (several tiles, blended) is what gets scored
    protocol = EvalProtocol(tile=8, overlap=2, lpips_net=None, dataset="pairs")
    res = evaluate(model, ds, protocol)
    assert res.metrics == ("psnr", "ssim") and res.names == ["img0", "img1", "img2"]
    for row, item in zip(res.per_image, (ds[i] for i in range(len(ds)))):
        sr = upscale(model, item["lr"], tile=8, overlap=2, device="cpu")
        assert row["psnr"] == float(psnr(sr[None], item["hr"][None], 4)[0])
        assert row["ssim"] == float(ssim(sr[None], item["hr"][None], 4)[0])
        assert 15 < row["psnr"] < 60 and 0 < row["ssim"] < 1
    assert res.means["psnr"] == pytest.approx(sum(r["psnr"] for r in res.per_image) / 3, abs=1e-12)
    # whole-image inference (tile=None) is the same network run once: it equals the model's own output
    whole = evaluate(model, ds, EvalProtocol(tile=None, lpips_net=None))
    item = ds[0]
    with torch.no_grad():
        direct = model(item["lr"][None]).clamp(0, 1)
    assert whole.per_image[0]["psnr"] == float(psnr(direct, item["hr"][None], 4)[0])


def test_bicubic_baseline_on_bicubic_pairs_and_saved_outputs(paired_folder, tmp_path):
    from savl.data import PairedFolderDataset

    ds = PairedFolderDataset(paired_folder, 4)
    out = tmp_path / "sr"
    res = evaluate(BicubicUpsampler(4), ds, EvalProtocol(tile=None, lpips_net=None), save_dir=out)
    for row, i in zip(res.per_image, range(len(ds))):
        saved = read_image(out / f"{row['name']}.png")
        assert tuple(saved.shape) == tuple(ds[i]["hr"].shape)
        # the saved PNG is what was scored: 8-bit rounding is the protocol's first step
        assert row["psnr"] == float(psnr(saved[None], ds[i]["hr"][None], 4)[0])
        assert row["output"] == str(out / f"{row['name']}.png")


def test_random_trunk_lpips_is_never_reported_as_lpips(paired_folder):
    from savl.data import PairedFolderDataset

    torch.manual_seed(0)
    ds = PairedFolderDataset(paired_folder, 4)
    rand = LPIPS("alex", pretrained=False)
    res = evaluate(_tiny_model(), ds, EvalProtocol(tile=None), lpips=rand)
    assert res.metrics == ("psnr", "ssim", "lpips_random_trunk")
    assert "lpips" not in res.means and res.means["lpips_random_trunk"] > 0
    table = format_table({"tiny": res})
    assert "lpips_random_trunk (not LPIPS)" in table and "LPIPS↓" not in table
    assert "RANDOM trunk, not LPIPS" in table


def test_default_lpips_offline_raises_model_file_error(paired_folder, tmp_path, monkeypatch):
    from savl.data import PairedFolderDataset

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelFileError, match="alexnet-owt-7be5be79.pth"):
        evaluate(_tiny_model(), PairedFolderDataset(paired_folder, 4), EvalProtocol())


def test_lr_only_folder_saves_outputs_without_metrics(tmp_path):
    g = torch.Generator().manual_seed(1)
    lr_dir = tmp_path / "realsrset"
    for name, (h, w) in {"a": (12, 16), "b": (20, 10)}.items():
        write_image(lr_dir / f"{name}.png", _smooth_image(g, h, w))
    ds, name, version, kind = open_eval_data(str(lr_dir))
    assert (name, kind) == ("realsrset", "lr-only") and version.startswith("files-")
    with pytest.raises(ConfigError, match="LR-only"):
        evaluate(BicubicUpsampler(4), ds, EvalProtocol())
    out = tmp_path / "out"
    res = evaluate(BicubicUpsampler(4), ds, EvalProtocol(dataset=name), save_dir=out)  # LPIPS never built
    assert not res.has_metrics and res.means == {} and res.metrics == ()
    assert tuple(read_image(out / "a.png").shape) == (3, 48, 64)
    assert tuple(read_image(out / "b.png").shape) == (3, 80, 40)
    assert "no metrics" in res.summary()
    data = json.loads(res.to_json(tmp_path / "r.json").read_text())
    assert data["means"] == {} and all(set(r) == {"name", "output"} for r in data["per_image"])


def test_scale_mismatch_is_a_config_error(paired_folder):
    from savl.data import PairedFolderDataset

    with pytest.raises(ConfigError, match="x2"):
        evaluate(BicubicUpsampler(2), PairedFolderDataset(paired_folder, 4), EvalProtocol(lpips_net=None))


# ----------------------------------------------------------------------------------------- JSON, table
def test_json_has_provenance_and_infinite_psnr_as_string(tmp_path):
    from savl.evaluate import provenance

    ckpt = tmp_path / "w.bin"
    ckpt.write_bytes(b"weights")
    res = EvalResult(
        EvalProtocol(dataset="toy"),
        per_image=[{"name": "a", "psnr": math.inf, "ssim": 1.0}],
        means={"psnr": math.inf, "ssim": 1.0},
        metrics=("psnr", "ssim"),
    )
    path = res.to_json(tmp_path / "sub" / "r.json", provenance(checkpoint=ckpt, command=["savl", "eval"]))
    data = json.loads(path.read_text())  # strict JSON: no Infinity token
    prov = data["provenance"]
    for key in ("command", "git_commit", "hardware", "torch_version", "checkpoint_sha256", "protocol"):
        assert key in prov
    assert prov["command"] == "savl eval"
    assert prov["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert prov["torch_version"] == torch.__version__ and prov["hardware"]["cpu"]
    assert prov["protocol"]["crop_border"] == 4 and data["protocol"]["dataset"] == "toy"
    assert data["means"]["psnr"] == "inf" and data["per_image"][0]["psnr"] == "inf"
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left behind


def _result(dataset, psnr_, ssim_, lpips_=None):
    metrics = ("psnr", "ssim") + (("lpips",) if lpips_ is not None else ())
    means = {"psnr": psnr_, "ssim": ssim_} | ({"lpips": lpips_} if lpips_ is not None else {})
    return EvalResult(
        EvalProtocol(dataset=dataset),
        means=means,
        metrics=metrics,
        lpips_model="LPIPS v0.1 (alex, ImageNet trunk)" if lpips_ is not None else None,
    )


def test_format_table_layout_like_table_2():
    table = format_table(
        {
            "Bicubic": [_result("RealSR", 27.241, 0.76412, 0.4581), _result("DRealSR", 30.5, 0.8301, 0.4)],
            "SAVL": [_result("RealSR", 28.999, 0.81234, 0.2567)],
        }
    )
    lines = table.splitlines()
    assert lines[0] == (
        "| Method | RealSR PSNR↑ | RealSR SSIM↑ | RealSR LPIPS↓ | DRealSR PSNR↑ | DRealSR SSIM↑ | DRealSR LPIPS↓ |"
    )
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|"
    # best per column in bold (higher PSNR/SSIM, lower LPIPS); a missing result is a dash
    assert lines[2] == "| Bicubic | 27.24 | 0.7641 | 0.4581 | **30.50** | **0.8301** | **0.4000** |"
    assert lines[3] == "| SAVL | **29.00** | **0.8123** | **0.2567** | – | – | – |"
    assert any(line.startswith("Protocol: x4; PSNR/SSIM on Y") for line in lines)
    assert "LPIPS: LPIPS v0.1 (alex, ImageNet trunk)." in lines
    with pytest.raises(ConfigError):
        format_table({"x": EvalResult(EvalProtocol(dataset="lr"))})


# ------------------------------------------------------------------------------------------------ data
def test_open_folders_and_catalog_names(tmp_path, monkeypatch, paired_folder):
    ds, name, version, kind = open_eval_data(str(paired_folder))
    assert (len(ds), name, kind) == (3, "pairs", "paired (folders)")
    # a frozen validation set folder -> its pairs, versioned by its content hash
    from savl.data import FrozenValidationSet

    hr = [(f"p{i}", _smooth_image(torch.Generator().manual_seed(i), 32, 32)) for i in range(2)]
    frozen = FrozenValidationSet.build(hr, "bicubic", seed=3, path=tmp_path / "frozen")
    ds, _, version, kind = open_eval_data(str(tmp_path / "frozen"))
    assert kind == "frozen" and version == "sha256-" + frozen.hash[:12] and len(ds) == 2
    # a catalogued name resolves under the data root (DRealSR x4 test layout)
    monkeypatch.setenv("SAVL_DATA_DIR", str(tmp_path / "data"))
    d = tmp_path / "data" / "DRealSR" / "x4" / "Test_x4"
    g = torch.Generator().manual_seed(2)
    img = _smooth_image(g, 32, 40)
    write_image(d / "test_HR" / "s_x1.png", img)
    write_image(d / "test_LR" / "s_x4.png", imresize(img, scale=0.25))
    ds, name, _, kind = open_eval_data("DRealSR")
    assert (name, kind, len(ds), ds[0]["name"]) == ("DRealSR", "paired", 1, "s")
    # RealSR v3: Canon and Nikon x4 test folders are read as one set; a single such folder is detected as is
    for cam in ("Canon", "Nikon"):
        folder = tmp_path / "data" / "RealSR" / "RealSR(V3)" / cam / "Test" / "4"
        write_image(folder / f"{cam}_001_HR.png", img)
        write_image(folder / f"{cam}_001_LR4.png", imresize(img, scale=0.25))
    ds, _, _, kind = open_eval_data("RealSR")
    assert (kind, [ds[i]["name"] for i in range(len(ds))]) == ("paired", ["Canon_001", "Nikon_001"])
    assert open_eval_data(str(folder))[3] == "paired (realsr)"
    with pytest.raises(DataError, match="HR-only"):
        (tmp_path / "data" / "DIV2K").mkdir()
        open_eval_data("DIV2K")
    with pytest.raises(DataError, match="neither a folder nor a catalogued dataset"):
        open_eval_data(str(tmp_path / "missing"))


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_eval_paired_with_json(tiny_registered, paired_folder, tmp_path, capsys):
    from savl.models.io import save_model

    weights = save_model(_tiny_model(), tmp_path / "tiny.safetensors")
    out = tmp_path / "results.json"
    rc = cli_main(
        ["eval", "--model", str(weights), "--data", str(paired_folder), "--lpips", "none", "--out", str(out)]
        + ["--tile", "8", "--overlap", "2", "--save-images", str(tmp_path / "imgs")]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "| Method | pairs PSNR↑ | pairs SSIM↑ |" in text and "| tiny |" in text and "Protocol: x4" in text
    data = json.loads(out.read_text())
    assert data["provenance"]["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert data["protocol"]["tile"] == 8 and data["protocol"]["dataset_version"].startswith("files-")
    # the JSON's numbers are those of psnr() on the saved outputs
    hr = read_image(paired_folder / "hr" / "img1.png")
    sr = read_image(tmp_path / "imgs" / "img1.png")
    row = next(r for r in data["per_image"] if r["name"] == "img1")
    assert row["psnr"] == float(psnr(sr[None], hr[None], 4)[0])


def test_cli_errors_are_one_line(paired_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert cli_main(["eval", "--model", "bicubic", "--data", str(paired_folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "alexnet-owt-7be5be79.pth" in err and "--lpips none" in err
    lr_only = tmp_path / "lr"
    write_image(lr_only / "x.png", torch.rand(3, 8, 8))
    assert cli_main(["eval", "--model", "bicubic", "--data", str(lr_only)]) == 2
    assert "LR-only" in capsys.readouterr().err
    assert cli_main(["eval", "--model", str(tmp_path / "none.safetensors"), "--data", str(paired_folder)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli_main(["eval", "--model", "bicubic", "--data", str(paired_folder), "--tile", "big"]) == 2


def test_importing_evaluate_does_not_import_torch():
    # `savl --help` builds the eval parser (savl.eval_command, which imports savl.evaluate): both stay cheap.
    import subprocess
    import sys

    code = "import sys, savl.evaluate, savl.eval_command; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
