"""Posterior (Eq. 4-5, 7, 15) and AmortizedEncoder: sampling moments, gradients, severity by hand, sizes, RF."""

import math

import pytest
import torch

from savl.errors import ConfigError, ImageError
from savl.losses import kl_standard_normal
from savl.models.blocks import MAConv, PixelNorm, detached_norm_statistics, norm_groups
from savl.models.encoder import LOGVAR_MAX, LOGVAR_MIN, AmortizedEncoder, EncoderConfig, Posterior
from savl.models.io import load_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_samples_have_posterior_mean_and_variance(generator):
    mu = torch.tensor([0.5, -2.0, 1.0]).view(1, 3, 1, 1).expand(50_000, 3, 2, 2).contiguous()
    logvar = torch.tensor([-1.0, 0.0, 1.5]).view(1, 3, 1, 1).expand_as(mu).contiguous()
    r = Posterior(mu, logvar).sample(generator)
    var = logvar.exp()
    n = r.shape[0]
    # mean within 4 standard errors; sample variance within 4 of its standard errors (sqrt(2/n) var)
    assert ((r.mean(0) - mu[0]).abs() < 4 * (var[0] / n).sqrt()).all()
    assert ((r.var(0) - var[0]).abs() < 4 * math.sqrt(2 / n) * var[0]).all()


def test_reparameterised_gradients_reach_mu_and_logvar():
    mu = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    logvar = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2), requires_grad=True)
    r = Posterior(mu, logvar).sample(torch.Generator().manual_seed(3))
    r.sum().backward()
    eps = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    # d r / d mu = 1, d r / d logvar = 0.5 * sigma * eps (Eq. 5)
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)


def test_posterior_kl_and_deterministic_behaviour(generator):
    mu, logvar = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    torch.testing.assert_close(Posterior(mu, logvar).kl(), kl_standard_normal(mu, logvar))
    det = Posterior(mu)
    assert det.deterministic and det.sample(generator) is mu
    assert (det.variance == 0).all() and (det.kl() == 0).all() and det.kl().shape == (2,)
    assert (det.severity() == 1).all() and det.severity().shape == (2, 1, 4, 4)


def test_severity_equals_eq15_by_hand():
    # Channel variances 0.5 v and 1.5 v average to v = [[1, 2], [3, 4]]: mean 2.5, population Var 1.25,
    # s = 1 - (v - 2.5) / 1.25 = [[2.2, 1.4], [0.6, -0.2]].
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    logvar = torch.stack([(0.5 * v).log(), (1.5 * v).log()]).unsqueeze(0)
    s = Posterior(torch.zeros_like(logvar), logvar).severity()
    expected = torch.tensor([[2.2, 1.4], [0.6, -0.2]], dtype=torch.float64)
    assert s.shape == (1, 1, 2, 2)
    torch.testing.assert_close(s[0, 0], expected)


def test_severity_is_image_wise_and_constant_variance_gives_ones():
    logvar = torch.zeros(2, 4, 5, 7)
    logvar[1] = 0.3  # a different constant, and a non-trivial map for a third image
    s = Posterior(torch.zeros_like(logvar), logvar).severity()
    assert torch.isfinite(s).all() and (s == 1).all()
    logvar = torch.cat([logvar, torch.linspace(-1, 1, 35).view(1, 1, 5, 7).expand(1, 4, 5, 7)])
    s = Posterior(torch.zeros_like(logvar), logvar).severity()
    assert (s[:2] == 1).all()
    # per image, Eq. 15 centres v, so the mean of s over the pixels is exactly 1
    assert s[2].mean().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("size", [(37, 53), (1, 1), (8, 16), (19, 5)])
@pytest.mark.parametrize("deterministic", [False, True])
def test_encoder_output_at_lr_resolution_for_any_size(generator, size, deterministic):
    torch.manual_seed(0)
    enc = AmortizedEncoder(EncoderConfig.smoke(), deterministic=deterministic)
    post = enc(torch.rand(2, 3, *size, generator=generator))
    assert post.mu.shape == (2, enc.config.code_dim, *size)
    if deterministic:
        assert post.logvar is None and enc.config.deterministic
    else:
        assert post.logvar.shape == post.mu.shape
        assert post.logvar.min() >= LOGVAR_MIN and post.logvar.max() <= LOGVAR_MAX


def test_encoder_is_translation_equivariant_away_from_padding(generator):
    # Padding only on the bottom/right to a multiple of 2: cropping the input by 2 px on top/left shifts the
    # output except near the borders, up to the image-wide GroupNorm statistics (detached here).
    torch.manual_seed(0)
    enc = AmortizedEncoder(EncoderConfig.smoke()).double()
    y = torch.rand(1, 3, 40, 40, generator=generator, dtype=torch.float64)
    with detached_norm_statistics(enc), torch.no_grad():
        a, b = enc(y).mu, enc(y[..., 2:, 2:]).mu
    rf = enc.receptive_field()
    torch.testing.assert_close(a[..., rf : 40 - rf, rf : 40 - rf], b[..., rf - 2 : 38 - rf, rf - 2 : 38 - rf])


def test_encoder_rejects_wrong_channels():
    with pytest.raises(ImageError, match="encoder input"):
        AmortizedEncoder(EncoderConfig.smoke())(torch.rand(1, 4, 8, 8))


def _gradient_extent(enc, canvas, pixel, detach=True):
    """Rows/cols of a full 2-D canvas where d mu(pixel) / d input is non-zero (float64)."""
    y = torch.rand(1, 3, canvas, canvas, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y.requires_grad_(True)
    if detach:
        with detached_norm_statistics(enc):
            mu = enc(y).mu
    else:
        mu = enc(y).mu
    (grad,) = torch.autograd.grad(mu[0, :, pixel[0], pixel[1]].sum(), y)
    support = grad.abs().sum((0, 1)) > 0
    rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_receptive_field_matches_gradient_support():
    torch.manual_seed(0)
    enc = AmortizedEncoder(EncoderConfig.smoke())
    rf = enc.receptive_field()
    # By hand for the smoke layout (level strides 1, 2): head 3x3 (+2), two MAConvs (+4), strided conv (+2),
    # two MAConvs at stride 2 (+8), nearest 2x upsampling + 3x3 conv (+2 at the widest phase), two MAConvs
    # (+4), tail 3x3 (+2): 1 + 2 + 4 + 2 + 8 + 2 + 4 + 2 = 25.
    assert rf == 25
    net = AmortizedEncoder(EncoderConfig.smoke()).double()
    net.load_state_dict(enc.state_dict())
    extents = [_gradient_extent(net, 64, (30 + i, 30 + j)) for i in range(2) for j in range(2)]
    assert max(max(e) for e in extents) == rf
    # GroupNorm's statistics couple every output to the whole image: without detaching, the support is global.
    assert _gradient_extent(net, 32, (16, 16), detach=False) == (32, 32)


def test_paper_profile_size_is_unchanged_by_the_new_options():
    # 851,616 parameters: the paper profile's count before `norm` and `levels` existed (GroupNorm, 4 levels).
    with torch.device("meta"):
        enc = AmortizedEncoder(EncoderConfig.paper())
    assert sum(p.numel() for p in enc.parameters()) == 851_616
    cfg = EncoderConfig.paper()
    assert (cfg.norm, cfg.levels, cfg.widths, cfg.downsample_factor) == ("group", None, [32, 32, 64, 128], 8)
    assert enc.image_wide


@pytest.mark.parametrize("norm", ["none", "pixel"])
def test_rf_limited_encoder_is_local_without_detaching(norm):
    # The paper's widths with two levels of one block (MANet's depth): the layer list is the smoke layout's,
    # so the same hand count gives 25 px; with no image-wide statistics the *plain* gradient support (nothing
    # detached) is that window, whereas GroupNorm's support is the whole canvas (previous test).
    cfg = EncoderConfig.rf_limited("paper", norm=norm)
    assert (cfg.base, cfg.multipliers, cfg.code_dim) == (32, (1, 1, 2, 4), 64)  # the paper's list is kept
    assert cfg.widths == [32, 32] and cfg.downsample_factor == 2 and cfg.blocks_per_level == 1
    torch.manual_seed(0)
    enc = AmortizedEncoder(cfg)
    assert not enc.image_wide and enc.receptive_field() == 25
    net = AmortizedEncoder(cfg).double()
    net.load_state_dict(enc.state_dict())
    extents = [_gradient_extent(net, 48, (20 + i, 20 + j), detach=False) for i in range(2) for j in range(2)]
    assert max(max(e) for e in extents) == 25


def test_pixel_norm_is_layer_norm_over_channels(generator):
    x = torch.randn(2, 6, 4, 5, generator=generator, dtype=torch.float64)
    norm = PixelNorm(6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 6))
        norm.bias.copy_(torch.linspace(-1.0, 1.0, 6))
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, eps=1e-5)
    torch.testing.assert_close(norm(x), ref.permute(0, 3, 1, 2))


def test_encoder_config_validation():
    with pytest.raises(ConfigError, match="norm"):
        EncoderConfig(norm="batch")
    with pytest.raises(ConfigError, match="levels"):
        EncoderConfig(levels=5)
    with pytest.raises(ConfigError, match="levels"):
        EncoderConfig(levels=0)
    assert EncoderConfig(levels=3).widths == [32, 32, 64]


def test_norm_groups_and_maconv():
    assert norm_groups(64) == 32 and norm_groups(16) == 16 and norm_groups(48) == 16 and norm_groups(8, 32) == 8
    torch.manual_seed(0)
    conv = MAConv(6, 10, split=2)
    x = torch.rand(2, 6, 5, 5)
    assert conv(x).shape == (2, 10, 5, 5)
    # Each split's affine comes from the *other* split: changing split 2 changes output split 1 only via it.
    x2 = x.clone()
    x2[:, 3:] += 1.0
    out1, out2 = conv(x), conv(x2)
    assert not torch.allclose(out1[:, :5], out2[:, :5])
    conv.affine[0][-1].weight.data.zero_()
    conv.affine[0][-1].bias.data.zero_()
    torch.testing.assert_close(conv(x)[:, :5], conv(x2)[:, :5])  # no cross path left: split 1 is independent


def test_profiles_and_save_load_round_trip(tmp_path, generator):
    assert (EncoderConfig.paper().code_dim, EncoderConfig.paper().base) == (64, 32)
    assert EncoderConfig.paper().multipliers == (1, 1, 2, 4)
    torch.manual_seed(0)
    enc = AmortizedEncoder(EncoderConfig.smoke(), deterministic=True)
    path = save_model(enc, tmp_path / "enc.safetensors")
    loaded = load_model(path)
    y = torch.rand(1, 3, 9, 11, generator=generator)
    assert loaded.config.deterministic
    torch.testing.assert_close(loaded(y).mu, enc.eval()(y).mu)


@pytest.mark.parametrize("channels", [(8, 8), (6, 10), (7, 9)])
def test_maconv_equals_its_definition_written_out(channels):
    """MAConv against MANet's definition computed here op by op (float64): split i is modulated by
    sigmoid(scale_i) and shifted by shift_i, both from an affine net on the other split, then convolved;
    values and weight gradients must agree, for equal and unequal splits and in channels-last float32."""
    cin, cout = channels
    torch.manual_seed(0)
    conv = MAConv(cin, cout, split=2).double()
    x = torch.rand(2, cin, 6, 7, dtype=torch.float64)
    f = torch.nn.functional

    def by_hand(x):
        a, b = conv.in_splits
        parts, out = (x[:, :a], x[:, a:]), []
        for i, part in enumerate(parts):
            net, k = conv.affine[i], conv.conv[i]
            hidden = f.silu(f.conv2d(parts[1 - i], net[0].weight, net[0].bias))
            st = f.conv2d(hidden, net[2].weight, net[2].bias)
            scale, shift = st[:, : part.shape[1]], st[:, part.shape[1] :]
            out.append(f.conv2d(part * torch.sigmoid(scale) + shift, k.weight, k.bias, padding=1))
        return torch.cat(out, 1)

    got = conv(x)
    grads = torch.autograd.grad(got.square().sum(), list(conv.parameters()))
    ref = by_hand(x)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(conv.parameters()))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)
    cl = conv.float().to(memory_format=torch.channels_last)
    xf = x.float().to(memory_format=torch.channels_last)
    torch.testing.assert_close(cl(xf), ref.float(), rtol=0, atol=1e-5)
