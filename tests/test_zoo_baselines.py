"""The baselines in the model zoo: their cards carry SR held-out metrics and, for a network with its own
representation (ReDSR's code, DACESR's REE embedding), the Table 1 / Table 5 probes; the t-SNE grid of codes."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

from savl import zoo
from savl.analysis.zoo_report import grid_codes
from savl.baselines.dacesr import DACESRConfig, DACESRNet
from savl.baselines.redsr import ReDSRConfig, ReDSRNet
from savl.baselines.representations import CodeMap, probe_encoders

REDSR_SMOKE = """\
profile: smoke
stage: redsr
data: {names: [astronaut], val_names: [chelsea]}
schedule: {iterations: 2}
val_every: 1000000
checkpoint_every: 1000000
seed: 0
"""


def test_probe_encoders_read_each_baselines_own_code():
    torch.manual_seed(0)
    lr = torch.rand(2, 3, 20, 20)
    redsr = ReDSRNet(ReDSRConfig.profile("smoke")).eval()
    pooled, sliding = probe_encoders(redsr, window=8, stride=4)
    with torch.no_grad():
        assert torch.equal(pooled.encode(lr).mean[:, :, 0, 0], redsr.encode(lr))
        grid = sliding.encode(lr).mean
        # the window of grid position (1, 1) is centred on LR pixel (4, 4): rows/cols 0..7 of the image
        assert grid.shape == (2, redsr.encode(lr).shape[1], 5, 5)
        assert torch.allclose(grid[:, :, 1, 1], redsr.encode(lr[:, :, 0:8, 0:8]), atol=1e-6)
    dacesr = DACESRNet(DACESRConfig.profile("smoke")).eval()
    pooled, _ = probe_encoders(dacesr)
    with torch.no_grad():
        assert torch.equal(pooled.encode(lr).mean[:, :, 0, 0], dacesr.ree(lr, tuned=True).mean(1))
    # networks without a representation of their own have no probes
    plain = dataclasses.replace(DACESRConfig.profile("smoke"), condition="none")
    assert probe_encoders(DACESRNet(plain)) is None
    from savl.models.srnet import DARHAGNet, SRNetConfig

    assert probe_encoders(DARHAGNet(SRNetConfig.profile("smoke"))) is None


@pytest.fixture()
def redsr_zoo(tmp_path, monkeypatch):
    (tmp_path / "redsr.yaml").write_text(REDSR_SMOKE)
    root = tmp_path / "models"
    root.mkdir()
    (root / "zoo.yaml").write_text(
        "models:\n"
        "  redsr-tiny:\n"
        f"    config: {tmp_path / 'redsr.yaml'}\n"
        "    artefact: srnet\n"
        "    kind: sr\n"
    )
    monkeypatch.setenv("SAVL_RUNS", str(tmp_path / "runs"))
    # small held-out sets and probes: the card's logic, not its numbers
    monkeypatch.setattr(zoo, "HELD_OUT_DRAWS", 1)
    monkeypatch.setattr(zoo, "HELD_OUT_CROP", {"realesrgan": 64, "manet": 64})
    monkeypatch.setattr(zoo, "held_out_probe_metrics",
                        functools.partial(zoo.held_out_probe_metrics, crops=5, mine_steps=5))
    return root


def test_baseline_card_has_sr_metrics_and_its_codes_probes(redsr_zoo):
    card = zoo.build("redsr-tiny", root=redsr_zoo)
    assert card["architecture"] == "ReDSRNet" and zoo.verify("redsr-tiny", redsr_zoo)["name"] == "redsr-tiny"
    held = card["held_out_metrics"]
    for protocol in zoo.SR_PROTOCOLS:
        assert 5 < held[protocol]["bicubic_psnr"] < 50 and np.isfinite(held[protocol]["psnr"])
    probes = held["probes"]
    assert probes["representation"].startswith("ReDSRNet")
    assert probes["t5_window"] == 16 and probes["t5_stride"] == 4
    for key in ("t1_content_probe", "t1_noise_probe"):
        assert 0.0 <= probes[key] <= 1.0
    for setting in ("type", "blur", "noise"):
        # k-means after Hungarian matching scores at least the share of the largest matched cluster's label
        assert 0.0 < probes[f"t5_{setting}"] <= 1.0 and 0.0 < probes[f"t5_{setting}_chance"] < 1.0
    # the zoo listing shows the SR numbers and skips the probes section
    row = next(r for r in zoo.summary_rows(redsr_zoo) if r["name"] == "redsr-tiny")
    assert "realesrgan: PSNR" in row["held_out"] and "probes" not in row["held_out"]
    assert "### probes" in (zoo.model_dir("redsr-tiny", redsr_zoo) / "card.md").read_text()
    # the shipped network loads through the zoo and super-resolves
    net = zoo.load("redsr-tiny", root=redsr_zoo, train_if_missing=False)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


class MeanColour(torch.nn.Module):
    """A code = the LR image itself, so the pooled code is the LR's mean colour."""

    def encode(self, lr):
        return CodeMap(lr)


class LocalVariance(torch.nn.Module):
    """A code = squared deviation from the 3 x 3 local mean: grows with added noise."""

    def encode(self, lr):
        local = torch.nn.functional.avg_pool2d(lr, 3, 1, 1, count_include_pad=False)
        return CodeMap(((lr - local) ** 2).mean(1, keepdim=True))


def test_grid_codes_cover_the_grid_with_labels():
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 80, 96, generator=g) * 0.5 + 0.25 for _ in range(2)]
    levels, sigmas = [0.0, 0.05, 0.2], [0.0, 2.0]
    out = grid_codes(MeanColour(), images, levels, sigmas, crop=32, crops_per_image=3, seed=0)
    n = 2 * 3 * len(levels) * len(sigmas)
    assert out["codes"].shape == (n, 3)
    for key, k in (("noise", len(levels)), ("blur", len(sigmas)), ("photo", 2)):
        assert sorted(set(out[key].tolist())) == list(range(k))
        assert np.bincount(out[key]).tolist() == [n // k] * k
    # bicubic downsampling keeps an image's mean colour: clean codes are within 1 % of the crops' HR means
    clean = (out["noise"] == 0) & (out["blur"] == 0)
    hr_means = []
    g0 = torch.Generator().manual_seed(0)
    for img in images:  # the crop draws of grid_codes: tops then lefts per image, one generator
        tops = torch.randint(0, 80 - 32 + 1, (3,), generator=g0).tolist()
        lefts = torch.randint(0, 96 - 32 + 1, (3,), generator=g0).tolist()
        hr_means += [img[:, t : t + 32, x : x + 32].mean((1, 2)).numpy() for t, x in zip(tops, lefts)]
    np.testing.assert_allclose(out["codes"][clean], np.stack(hr_means), atol=1e-2)
    # seeded: the same grid again
    again = grid_codes(MeanColour(), images, levels, sigmas, crop=32, crops_per_image=3, seed=0)
    np.testing.assert_array_equal(again["codes"], out["codes"])
    # a noise-sensitive code grows with the noise level for every crop and blur
    var = grid_codes(LocalVariance(), images, levels, sigmas, crop=32, crops_per_image=3, seed=0)
    per_level = [var["codes"][var["noise"] == k, 0] for k in range(len(levels))]
    assert np.all(per_level[1] > per_level[0]) and np.all(per_level[2] > per_level[1])
