"""`savl export MODEL --onnx out.onnx`: dynamic height/width, checked against PyTorch with onnxruntime."""

import dataclasses
import sys

import numpy as np
import pytest
import torch

from savl.cli import main
from savl.export import export_onnx, size_multiple

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")


class _Net(torch.nn.Module):
    """A small x4 network with a transposed reshape (the pattern torch's decomposition gets wrong)."""

    architecture = "ExportNet"

    def __init__(self, config):
        super().__init__()
        self.config, self.scale = config, 4
        self.head = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.mix = torch.nn.Linear(16, 16)
        self.tail = torch.nn.Conv2d(16, 48, 3, padding=1)

    def forward(self, x):
        f = self.head(x)
        b, c, h, w = f.shape
        tokens = self.mix(f.flatten(2).transpose(1, 2))  # (B, HW, C)
        f = f + tokens.transpose(1, 2).reshape(b, c, h, w)
        return torch.sigmoid(torch.nn.functional.pixel_shuffle(self.tail(f), 4))


@dataclasses.dataclass
class _Cfg:
    window: int = 4


@pytest.fixture
def saved(tmp_path):
    from savl.models.io import register_architecture, save_model

    register_architecture("ExportNet", _Net, _Cfg)
    torch.manual_seed(0)
    net = _Net(_Cfg()).eval()
    return net, str(save_model(net, tmp_path / "net.safetensors"))


def _ort(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"lr": x.numpy()})[0]


def test_export_cli_writes_a_dynamic_graph_that_matches_pytorch(tmp_path, saved, capsys):
    net, path = saved
    out = tmp_path / "net.onnx"
    assert main(["export", path, "--onnx", str(out)]) == 0
    said = capsys.readouterr().out
    assert "onnxruntime" in said and "multiple of 4" in said
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["savl.scale"] == "4" and meta["savl.size_multiple"] == "4"
    for h, w in ((12, 20), (28, 8), (4, 4)):  # none of them the traced 8 x 8
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            ref = net(x).numpy()
        got = _ort(out, x)
        assert got.shape == (1, 3, 4 * h, 4 * w)
        assert np.abs(got - ref).max() < 1e-5


def test_export_without_the_extra_names_it(tmp_path, saved, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert main(["export", saved[1], "--onnx", str(tmp_path / "n.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "savl[export]" in err
    assert not (tmp_path / "n.onnx").exists()


def _darhag():
    from savl.models.srnet import DARHAGNet, SRNetConfig

    torch.manual_seed(0)
    return DARHAGNet(SRNetConfig.profile("smoke")).eval()


@pytest.mark.slow
def test_darhag_exports_with_a_coordinate_built_shift_mask(tmp_path):
    """DA-RHAG (encoder + DSCA guidance) exports with symbolic height and width and matches PyTorch on a size
    other than the traced one. It needs savl.models.hat's shifted-window mask built from coordinates (slice
    assignment made torch's ONNX exporter emit an invalid Transpose under symbolic shapes) and DSCA's guidance
    maps to keep the image size symbolic (an int() there fixed the traced size into the graph)."""
    net = _darhag()
    report = export_onnx(net, tmp_path / "darhag.onnx")
    assert report.size_multiple == size_multiple(net) and report.max_abs_diff < 1e-4
    x = torch.rand(1, 3, 3 * report.size_multiple, 2 * report.size_multiple)
    with torch.no_grad():
        assert np.abs(_ort(tmp_path / "darhag.onnx", x) - net(x).numpy()).max() < 1e-4
