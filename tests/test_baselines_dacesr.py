"""DACESR (savl.baselines.selective_scan, mamba, dacesr, objectives): the chunked selective scan against the
step-by-step recurrence (values and gradients, both of its forms), that recurrence against a closed-form
convolution, the mixer's causality, parameter counts against hand counts, the modulator (Eq. 6), LoRA, the
degradation selection, InfoNCE against its closed form, the RAM checkpoint messages, model files."""

import math

import numpy as np
import pytest
import torch

from savl.baselines import selective_scan as scan
from savl.baselines.dacesr import (
    DACESRConfig,
    DACESRNet,
    LoRAConv2d,
    RealEmbeddingExtractor,
    REEConfig,
    modulate,
)
from savl.baselines.mamba import MambaMixer
from savl.baselines.objectives import REEObjective, info_nce, severe_selection
from savl.errors import ConfigError, ModelFileError
from savl.models.io import load_model, save_model
from savl.train.config import validate

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(generator, b=2, d=5, L=37, n=3, delta_scale=1.0):
    f = dict(generator=generator, dtype=torch.float64)
    return dict(
        u=torch.randn(b, d, L, **f),
        delta=torch.randn(b, d, L, **f) * delta_scale,
        A=-torch.rand(d, n, **f) * 3,
        B=torch.randn(b, n, L, **f),
        C=torch.randn(b, n, L, **f),
        D=torch.randn(d, **f),
        z=torch.randn(b, d, L, **f),
        delta_bias=torch.randn(d, **f) * delta_scale,
        delta_softplus=True,
    )


def test_sequential_recurrence_matches_a_closed_form():
    # One channel, one state, constant step: h_t = a h_{t-1} + b u_t with a = exp(dt A), b = dt B, so
    # y_t = C sum_{s<=t} a^(t-s) b u_s + D u_t, a causal convolution with the kernel C b a^k.
    L, dt, A, B, C, D = 9, 0.3, -0.8, 1.7, -0.6, 0.25
    u = np.linspace(-1, 2, L)
    a = math.exp(dt * A)
    expected = [C * sum(a ** (t - s) * dt * B * u[s] for s in range(t + 1)) + D * u[t] for t in range(L)]
    got = scan.selective_scan_sequential(
        torch.tensor(u).view(1, 1, L),
        torch.full((1, 1, L), dt, dtype=torch.float64),
        torch.tensor([[A]], dtype=torch.float64),
        torch.full((1, 1, L), B, dtype=torch.float64),
        torch.full((1, 1, L), C, dtype=torch.float64),
        torch.tensor([D], dtype=torch.float64),
    )
    np.testing.assert_allclose(got.view(-1).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("form", ["factorised", "quadratic"])
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_chunked_scan_matches_the_recurrence(form, chunk, generator, monkeypatch):
    # delta_scale 0.3 keeps every chunk's decay under MAX_LOG_RANGE, so "factorised" really takes that form
    args = _inputs(generator, delta_scale=0.3)
    monkeypatch.setattr(scan, "MAX_LOG_RANGE", float("inf") if form == "factorised" else -1.0)
    used = []
    for name in ("_factorised", "_quadratic"):
        original = getattr(scan, name)
        monkeypatch.setattr(scan, name, lambda *a, _f=original, _n=name: used.append(_n) or _f(*a))
    torch.testing.assert_close(
        scan.selective_scan(**args, chunk=chunk), scan.selective_scan_sequential(**args), rtol=1e-10, atol=1e-10
    )
    assert used == ["_" + form]


def test_large_decays_fall_back_to_the_quadratic_form(generator):
    args = _inputs(generator, delta_scale=30.0)  # decays of hundreds of nats per chunk: exp(-S) would overflow
    got = scan.selective_scan(**args, chunk=16)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, scan.selective_scan_sequential(**args), rtol=1e-9, atol=1e-9)


def test_chunked_scan_gradients_match_the_recurrence(generator):
    args = _inputs(generator, L=21, delta_scale=0.5)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    weights = torch.randn(2, 5, 21, generator=generator, dtype=torch.float64)
    grads = []
    for fn in (lambda **k: scan.selective_scan(**k, chunk=8), scan.selective_scan_sequential):
        leaves = {k: (v.clone().requires_grad_() if k in names else v) for k, v in args.items()}
        (fn(**leaves) * weights).sum().backward()
        grads.append([leaves[k].grad for k in names])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_mixer_is_causal(generator):
    torch.manual_seed(0)
    mixer = MambaMixer(8, d_state=4, chunk=4).double()
    x = torch.randn(2, 13, 8, generator=generator, dtype=torch.float64)
    y = mixer(x)
    x2 = x.clone()
    x2[:, 7:] = torch.randn(2, 6, 8, generator=generator, dtype=torch.float64)
    y2 = mixer(x2)
    torch.testing.assert_close(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


def _mixer_count(d: int, n: int, k: int = 4, e: int = 2) -> int:
    di, r = e * d, math.ceil(d / 16)
    # in_proj, depthwise conv1d (+bias), x_proj, dt_proj (+bias), A_log, D, out_proj
    return d * 2 * di + di * k + di + di * (r + 2 * n) + r * di + di + di * n + di + di * d


def test_paper_size_hand_count():
    c = DACESRConfig.paper()
    e, f = c.embed_dim, c.num_feat
    conv = lambda a, b: 9 * a * b + b  # noqa: E731 (3x3 convolution with bias)
    block = _mixer_count(e, c.d_state) + 2 * e  # + its LayerNorm
    expected = conv(3, e) + 2 * e  # first conv, patch LayerNorm
    expected += sum(d * block + conv(e, e) for d in c.depths)  # groups
    expected += 2 * e + conv(e, e) + conv(e, f) + 2 * conv(f, 4 * f) + conv(f, 3)  # norm, tail, upsampler
    net = DACESRNet(c)
    assert sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in net.ree.parameters()) == expected
    assert round(expected / 1e6, 2) == 7.43


@pytest.mark.parametrize("profile", ["smoke", "book"])
def test_shapes_and_unconditioned(profile, generator):
    net = DACESRNet(DACESRConfig.profile(profile))
    lr = torch.rand(2, 3, 6, 10, generator=generator)
    assert net(lr).shape == (2, 3, 24, 40)
    bare = DACESRNet(DACESRConfig(**{**DACESRConfig.profile(profile).__dict__, "condition": "none"}))
    assert bare.ree is None and bare(lr).shape == (2, 3, 24, 40)


def test_modulate_is_eq6_with_alpha_one_plus_c(generator):
    h = torch.randn(2, 12, 5, generator=generator)
    torch.testing.assert_close(modulate(h, torch.zeros(2, 4, 7)), h)
    c = 0.3
    torch.testing.assert_close(modulate(h, torch.full((2, 4, 7), c)), h * (1 + c) + c)
    # resize-and-interpolate: a (T, E) embedding that varies along E only keeps its profile along the channels
    emb = torch.linspace(0, 1, 5).repeat(2, 3, 1)  # (2, 3, 5), E == C: the bilinear resize is the identity on E
    torch.testing.assert_close(modulate(torch.zeros(2, 12, 5), emb), emb[:, :1].expand(2, 12, 5))


def test_lora_starts_at_the_base_and_tunes_only_the_adapter(generator):
    conv = LoRAConv2d(3, 4, 3, 2, rank=2)
    x = torch.randn(1, 3, 8, 8, generator=generator)
    torch.testing.assert_close(conv(x, tuned=True), conv(x, tuned=False))
    conv(x, tuned=True).square().sum().backward()
    assert conv.base.weight.grad is None and conv.up.weight.grad is not None


def test_severe_selection_picks_the_most_degraded(generator):
    torch.manual_seed(0)
    ree = RealEmbeddingExtractor(REEConfig.profile("smoke"))
    gt = torch.rand(8, 3, 32, 32, generator=generator)
    lr = gt.clone()
    lr[5] = torch.rand(3, 32, 32, generator=generator)  # one input unrelated to its GT
    chosen, disagreement = severe_selection(ree, lr, gt, 0.25)
    assert chosen.tolist()[0] == 5 and len(chosen) == 2
    assert disagreement[5] > 0 and torch.allclose(disagreement[[0, 1, 2, 3, 4, 6, 7]], torch.zeros(7), atol=1e-6)


def test_info_nce_closed_form():
    n, tau = 4, 0.1
    a = torch.eye(n, 6, dtype=torch.float64)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (n - 1)))
    assert info_nce(a, a.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_ree_objective_gradients_reach_base_and_adapters(generator):
    torch.manual_seed(0)
    cfg = validate({"profile": "smoke", "stage": "dacesr_ree", "batch": 4})
    ree = RealEmbeddingExtractor(REEConfig.profile("smoke"))
    objective = REEObjective(cfg, {"ree": ree})
    terms = objective(torch.rand(4, 3, 8, 8, generator=generator), torch.rand(4, 3, 32, 32, generator=generator), 0)
    terms["loss"].backward()
    assert all(p.grad is not None for p in ree.parameters())
    with pytest.raises(ConfigError, match="batch >= 2"):
        REEObjective(validate({"profile": "smoke", "stage": "dacesr_ree", "batch": 1}), {"ree": ree})


def test_ram_checkpoint_missing_and_present(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = DACESRConfig(**{**DACESRConfig.smoke().__dict__, "condition": "ram"})
    with pytest.raises(ModelFileError) as e:
        DACESRNet(cfg)
    message = str(e.value)
    assert "\n" not in message and "ram_swin_large_14m.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "ram_swin_large_14m.pth").write_bytes(b"x")
    with pytest.raises(ConfigError, match="no Swin-L RAM"):
        DACESRNet(cfg)
    with pytest.raises(ConfigError, match="condition"):
        DACESRConfig(condition="clip")


def test_model_files_round_trip(tmp_path, generator):
    net = DACESRNet(DACESRConfig.smoke()).eval()
    save_model(net, tmp_path / "dacesr.safetensors")
    loaded = load_model(tmp_path / "dacesr.safetensors")
    assert loaded.config == net.config
    lr = torch.rand(1, 3, 8, 8, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), net(lr))
    ree = RealEmbeddingExtractor(REEConfig.profile("smoke"))
    assert load_model(save_model(ree, tmp_path / "ree.safetensors")).config == ree.config
