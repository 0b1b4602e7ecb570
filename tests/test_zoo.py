"""The model zoo: cards verify their files, a missing model is trained, a corrupt one fails in one line."""

from __future__ import annotations

import json
import os
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


def _write_zoo(base: Path) -> Path:
    (base / "cfg.yaml").write_text(SMOKE_CONFIG)
    root = base / "models"
    root.mkdir()
    (root / "zoo.yaml").write_text(
        "models:\n"
        "  tiny:\n"
        f"    config: {base / 'cfg.yaml'}\n"
        "    artefact: srnet\n"
        "    kind: sr\n"
        "    default_sr: true\n"
    )
    return root


@pytest.fixture(scope="module")
def small_sets():
    """Held-out sets cut small for tests (one draw, 64-pixel crops): the card's logic, not its numbers."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo, "HELD_OUT_DRAWS", 1)
        mp.setattr(zoo, "HELD_OUT_CROP", {"realesrgan": 64, "manet": 64})
        yield


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """Training runs and held-out sets shared by this module's tests (a trained run is found by its hash)."""
    return tmp_path_factory.mktemp("zoo_runs")


@pytest.fixture()
def tiny_zoo(tmp_path, monkeypatch, runs_dir, small_sets):
    """A zoo of one smoke-size plain HAT entry, not trained yet; runs under runs_dir."""
    monkeypatch.setenv("SAVL_RUNS", str(runs_dir))
    return _write_zoo(tmp_path)


@pytest.fixture(scope="module")
def built_zoo(tmp_path_factory, runs_dir, small_sets):
    """The same zoo with its model trained and packaged once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAVL_RUNS", str(runs_dir))
        root = _write_zoo(tmp_path_factory.mktemp("built"))
        zoo.build("tiny", root=root)
        yield root


@pytest.fixture()
def trained_zoo(built_zoo, tmp_path):
    """A private copy of the built zoo (its zoo.yaml names the config by absolute path, so it still loads)."""
    root = tmp_path / "models"
    shutil.copytree(built_zoo, root)
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
    manet = card["held_out_metrics"]["manet"]
    assert manet["images"] == 20 and len(manet["set_hashes"]) == 5
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    # a second load does not train again
    zoo.load("tiny", root=tiny_zoo)
    assert "training" not in capsys.readouterr().err
    assert zoo.default_sr_model(tiny_zoo) == "tiny"


def zoo_split_held_out():
    from savl.data.split import HELD_OUT

    return HELD_OUT


def test_corrupt_or_changed_file_is_one_line_error(trained_zoo):
    tiny_zoo = trained_zoo
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


def test_cli_lists_and_verifies(trained_zoo):
    tiny_zoo = trained_zoo
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "savl.cli", "models", *a, "--root", str(tiny_zoo)], capture_output=True, text=True
    )
    listed = run()
    assert listed.returncode == 0 and "tiny" in listed.stdout and "bicubic" in listed.stdout
    verified = run("verify")
    assert verified.returncode == 0 and "tiny: ok" in verified.stdout
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


def test_copy_of_zoo_is_self_contained(trained_zoo, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(trained_zoo, moved)
    assert zoo.verify("tiny", moved)["name"] == "tiny"


def test_savl_sr_without_model_uses_the_zoo_default(trained_zoo, tmp_path):
    """`savl sr in out` runs the zoo's default SR model after verifying it; a missing one fails in one line."""
    import torch

    from savl.io import read_image, write_image

    img = tmp_path / "in.png"
    write_image(img, torch.rand(3, 12, 10, generator=torch.Generator().manual_seed(0)), bit_depth=8)
    env = {**os.environ, "SAVL_MODELS": str(trained_zoo)}
    out = tmp_path / "out.png"
    done = subprocess.run([sys.executable, "-m", "savl.cli", "sr", str(img), str(out)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "zoo model 'tiny'" in done.stderr and tuple(read_image(out).shape) == (3, 48, 40)
    shutil.rmtree(trained_zoo / "tiny")
    missing = subprocess.run([sys.executable, "-m", "savl.cli", "sr", str(img), str(tmp_path / "o2.png")],
                             env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "savl models train" in missing.stderr
    assert not (tmp_path / "o2.png").exists()


def test_held_out_representation_metrics_follow_the_posterior():
    """The representation card's numbers: L1 of the re-degraded crop with the code and with a zero code, and the
    KL in nats per pixel, which a deterministic code has none of."""
    import torch

    from savl.models.decoder import Decoder, DecoderConfig
    from savl.models.encoder import AmortizedEncoder, EncoderConfig
    from savl.models.savl import SAVL

    torch.manual_seed(0)
    model = SAVL(AmortizedEncoder(EncoderConfig.smoke()), Decoder(DecoderConfig.smoke()), variant="savl")
    out = zoo.held_out_representation_metrics(model, crops=2, size=32)
    assert 0 <= out["rec_l1"] < 1 and 0 <= out["rec_l1_zero_code"] < 1 and out["kl_nats_per_pixel"] > 0
    with torch.no_grad():  # a posterior pinned at the prior (mu = 0, log sigma^2 = 0) has zero KL
        model.encoder.tail[-1].weight.zero_()
        model.encoder.tail[-1].bias.zero_()
    assert zoo.held_out_representation_metrics(model, crops=2, size=32)["kl_nats_per_pixel"] == 0
    det = SAVL(AmortizedEncoder(EncoderConfig.smoke(), deterministic=True), Decoder(DecoderConfig.smoke()),
               variant="deterministic")
    assert "kl_nats_per_pixel" not in zoo.held_out_representation_metrics(det, crops=2, size=32)


def test_seed_cards_returns_the_shipped_seeds_of_a_family_in_seed_order(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    lines = ["models:"]
    for name in ("fam-s2", "fam-s0", "fam-s1", "fam-s10x", "other-s0"):
        lines += [f"  {name}:", "    config: cfg.yaml", "    artefact: srnet", "    kind: sr"]
    (root / "zoo.yaml").write_text("\n".join(lines) + "\n")
    for name, seed in (("fam-s2", 2), ("fam-s0", 0), ("other-s0", 0), ("fam-s10x", 10)):  # fam-s1 not shipped
        folder = root / name
        folder.mkdir()
        weights = folder / f"{name}.safetensors"
        weights.write_bytes(b"w" + name.encode())
        card = {"name": name, "config": {"seed": seed}, "files": {weights.name: zoo.sha256(weights)}}
        (folder / "card.json").write_text(json.dumps(card))
    assert [c["name"] for c in zoo.seed_cards("fam", root)] == ["fam-s0", "fam-s2"]
    assert zoo.seed_cards("missing", root) == []


STAGE2_CONFIG = """\
profile: smoke
stage: frozen_l1
data: {names: [astronaut], val_names: [chelsea], max_side: 160}
schedule: {iterations: 2}
seed: 0
"""

GAN_CONFIG = """\
profile: smoke
stage: gan
init_from: models/base/base.safetensors
ema: 0.9
losses: {perceptual: 0.0, gan: 0.1}
data: {names: [astronaut], val_names: [chelsea], max_side: 160}
schedule: {iterations: 2}
seed: 0
"""


@pytest.mark.slow
def test_a_stage3_entry_starts_from_the_shipped_stage2_model(tmp_path, monkeypatch, runs_dir, small_sets):
    """An entry whose config starts from another zoo model's weights file (the stage-3 GAN model from the stage-2
    one) trains that model first when it is missing, verifies it against its card, ships its EMA weights."""
    monkeypatch.setenv("SAVL_RUNS", str(runs_dir))
    (tmp_path / "stage2.yaml").write_text(STAGE2_CONFIG)
    (tmp_path / "gan.yaml").write_text(GAN_CONFIG)
    root = tmp_path / "models"
    root.mkdir()
    (root / "zoo.yaml").write_text(
        "models:\n"
        f"  gan:\n    config: {tmp_path / 'gan.yaml'}\n    artefact: srnet_ema\n    kind: sr\n"
        f"  base:\n    config: {tmp_path / 'stage2.yaml'}\n    artefact: srnet\n    kind: sr\n"
    )
    assert zoo.zoo_dependency(zoo.entry("gan", root).train_config(), root) == "base"
    assert zoo.zoo_dependency(zoo.entry("base", root).train_config(), root) is None
    card = zoo.build("gan", root=root)
    assert zoo.is_present("base", root) and zoo.verify("gan", root)["name"] == "gan"
    assert card["config"]["stage"] == "gan" and card["config"]["losses"]["perceptual"] == 0.0
    assert card["config"]["init_from"] == str(zoo.weights_path("base", root).resolve())
    assert {"realesrgan", "manet"} <= set(card["held_out_metrics"])
    # the shipped weights are the run's EMA, not its live SR net
    from safetensors.torch import load_file

    from savl.train import get_or_train

    run = get_or_train(zoo.entry("gan", root).train_config(), root=runs_dir)
    shipped = load_file(str(zoo.weights_path("gan", root)))
    ema, live = load_file(str(run.final / "srnet_ema.safetensors")), load_file(str(run.final / "srnet.safetensors"))
    assert all(torch_equal(shipped[k], half(v)) for k, v in ema.items())
    assert any(not torch_equal(shipped[k], half(v)) for k, v in live.items())
    # a stage-2 file that no longer matches its card stops the stage-3 build, in one line
    weights = zoo.weights_path("base", root)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelFileError, match="does not match its card") as e:
        zoo.build("gan", root=root)
    assert "\n" not in str(e.value)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def half(t):
    """How the zoo stores a tensor: float32 as float16, anything else as it is."""
    import torch

    return t.to(torch.float16) if t.dtype == torch.float32 else t


def test_shipped_weights_are_the_runs_weights_in_half_precision(trained_zoo, runs_dir):
    """The zoo stores float32 weights as float16 (the card says so) and they load back into the float32 model as
    the run's weights rounded to float16; the card's held-out numbers are those of the stored weights."""
    import torch
    from safetensors.torch import load_file

    from savl.models.io import load_model
    from savl.train import get_or_train

    card = zoo.verify("tiny", trained_zoo)
    assert card["weights_dtype"] == "float16"
    run = get_or_train(zoo.entry("tiny", trained_zoo).train_config(), root=runs_dir)
    full = load_file(str(run.final / "srnet.safetensors"))
    stored = load_file(str(zoo.weights_path("tiny", trained_zoo)))
    assert set(full) == set(stored)
    floats = [k for k, v in full.items() if v.dtype == torch.float32]
    assert floats and all(stored[k].dtype == torch.float16 for k in floats)
    assert all(v.dtype == stored[k].dtype for k, v in full.items() if k not in floats)  # index buffers kept
    model = load_model(zoo.weights_path("tiny", trained_zoo))
    for k, v in model.state_dict().items():
        want = full[k].to(torch.float16).to(v.dtype) if k in floats else full[k]
        assert v.dtype == full[k].dtype and torch.equal(v, want), k
    # 2 ** -10 relative rounding at most (float16's 10-bit mantissa), for weights in float16's normal range
    w = max(floats, key=lambda k: full[k].numel())
    normal = full[w].abs() >= 2**-14
    rel = ((stored[w].float() - full[w]).abs() / full[w].abs())[normal]
    assert 0 < float(rel.max()) <= 2**-11


def test_ship_weights_keeps_what_float16_cannot_hold(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    src = tmp_path / "w.safetensors"
    save_file({"small": torch.tensor([1.0, -3.5e-3]), "huge": torch.tensor([1e6, 1.0]),
               "index": torch.arange(4)}, str(src))
    assert zoo.ship_weights(src, tmp_path / "out.safetensors") == "mixed"
    out = load_file(str(tmp_path / "out.safetensors"))
    assert out["small"].dtype == torch.float16 and out["huge"].dtype == torch.float32
    assert torch.equal(out["huge"], torch.tensor([1e6, 1.0])) and torch.equal(out["index"], torch.arange(4))
    assert float(out["small"][1]) == pytest.approx(-3.5e-3, rel=2**-11)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors", "w.safetensors"]  # no temporary left


def test_rescore_brings_an_old_float32_model_to_the_zoo_storage(trained_zoo, runs_dir):
    """A model shipped before the float16 storage (float32 weights, its card listing their hash) is converted,
    scored again, and its card rewritten: the hash of the new file, a `rescored` record, training provenance
    unchanged; the CLI does the same for named entries."""
    from savl.train import get_or_train

    run = get_or_train(zoo.entry("tiny", trained_zoo).train_config(), root=runs_dir)
    weights = zoo.weights_path("tiny", trained_zoo)
    shutil.copyfile(run.final / "srnet.safetensors", weights)
    card_path = zoo.model_dir("tiny", trained_zoo) / "card.json"
    old = json.loads(card_path.read_text())
    old["files"]["tiny.safetensors"] = zoo.sha256(weights)
    old.pop("weights_dtype")
    card_path.write_text(json.dumps(old))
    before = zoo.sha256(weights)
    done = subprocess.run(
        [sys.executable, "-m", "savl.cli", "models", "rescore", "tiny", "--root", str(trained_zoo), "--why", "test"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    card = zoo.verify("tiny", trained_zoo)
    assert zoo.sha256(weights) != before and card["files"]["tiny.safetensors"] == zoo.sha256(weights)
    assert card["weights_dtype"] == "float16" and card["rescored"]["why"] == "test"
    assert card["config_hash"] == old["config_hash"] and card["commit"] == old["commit"]
    # the CLI's process scores on the shipped protocol (3 draws of the 4 held-out photos), not this module's
    # shrunken sets
    assert card["held_out_metrics"]["realesrgan"]["images"] == 12 != old["held_out_metrics"]["realesrgan"]["images"]
    assert "re-scored" in (zoo.model_dir("tiny", trained_zoo) / "card.md").read_text()


def test_shipped_cards_were_scored_on_the_shipped_held_out_sets():
    """Every SR card names the frozen held-out sets it was scored on by hash; the sets shipped in data/heldout
    (what held_out_sr_set reads on a fresh clone) must be exactly those, so a retrained model's card compares.
    Draws and crop come from the card itself (other tests of this module shrink the module's defaults)."""
    from savl.data.split import HELD_OUT

    checked, seen = 0, {}
    for name in zoo.entries():
        card = zoo.read_card(name)
        for metrics in (card or {}).get("held_out_metrics", {}).values():
            if not (isinstance(metrics, dict) and "set_hashes" in metrics):
                continue
            draws = metrics["images"] // (len(HELD_OUT) * len(metrics["sets"]))
            for n, want in zip(metrics["sets"], metrics["set_hashes"], strict=True):
                # Table 4's cards (RRDB-SFT) do not record the crop: the MANet sets' 256-pixel one
                key = (n, draws, metrics.get("hr_crop", 256))
                if key not in seen:
                    data = zoo.held_out_sr_set(n, draws=draws, crop=key[2])
                    assert zoo.SHIPPED_HELD_OUT in data.path.parents, key
                    seen[key] = data.hash[:16]
                assert seen[key] == want, (name, n)
            checked += 1
    assert checked >= 20


def test_models_cli_takes_options_before_or_after_the_names():
    """`savl models train --force --jobs 2 a b` and `savl models train a b --force --jobs 2` mean the same; an
    option given before the action is kept; `savl models` alone lists."""
    from savl.cli import build_parser

    parse = build_parser().parse_args
    for argv in (["train", "--force", "--jobs", "2", "a", "b"], ["train", "a", "b", "--force", "--jobs", "2"]):
        args = parse(["models", *argv])
        assert (args.action, args.names, args.force, args.jobs) == ("train", ["a", "b"], True, 2), argv
    args = parse(["models", "--root", "somewhere", "--tier", "long", "verify"])
    assert (args.action, args.root, args.tier, args.names) == ("verify", "somewhere", "long", [])
    args = parse(["models", "verify", "x", "--tier", "cpu"])
    assert (args.root, args.tier, args.names) == (None, "cpu", ["x"])
    assert parse(["models"]).action in (None, "list")
    with pytest.raises(SystemExit):
        parse(["models", "verify", "--jobs", "2"])  # --jobs belongs to train
