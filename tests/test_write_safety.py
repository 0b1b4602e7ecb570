"""Nothing lost: no command writes over its inputs, two inputs never share an output, the files of one input
(image + .json record, map + .npy) appear together or not at all, and files honour the umask."""

import json
import os
import stat

import numpy as np
import pytest
import torch
from tiny_model import save_tiny_x4

from savl.cli import main
from savl.errors import ImageError
from savl.io import check_output_paths, read_image, write_group, write_image

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture
def tiny(tmp_path):
    return save_tiny_x4(tmp_path / "models" / "tiny.safetensors")


@pytest.fixture
def encoder(tmp_path):
    from savl.models.encoder import AmortizedEncoder, EncoderConfig
    from savl.models.io import save_model

    torch.manual_seed(0)
    return save_model(AmortizedEncoder(EncoderConfig.smoke()), tmp_path / "models" / "enc.safetensors")


def _image(path, h=16, w=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, torch.rand(3, h, w, generator=g))
    return path


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("savl: error:") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


# ------------------------------------------------------------------------------------- over an input
def test_sr_refuses_to_write_over_its_input(tmp_path, tiny, capsys):
    src = _image(tmp_path / "in.png")
    before = src.read_bytes()
    assert main(["sr", str(src), str(src), "--model", str(tiny)]) == 2
    _one_line_error(capsys, "in.png", "input")
    assert src.read_bytes() == before
    # Through a symbolic link too, and a folder into itself.
    (tmp_path / "alias.png").symlink_to(src)
    assert main(["sr", str(src), str(tmp_path / "alias.png"), "--model", str(tiny)]) == 2
    _one_line_error(capsys, "alias.png")
    assert main(["sr", str(tmp_path), str(tmp_path), "--model", str(tiny), "--suffix", ""]) == 2
    _one_line_error(capsys, "input")
    assert src.read_bytes() == before


def test_degrade_refuses_to_write_over_its_input(tmp_path, capsys):
    src = _image(tmp_path / "hr.png", 32, 32)
    before = src.read_bytes()
    assert main(["degrade", str(src), str(src), "--protocol", "bicubic"]) == 2
    _one_line_error(capsys, "hr.png")
    assert src.read_bytes() == before and not (tmp_path / "hr.json").exists()


# ----------------------------------------------------------------------------------- one output, two inputs
@pytest.mark.parametrize("command", ["sr", "severity", "degrade"])
def test_two_inputs_with_one_stem_are_refused_before_anything_is_written(tmp_path, tiny, encoder, capsys, command):
    folder = tmp_path / "in"
    _image(folder / "a.png", 32, 32, seed=1)
    _image(folder / "a.jpg", 32, 32, seed=2)
    out = tmp_path / "out"
    args = {
        "sr": ["sr", str(folder), str(out), "--model", str(tiny), "--ext", "png"],
        "severity": ["severity", str(folder), str(out), "--model", str(encoder)],
        "degrade": ["degrade", str(folder), str(out), "--protocol", "bicubic"],
    }[command]
    assert main(args) == 2
    _one_line_error(capsys, "a.jpg", "a.png")
    assert not out.exists() or list(out.iterdir()) == []


def test_check_output_paths_names_the_clash():
    with pytest.raises(ImageError, match=r"out/x\.png: both in/x\.png and in/x\.tif"):
        check_output_paths([("in/x.png", "out/x.png"), ("in/x.tif", "out/x.png")])
    with pytest.raises(ImageError, match=r"out/x\.json"):  # a sidecar counts as an output too
        check_output_paths([("in/x.png", "out/x.png"), ("in/x.json.png", "out/x.json")], sidecars=(".json",))
    check_output_paths([("in/x.png", "out/x.png"), ("in/y.png", "out/y.png")], sidecars=(".json",))


# --------------------------------------------------------------------------------------- all or none
def test_degrade_writes_image_and_record_together(tmp_path, capsys):
    src = _image(tmp_path / "hr.png", 32, 32)
    out = tmp_path / "lr.png"
    (tmp_path / "lr.json").mkdir()  # the record cannot be written
    assert main(["degrade", str(src), str(out), "--protocol", "bicubic"]) == 2
    _one_line_error(capsys, "lr.json")
    assert not out.exists()  # no image without its record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr.png", "lr.json"]  # no temporary files left


def test_severity_writes_map_and_values_together(tmp_path, encoder, capsys):
    src = _image(tmp_path / "lr.png")
    out = tmp_path / "sev.png"
    (tmp_path / "sev.npy").mkdir()
    assert main(["severity", str(src), str(out), "--model", str(encoder)]) == 2
    _one_line_error(capsys, "sev.npy")
    assert not out.exists()
    (tmp_path / "sev.npy").rmdir()
    assert main(["severity", str(src), str(out), "--model", str(encoder)]) == 0
    assert np.load(tmp_path / "sev.npy").shape == (16, 20) and read_image(out).shape == (3, 16, 20)


def test_write_group_leaves_nothing_when_one_file_fails(tmp_path):
    (tmp_path / "old.txt").write_bytes(b"previous")
    with pytest.raises(ImageError, match="missing"):
        write_group({tmp_path / "old.txt": b"new", tmp_path / "missing" / "b.txt": b"b"})
    assert (tmp_path / "old.txt").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]
    write_group({tmp_path / "old.txt": b"new", tmp_path / "b.txt": b"b"})
    assert (tmp_path / "old.txt").read_bytes() == b"new" and (tmp_path / "b.txt").read_bytes() == b"b"


# ------------------------------------------------------------------------------------------------ umask
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_honour_the_umask(tmp_path, umask_022, capsys):
    from savl.evaluate import EvalProtocol, EvalResult
    from savl.models.encoder import AmortizedEncoder, EncoderConfig
    from savl.models.io import save_model
    from savl.provenance import atomic_write_text

    src = _image(tmp_path / "hr.png", 32, 32)
    assert _mode(src) == 0o644
    atomic_write_text(tmp_path / "t.txt", "x")
    weights = save_model(AmortizedEncoder(EncoderConfig.smoke()), tmp_path / "enc.safetensors")
    assert main(["degrade", str(src), str(tmp_path / "lr.png"), "--protocol", "bicubic"]) == 0
    EvalResult(EvalProtocol(lpips_net=None)).to_json(tmp_path / "r.json", provenance={})
    written = [tmp_path / n for n in ("t.txt", "lr.png", "lr.json", "r.json")] + [weights, weights.with_suffix(".json")]
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(0o644) for p in written}
    assert json.loads((tmp_path / "lr.json").read_text())["protocol"] == "bicubic"


def test_frozen_set_folder_honours_the_umask_and_never_replaces_a_foreign_folder(tmp_path, umask_022):
    from savl.data import FrozenValidationSet
    from savl.errors import DataError

    hr = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    fs = FrozenValidationSet.build([("one", hr)], "bicubic", 0, tmp_path / "val")
    assert _mode(fs.path) == 0o755 and _mode(fs.path / "manifest.json") == 0o644
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DataError, match="never replaced"):
        FrozenValidationSet.build([("one", hr)], "bicubic", 0, foreign, overwrite=True)
    assert (foreign / "holiday.jpg").read_bytes() == b"precious"
