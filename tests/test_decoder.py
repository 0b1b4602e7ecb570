"""Decoder p(y | z, r): the blur split against scipy, exactness, sizes, dependence on the code; RRDB/SFT blocks."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from savl.errors import ConfigError, ImageError
from savl.models.blocks import RRDB, ChannelAttention, ResidualDenseBlock, SFTLayer
from savl.models.decoder import Decoder, DecoderConfig, frequency_split

pytestmark = pytest.mark.usefixtures("one_thread")


def test_blur_split_matches_scipy_and_is_exact(generator):
    hr = torch.rand(2, 3, 20, 23, generator=generator, dtype=torch.float64)
    base, cond = frequency_split(hr, 9, 9.0)
    t = np.arange(9) - 4.0
    g = np.exp(-(t**2) / (2 * 9.0**2))
    k = np.outer(g, g) / np.outer(g, g).sum()
    ref = np.stack([[ndimage.correlate(c, k, mode="mirror") for c in img] for img in hr.numpy()])
    np.testing.assert_allclose(base.numpy(), ref, atol=1e-12)
    torch.testing.assert_close(base + cond, hr, rtol=0, atol=1e-15)  # float64: exact up to one rounding
    b32, c32 = frequency_split(hr.float())
    assert (b32 + c32 - hr.float()).abs().max() < 1e-6


def test_decoder_shapes_and_size_checks(generator):
    torch.manual_seed(0)
    dec = Decoder(DecoderConfig.smoke())
    code = torch.randn(2, 8, 37, 53, generator=generator)
    hr = torch.rand(2, 3, 148, 212, generator=generator)
    assert dec(hr, code).shape == (2, 3, 37, 53)
    with pytest.raises(ImageError, match="expected hr 148x212"):
        dec(hr[..., :-1], code)
    with pytest.raises(ImageError, match="code"):
        dec(hr, code[:, :4])
    with pytest.raises(ConfigError):
        DecoderConfig(blur_size=8)


def test_decoder_depends_on_the_code_and_passes_gradients(generator):
    torch.manual_seed(0)
    dec = Decoder(DecoderConfig.smoke())
    hr = torch.rand(1, 3, 32, 32, generator=generator)
    code = torch.randn(1, 8, 8, 8, generator=generator, requires_grad=True)
    out = dec(hr, code)
    out.sum().backward()
    assert code.grad.abs().sum() > 0
    assert not torch.allclose(out, dec(hr, torch.zeros_like(code)))
    # The code acts locally: changing it at one LR pixel leaves outputs beyond the decoder's reach unchanged.
    # Reach (radius) of the smoke decoder: code conv 1 + one RRDB's 15 convs + body conv 1 + two tail convs = 19.
    dec = dec.double()
    hr = torch.rand(1, 3, 128, 128, generator=generator, dtype=torch.float64)
    code = torch.randn(1, 8, 32, 32, generator=generator, dtype=torch.float64)
    moved = code.clone()
    moved[..., 0, 0] += 3.0
    with torch.no_grad():
        diff = (dec(hr, moved) - dec(hr, code)).abs().sum(1)[0]
    assert diff[:10, :10].min() > 0  # near the change: affected (at the reach's edge it can round away)
    assert diff[20:].max() == 0 and diff[:, 20:].max() == 0


def test_decoder_skip_is_the_area_downsampled_base(generator):
    # With the head zeroed, y_hat is exactly the 4x4 block mean of the blurred HR image (the LR skip path).
    torch.manual_seed(0)
    dec = Decoder(DecoderConfig.smoke()).double()
    dec.tail[-1].weight.data.zero_()
    dec.tail[-1].bias.data.zero_()
    hr = torch.rand(1, 3, 16, 24, generator=generator, dtype=torch.float64)
    base, _ = frequency_split(hr)
    ref = base.numpy().reshape(1, 3, 4, 4, 6, 4).mean((3, 5))
    np.testing.assert_allclose(dec(hr, torch.zeros(1, 8, 4, 6, dtype=torch.float64)).detach().numpy(), ref)


def test_rdb_rrdb_residual_scaling(generator):
    torch.manual_seed(0)
    x = torch.rand(1, 8, 6, 6, generator=generator)
    rdb = ResidualDenseBlock(8, 4, res_scale=0.2)
    assert [c.in_channels for c in rdb.convs] == [8, 12, 16, 20, 24]
    rdb.convs[-1].weight.data.zero_()
    rdb.convs[-1].bias.data.fill_(1.0)
    torch.testing.assert_close(rdb(x), x + 0.2)  # x + 0.2 * (last conv output = 1)
    rrdb = RRDB(8, 4, res_scale=0.2)
    for block in rrdb.body:
        block.convs[-1].weight.data.zero_()
        block.convs[-1].bias.data.fill_(1.0)
    # three RDBs each add 0.2, then the outer residual scales the body output (x + 0.6) by 0.2
    torch.testing.assert_close(rrdb(x), x + 0.2 * (x + 0.6))


def test_rdb_init_is_esrgan_kaiming_times_0_1():
    # ESRGAN / BasicSR: Kaiming normal (fan-in, gain sqrt 2) scaled by 0.1, zero bias. Checked on the weights'
    # sample moments: std within 3 % of 0.1 sqrt(2 / fan_in) (each conv has >= 18k weights, so the standard
    # error of the std is < 0.6 %), and a normal's kurtosis of 3 (PyTorch's default, a uniform, has 1.8).
    torch.manual_seed(0)
    rdb = ResidualDenseBlock(64, 32)
    for conv in rdb.convs:
        w = conv.weight.detach().double().flatten()
        fan_in = conv.in_channels * 9
        assert w.std().item() == pytest.approx(0.1 * (2 / fan_in) ** 0.5, rel=0.03)
        kurtosis = (((w - w.mean()) / w.std()) ** 4).mean().item()
        assert kurtosis == pytest.approx(3.0, abs=0.25)
        assert (conv.bias == 0).all()
    # init_scale is the knob: 1.0 gives plain Kaiming normal
    torch.manual_seed(0)
    plain = ResidualDenseBlock(64, 32, init_scale=1.0)
    assert plain.convs[0].weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.03)
    assert all(isinstance(b, ResidualDenseBlock) for b in RRDB(16, 8).body)


def test_sft_and_channel_attention_by_hand(generator):
    torch.manual_seed(0)
    x = torch.rand(1, 4, 3, 3, generator=generator)
    cond = torch.rand(1, 2, 3, 3, generator=generator)
    sft = SFTLayer(4, 2)
    gamma, beta = sft.scale(cond), sft.shift(cond)
    torch.testing.assert_close(sft(x, cond), x * (1 + gamma) + beta)
    ca = ChannelAttention(4, squeeze=2)
    w1, b1 = ca.attn[1].weight.view(2, 4), ca.attn[1].bias
    w2, b2 = ca.attn[3].weight.view(4, 2), ca.attn[3].bias
    pooled = x.mean((2, 3))[0]
    a = torch.sigmoid(w2 @ torch.relu(w1 @ pooled + b1) + b2)
    torch.testing.assert_close(ca(x), x * a.view(1, 4, 1, 1))


def test_decoder_profiles():
    p = DecoderConfig.paper()
    assert (p.num_blocks, p.growth, p.res_scale, p.scale, p.blur_size, p.blur_sigma) == (8, 32, 0.2, 4, 9, 9.0)
    with pytest.raises(ConfigError):
        DecoderConfig.profile("huge")
