"""The architecture table (savl.models.registry.ARCHITECTURES) lists every savl architecture (savl.models and the
baselines, savl.baselines), and only it does."""

import ast
import importlib
import inspect
from pathlib import Path

import torch
from torch import nn

from savl.models.decoder import Decoder, DecoderConfig
from savl.models.io import load_model, save_model
from savl.models.registry import ARCHITECTURES

MODELS = Path(__file__).resolve().parent.parent / "savl" / "models"
BASELINES = MODELS.parent / "baselines"


def _architecture_classes() -> dict[str, type]:
    """Every nn.Module under savl/models and savl/baselines that declares its own `architecture` name."""
    found = {}
    for path in [*sorted(MODELS.glob("*.py")), *sorted(BASELINES.glob("*.py"))]:
        package = f"savl.{path.parent.name}"
        module = importlib.import_module(f"{package}.{path.stem}" if path.stem != "__init__" else package)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, nn.Module) and "architecture" in vars(cls):
                found[cls.architecture] = cls
    return found


def test_table_lists_every_architecture_class():
    classes = _architecture_classes()
    assert len(classes) >= 9  # encoder, decoder, SAVL, SR net, discriminator; ReDSR (2), DACESR (2)
    assert set(ARCHITECTURES) == set(classes), "add the missing row to savl/models/registry.py"
    for name, (builder, config_cls) in ARCHITECTURES.items():
        assert callable(builder) and isinstance(config_cls, type), name


def test_nothing_else_registers_an_architecture():
    # The table is the one place: no model module calls register_architecture (that is for tests and users).
    for path in [*sorted(MODELS.glob("*.py")), *sorted(BASELINES.glob("*.py"))]:
        if path.name == "io.py":
            continue
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and "register_architecture" in ast.unparse(n)]
        assert not calls, f"{path.name}: registers an architecture; add it to savl/models/registry.py instead"


def test_decoder_round_trips_through_the_table(tmp_path):
    # The other rows have round trips in their own test files (encoder, SAVL, SR net, discriminator).
    torch.manual_seed(0)
    dec = Decoder(DecoderConfig(code_dim=4, channels=8, num_blocks=1, growth=4))
    loaded = load_model(save_model(dec, tmp_path / "dec.safetensors"))
    assert type(loaded) is Decoder and loaded.config == dec.config
    for (k, a), (_, b) in zip(dec.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
