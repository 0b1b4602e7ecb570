"""The representation protocols (Table 1, Table 5, Fig. 5/12, A.6, A.7) on tiny images and encoders.

Besides shape and determinism checks with a randomly initialised smoke encoder, hand-made "oracle"
encoders prove the protocols measure what they claim: a code that is a function of the local noise
level clusters the Table 5 noise patches almost perfectly, a constant code scores exactly chance, and
a code that holds only the noise level is probed as degradation-informative but content-blind.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from savl.analysis import protocols as P
from savl.degrade.spatial import TABLE5_SETTINGS, patchwise
from savl.errors import ConfigError, DataError
from savl.imresize import imresize
from savl.models.encoder import AmortizedEncoder, EncoderConfig, Posterior


def ramp(h, w, a, b):
    """A smooth colour ramp: its bicubic LR is smooth too, so residual energy is the added noise."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([0.3 + 0.2 * (a * x + b * y), 0.5 - 0.1 * x, 0.4 + 0.1 * y]).clamp(0, 1)


def textured(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear")
    return (0.2 + 0.6 * base[0]).clamp(0, 1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke_encoder():
    torch.manual_seed(0)
    return AmortizedEncoder(EncoderConfig.smoke())


def constant_encoder(lr):
    return Posterior(torch.zeros(lr.shape[0], 4, *lr.shape[-2:]), None)


def noise_oracle(clean_by_size):
    """Per-pixel code: log of the 3x3 mean squared residual from the known clean LR (found by size)."""

    def encode(lr):
        ref = clean_by_size[(lr.shape[-2] * 4, lr.shape[-1] * 4)]
        r2 = ((lr - ref) ** 2).mean(1, keepdim=True)
        energy = F.avg_pool2d(F.pad(r2, (1, 1, 1, 1), mode="replicate"), 3, 1)
        return Posterior(torch.log(energy + 1e-5), None)

    return encode


def global_noise_oracle(lr):
    """Pooled code = one robust noise-std estimate (median absolute Laplacian); blind to content."""
    lap = lr[..., 1:-1, 1:-1] * 4 - lr[..., :-2, 1:-1] - lr[..., 2:, 1:-1] - lr[..., 1:-1, :-2] - lr[..., 1:-1, 2:]
    sigma = lap.abs().flatten(1).median(1).values / math.sqrt(20.0) / 0.6745
    code = torch.log(sigma + 1e-4)[:, None, None, None].expand(-1, 2, *lr.shape[-2:])
    return Posterior(code.contiguous(), None)


# ---------------------------------------------------------------------------------------------
# Table 5


def test_spatial_clustering_well_formed_and_deterministic(smoke_encoder):
    imgs = [textured(128, 128, 0), textured(128, 96, 1)]
    r1 = P.spatial_clustering(smoke_encoder, imgs, "blur", seed=3, patch=32)
    r2 = P.spatial_clustering(smoke_encoder, imgs, "blur", seed=3, patch=32)
    assert r1["accuracy"] == r2["accuracy"]
    assert [m.shape for m in r1["label_map"]] == [(32, 32), (32, 24)]
    assert [m.shape for m in r1["predicted_map"]] == [(32, 32), (32, 24)]
    for a, b in zip(r1["label_map"] + r1["predicted_map"], r2["label_map"] + r2["predicted_map"]):
        assert np.array_equal(a, b)
    y = np.concatenate([m.ravel() for m in r1["label_map"]])
    p = np.concatenate([m.ravel() for m in r1["predicted_map"]])
    assert r1["accuracy"] == pytest.approx(np.mean(y == p))
    assert set(np.unique(y)) <= set(range(len(TABLE5_SETTINGS["blur"])))
    assert r1["n_pixels"] == 32 * 32 + 32 * 24
    # Labels are constant on each 32-px HR patch = 8x8 LR cell, and equal patchwise's own labels.
    lm = r1["label_map"][0]
    assert np.array_equal(lm, np.kron(lm[::8, ::8], np.ones((8, 8), dtype=lm.dtype)))
    direct = patchwise(imgs[0][None], "blur", torch.Generator().manual_seed(3000), patch=32)
    assert np.array_equal(direct.labels[0].numpy(), lm)
    assert torch.equal(direct.lr[0], r1["lr"][0])
    r3 = P.spatial_clustering(smoke_encoder, imgs, "blur", seed=4, patch=32)
    assert not all(np.array_equal(a, b) for a, b in zip(r1["label_map"], r3["label_map"]))


def test_spatial_clustering_oracle_high_constant_chance():
    imgs = [ramp(384, 384, 1, 0), ramp(384, 320, 0, 1)]
    clean = {tuple(im.shape[-2:]): imresize(im[None], scale=0.25) for im in imgs}
    oracle = P.spatial_clustering(noise_oracle(clean), imgs, "noise", seed=1, patch=128)
    const = P.spatial_clustering(constant_encoder, imgs, "noise", seed=1, patch=128)
    assert oracle["n_clusters"] == 4
    assert oracle["accuracy"] > 0.9
    # A constant code puts every pixel in one cluster: exactly the majority-label fraction.
    assert const["accuracy"] == pytest.approx(const["chance"])
    assert const["chance"] < 0.6


def test_encoder_mode_restored_and_encode_objects_accepted(smoke_encoder):
    seen = []
    handle = smoke_encoder.register_forward_hook(lambda m, i, o: seen.append(m.training))
    smoke_encoder.train()
    try:

        class Wrapper:
            def __init__(self, enc):
                self.enc = enc

            def encode(self, lr):
                return self.enc(lr)

        P.severity_across_levels(smoke_encoder, textured(64, 64, 2), [0.0, 0.1])
        P.severity_across_levels(Wrapper(smoke_encoder), textured(64, 64, 2), [0.0])
    finally:
        handle.remove()
    assert seen and not any(seen[:2])  # eval during the protocol
    assert smoke_encoder.training  # restored afterwards
    with pytest.raises(ConfigError):
        P.encode_fn(42)


# ---------------------------------------------------------------------------------------------
# Table 1


def test_decoupling_oracle_measures_degradation_not_content():
    imgs = [textured(96, 96, s) for s in range(3)]
    levels = [0.0, 0.05, 0.2]
    r = P.decoupling(global_noise_oracle, imgs, levels, seed=0, crop=64, crops_per_image=5, mine_steps=150)
    n = 3 * 5 * 3
    assert r["codes"].shape == (n, 2)
    assert np.bincount(r["scene"]).tolist() == [15, 15, 15]
    assert np.bincount(r["noise"]).tolist() == [15, 15, 15]
    deg, con = r["degradation"], r["content"]
    assert deg["probe"] > 0.95
    assert con["probe"] < 0.6  # chance is 1/3
    assert deg["hsic"] > 5 * con["hsic"]
    assert deg["hsic_p"] < 1e-6
    assert deg["mine"] > con["mine"] + 0.3
    assert deg["mine"] <= deg["mine_max"] + 0.1
    assert con["chance"] == pytest.approx(1 / 3)
    table = P.format_table1({"noise oracle": r})
    assert "noise oracle" in table and "49.97%" in table and "94.80%" in table and "[paper]" in table
    assert f"{100 * deg['probe']:.2f}%" in table


def test_decoupling_smoke_encoder_deterministic(smoke_encoder):
    imgs = [textured(64, 64, s) for s in range(2)]
    kw = dict(seed=1, crop=32, crops_per_image=5, mine_steps=20)
    a = P.decoupling(smoke_encoder, imgs, [0.0, 0.1], **kw)
    b = P.decoupling(smoke_encoder, imgs, [0.0, 0.1], **kw)
    assert a["codes"].shape == (20, EncoderConfig.smoke().code_dim)
    assert np.array_equal(a["codes"], b["codes"])
    assert a["degradation"] == b["degradation"]
    with pytest.raises(ConfigError):
        P.decoupling(smoke_encoder, imgs[:1], [0.0, 0.1])
    with pytest.raises(DataError, match="larger than the image"):
        P.decoupling(smoke_encoder, imgs, [0.0, 0.1], crop=128, crops_per_image=5)


# ---------------------------------------------------------------------------------------------
# Figures


class NoiseSwapModel:
    """A stand-in SAVL for Fig. 12: its code is the noise oracle; swap re-noises the content's LR."""

    def encode(self, lr):
        return global_noise_oracle(lr)

    def swap(self, content_hr, degradation_lr):
        sigma = float(torch.exp(global_noise_oracle(degradation_lr).mean[0, 0, 0, 0]))
        lr = imresize(content_hr, scale=0.25)
        g = torch.Generator().manual_seed(0)
        return (lr + sigma * torch.randn(lr.shape, generator=g)).clamp(0, 1)


def test_swap_carries_the_degradation():
    content = textured(64, 64, 5)
    g = torch.Generator().manual_seed(1)
    source_lr = imresize(textured(64, 64, 6)[None], scale=0.25)[0]
    source_lr = (source_lr + 0.1 * torch.randn(source_lr.shape, generator=g)).clamp(0, 1)
    r = P.swap(NoiseSwapModel(), content, source_lr)
    assert r["swapped"].shape == (3, 16, 16) and r["clean_lr"].shape == (3, 16, 16)
    assert r["code_distance_to_degradation"] < 0.3 * r["code_distance_to_clean"]


def test_swap_with_the_smoke_savl_model():
    from savl.models.savl import SAVL

    torch.manual_seed(0)
    model = SAVL.build("smoke")
    model.train()
    r = P.swap(model, textured(32, 32, 11), torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0)))
    assert r["swapped"].shape == (3, 8, 8)
    assert np.isfinite(r["code_distance_to_degradation"]) and np.isfinite(r["code_distance_to_clean"])
    assert model.training  # restored after the protocol


def test_mean_dimension_sweep_finds_the_factor_dimension(smoke_encoder):
    def encoder(lr):
        noise = global_noise_oracle(lr).mean[:, :1]
        colour = lr.mean(1, keepdim=True)  # content, nearly constant across noise levels
        return Posterior(torch.cat([colour, noise, torch.zeros_like(noise)], 1), None)

    values = [0.0, 0.02, 0.05, 0.1, 0.2]
    r = P.mean_dimension_sweep(encoder, textured(64, 64, 7), "noise", values, top=2)
    assert r["pooled"].shape == (5, 3)
    assert r["top_dims"][0] == 1
    assert r["correlation"][0] > 0.9
    assert np.array_equal(r["top_values"], r["pooled"][:, r["top_dims"]])
    s = P.mean_dimension_sweep(smoke_encoder, textured(64, 64, 7), "blur", [0.0, 1.0, 2.0], top=4)
    s2 = P.mean_dimension_sweep(smoke_encoder, textured(64, 64, 7), "blur", [0.0, 1.0, 2.0], top=4)
    assert s["top_dims"].shape == (4,) and np.array_equal(s["pooled"], s2["pooled"])
    assert np.all(np.diff(s["pooled"].var(0)[s["top_dims"]]) <= 0)  # sorted by variance
    with pytest.raises(ConfigError, match="factor"):
        P.mean_dimension_sweep(smoke_encoder, textured(64, 64, 7), "haze", [0.0])


def test_severity_across_levels(smoke_encoder):
    levels = [0.0, 0.1, 0.3]
    r = P.severity_across_levels(smoke_encoder, textured(64, 64, 8), levels)
    assert len(r["severity"]) == 3 and r["severity"][0].shape == (16, 16)
    # Eq. 15 normalises image-wise: every severity map has mean 1.
    for m in r["severity"]:
        assert m.mean() == pytest.approx(1.0, abs=1e-3)  # float32 maps
    assert all(np.isfinite(r["mean_variance"]))

    def growing_variance(lr):
        # Posterior variance grows with the estimated noise: mean_variance must rise with the level.
        mu = global_noise_oracle(lr).mean
        return Posterior(mu, mu.clone())

    g = P.severity_across_levels(growing_variance, textured(64, 64, 8), levels)
    assert np.all(np.diff(g["mean_variance"]) > 0)


def test_ood_embedding_well_formed(smoke_encoder):
    imgs = [textured(64, 64, 9), textured(64, 64, 10)]
    r = P.ood_embedding(smoke_encoder, imgs, crop=32, crops_per_image=2, seed=0)
    assert r["embedding"].shape == (20, 2)
    assert np.bincount(r["group"]).tolist() == [4] * 5
    assert len(r["group_names"]) == 5 and "haze (OOD)" in r["group_names"]
    assert 0.0 <= r["purity"] <= 1.0
    r2 = P.ood_embedding(smoke_encoder, imgs, crop=32, crops_per_image=2, seed=0)
    assert np.allclose(r["embedding"], r2["embedding"])


def test_image_list_validation():
    with pytest.raises(DataError, match="RGB"):
        P.as_image_list([torch.zeros(1, 8, 8)])
    with pytest.raises(DataError, match="no images"):
        P.as_image_list([])
    named = P.as_image_list([("a", torch.zeros(3, 4, 4))])
    assert named[0][0] == "a"
