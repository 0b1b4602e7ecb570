"""DSCA (savl/models/dsca.py): scale-free bounded severity, folded attention bias, per-image channel vector."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from savl.errors import ConfigError
from savl.models.dsca import DSCA, GuidanceMaps, standardised_severity
from savl.models.encoder import Posterior
from savl.models.hat import HAB, FactoredBias, WindowAttention, shifted_window_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def random_posterior(B=2, m=4, H=8, W=8, generator=None, spread=1.0):
    mu = torch.randn(B, m, H, W, generator=generator)
    logvar = spread * torch.randn(B, m, H, W, generator=generator) - 1.0
    return Posterior(mu, logvar)


def perturbed(dsca, generator, std=0.3):
    """Give the zero-initialised last layers random weights, as training would."""
    with torch.no_grad():
        if dsca.spatial:
            last = dsca.severity_net[-1]
            last.weight.copy_(std * torch.randn(last.weight.shape, generator=generator))
            last.bias.copy_(std * torch.randn(dsca.heads, generator=generator))
        if dsca.channel:
            dsca.channel_fc.weight.copy_(std * torch.randn(dsca.channel_fc.weight.shape, generator=generator))
    return dsca


# ---------------------------------------------------------------- severity (item 1)


def test_standardised_severity_closed_form(generator):
    logvar = torch.randn(2, 3, 5, 6, generator=generator)
    z = standardised_severity(logvar).numpy()
    v = np.exp(logvar.double().numpy()).mean(axis=1, keepdims=True)  # channel-mean sigma^2, the v of Eq. 15
    lv = np.log(v)
    ref = -(lv - lv.mean(axis=(2, 3), keepdims=True)) / lv.std(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(z, ref, atol=1e-5)
    np.testing.assert_allclose(z.mean(axis=(2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(2, 3)), 1, atol=1e-5)


def test_severity_orders_pixels_like_eq15(generator):
    # Eq. 15 (savl.models.encoder, kept literal) and the standardised severity are increasing functions of each
    # other within an image: same ranking of pixels, up to ties.
    post = random_posterior(2, 4, 6, 7, generator)
    eq15 = post.severity().flatten(1).numpy()
    ours = standardised_severity(post.logvar).flatten(1).numpy()
    for b in range(2):
        np.testing.assert_array_equal(np.argsort(eq15[b], kind="stable"), np.argsort(ours[b], kind="stable"))


@pytest.mark.parametrize("c", [1e-3, 7.5, 1e4])
def test_scaling_every_variance_leaves_the_bias_unchanged(generator, c):
    torch.manual_seed(0)
    dsca = perturbed(DSCA(dim=8, code_dim=4, heads=2, window=4, spatial_hidden=8), generator)
    post = random_posterior(2, 4, 8, 8, generator)
    scaled = Posterior(post.mu, post.logvar + math.log(c))  # every sigma^2 times c
    as_variance = type("V", (), {"mean": post.mu, "variance": post.variance * c})()  # through .variance
    with torch.no_grad():
        _, ref = dsca(torch.zeros(2, 64, 8), (8, 8), post)
        for other in (scaled, as_variance):
            _, got = dsca(torch.zeros(2, 64, 8), (8, 8), other)
            for shift in (0, 2):
                torch.testing.assert_close(got[shift].dense(), ref[shift].dense(), atol=2e-5, rtol=1e-4)
    # whereas Eq. 15 divides by Var[sigma^2]: scaling sigma^2 by c scales its spread by 1/c
    s, s_c = post.severity(), scaled.severity()
    torch.testing.assert_close((s_c - 1) * c, s - 1, atol=1e-3, rtol=1e-3)


def test_bias_is_bounded_by_four_gamma_even_for_an_outlier():
    dsca = DSCA(dim=8, code_dim=2, heads=2, window=4, spatial_hidden=4, channel=False)
    logvar = torch.zeros(1, 2, 8, 8)
    logvar[..., 3, 5] = 30.0  # one pixel with a huge variance: Eq. 15 and z both give it an extreme value
    maps = GuidanceMaps.from_posterior(Posterior(torch.zeros_like(logvar), logvar), (8, 8))
    with torch.no_grad():
        bias = dsca.attention_bias(dsca.head_severity(maps), 0)
    gamma = float(dsca.gamma.detach()[0])
    assert gamma == pytest.approx(0.25)
    assert float(bias.min()) >= -4 * gamma and float(bias.max()) <= 0
    assert float(bias.min()) < -0.5 * gamma  # the outlier is penalised, within the bound


def test_bias_at_initialisation_on_a_degraded_photo_is_about_a_logit():
    # Paper-profile encoder and DSCA at initialisation on a photo degraded by the Table 5 patchwise protocol.
    from savl.data import sample_images
    from savl.degrade.protocols import get_protocol
    from savl.models.encoder import AmortizedEncoder
    from savl.models.srnet import SRNetConfig

    torch.manual_seed(0)
    cfg = SRNetConfig.paper()
    encoder = AmortizedEncoder(cfg.encoder).eval()
    dsca = DSCA(cfg.embed_dim, cfg.encoder.code_dim, cfg.heads, cfg.window, 8, 16, gamma_init=cfg.gamma_init)
    ((_, photo),) = sample_images(["astronaut"], max_side=128)
    lr, _ = get_protocol("table5-type")(photo[None, :, :128, :128], torch.Generator().manual_seed(0))
    with torch.no_grad():
        post = encoder(lr)
        maps = GuidanceMaps.from_posterior(post, tuple(lr.shape[-2:]), cfg.window)
        bias = dsca.attention_bias(dsca.head_severity(maps), 0)
        # for contrast, the former term -1 * |s_i - s_j| on the literal Eq. 15 severity, same windows
        eq15 = dsca.severity_windows(post.severity(), 0)
        former = (eq15.unsqueeze(-1) - eq15.unsqueeze(-2)).abs()
    assert float(bias.abs().median()) <= 1.0
    assert float(bias.abs().max()) <= 4 * cfg.gamma_init + 1e-6
    assert float(former.median()) > 10.0  # what item 1 of the fidelity issue measured (median 142 logits)


def test_flat_or_point_mass_variance_gives_zero_bias(generator):
    dsca = DSCA(dim=8, code_dim=4, heads=3, window=4, channel=False)
    mu = torch.randn(1, 4, 8, 8, generator=generator)
    for post in (Posterior(mu, torch.full_like(mu, -0.7)), Posterior(mu, None)):
        maps = GuidanceMaps.from_posterior(post, (8, 8))
        assert torch.count_nonzero(maps.severity) == 0
        _, biases = dsca(torch.zeros(1, 64, 8), (8, 8), maps)
        for bias in biases.values():
            assert bias.left.shape == (4, 3, 16, 2)
            assert torch.count_nonzero(bias.dense()) == 0


# ---------------------------------------------------------------- the bias and its folded form (items 1, 7)


def test_dense_bias_values_follow_rolled_windows(generator):
    dsca = DSCA(dim=8, code_dim=4, heads=2, window=4, channel=False, gamma_init=0.7)
    H, W, w, s = 8, 8, 4, 2
    sev = torch.rand(1, 1, H, W, generator=generator)
    bias = dsca.attention_bias(sev.expand(1, 2, H, W), s)
    # token t of window (wy, wx) sits at rolled (y, x) = (wy*w + t//w, wx*w + t%w), i.e. image ((y+s)%H, (x+s)%W)
    for wy in range(H // w):
        for wx in range(W // w):
            k = wy * (W // w) + wx
            pos = [((wy * w + t // w + s) % H, (wx * w + t % w + s) % W) for t in range(w * w)]
            vals = torch.stack([sev[0, 0, y, x] for y, x in pos])
            ref = -0.7 * (vals[:, None] - vals[None, :]).square()
            torch.testing.assert_close(bias[k, 1], ref)


def test_factored_bias_differs_from_dense_by_a_row_constant(generator):
    dsca = DSCA(dim=8, code_dim=4, heads=2, window=4, channel=False, gamma_init=0.6)
    sev = torch.tanh(torch.randn(2, 2, 8, 8, generator=generator))
    for shift in (0, 2):
        dense = dsca.attention_bias(sev, shift)
        fac = dsca.factored_bias(sev, shift)
        s = fac.right[..., 0]  # (B*nW, heads, N): the windowed severities
        # left.right = -gamma (s_i - s_j)^2 + gamma s_i^2, closed form
        torch.testing.assert_close(fac.dense() - dense, (0.6 * s.square()).unsqueeze(-1).expand_as(dense))


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("reference", [False, True])
def test_folded_attention_equals_materialised_bias(generator, shift, reference):
    torch.manual_seed(0)
    dsca = perturbed(DSCA(dim=8, code_dim=4, heads=2, window=4, spatial_hidden=8, gamma_init=1.3), generator)
    attn = WindowAttention(8, 4, 2)
    maps = GuidanceMaps.from_posterior(random_posterior(2, 4, 8, 12, generator), (8, 12))
    sev = dsca.head_severity(maps)
    x = torch.randn(2 * 6, 16, 8, generator=generator)
    mask = shifted_window_mask(8, 12, 4, shift) if shift else None
    with torch.no_grad():
        dense = attn(x, mask, dsca.attention_bias(sev, shift), reference=True)
        folded = attn(x, mask, dsca.factored_bias(sev, shift), reference=reference)
        plain = attn(x, mask, None)
    torch.testing.assert_close(folded, dense, atol=2e-6, rtol=1e-5)
    assert (folded - plain).abs().max() > 1e-4  # the term does something


def test_equal_severity_pixels_attend_more_hand_computed():
    # One window of 4x4 pixels: left half severity -d/2, right half +d/2. With q = k = 0 the only logits are the
    # DSCA term, so with one-hot values the output row i is the attention distribution of pixel i:
    # p(same) = 1 / (8 + 8 e^{-gamma d^2}), p(other) = e^{-gamma d^2} / (8 + 8 e^{-gamma d^2}).
    gamma, d = 1.5, 0.8
    dsca = DSCA(dim=16, code_dim=4, heads=1, window=4, channel=False, gamma_init=gamma)
    sev = torch.full((1, 1, 4, 4), -d / 2)
    sev[..., 2:] = d / 2
    attn = WindowAttention(16, 4, 1)
    with torch.no_grad():
        attn.qkv.weight.zero_()
        attn.qkv.bias.zero_()
        attn.qkv.weight[32:] = torch.eye(16)  # v = x
        attn.proj.weight.copy_(torch.eye(16))
        attn.proj.bias.zero_()
        attn.relative_position_bias_table.zero_()
    x = torch.eye(16)[None]
    with torch.no_grad():
        p = attn(x, bias=dsca.factored_bias(sev, 0))[0]
        p0 = attn(x)[0]
    torch.testing.assert_close(p0, torch.full((16, 16), 1 / 16))
    same = (sev.flatten()[:, None] == sev.flatten()[None, :]).float()
    e = math.exp(-gamma * d * d)
    ref = (same + (1 - same) * e) / (8 + 8 * e)
    torch.testing.assert_close(p, ref)


# ---------------------------------------------------------------- the channel vector (item 2)


def test_channel_modulation_is_one_vector_per_image(generator):
    torch.manual_seed(0)
    dsca = perturbed(DSCA(dim=6, code_dim=4, heads=2, window=4, channel_hidden=5, spatial=False), generator)
    post = random_posterior(2, 4, 5, 7, generator)
    maps = GuidanceMaps.from_posterior(post, (5, 7), 4)  # padded to 8 x 8
    x = torch.randn(2, 64, 6, generator=generator)
    y, biases = dsca(x, (8, 8), maps)
    assert biases == {}
    a = dsca.modulation(maps)
    assert a.shape == (2, 6)
    # hand-computed: conv3x3 -> LeakyReLU(0.2) -> mean over the image's own 5 x 7 pixels -> linear
    h = F.conv2d(post.mu, dsca.channel_conv.weight, dsca.channel_conv.bias, padding=1)
    pooled = torch.where(h > 0, h, 0.2 * h).mean((2, 3))
    torch.testing.assert_close(a, pooled @ dsca.channel_fc.weight.T + dsca.channel_fc.bias)
    torch.testing.assert_close(y, x * (1 + a[:, None, :]))
    ratio = y / x  # one scale per image and channel, the same at every pixel
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5, rtol=1e-5)
    assert (a[0] - a[1]).abs().max() > 1e-3  # different images, different vectors


def test_channel_vector_ignores_the_padding(generator):
    torch.manual_seed(0)
    dsca = perturbed(DSCA(dim=6, code_dim=4, heads=2, window=4, spatial=False), generator)
    maps = GuidanceMaps.from_posterior(random_posterior(1, 4, 5, 7, generator), (5, 7), 4)
    edited = GuidanceMaps(maps.mean.clone(), maps.log_variance, maps.severity, maps.valid)
    edited.mean[..., 5:, :] = 99.0  # the padded rows below the image
    torch.testing.assert_close(dsca.modulation(edited), dsca.modulation(maps))


def test_parameter_counts_closed_form():
    m, C, heads, hc, hs = 64, 168, 6, 8, 104
    both = DSCA(C, m, heads, 16, hc, hs)
    channel = DSCA(C, m, heads, 16, hc, hs, spatial=False)
    spatial = DSCA(C, m, heads, 16, hc, hs, channel=False)
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    n_channel = (9 * m * hc + hc) + (hc * C + C)  # conv3x3 m -> hc, linear hc -> C
    n_spatial = (9 * m * hs + hs) + (9 * hs * heads + heads) + heads  # conv3x3 m -> hs -> heads, gamma
    assert count(channel) == n_channel == 6128
    assert count(spatial) == n_spatial == 65636
    assert count(both) == n_channel + n_spatial


# ---------------------------------------------------------------- wiring


def test_zero_initialised_dsca_is_identity_with_small_bias(generator):
    dsca = DSCA(dim=8, code_dim=4, heads=2, window=4)
    x = torch.randn(2, 64, 8, generator=generator)
    maps = GuidanceMaps.from_posterior(random_posterior(2, 4, 8, 8, generator), (8, 8))
    y, biases = dsca(x, (8, 8), maps)
    assert torch.equal(y, x)
    assert set(biases) == {0, 2}
    torch.testing.assert_close(dsca.head_severity(maps), torch.tanh(maps.severity).expand(2, 2, 8, 8))


def test_gradients_reach_gamma_and_both_branches(generator):
    torch.manual_seed(0)
    dsca = DSCA(dim=8, code_dim=4, heads=2, window=4)
    hab0 = HAB(8, 2, 4, 0, compress=2, squeeze=2)
    hab1 = HAB(8, 2, 4, 2, compress=2, squeeze=2)
    maps = GuidanceMaps.from_posterior(random_posterior(2, 4, 8, 8, generator), (8, 8))
    x = torch.randn(2, 64, 8, generator=generator)
    y, biases = dsca(x, (8, 8), maps)
    assert all(isinstance(b, FactoredBias) for b in biases.values())
    y = hab0(y, (8, 8), None, biases[0])
    y = hab1(y, (8, 8), shifted_window_mask(8, 8, 4, 2), biases[2])
    y.square().mean().backward()
    assert dsca.gamma_raw.grad is not None and dsca.gamma_raw.grad.abs().min() > 0
    assert dsca.channel_fc.weight.grad.abs().sum() > 0
    assert dsca.severity_net[-1].weight.grad.abs().sum() > 0


def test_guidance_maps_resize_and_reflect_pad(generator):
    post = random_posterior(1, 3, 5, 6, generator)
    maps = GuidanceMaps.from_posterior(post, (5, 6), 4)
    assert maps.mean.shape == (1, 3, 8, 8) and maps.valid == (5, 6)
    z = standardised_severity(post.logvar)  # statistics of the image itself, then padded
    torch.testing.assert_close(maps.severity, F.pad(z, (0, 2, 0, 3), mode="reflect"))
    centred = post.logvar - post.logvar.mean((2, 3), keepdim=True)
    torch.testing.assert_close(maps.log_variance[..., :5, :6], centred)
    big = GuidanceMaps.from_posterior(post, (10, 12), 1)
    torch.testing.assert_close(big.mean, F.interpolate(post.mu, size=(10, 12), mode="bilinear", align_corners=False))


def test_bad_configs():
    with pytest.raises(ConfigError):
        DSCA(8, 4, 2, 4, channel=False, spatial=False)
    with pytest.raises(ConfigError):
        DSCA(8, 4, 2, 4, gamma_init=0.0)
