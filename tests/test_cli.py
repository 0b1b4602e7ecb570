"""The `savl` command: degrade on a sample photo, replay from its record, one-line errors with exit 2."""

import json
import subprocess
import sys

import pytest
import torch
from tiny_model import save_tiny_x4

from savl.cli import main
from savl.io import read_image, write_image


@pytest.fixture
def photo(tmp_path):
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(96, 128), mode="bilinear")[0]
    path = tmp_path / "photo.png"
    write_image(path, img)
    return path


def test_degrade_writes_image_and_record_and_replays(tmp_path, photo, capsys):
    out = tmp_path / "lr.png"
    assert main(["degrade", str(photo), str(out), "--seed", "3", "--protocol", "realesrgan"]) == 0
    lr = read_image(out)
    assert lr.shape == (3, 24, 32)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["protocol"] == "realesrgan" and record["seed"] == 3 and len(record["params"]) == 1
    again = tmp_path / "again.png"
    assert main(["degrade", str(photo), str(again), "--params", str(out.with_suffix(".json"))]) == 0
    assert torch.equal(read_image(again), lr)
    # Same seed, same output; another seed, another output.
    assert main(["degrade", str(photo), str(tmp_path / "same.png"), "--seed", "3"]) == 0
    assert torch.equal(read_image(tmp_path / "same.png"), lr)
    assert main(["degrade", str(photo), str(tmp_path / "other.png"), "--seed", "4"]) == 0
    assert not torch.equal(read_image(tmp_path / "other.png"), lr)


def test_degrade_folder(tmp_path, photo):
    out = tmp_path / "out"
    assert main(["degrade", str(photo.parent), str(out), "--protocol", "bicubic"]) == 0
    assert (out / "photo.png").exists() and (out / "photo.json").exists()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.png", "missing.png"),
        (lambda p: p, "no image files"),
        (lambda p: _write(p / "empty.png", b""), "empty"),
        (lambda p: _write(p / "bad.jpg", b"\xff\xd8\xff\xe0garbage"), "bad.jpg"),
        (lambda p: _write(p / "notes.txt", b"hello"), "notes.txt"),
    ],
)
def test_degrade_bad_input_exits_2_with_one_line(tmp_path, make, message):
    bad = make(tmp_path / "in") if (tmp_path / "in").mkdir() is None else None
    proc = subprocess.run(
        [sys.executable, "-m", "savl", "degrade", str(bad), str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("savl: error:") and message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_bad_params_and_protocol(tmp_path, photo, capsys):
    (tmp_path / "p.json").write_text("{not json")
    assert main(["degrade", str(photo), str(tmp_path / "o.png"), "--params", str(tmp_path / "p.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["degrade", str(photo), str(tmp_path / "o.png"), "--protocol", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "realesrgan" in err
    assert not (tmp_path / "o.png").exists()




def _saved_tiny(tmp_path):
    return save_tiny_x4(tmp_path / "tiny.safetensors")


def test_sr_keeps_gray_16bit_and_alpha(tmp_path):
    from savl.io import read_image as read

    model = _saved_tiny(tmp_path)
    g = torch.Generator().manual_seed(0)
    write_image(tmp_path / "g16.png", torch.rand(1, 20, 24, generator=g), bit_depth=16, gray=True)
    write_image(tmp_path / "rgba.png", torch.rand(3, 20, 24, generator=g), alpha=torch.ones(1, 20, 24))
    assert main(["sr", str(tmp_path / "g16.png"), str(tmp_path / "g16_x4.png"), "--model", str(model)]) == 0
    img, info = read(tmp_path / "g16_x4.png", with_info=True)
    assert img.shape == (3, 80, 96) and info.gray and info.bit_depth == 16
    assert (
        main(
            [
                "sr",
                str(tmp_path / "rgba.png"),
                str(tmp_path / "rgba_x4.png"),
                "--model",
                str(model),
                "--tile",
                "16",
                "--overlap",
                "4",
            ]
        )
        == 0
    )
    img, info = read(tmp_path / "rgba_x4.png", with_info=True)
    assert img.shape == (3, 80, 96) and info.alpha is not None and torch.all(info.alpha == 1)


def test_sr_bad_model_file_is_one_line(tmp_path, photo, capsys):
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    assert main(["sr", str(photo), str(tmp_path / "o.png"), "--model", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("savl: error:") and "bad" in err and "\n" not in err
    assert not (tmp_path / "o.png").exists()


def test_severity_writes_map_and_raw_values(tmp_path, photo):
    import numpy as np

    from savl.models.encoder import AmortizedEncoder, EncoderConfig
    from savl.models.io import save_model

    torch.manual_seed(0)
    encoder = AmortizedEncoder(EncoderConfig.smoke())
    model = save_model(encoder, tmp_path / "enc.safetensors")
    out = tmp_path / "sev.png"
    assert main(["severity", str(photo), str(out), "--model", str(model)]) == 0
    raw = np.load(out.with_suffix(".npy"))
    lr = read_image(photo)
    assert raw.shape == lr.shape[-2:] and read_image(out).shape == lr.shape
    expected = encoder.eval()(lr[None]).severity()[0, 0].detach().numpy()
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-6)


def test_severity_of_a_model_without_encoder_is_one_line(tmp_path, photo, capsys):
    from savl.models.io import save_model
    from savl.models.srnet import DARHAGNet, SRNetConfig

    plain = SRNetConfig.smoke().replace(channel_guidance=False, spatial_guidance=False)
    model = save_model(DARHAGNet(plain), tmp_path / "hat.safetensors")
    assert main(["severity", str(photo), str(tmp_path / "s.png"), "--model", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("savl: error:") and "no encoder" in err and "\n" not in err
