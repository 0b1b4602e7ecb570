"""Model files: safetensors + JSON round trip, wrapper keys, mismatch messages, bad files."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from savl.errors import ModelFileError
from savl.models.io import load_model, load_weights, read_state, register_architecture, save_model


@dataclasses.dataclass
class TinyConfig:
    width: int = 8
    depth: int = 2
    kernel: tuple = (3, 3)


class Tiny(nn.Module):
    architecture = "TestTiny"

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        layers = [nn.Conv2d(3, config.width, config.kernel, padding=1)]
        layers += [nn.Conv2d(config.width, config.width, 3, padding=1) for _ in range(config.depth - 1)]
        self.body = nn.Sequential(*layers)


register_architecture("TestTiny", Tiny, TinyConfig)


def test_round_trip_rebuilds_architecture_and_weights(tmp_path):
    torch.manual_seed(0)
    model = Tiny(TinyConfig(width=12, depth=3))
    path = save_model(model, tmp_path / "m.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["architecture"] == "TestTiny" and meta["config"]["width"] == 12
    loaded = load_model(path)
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


@pytest.mark.parametrize("wrap", ["params", "params_ema", "module"])
def test_pth_wrappers_are_stripped(tmp_path, wrap):
    model = Tiny(TinyConfig())
    state = model.state_dict()
    if wrap == "module":
        obj = {f"module.{k}": v for k, v in state.items()}
    else:
        obj = {wrap: state}
    torch.save(obj, tmp_path / "w.pth")
    fresh = Tiny(TinyConfig())
    load_weights(fresh, tmp_path / "w.pth")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


def test_size_mismatch_names_the_hyper_parameter(tmp_path):
    torch.save(Tiny(TinyConfig(width=16)).state_dict(), tmp_path / "w.pth")
    with pytest.raises(ModelFileError, match=r"width differs \(model has 8, file has 16"):
        load_weights(Tiny(TinyConfig(width=8)), tmp_path / "w.pth")
    # With a JSON sidecar the config itself is compared first.
    save_model(Tiny(TinyConfig(depth=3)), tmp_path / "d.safetensors")
    with pytest.raises(ModelFileError, match=r"depth differs \(model has 2, file has 3\)"):
        load_weights(Tiny(TinyConfig(depth=2)), tmp_path / "d.safetensors")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_files_get_one_line_errors(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all" * 10)
    (tmp_path / "junk.pth").write_bytes(b"\x80\x04junk")
    (tmp_path / "x.onnx").write_bytes(b"abc")
    cases = {
        tmp_path / "missing.safetensors": "no such file",
        tmp_path: "is a directory",
        tmp_path / "empty.safetensors": "empty file",
        tmp_path / "junk.safetensors": "not a valid safetensors file",
        tmp_path / "junk.pth": "weights-only torch file",
        tmp_path / "x.onnx": "unsupported model file type",
    }
    for path, message in cases.items():
        with pytest.raises(ModelFileError, match=message) as err:
            read_state(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ModelFileError, match="weights-only"):
        read_state(tmp_path / "evil.pth")


def test_load_model_needs_its_config(tmp_path):
    path = save_model(Tiny(TinyConfig()), tmp_path / "m.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelFileError, match="needs its JSON config"):
        load_model(path)
    save_model(Tiny(TinyConfig()), tmp_path / "n.safetensors")
    meta = json.loads((tmp_path / "n.json").read_text())
    meta["architecture"] = "Nope"
    (tmp_path / "n.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="unknown architecture 'Nope'"):
        load_model(tmp_path / "n.safetensors")
