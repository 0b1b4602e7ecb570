"""The baselines train through `savl train` (smoke profile of the shipped configs): ReDSR in one stage, DACESR's
REE then its SR net (which loads the REE run's weights through `init_from`); the SR nets come back from their
model files and run through `savl.infer.upscale` and the `savl sr` command."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from savl.baselines.dacesr import DACESRNet
from savl.baselines.redsr import ReDSRNet
from savl.cli import main as cli_main
from savl.infer import upscale
from savl.io import write_image
from savl.train import get_or_train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "baselines"
SMOKE = ["profile=smoke", "progress=none", "val_every=4"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    redsr = get_or_train(CONFIGS / "redsr.yaml", root=root, overrides=SMOKE)
    dacesr = get_or_train(CONFIGS / "dacesr.yaml", root=root, overrides=SMOKE)
    ree = next(p for p in root.iterdir() if p.name.startswith("dacesr_ree"))
    return redsr, dacesr, ree


def test_redsr_trains_with_its_terms(runs):
    redsr, _, _ = runs
    assert redsr.finished and redsr.has("srnet") and redsr.has("degrader")
    last = redsr.metrics[-1]
    assert {"ed", "rd", "sr_l1", "w", "loss", "val_psnr"} <= set(last)
    assert last["loss"] == pytest.approx(0.01 * last["ed"] + last["rd"] + last["sr_l1"], rel=1e-5)
    assert 0 < last["w"] <= 2


def test_dacesr_starts_from_the_ree_run_and_keeps_it_frozen(runs):
    _, dacesr, ree_dir = runs
    assert dacesr.finished and {"info_nce", "mse", "disagreement"} <= set(type(dacesr)(ree_dir).metrics[-1])
    trained = load_file(ree_dir / "final" / "ree.safetensors")
    inside = load_file(dacesr.final / "srnet.safetensors")
    for key, value in trained.items():
        torch.testing.assert_close(inside["ree." + key], value)  # loaded, then never updated


def test_sr_nets_run_from_their_files(runs, tmp_path, generator):
    redsr, dacesr, _ = runs
    image = torch.rand(3, 10, 14, generator=generator)
    for run, cls in ((redsr, ReDSRNet), (dacesr, DACESRNet)):
        net = run.load_srnet()
        assert isinstance(net, cls)
        assert upscale(net, image, tile=8, overlap=2).shape == (3, 40, 56)
    write_image(tmp_path / "photo.png", image)
    for run in (redsr, dacesr):
        out = tmp_path / f"{run.config.stage}.png"
        model = str(run.final / "srnet.safetensors")
        assert cli_main(["sr", str(tmp_path / "photo.png"), str(out), "--model", model]) == 0
        assert out.is_file()
