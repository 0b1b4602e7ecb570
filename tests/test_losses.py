"""savl.losses against independent references: torch.distributions, Monte Carlo, scipy cdist, analytic MI,
numpy sums for the reductions, and a golden value from ReDSR's own energy-distance loss."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist
from torch import nn

from savl.errors import ConfigError, ModelFileError
from savl.losses import (
    CLUB,
    REDUCTIONS,
    VGG19_LAYERS,
    KLSchedule,
    PerceptualLoss,
    convert_beta,
    energy_distance,
    gan_loss,
    kl_standard_normal,
    reconstruction,
    redsr_energy_loss,
    reduce_per_image,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_kl_matches_torch_distributions(generator):
    mu = torch.randn(3, 4, 5, 6, generator=generator, dtype=torch.float64)
    logvar = torch.randn(3, 4, 5, 6, generator=generator, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    got = kl_standard_normal(mu, logvar)
    assert got.shape == (3,)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_kl_matches_monte_carlo(generator):
    # KL = E_q[log q(r) - log p(r)]; 200k samples, tolerance 4 standard errors of the MC mean.
    mu = torch.tensor([[0.3, -1.2], [0.8, 0.0]], dtype=torch.float64).view(1, 2, 2, 1)
    logvar = torch.tensor([[-0.5, 0.7], [0.2, -1.5]], dtype=torch.float64).view(1, 2, 2, 1)
    n = 200_000
    eps = torch.randn(n, 2, 2, 1, generator=generator, dtype=torch.float64)
    r = mu + (0.5 * logvar).exp() * eps
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(0.0, 1.0)
    samples = (q.log_prob(r) - p.log_prob(r)).flatten(1).sum(1)
    se = samples.std() / math.sqrt(n)
    assert abs(samples.mean() - kl_standard_normal(mu, logvar)[0]) < 4 * se
    assert kl_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0  # prior: KL = 0


def test_kl_schedule_is_linear_then_flat():
    s = KLSchedule()
    assert (s.beta_final, s.anneal_steps) == (5e-4, 50_000)
    assert s(0) == 0.0
    assert s(25_000) == pytest.approx(2.5e-4)
    assert s(50_000) == pytest.approx(5e-4)
    assert s(1_000_000) == pytest.approx(5e-4)
    assert KLSchedule(1e-3, 0)(0) == pytest.approx(1e-3)
    with pytest.raises(ConfigError):
        KLSchedule(-1.0)


def test_reconstruction_l1_l2(generator):
    a = torch.rand(2, 3, 4, 5, generator=generator)
    b = torch.rand(2, 3, 4, 5, generator=generator)
    na, nb = a.numpy(), b.numpy()
    assert reconstruction(a, b, "l1").item() == pytest.approx(np.abs(na - nb).mean(), rel=1e-6)
    assert reconstruction(a, b, "l2").item() == pytest.approx(((na - nb) ** 2).mean(), rel=1e-6)
    assert reconstruction(a, b, "l1", "element").item() == pytest.approx(np.abs(na - nb).mean(), rel=1e-6)
    # Eq. 13 as written: summed over channels and pixels of each image, then averaged over the 2 images
    literal = np.abs(na - nb).reshape(2, -1).sum(1).mean()
    assert reconstruction(a, b, "l1", "literal").item() == pytest.approx(literal, rel=1e-6)
    assert reconstruction(a, b, "l2", "literal").item() == pytest.approx(((na - nb) ** 2).reshape(2, -1).sum(1).mean())
    with pytest.raises(ConfigError, match="l1"):
        reconstruction(a, b, "l3")
    with pytest.raises(ConfigError, match="reduction"):
        reconstruction(a, b, "l1", "sum")


def test_reduce_per_image_by_hand():
    per_image = torch.tensor([12.0, 36.0])  # two images, 6 pixels, code_dim 4
    assert reduce_per_image(per_image, "literal", 6, 4).item() == 24.0
    assert reduce_per_image(per_image, "pixel", 6, 4).item() == 4.0
    assert reduce_per_image(per_image, "element", 6, 4).item() == 1.0


def test_convert_beta_closed_forms():
    assert REDUCTIONS == ("literal", "pixel", "element")
    # the paper's 5e-4 (literal sums) is 5e-4 / 3 per pixel and 5e-4 * 64 / 3 per element
    assert convert_beta(5e-4, "literal", "pixel") == pytest.approx(5e-4 / 3, rel=1e-15)
    assert convert_beta(5e-4, "literal", "element") == pytest.approx(5e-4 * 64 / 3, rel=1e-15)
    assert convert_beta(5e-4, "pixel", "literal") == pytest.approx(1.5e-3, rel=1e-15)
    assert convert_beta(1e-3, "pixel", "element", code_dim=8) == pytest.approx(8e-3, rel=1e-15)
    for a in REDUCTIONS:
        for b in REDUCTIONS:  # round trips are exact up to rounding
            assert convert_beta(convert_beta(2e-4, a, b), b, a) == pytest.approx(2e-4, rel=1e-14)
    with pytest.raises(ConfigError, match="reduction"):
        convert_beta(1e-4, "sum", "pixel")
    with pytest.raises(ConfigError, match="beta"):
        convert_beta(-1.0, "pixel", "literal")


@pytest.mark.parametrize("target", ["pixel", "element"])
def test_converted_beta_gives_the_same_objective_up_to_a_factor(generator, target):
    # Reductions written out with numpy on random data: L_literal(beta) = (3 P) L_target(convert_beta(beta)),
    # so both have the same minimiser and proportional gradients, whatever the patch size P.
    b, c, m, h, w = 2, 3, 5, 4, 7
    y, y_hat = np.random.default_rng(0).random((2, b, c, h, w))
    mu, logvar = np.random.default_rng(1).normal(size=(2, b, m, h, w))
    kl = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)
    s_rec = np.abs(y - y_hat).reshape(b, -1).sum(1).mean()
    s_kl = kl.reshape(b, -1).sum(1).mean()
    beta = 5e-4
    literal = s_rec + beta * s_kl
    beta_t = convert_beta(beta, "literal", target, channels=c, code_dim=m)
    kl_div = h * w if target == "pixel" else m * h * w
    other = s_rec / (c * h * w) + beta_t * s_kl / kl_div
    assert literal == pytest.approx(c * h * w * other, rel=1e-12)
    # and the library's own terms give the same numbers
    rec_t = reconstruction(torch.from_numpy(y_hat), torch.from_numpy(y), "l1", target).item()
    kl_t = reduce_per_image(kl_standard_normal(torch.from_numpy(mu), torch.from_numpy(logvar)), target, h * w, m)
    assert rec_t + beta_t * kl_t.item() == pytest.approx(other, rel=1e-12)


def _energy_reference(x, y, unbiased):
    dxy, dxx, dyy = cdist(x, y).mean(), cdist(x, x), cdist(y, y)
    n, m = len(x), len(y)
    if unbiased:
        return 2 * dxy - dxx.sum() / (n * (n - 1)) - dyy.sum() / (m * (m - 1))
    return 2 * dxy - dxx.mean() - dyy.mean()


@pytest.mark.parametrize("unbiased", [True, False])
def test_energy_distance_matches_scipy(generator, unbiased):
    x = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(30, 5, generator=generator, dtype=torch.float64) * 1.5 + 0.3
    ref = _energy_reference(x.numpy(), y.numpy(), unbiased)
    assert energy_distance(x, y, normalise=False, unbiased=unbiased).item() == pytest.approx(ref, rel=1e-10)
    assert energy_distance(x, y, normalise=True, unbiased=unbiased).item() == pytest.approx(ref / 5, rel=1e-10)


def test_energy_distance_default_is_redsr_loss():
    # Golden value from ReDSR's own loss (Chernobyllight/ReDSR @ fea7204, LOSS/ED_LOSS.py, ed_loss.forward), run
    # outside this repository in float64 with its Gaussian draw replaced by the fixed samples z below.
    latent = torch.tensor([[math.sin(0.7 * i + 0.3 * j) for j in range(4)] for i in range(5)], dtype=torch.float64)
    z = torch.tensor([[1.5 * math.cos(1.1 * i - 0.5 * j) for j in range(4)] for i in range(6)], dtype=torch.float64)
    assert energy_distance(latent, z).item() == pytest.approx(0.23138468778846277, rel=1e-12)
    # ReDSR's form is the V-statistic divided by the dimension
    ref = _energy_reference(latent.numpy(), z.numpy(), unbiased=False) / 4
    assert energy_distance(latent, z).item() == pytest.approx(ref, rel=1e-12)


def test_redsr_energy_loss_draws_standard_normal_samples(generator):
    codes = torch.randn(8, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    got = redsr_energy_loss(codes, samples=64, generator=torch.Generator().manual_seed(3))
    t = torch.randn(64, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(got, energy_distance(codes, t))
    got.backward()
    assert torch.isfinite(codes.grad).all() and codes.grad.abs().sum() > 0
    # codes far from N(0, I) cost more than codes drawn from it
    far = redsr_energy_loss(torch.randn(64, 6, generator=generator) + 3.0, generator=generator)
    near = redsr_energy_loss(torch.randn(64, 6, generator=generator), generator=generator)
    assert far > 5 * near
    with pytest.raises(ValueError, match="codes"):
        redsr_energy_loss(torch.zeros(2, 3, 4))


def test_energy_distance_zero_for_identical_sets(generator):
    x = torch.randn(64, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    assert energy_distance(x, x).item() == pytest.approx(0.0, abs=1e-12)
    energy_distance(x, x).backward()
    assert torch.isfinite(x.grad).all()  # zero distances do not give NaN gradients
    # Two independent draws from one distribution: the U-statistic is 0 in expectation, the V-statistic is not.
    u, v = [], []
    for _ in range(200):
        a = torch.randn(16, 4, generator=generator, dtype=torch.float64)
        b = torch.randn(16, 4, generator=generator, dtype=torch.float64)
        u.append(energy_distance(a, b, unbiased=True).item())
        v.append(energy_distance(a, b).item())
    u, v = np.array(u), np.array(v)
    assert abs(u.mean()) < 4 * u.std() / math.sqrt(len(u))
    assert v.mean() > 4 * v.std() / math.sqrt(len(v))
    # And a shifted distribution is clearly positive.
    shifted = torch.randn(64, 8, generator=generator, dtype=torch.float64) + 1.0
    assert energy_distance(x.detach(), shifted, normalise=False, unbiased=True).item() > 0.5


def _correlated_gaussians(n, d, rho, generator):
    x = torch.randn(n, d, generator=generator)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=generator)
    return x, y


def test_club_log_likelihood_is_a_gaussian_density(generator):
    torch.manual_seed(0)
    club = CLUB(3, 2, hidden=8)
    x, y = torch.randn(5, 3, generator=generator), torch.randn(5, 2, generator=generator)
    mu, logvar = club.mu(x), club.logvar_bound * club.logvar(x)
    ref = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(y).sum(-1).mean()
    torch.testing.assert_close(club.log_likelihood(x, y), ref)
    # forward's closed-form inner mean equals the explicit O(N^2) double sum
    lq = torch.distributions.Normal(mu[:, None], (0.5 * logvar[:, None]).exp()).log_prob(y[None]).sum(-1)
    torch.testing.assert_close(club(x, y), (lq.diagonal() - lq.mean(1)).mean())
    assert club.logvar_bound * club.logvar(10 * x).abs().max() <= club.logvar_bound  # tanh-bounded


def test_club_upper_bounds_analytic_mi(generator):
    torch.manual_seed(0)
    d, rho = 2, 0.7
    true_mi = -(d / 2) * math.log(1 - rho**2)
    club = CLUB(d, d, hidden=32)
    opt = torch.optim.Adam(club.parameters(), lr=1e-2)
    for _ in range(300):
        x, y = _correlated_gaussians(256, d, rho, generator)
        loss = -club.log_likelihood(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = _correlated_gaussians(8192, d, rho, generator)
    with torch.no_grad():
        est = club(x, y).item()
    # With the exact q, CLUB = d * rho^2 / (1 - rho^2) (1.92 here) >= I = 0.673.
    assert est >= true_mi - 0.05
    assert est == pytest.approx(d * rho**2 / (1 - rho**2), abs=0.25)
    # Independent data: the estimate is near 0.
    with torch.no_grad():
        indep = club(x, torch.randn(8192, d, generator=generator)).item()
    assert abs(indep) < 0.1


def test_gan_loss_by_hand():
    pred = torch.tensor([0.5, -1.0, 2.0])
    real = np.mean([math.log(1 + math.exp(-p)) for p in (0.5, -1.0, 2.0)])
    fake = np.mean([math.log(1 + math.exp(p)) for p in (0.5, -1.0, 2.0)])
    assert gan_loss(pred, True, True).item() == pytest.approx(real, rel=1e-6)
    assert gan_loss(pred, True, False).item() == pytest.approx(real, rel=1e-6)
    assert gan_loss(pred, False, True).item() == pytest.approx(fake, rel=1e-6)
    assert gan_loss(pred, True, True, kind="hinge").item() == pytest.approx((0.5 + 2.0 + 0.0) / 3)
    assert gan_loss(pred, False, True, kind="hinge").item() == pytest.approx((1.5 + 0.0 + 3.0) / 3)
    assert gan_loss(pred, True, False, kind="hinge").item() == pytest.approx(-(0.5 - 1.0 + 2.0) / 3)
    with pytest.raises(ConfigError):
        gan_loss(pred, True, kind="wgan")


def _conv_index(name):
    """Index in VGG19 `features` of conv{block}_{k}, walked from torchvision's config list."""
    from torchvision.models.vgg import cfgs

    block, k = map(int, name[4:].split("_"))
    idx, b, c = 0, 1, 0
    for v in cfgs["E"]:
        if v == "M":
            idx, b, c = idx + 1, b + 1, 0
            continue
        c += 1
        if (b, c) == (block, k):
            return idx
        idx += 2  # conv + ReLU
    raise AssertionError(name)


def test_perceptual_loss_reads_pre_relu_layers(generator):
    torch.manual_seed(0)
    loss = PerceptualLoss(weights=None)
    assert {k: _conv_index(k) for k in VGG19_LAYERS} == VGG19_LAYERS
    assert all(isinstance(loss.features[i], nn.Conv2d) for i in VGG19_LAYERS.values())
    a = torch.rand(1, 3, 32, 32, generator=generator, requires_grad=True)
    b = torch.rand(1, 3, 32, 32, generator=generator)
    assert loss(b, b).item() == 0.0
    value = loss(a, b)
    value.backward()
    assert value.item() > 0 and a.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    # by hand: normalise, run the trunk up to each layer, weighted L1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    weights = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
    with torch.no_grad():
        ref = sum(
            w
            * F.l1_loss(
                loss.features[: VGG19_LAYERS[k] + 1]((a - mean) / std),
                loss.features[: VGG19_LAYERS[k] + 1]((b - mean) / std),
            )
            for k, w in weights.items()
        )
    torch.testing.assert_close(value.detach(), ref)


def test_perceptual_loss_missing_weights_names_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelFileError) as err:
        PerceptualLoss(weights="imagenet")
    msg = str(err.value)
    assert "vgg19-dcbb9e9d.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg and "\n" not in msg


def test_perceptual_loss_loads_cached_weights(tmp_path, monkeypatch):
    from torchvision.models.vgg import cfgs, make_layers

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    features = make_layers(cfgs["E"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # other keys in the file are ignored
    torch.save(state, folder / "vgg19-dcbb9e9d.pth")
    loss = PerceptualLoss(weights="imagenet")
    torch.testing.assert_close(loss.features[34].weight, features[34].weight)
    (folder / "vgg19-dcbb9e9d.pth").write_bytes(b"not a pickle")
    with pytest.raises(ModelFileError, match="cannot be read"):
        PerceptualLoss(weights="imagenet")


def test_laplace_nll_equals_scipy_laplace_log_density():
    """Eq. 13 with a learned scale: the mean of -log Laplace(y; mu, b) per element (scipy's logpdf)."""
    from scipy import stats

    from savl.losses import laplace_nll

    g = torch.Generator().manual_seed(3)
    y, mu = torch.rand(2, 3, 5, 4, generator=g), torch.rand(2, 3, 5, 4, generator=g)
    log_b = torch.randn(2, 3, 5, 4, generator=g) * 0.5 - 2
    ref = -stats.laplace.logpdf(y.numpy(), loc=mu.numpy(), scale=log_b.exp().numpy())
    assert float(laplace_nll(mu, log_b, y)) == pytest.approx(ref.mean(), rel=1e-5)
    literal = float(laplace_nll(mu, log_b, y, reduction="literal"))
    assert literal == pytest.approx(ref.reshape(2, -1).sum(1).mean(), rel=1e-5)


def test_laplace_rec_needs_a_decoder_with_a_scale_head():
    from savl.models.decoder import Decoder, DecoderConfig
    from savl.models.encoder import AmortizedEncoder, EncoderConfig
    from savl.models.savl import SAVL

    with pytest.raises(ConfigError, match="learned_scale"):
        SAVL(AmortizedEncoder(EncoderConfig.smoke()), Decoder(DecoderConfig.smoke()), rec="laplace")
    model = SAVL.build("smoke", rec="laplace")
    out = model(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32), step=1)
    assert model.decoder.config.learned_scale and "l1" in out and torch.isfinite(out["loss"])
