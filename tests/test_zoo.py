"""The model zoo: cards verify their files, a missing model is trained, a corrupt one fails in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from savl import zoo
from savl.errors import ModelFileError
from savl.train.config import load_config

REPO = Path(__file__).resolve().parent.parent

SMOKE_CONFIG = """\
profile: smoke
stage: frozen_l1
model: {channel_guidance: false, spatial_guidance: false}
data: {names: [astronaut], val_names: [chelsea]}
schedule: {iterations: 2}
seed: 0
"""


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """Training runs and held-out sets shared by this module's tests (a trained run is found by its hash)."""
    return tmp_path_factory.mktemp("zoo_runs")


@pytest.fixture()
def tiny_zoo(tmp_path, monkeypatch, runs_dir):
    """A zoo of one smoke-size plain HAT entry; the zoo under tmp_path, runs under runs_dir."""
    (tmp_path / "cfg.yaml").write_text(SMOKE_CONFIG)
    root = tmp_path / "models"
    root.mkdir()
    (root / "zoo.yaml").write_text(
        "models:\n"
        "  tiny:\n"
        f"    config: {tmp_path / 'cfg.yaml'}\n"
        "    artefact: srnet\n"
        "    kind: sr\n"
        "    default_sr: true\n"
    )
    monkeypatch.setenv("SAVL_RUNS", str(runs_dir))
    monkeypatch.setattr(zoo, "HELD_OUT_DRAWS", 1)
    return root


def test_missing_model_is_trained_then_verified(tiny_zoo, capsys):
    assert not zoo.is_present("tiny", tiny_zoo)
    model = zoo.load("tiny", root=tiny_zoo)
    assert "training it now" in capsys.readouterr().err
    card = zoo.verify("tiny", tiny_zoo)
    # the card names what reproduces it and where its numbers come from
    assert card["config_hash"] and card["commit"] and card["iterations"] == 2
    assert card["data_split"]["held_out"] == list(zoo_split_held_out())
    assert set(card["files"]) == {"tiny.safetensors", "tiny.json", "metrics.jsonl"}
    sr = card["held_out_metrics"]["realesrgan"]
    assert sr["images"] == 4 and 5 < sr["bicubic_psnr"] < 50
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    # a second load does not train again
    zoo.load("tiny", root=tiny_zoo)
    assert "training" not in capsys.readouterr().err
    assert zoo.default_sr_model(tiny_zoo) == "tiny"


def zoo_split_held_out():
    from savl.data.split import HELD_OUT

    return HELD_OUT


def test_corrupt_or_changed_file_is_one_line_error(tiny_zoo):
    zoo.load("tiny", root=tiny_zoo)
    weights = zoo.weights_path("tiny", tiny_zoo)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as e:
        zoo.load("tiny", root=tiny_zoo, train_if_missing=False)
    assert "does not match its card" in str(e.value) and "\n" not in str(e.value)
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert zoo.verify("tiny", tiny_zoo)["name"] == "tiny"
    (zoo.model_dir("tiny", tiny_zoo) / "metrics.jsonl").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        zoo.verify("tiny", tiny_zoo)


def test_cli_lists_and_verifies(tiny_zoo):
    zoo.load("tiny", root=tiny_zoo)
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "savl.cli", "models", *a, "--root", str(tiny_zoo)], capture_output=True, text=True
    )
    listed = run()
    assert listed.returncode == 0 and "tiny" in listed.stdout and "bicubic" in listed.stdout
    assert run("verify").returncode == 0
    card = tiny_zoo / "tiny" / "card.json"
    data = json.loads(card.read_text())
    data["files"]["tiny.json"] = "0" * 64
    card.write_text(json.dumps(data))
    bad = run("verify", "tiny")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "tiny.json" in bad.stderr


def test_zoo_list_rejects_unknown_keys(tmp_path):
    (tmp_path / "zoo.yaml").write_text("models:\n  a: {config: x.yaml, artefact: srnet, kind: sr, colour: red}\n")
    with pytest.raises(Exception, match="unknown key 'colour'"):
        zoo.entries(tmp_path)


def test_shipped_zoo_matches_its_cards():
    """Every shipped model's files match the sha256 in its card, and every entry's config loads."""
    entries = zoo.entries()
    assert entries, "models/zoo.yaml lists no model"
    for name, e in entries.items():
        cfg = load_config(e.config_path(), list(e.overrides))
        from savl.data.split import HELD_OUT

        assert not set(cfg.data.names or []) & set(HELD_OUT), f"{name} trains on held-out photos"
        if zoo.is_present(name):
            card = zoo.verify(name)
            assert card["name"] == name


def test_held_out_split_is_disjoint_and_complete():
    from savl.data.samples import _NAMES
    from savl.data.split import HELD_OUT, TRAIN

    assert not set(HELD_OUT) & set(TRAIN)
    assert set(HELD_OUT) | set(TRAIN) == set(_NAMES)


def test_copy_of_zoo_is_self_contained(tiny_zoo, tmp_path):
    zoo.load("tiny", root=tiny_zoo)
    moved = tmp_path / "elsewhere"
    shutil.copytree(tiny_zoo, moved)
    assert zoo.verify("tiny", moved)["name"] == "tiny"
