"""DSCA (savl/models/dsca.py): identity at init, severity-similarity attention bias, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from savl.errors import ConfigError
from savl.models.dsca import DSCA, GuidanceMaps
from savl.models.hat import HAB, WindowAttention, shifted_window_mask


class FakePosterior:
    """Stands in for savl.models.encoder.Posterior: .mean, .variance, .severity()."""

    def __init__(self, mean, variance, severity):
        self.mean, self.variance, self._severity = mean, variance, severity

    def severity(self):
        return self._severity


def maps_for(severity, code_dim=4, generator=None):
    B, _, H, W = severity.shape
    mean = torch.randn(B, code_dim, H, W, generator=generator)
    var = torch.rand(B, code_dim, H, W, generator=generator) + 0.1
    return GuidanceMaps.from_posterior(FakePosterior(mean, var, severity), (H, W), 1)


def test_zero_initialised_dsca_is_identity(generator):
    dsca = DSCA(dim=8, code_dim=4, heads=2, window=4)
    x = torch.randn(2, 64, 8, generator=generator)
    sev = torch.rand(2, 1, 8, 8, generator=generator)
    y, biases = dsca(x, (8, 8), maps_for(sev, generator=generator))
    assert torch.equal(y, x)
    assert set(biases) == {0, 2}
    # the per-head severity starts as the Eq. 15 severity itself
    torch.testing.assert_close(dsca.head_severity(maps_for(sev, generator=generator)), sev.expand(2, 2, 8, 8))


def test_channel_modulation_is_x_times_one_plus_a_plus_b(generator):
    torch.manual_seed(0)
    dsca = DSCA(dim=6, code_dim=4, heads=2, window=4, spatial=False)
    torch.nn.init.normal_(dsca.channel_net[-1].weight, std=0.1)
    maps = maps_for(torch.zeros(1, 1, 4, 4), generator=generator)
    x = torch.randn(1, 16, 6, generator=generator)
    y, biases = dsca(x, (4, 4), maps)
    assert biases == {}
    a, b = dsca.modulation(maps)
    ref = x.view(1, 4, 4, 6).permute(0, 3, 1, 2) * (1 + a) + b
    torch.testing.assert_close(y, ref.flatten(2).transpose(1, 2))
    assert not torch.allclose(y, x)


def test_spatial_bias_is_zero_for_constant_severity(generator):
    dsca = DSCA(dim=8, code_dim=4, heads=3, window=4, channel=False)
    sev = torch.full((1, 1, 8, 8), 0.37)
    _, biases = dsca(torch.zeros(1, 64, 8), (8, 8), maps_for(sev, generator=generator))
    for bias in biases.values():
        assert bias.shape == (4, 3, 16, 16)
        assert torch.count_nonzero(bias) == 0


def test_spatial_bias_values_follow_rolled_windows(generator):
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
            ref = -0.7 * (vals[:, None] - vals[None, :]).abs()
            torch.testing.assert_close(bias[k, 1], ref)


def test_equal_severity_pixels_attend_more_hand_computed():
    # One window of 4x4 pixels: left half severity 0, right half severity 1. With q = k = 0 the only logits are
    # the DSCA bias, so with one-hot values the output row i is the attention distribution of pixel i:
    # p(same) = 1 / (8 + 8 e^-gamma), p(other) = e^-gamma / (8 + 8 e^-gamma); without bias both are 1/16.
    gamma = 1.0
    dsca = DSCA(dim=16, code_dim=4, heads=1, window=4, channel=False, gamma_init=gamma)
    sev = torch.zeros(1, 1, 4, 4)
    sev[..., 2:] = 1.0
    bias = dsca.attention_bias(sev, 0)
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
        p = attn(x, bias=bias)[0]
        p0 = attn(x)[0]
    torch.testing.assert_close(p0, torch.full((16, 16), 1 / 16))
    same = (sev.flatten()[:, None] == sev.flatten()[None, :]).float()
    z = 8 + 8 * math.exp(-gamma)
    ref = same / z + (1 - same) * math.exp(-gamma) / z
    torch.testing.assert_close(p, ref)
    assert p[0, 1] > 1 / 16 > p[0, 2]


def test_gradients_reach_gamma_and_modulation_nets(generator):
    torch.manual_seed(0)
    dsca = DSCA(dim=8, code_dim=4, heads=2, window=4)
    hab0 = HAB(8, 2, 4, 0, compress=2, squeeze=2)
    hab1 = HAB(8, 2, 4, 2, compress=2, squeeze=2)
    sev = torch.rand(2, 1, 8, 8, generator=generator)
    maps = maps_for(sev, generator=generator)
    x = torch.randn(2, 64, 8, generator=generator)
    y, biases = dsca(x, (8, 8), maps)
    y = hab0(y, (8, 8), None, biases[0])
    y = hab1(y, (8, 8), shifted_window_mask(8, 8, 4, 2), biases[2])
    y.square().mean().backward()
    assert dsca.gamma_raw.grad is not None and dsca.gamma_raw.grad.abs().min() > 0
    assert dsca.channel_net[-1].weight.grad.abs().sum() > 0
    assert dsca.severity_net[-1].weight.grad.abs().sum() > 0


def test_guidance_maps_resize_and_reflect_pad(generator):
    mean = torch.randn(1, 3, 5, 6, generator=generator)
    var = torch.rand(1, 3, 5, 6, generator=generator) + 0.5
    sev = torch.rand(1, 1, 5, 6, generator=generator)
    maps = GuidanceMaps.from_posterior(FakePosterior(mean, var, sev), (5, 6), 4)
    assert maps.mean.shape == (1, 3, 8, 8)
    torch.testing.assert_close(maps.severity, F.pad(sev, (0, 2, 0, 3), mode="reflect"))
    torch.testing.assert_close(maps.log_variance[..., :5, :6], var.log())
    half = GuidanceMaps.from_posterior(FakePosterior(mean, var, sev), (10, 12), 1)
    torch.testing.assert_close(half.mean, F.interpolate(mean, size=(10, 12), mode="bilinear", align_corners=False))


def test_bad_configs():
    with pytest.raises(ConfigError):
        DSCA(8, 4, 2, 4, channel=False, spatial=False)
    with pytest.raises(ConfigError):
        DSCA(8, 4, 2, 4, gamma_init=0.0)
