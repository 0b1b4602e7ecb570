"""DARHAGNet (savl/models/srnet.py): sizes against the paper, plain-HAT equivalence, guidance wiring."""

import pytest
import torch

from savl.errors import ConfigError, ImageError
from savl.models.encoder import Posterior
from savl.models.hat import HAT
from savl.models.io import load_model, save_model
from savl.models.srnet import DARHAGNet, SRNetConfig


def smoke(**changes):
    return SRNetConfig.smoke().replace(**changes)


def test_paper_profile_matches_table2_parameter_counts():
    # Paper Table 2 (encoder included): 14.0 M with both guidances, 14.0 M without channel modulation, 13.6 M
    # without spatial modulation. Ours must land within 0.05 M of each.
    paper = SRNetConfig.paper()
    with torch.device("meta"):  # counts only: no memory, no initialisation
        full = DARHAGNet(paper).parameter_counts()
        no_channel = DARHAGNet(paper.replace(channel_guidance=False)).parameter_counts()
        no_spatial = DARHAGNet(paper.replace(spatial_guidance=False)).parameter_counts()
    assert abs(full["total"] / 1e6 - 14.0) <= 0.05
    assert abs(no_channel["total"] / 1e6 - 14.0) <= 0.05
    assert abs(no_spatial["total"] / 1e6 - 13.6) <= 0.05
    assert full["total"] == full["encoder"] + full["dsca"] + full["backbone"]
    # the branches are the differences: channel (conv3x3 64 -> 8, linear 8 -> 168) and spatial (conv3x3
    # 64 -> 104 -> 6, 6 strengths), once per group (closed forms)
    groups = len(paper.depths)
    assert full["total"] - no_channel["total"] == groups * (9 * 64 * 8 + 8 + 8 * 168 + 168)
    assert full["total"] - no_spatial["total"] == groups * (9 * 64 * 104 + 104 + 9 * 104 * 6 + 6 + 6)


def test_both_switches_off_is_plain_hat_without_encoder(generator):
    torch.manual_seed(0)
    net = DARHAGNet(smoke(channel_guidance=False, spatial_guidance=False)).eval()
    assert net.encoder is None and net.dsca is None
    c = net.config
    hat = HAT(
        c.embed_dim,
        c.depths,
        c.heads,
        c.window,
        c.mlp_ratio,
        c.compress,
        c.squeeze,
        c.overlap,
        c.upscale,
        num_feat=c.num_feat,
    ).eval()
    hat.load_state_dict(net.sr.state_dict())
    lr = torch.rand(1, 3, 9, 11, generator=generator)
    with torch.no_grad():
        sr, post = net.forward_with_posterior(lr)
        assert post is None
        torch.testing.assert_close(sr, hat(lr), rtol=0, atol=0)


def test_guided_net_at_init_with_flat_severity_equals_plain_hat(generator):
    # DSCA's channel modulation starts as the identity and a flat severity map gives a zero attention bias,
    # so at initialisation the guided network computes exactly the backbone's function.
    torch.manual_seed(0)
    net = DARHAGNet(smoke()).eval()
    lr = torch.rand(2, 3, 10, 7, generator=generator)
    code = net.config.encoder.code_dim
    flat = Posterior(torch.randn(2, code, 10, 7, generator=generator), torch.zeros(2, code, 10, 7))
    with torch.no_grad():
        torch.testing.assert_close(net(lr, flat), net.sr(lr), atol=1e-6, rtol=1e-6)
        varied = Posterior(flat.mu, torch.randn(2, code, 10, 7, generator=generator))
        assert (net(lr, varied) - net.sr(lr)).abs().max() > 1e-5  # a varying severity changes the output


def test_forward_computes_posterior_and_matches_given_one(generator):
    torch.manual_seed(0)
    net = DARHAGNet(smoke()).eval()
    lr = torch.rand(1, 3, 13, 17, generator=generator)
    with torch.no_grad():
        a = net(lr)
        sr, post = net.forward_with_posterior(lr)
        b = net(lr, post)
        c = net(lr, reference=True)
    assert a.shape == (1, 3, 52, 68)
    assert post.mean.shape == (1, net.config.encoder.code_dim, 13, 17)
    torch.testing.assert_close(a, sr)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_trained_guided_net_fused_equals_materialised(generator):
    # With non-zero DSCA weights the folded severity term (extra q/k channels) and the materialised dense bias
    # of the reference path give the same network output.
    torch.manual_seed(0)
    net = DARHAGNet(smoke()).eval()
    with torch.no_grad():
        for dsca in net.dsca:
            dsca.severity_net[-1].weight.normal_(0, 0.3, generator=generator)
            dsca.channel_fc.weight.normal_(0, 0.3, generator=generator)
            dsca.gamma_raw.fill_(1.0)
        lr = torch.rand(2, 3, 9, 10, generator=generator)
        fused, ref = net(lr), net(lr, reference=True)
        assert (fused - net.sr(lr)).abs().max() > 1e-4
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channel,spatial", [(True, False), (False, True), (True, True)])
def test_joint_training_reaches_encoder_dsca_and_backbone(generator, channel, spatial):
    torch.manual_seed(0)
    net = DARHAGNet(smoke(channel_guidance=channel, spatial_guidance=spatial)).train()
    lr = torch.rand(2, 3, 8, 8, generator=generator)
    hr = torch.rand(2, 3, 32, 32, generator=generator)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    for _ in range(2):  # the second step sees gradients behind the zero-initialised last layers
        opt.zero_grad()
        sr, post = net.forward_with_posterior(lr)
        ((sr - hr).abs().mean() + 1e-3 * post.kl().mean()).backward()
        opt.step()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert grads["sr.conv_first.weight"].abs().sum() > 0
    assert grads["encoder.head.weight"].abs().sum() > 0
    if channel:
        assert grads["dsca.0.channel_conv.weight"].abs().sum() > 0
    if spatial:
        assert grads["dsca.0.gamma_raw"].abs().sum() > 0
        assert grads["dsca.0.severity_net.0.weight"].abs().sum() > 0


def test_profiles_and_odd_sizes(generator):
    torch.manual_seed(0)
    for name in ("smoke", "book"):
        net = DARHAGNet(SRNetConfig.profile(name)).eval()
        with torch.no_grad():
            assert net(torch.rand(1, 3, 7, 5, generator=generator)).shape == (1, 3, 28, 20)
    with pytest.raises(ConfigError):
        SRNetConfig.profile("huge")
    with pytest.raises(ConfigError):
        smoke(embed_dim=15)
    with pytest.raises(ConfigError):
        smoke(window=5)


def test_save_and_load_round_trip(tmp_path, generator):
    torch.manual_seed(0)
    net = DARHAGNet(smoke(gamma_init=0.3)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=generator))
    path = save_model(net, tmp_path / "sr.safetensors")
    loaded = load_model(path)
    assert isinstance(loaded, DARHAGNet) and loaded.config == net.config
    lr = torch.rand(1, 3, 8, 8, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), net(lr))


def test_bf16_autocast_is_opt_in_and_close_to_float32(generator):
    torch.manual_seed(0)
    net = DARHAGNet(smoke()).eval()
    lr = torch.rand(1, 3, 8, 8, generator=generator)
    with torch.no_grad():
        ref = net(lr)
        assert ref.dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(lr)
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.05


def test_bad_input_raises_image_error():
    net = DARHAGNet(smoke(channel_guidance=False, spatial_guidance=False))
    with pytest.raises(ImageError):
        net(torch.rand(1, 4, 8, 8))
    with pytest.raises(ImageError):
        net(torch.rand(3, 8, 8))


def test_deterministic_code_gives_neutral_spatial_guidance(generator):
    # The §4.4 ablation's point-mass posterior has no variance: severity is uniform, so no attention bias.
    torch.manual_seed(0)
    net = DARHAGNet(smoke()).eval()
    lr = torch.rand(1, 3, 8, 8, generator=generator)
    point = Posterior(torch.randn(1, net.config.encoder.code_dim, 8, 8, generator=generator), None)
    with torch.no_grad():
        torch.testing.assert_close(net(lr, point), net.sr(lr), atol=1e-6, rtol=1e-6)


def test_smoke_net_fits_one_pair(generator):
    torch.manual_seed(0)
    net = DARHAGNet(smoke()).train()
    hr = torch.rand(1, 3, 32, 32, generator=generator)
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = (net(lr) - hr).abs().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]  # measured: 0.262 -> 0.189
