"""Real-ESRGAN second-order pipeline (book appendix, Real-ESRGAN): sampling statistics, exact replay, an
end-to-end reference."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from savl.degrade import kernels as K
from savl.degrade import ops
from savl.degrade.realesrgan import DegradationPool, RealESRGANConfig, RealESRGANDegradation
from savl.errors import ConfigError, ImageError

P_MIN = 1e-3  # goodness-of-fit threshold for seeded draws


def test_config_defaults_are_the_design_table():
    c = RealESRGANConfig()
    assert c.scale == 4
    assert c.kernel1.kernel_prob == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03) and c.kernel1.sinc_prob == 0.1
    assert c.kernel1.sizes == (7, 9, 11, 13, 15, 17, 19, 21) and c.kernel1.pad_to == 21
    assert c.kernel1.sigma_x_range == (0.2, 3.0) and c.kernel1.betag_range == (0.5, 4.0)
    assert c.kernel1.betap_range == (1.0, 2.0)
    assert c.kernel2.sigma_x_range == (0.2, 1.5) and c.second_blur_prob == 0.8
    assert c.resize_prob == (0.2, 0.7, 0.1) and c.resize_range == (0.15, 1.5)
    assert c.gaussian_noise_prob == 0.5 and c.noise_range == (1, 30) and c.poisson_scale_range == (0.05, 3)
    assert c.gray_noise_prob == 0.4 and c.jpeg_range == (30, 95)
    assert c.resize_prob2 == (0.3, 0.4, 0.3) and c.resize_range2 == (0.3, 1.2)
    assert c.noise_range2 == (1, 25) and c.poisson_scale_range2 == (0.05, 2.5)
    assert c.final_sinc_prob == 0.8 and c.final_order_prob == 0.5
    assert c.usm_weight == 0.5 and c.usm_threshold == 10 and c.usm_radius == 50


def test_config_round_trips_through_json_and_rejects_bad_values():
    c = RealESRGANConfig(scale=2, noise_range=(2, 20))
    assert RealESRGANConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    for bad in ({"resize_prob": (0.5, 0.5, 0.5)}, {"jpeg_range": (10, 120)}, {"gray_noise_prob": 1.5}, {"nope": 1}):
        with pytest.raises(ConfigError):
            RealESRGANConfig.from_dict(bad)


def test_kernel_type_frequencies_match_the_config(generator):
    cfg = K.KernelConfig()
    n = 4000
    recs = [K.random_kernel_record(cfg, generator) for _ in range(n)]
    names = ("sinc", *cfg.kernel_list)
    expected = np.array([cfg.sinc_prob] + [(1 - cfg.sinc_prob) * p for p in cfg.kernel_prob]) * n
    observed = np.array([sum(r["type"] == t for r in recs) for t in names])
    assert stats.chisquare(observed, expected).pvalue > P_MIN
    sizes = np.array([sum(r["size"] == s for r in recs) for s in cfg.sizes])
    assert stats.chisquare(sizes).pvalue > P_MIN  # uniform over the 8 odd sizes

    def vals(key, pred):
        return np.array([r[key] for r in recs if pred(r)])

    iso = vals("sigma_x", lambda r: r["type"] == "iso")
    assert iso.min() >= 0.2 and iso.max() <= 3.0 and iso.min() < 0.3 and iso.max() > 2.9
    assert all(r["sigma_x"] == r["sigma_y"] and r["theta"] == 0 for r in recs if r["type"].endswith("_iso"))
    theta = vals("theta", lambda r: r["type"] == "aniso")
    assert theta.min() >= -math.pi and theta.max() <= math.pi and theta.min() < -3 and theta.max() > 3
    assert stats.kstest((theta + math.pi) / (2 * math.pi), "uniform").pvalue > P_MIN
    bg = vals("beta", lambda r: r["type"].startswith("generalized"))
    assert bg.min() >= 0.5 and bg.max() <= 4.0 and bg.min() < 0.6 and bg.max() > 3.8
    assert stats.binomtest(int((bg < 1).sum()), len(bg), 0.5).pvalue > P_MIN  # half below 1, half above
    bp = vals("beta", lambda r: r["type"].startswith("plateau"))
    assert bp.min() >= 1.0 and bp.max() <= 2.0 and bp.max() > 1.9
    small = vals("cutoff", lambda r: r["type"] == "sinc" and r["size"] < 13)
    large = vals("cutoff", lambda r: r["type"] == "sinc" and r["size"] >= 13)
    assert small.min() >= math.pi / 3 and small.max() <= math.pi
    assert large.min() >= math.pi / 5 and large.max() <= math.pi and large.min() < math.pi / 3


def test_per_sample_parameter_sampling_statistics(generator):
    d = RealESRGANDegradation()
    n = 2000
    recs = [d.sample(1, (64, 64), generator)[0] for _ in range(n)]

    def count(values, cats):
        return np.array([sum(v == c for v in values) for c in cats])

    for stage, probs, (lo, hi) in (("resize1", (0.2, 0.7, 0.1), (0.15, 1.5)), ("resize2", (0.3, 0.4, 0.3), (0.3, 1.2))):
        kinds = [r[stage]["kind"] for r in recs]
        assert stats.chisquare(count(kinds, ("up", "down", "keep")), np.array(probs) * n).pvalue > P_MIN
        up = np.array([r[stage]["scale"] for r in recs if r[stage]["kind"] == "up"])
        down = np.array([r[stage]["scale"] for r in recs if r[stage]["kind"] == "down"])
        assert up.min() >= 1 and up.max() <= hi and up.max() > hi - 0.02
        assert down.min() >= lo and down.max() <= 1 and down.min() < lo + 0.02
        assert all(r[stage]["scale"] == 1 for r in recs if r[stage]["kind"] == "keep")
        modes = [r[stage]["mode"] for r in recs]
        assert stats.chisquare(count(modes, ("area", "bilinear", "bicubic"))).pvalue > P_MIN

    for stage, sig, poi in (("noise1", (1, 30), (0.05, 3)), ("noise2", (1, 25), (0.05, 2.5))):
        noise = [r[stage] for r in recs]
        assert stats.binomtest(sum(x["kind"] == "gaussian" for x in noise), n, 0.5).pvalue > P_MIN
        assert stats.binomtest(sum(x["gray"] for x in noise), n, 0.4).pvalue > P_MIN
        s = np.array([x["sigma"] for x in noise if x["kind"] == "gaussian"])
        assert s.min() >= sig[0] and s.max() <= sig[1] and s.min() < sig[0] + 0.2 and s.max() > sig[1] - 0.2
        p = np.array([x["scale"] for x in noise if x["kind"] == "poisson"])
        assert p.min() >= poi[0] and p.max() <= poi[1] and p.min() < poi[0] + 0.05 and p.max() > poi[1] - 0.05
        assert len({x["seed"] for x in noise}) == n  # independent noise realisations

    for q in ([r["jpeg1"] for r in recs], [r["final"]["jpeg"] for r in recs]):
        q = np.array(q)
        assert q.min() >= 30 and q.max() <= 95 and q.min() < 31 and q.max() > 94
    assert stats.binomtest(sum(r["blur2"] is not None for r in recs), n, 0.8).pvalue > P_MIN
    assert stats.binomtest(sum(r["final"]["sinc"]["type"] == "sinc" for r in recs), n, 0.8).pvalue > P_MIN
    assert stats.binomtest(sum(r["final"]["order"] == "resize_sinc_jpeg" for r in recs), n, 0.5).pvalue > P_MIN
    # Second-stage kernels use the narrower sigma range.
    s2 = [r["blur2"]["sigma_x"] for r in recs if r["blur2"] is not None and r["blur2"]["type"] != "sinc"]
    assert 0.2 <= min(s2) and max(s2) <= 1.5


def test_batch_shares_resize_and_final_order(generator):
    recs = RealESRGANDegradation().sample(8, (64, 64), generator)
    for key in ("resize1", "resize2"):
        assert all(r[key] == recs[0][key] for r in recs)
    assert len({(r["final"]["order"], r["final"]["mode"]) for r in recs}) == 1
    assert len({json.dumps(r["blur1"]) for r in recs}) == 8  # kernels differ per sample


@pytest.fixture(scope="module")
def hr_batch():
    from skimage import data

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    crops = [img[:, y : y + 64, x : x + 64] for y, x in ((100, 150), (300, 200), (20, 20), (400, 380))]
    return torch.stack(crops).contiguous()


def test_pipeline_output_is_8bit_lr_and_replays_exactly(hr_batch):
    d = RealESRGANDegradation()
    lr, params = d(hr_batch, torch.Generator().manual_seed(3))
    assert lr.shape == (4, 3, 16, 16) and lr.dtype == torch.float32
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(lr * 255, (lr * 255).round())
    again, params_again = d(hr_batch, torch.Generator().manual_seed(3))
    assert torch.equal(lr, again) and params == params_again
    assert d.sample(4, (64, 64), torch.Generator().manual_seed(4)) != params  # another seed, other draws
    replay = d.apply(hr_batch, json.loads(json.dumps(params)))
    assert torch.equal(lr, replay)
    # The per-sample loop of the same records gives the same LR (float summation order may move a value
    # across a rounding boundary: at most one 8-bit level, on a tiny fraction of pixels).
    loop = torch.cat([d.apply(hr_batch[i : i + 1], [params[i]]) for i in range(4)])
    diff = (loop - lr).abs() * 255
    assert diff.max() <= 1.0 + 1e-4 and (diff > 0.5).float().mean() < 0.01


def test_records_of_different_batches_can_be_mixed(hr_batch):
    d = RealESRGANDegradation(RealESRGANConfig(usm_sharpen_gt=False))
    lr_a, pa = d(hr_batch[:2], torch.Generator().manual_seed(10))
    lr_b, pb = d(hr_batch[2:], torch.Generator().manual_seed(11))
    assert pa[0]["resize1"] != pb[0]["resize1"]
    mixed = d.apply(hr_batch, pa + pb)
    assert torch.equal(mixed, torch.cat([lr_a, lr_b]))


def test_end_to_end_against_a_scipy_reference(hr_batch, generator):
    # Only blur1 and the final x4 area resize remain; noise is zero and JPEG at quality 100. Reference:
    # scipy correlate (mirror) with the recorded kernel, 4x4 block means, then the pipeline's clamp to [0, 1]
    # (sinc kernels ring outside it). The crops are made grey: JPEG's 4:2:0 chroma subsampling is lossy at any
    # quality, and on colour edges its decoded RGB leaves [0, 255] and is clipped, which moves luma by up to
    # 2.7 levels depending on which kernels are drawn. On grey images only the two quality-100 JPEG passes and
    # the 8-bit rounding remain: BT.601 Y error measured over seeds 0-7, mean 0.11-0.23, max 0.43-0.50 levels
    # (one sinc draw of size 9, whose ringing is JPEG's worst case at 16x16, 1.45).
    grey = hr_batch.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    cfg = RealESRGANConfig(
        resize_prob=(0, 0, 1), resize_prob2=(0, 0, 1), resize_modes=("area",), second_blur_prob=0,
        final_sinc_prob=0, noise_range=(0, 0), noise_range2=(0, 0), gaussian_noise_prob=1, gaussian_noise_prob2=1,
        jpeg_range=(100, 100), jpeg_range2=(100, 100), usm_sharpen_gt=False,
    )  # fmt: skip
    d = RealESRGANDegradation(cfg)
    lr, params = d(grey, generator)
    y_weights = np.array([65.481, 128.553, 24.966]) / 255
    for b in range(4):
        k = K.kernel_from_record(params[b]["blur1"]).double().numpy()
        ref = np.stack([ndimage.correlate(grey[b, c].double().numpy(), k, mode="mirror") for c in range(3)])
        ref = np.clip(ref.reshape(3, 16, 4, 16, 4).mean((2, 4)), 0, 1)
        err_y = np.abs(np.tensordot(y_weights, (lr[b].double().numpy() - ref) * 255, 1))
        assert err_y.mean() < 0.3 and err_y.max() < 0.8
    # Without the blur the reference would be far off: the test sees the kernel.
    plain = grey[0].double().numpy().reshape(3, 16, 4, 16, 4).mean((2, 4))
    assert np.abs(np.tensordot(y_weights, (lr[0].double().numpy() - plain) * 255, 1)).mean() > 0.5


def test_usm_option_degrades_the_sharpened_gt(hr_batch):
    d = RealESRGANDegradation()
    lr, params, sharp = d(hr_batch, torch.Generator().manual_seed(5), return_sharpened=True)
    assert torch.equal(sharp, ops.usm_sharpen(hr_batch, 0.5, 10, 50))
    assert torch.equal(sharp, d.sharpen(hr_batch))
    assert all(p["usm"] == {"weight": 0.5, "threshold": 10, "radius": 50} for p in params)
    plain = RealESRGANDegradation(RealESRGANConfig(usm_sharpen_gt=False))
    assert not torch.equal(plain.apply(hr_batch, [dict(p, usm=None) for p in params]), lr)
    # The records carry the USM settings: another instance's config does not change the replay.
    assert torch.equal(plain.apply(hr_batch, params), lr)
    assert torch.equal(plain._run(sharp, params), lr)


def test_bad_inputs_raise_one_line_errors(hr_batch):
    d = RealESRGANDegradation()
    with pytest.raises(ImageError):
        d(hr_batch[:, :, :62, :62])
    with pytest.raises(ImageError):
        d(hr_batch[:, :1])
    _, params = d(hr_batch, torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError):
        d.apply(hr_batch[:2], params)
    with pytest.raises(ConfigError):
        d.apply(hr_batch[:, :, :32, :32], params)
    broken = [dict(p) for p in params]
    del broken[1]["noise2"]
    with pytest.raises(ConfigError, match="noise2"):
        d.apply(hr_batch, broken)


def test_pool_size_must_be_a_multiple_of_the_batch():
    with pytest.raises(ConfigError, match="multiple") as e:
        DegradationPool(100, 32)
    assert "\n" not in str(e.value)
    DegradationPool(192, 32)


def test_pool_shuffles_pairs_across_batches_and_keeps_them_paired(generator):
    pool = DegradationPool(12, 4)
    seen_lr = []
    outputs = []
    for step in range(8):
        ids = torch.arange(step * 4, step * 4 + 4, dtype=torch.float32)
        lr, gt = ids[:, None, None, None].expand(4, 3, 2, 2), (ids * 10)[:, None, None, None].expand(4, 3, 8, 8)
        out_lr, out_gt = pool(lr.contiguous(), gt.contiguous(), generator)
        out_ids = out_lr[:, 0, 0, 0]
        assert torch.equal(out_gt[:, 0, 0, 0], out_ids * 10)  # pairs stay together
        if step < 3:
            assert torch.equal(out_ids, ids)  # filling: inputs pass through
        outputs.append(out_ids)
        seen_lr.append(ids)
    # Every returned id was fed in earlier or now, no id comes out twice, and the pool mixes batches.
    out = torch.cat(outputs[3:])
    assert len(set(out.tolist())) == len(out)
    assert set(out.tolist()) <= set(torch.cat(seen_lr).tolist())
    assert any(len({int(i) // 4 for i in o.tolist()}) > 1 for o in outputs[3:])
    # Conservation: pool content + everything returned = everything fed in.
    held = set(pool.lr[:, 0, 0, 0].tolist())
    assert held | set(torch.cat(outputs).tolist()) == set(torch.cat(seen_lr).tolist())


def test_one_host_synchronisation_per_batch(monkeypatch):
    # Every way a tensor's value reaches Python is counted; sampling a batch of 32 reads its draws back once
    # (before: about 24 .item() calls per sample, hundreds of GPU->host syncs per batch).
    calls = []
    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **kw):
            calls.append(_name)
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    records = RealESRGANDegradation().sample(32, (64, 64), torch.Generator().manual_seed(0))
    monkeypatch.undo()
    assert len(records) == 32 and calls == ["tolist"]


def test_sampling_is_a_pure_function_of_the_seed_and_batch_draws_are_independent():
    d = RealESRGANDegradation()
    a = d.sample(6, (64, 64), torch.Generator().manual_seed(21))
    assert a == d.sample(6, (64, 64), torch.Generator().manual_seed(21))
    assert json.loads(json.dumps(a)) == a  # plain JSON values
    # The generator advances: the next batch differs, and no two samples share a noise seed.
    g = torch.Generator().manual_seed(21)
    first, second = d.sample(6, (64, 64), g), d.sample(6, (64, 64), g)
    assert first == a and second != a
    seeds = [r[k]["seed"] for r in first + second for k in ("noise1", "noise2")]
    assert len(set(seeds)) == len(seeds) and all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)
