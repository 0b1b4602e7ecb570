"""ReDSR (savl.baselines.redsr): sizes against the paper's Table 1, the per-sample degradation-aware convolution
against a per-sample loop, the padding against torch's reflection pad, Eq. 8's weight and the energy-distance
regulariser against closed forms, the training objective's terms and gradients, and model files."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

from savl.baselines import redsr
from savl.baselines.objectives import ReDSRObjective, build_redsr
from savl.errors import ConfigError
from savl.losses import redsr_energy_loss
from savl.models.io import load_model, save_model
from savl.train.config import validate

pytestmark = pytest.mark.usefixtures("one_thread")


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_paper_size_is_table1():
    # Table 1 of the ReDSR paper: 6.28 M parameters at test time (encoder + generator; the degrader is not run).
    net = redsr.ReDSRNet(redsr.ReDSRConfig.paper())
    assert round(_count(net) / 1e6, 2) == 6.28


def test_encoder_size_closed_form():
    # six convolutions (k x k x cin x cout + cout) and one PReLU slope each, nothing else
    nf, c = 64, 64
    convs = [(3, nf, 4), (nf, nf, 5), (nf, 2 * nf, 4), (2 * nf, 2 * nf, 5), (2 * nf, 4 * nf, 4), (4 * nf, c, 5)]
    expected = sum(k * k * a * b + b + 1 for a, b, k in convs)
    assert _count(redsr.DegradationEncoder(redsr.ReDSRConfig.paper())) == expected


@pytest.mark.parametrize("profile", ["smoke", "book"])
def test_shapes(profile, generator):
    cfg = redsr.ReDSRConfig.profile(profile)
    net, deg = redsr.ReDSRNet(cfg), redsr.Degrader(cfg)
    lr = torch.rand(2, 3, 12, 8, generator=generator)
    code = net.encode(lr)
    assert code.shape == (2, cfg.code_dim)
    assert net(lr).shape == (2, 3, 48, 32)
    assert deg(torch.rand(2, 3, 48, 32, generator=generator), code).shape == (2, 3, 12, 8)
    with pytest.raises(ValueError, match="multiple of 4"):
        deg(torch.rand(2, 3, 46, 32, generator=generator), code)


def test_padding_reflects_like_torch_and_replicates_when_too_small(generator):
    x = torch.rand(1, 2, 7, 9, generator=generator)
    torch.testing.assert_close(redsr._pad(x, 2, 5), nn.ReflectionPad2d(2)(x))
    tiny = torch.rand(1, 2, 1, 2, generator=generator)
    torch.testing.assert_close(redsr._pad(tiny, 1, 3), nn.ReplicationPad2d(1)(tiny))


@pytest.mark.parametrize("reflect", [False, True])
def test_da_conv_uses_each_samples_own_kernel(reflect, generator):
    torch.manual_seed(0)
    conv = redsr.DAConv(code_dim=8, channels=4, kernel=3, reduction=2, mix_kernel=3 if reflect else 1, reflect=reflect)
    x = torch.randn(3, 4, 6, 5, generator=generator)
    code = torch.randn(3, 8, generator=generator)
    out = conv(x, code)
    for b in range(3):  # reference: one sample at a time, its kernel applied as a grouped convolution
        k = conv.kernel(code[b : b + 1]).reshape(4, 1, 3, 3)
        xb = F.pad(x[b : b + 1], (1, 1, 1, 1), mode="reflect") if reflect else F.pad(x[b : b + 1], (1, 1, 1, 1))
        y = conv.mix(conv.act(F.conv2d(xb, k, groups=4)))
        y = y + x[b : b + 1] * torch.sigmoid(conv.attention[2](conv.attention[1](conv.attention[0](code[b]))))[
            None, :, None, None
        ]
        torch.testing.assert_close(out[b : b + 1], y, rtol=1e-5, atol=1e-6)


def test_modulation_weight_is_eq8():
    pseudo = torch.tensor([[[[0.0, 0.0]]], [[[0.3, 0.5]]]])
    real = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 0.0]]]])
    d = np.sqrt(np.array([0.0, (0.09 + 0.25) / 2]))
    c_inv = d  # C = 1 / d
    expected = 2 / (1 + c_inv)
    torch.testing.assert_close(redsr.modulation_weight(pseudo, real), torch.tensor(expected, dtype=torch.float32))
    assert redsr.modulation_weight(pseudo.requires_grad_(), real).requires_grad is False


def test_split_pair_halves_and_odd_width():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    a, b = redsr.split_pair(x)
    torch.testing.assert_close(torch.cat([a, b], dim=-1), x)
    assert a.shape[-1] == b.shape[-1] == 3
    with pytest.raises(ConfigError, match="even"):
        redsr.split_pair(x[..., :5])


def test_energy_loss_expectation_closed_form(generator):
    # Codes all at x0 in one dimension against m fresh N(0, 1) samples (ReDSR's V-statistic, divided by D = 1):
    # E[L] = 2 E|x0 - Z| - (m - 1) / m * E|Z - Z'|, with E|x0 - Z| = x0 (2 Phi(x0) - 1) + 2 phi(x0) and
    # E|Z - Z'| = 2 / sqrt(pi) (the diagonal pairs of the sample set contribute zeros).
    x0, m, trials = 0.7, redsr.ED_SAMPLES, 3000
    e_abs = x0 * (2 * norm.cdf(x0) - 1) + 2 * norm.pdf(x0)
    expected = 2 * e_abs - (m - 1) / m * 2 / math.sqrt(math.pi)
    codes = torch.full((5, 1), x0, dtype=torch.float64)
    draws = torch.stack([redsr_energy_loss(codes, m, generator) for _ in range(trials)])
    stderr = draws.std().item() / math.sqrt(trials)
    assert abs(draws.mean().item() - expected) < 4 * stderr


def _cfg(**extra):
    return validate({"profile": "smoke", "stage": "redsr", "data": {"gt_size": 32}, **extra})


def test_objective_terms_and_gradients(generator):
    torch.manual_seed(0)
    cfg = _cfg()
    models = build_redsr(cfg)
    objective = ReDSRObjective(cfg, models)
    lr = torch.rand(4, 3, 8, 8, generator=generator)
    hr = torch.rand(4, 3, 32, 32, generator=generator)
    terms = objective(lr, hr, 0, torch.Generator().manual_seed(1))
    expected = redsr.ED_WEIGHT * terms["ed"] + terms["rd"] + terms["sr_l1"]
    torch.testing.assert_close(terms["loss"], expected)
    # the re-degradation term compares the degrader's output for the right HR half with the right LR half
    code = models["srnet"].encode(lr[..., :4])
    torch.testing.assert_close(terms["rd"], F.l1_loss(models["degrader"](hr[..., 16:], code), lr[..., 4:]))
    terms["loss"].backward()
    missing = [n for n, p in objective.named_parameters() if p.grad is None]
    assert not missing


def test_build_refuses_odd_lr_halves():
    with pytest.raises(ConfigError, match="even"):
        build_redsr(_cfg(data={"gt_size": 36}))


def test_model_files_round_trip(tmp_path, generator):
    cfg = redsr.ReDSRConfig.smoke()
    for model in (redsr.ReDSRNet(cfg), redsr.Degrader(cfg)):
        path = save_model(model, tmp_path / f"{model.architecture}.safetensors")
        loaded = load_model(path)
        assert type(loaded) is type(model) and loaded.config == cfg
    lr = torch.rand(1, 3, 8, 8, generator=generator)
    net = redsr.ReDSRNet(cfg).eval()
    save_model(net, tmp_path / "net.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "net.safetensors")(lr), net(lr))


def test_sliding_code_is_the_code_of_each_centred_window(generator):
    from savl.baselines.representations import GlobalCode, SlidingCode

    torch.manual_seed(0)
    enc = redsr.ReDSRNet(redsr.ReDSRConfig.smoke()).eval()
    lr = torch.rand(2, 3, 20, 24, generator=generator)
    with torch.no_grad():
        grid = SlidingCode(enc.encode, patch=8, stride=4, module=enc).encode(lr).mean
        assert grid.shape == (2, 16, 5, 6)
        padded = F.pad(lr, (4, 3, 4, 3), mode="reflect")  # window (i, j) spans LR rows i-4 .. i+3
        for b, i, j in [(0, 0, 0), (1, 2, 3), (0, 4, 5)]:
            window = padded[b : b + 1, :, 4 * i : 4 * i + 8, 4 * j : 4 * j + 8]
            torch.testing.assert_close(grid[b, :, i, j], enc.encode(window)[0])
        whole = GlobalCode(enc.encode, enc).encode(lr).mean
        assert whole.shape == (2, 16, 1, 1)
        torch.testing.assert_close(whole[:, :, 0, 0], enc.encode(lr))
