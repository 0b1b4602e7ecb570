"""savl.analysis.zoo_report: seed statistics against numpy/scipy, the Fig. 12 high-frequency criterion on images
whose answer is known by construction, A.6 monotonicity and overlap on hand-made sweeps, the research file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from savl.analysis import zoo_report as zr
from savl.errors import DataError


def _card(name, **probes):
    return {"name": name, "held_out_metrics": {"probes": probes}}


def test_seed_summary_matches_numpy_and_difference_is_welch():
    a = zr.seed_summary([0.61, 0.598, 0.623])
    assert a["mean"] == pytest.approx(np.mean([0.61, 0.598, 0.623]))
    assert a["sd"] == pytest.approx(np.std([0.61, 0.598, 0.623], ddof=1))
    assert (a["n"], a["min"], a["max"]) == (3, 0.598, 0.623)
    b = zr.seed_summary([0.481, 0.502, 0.477, 0.49])
    d = zr.difference(a, b)
    assert d["diff"] == pytest.approx(a["mean"] - b["mean"])
    # Welch's standard error, as scipy's unequal-variance t statistic implies it
    t = stats.ttest_ind([0.61, 0.598, 0.623], [0.481, 0.502, 0.477, 0.49], equal_var=False).statistic
    assert d["se"] == pytest.approx(d["diff"] / t)
    assert d["resolved"]
    one = zr.seed_summary([0.5])
    assert one["sd"] == 0.0 and not zr.difference(one, b)["resolved"]
    assert zr.mean_sd(a) == f"{100 * a['mean']:.1f} ± {100 * a['sd']:.1f}"
    assert zr.mean_sd(one) == "50.0" and zr.seeds(1) == "1 seed" and zr.seeds(3) == "3 seeds"
    assert zr.diff_text(d, a, b) == f"{100 * d['diff']:+.1f} ± {100 * d['se']:.1f} points"
    close = zr.difference(a, zr.seed_summary([0.6, 0.61, 0.62]))
    assert zr.diff_text(close, a, a).endswith("not resolved")
    assert "no error bar" in zr.diff_text(zr.difference(one, b), one, b)
    with pytest.raises(DataError):
        zr.seed_summary([])


def test_family_summary_reads_cards_and_names_a_missing_key():
    cards = [_card("x-s0", t1_noise_probe=0.8), _card("x-s1", t1_noise_probe=0.9)]
    s = zr.family_summary(cards, ("held_out_metrics", "probes"), ["t1_noise_probe"])
    assert s["t1_noise_probe"]["mean"] == pytest.approx(0.85)
    with pytest.raises(DataError, match="x-s0.*t5_type"):
        zr.family_summary(cards, ("held_out_metrics", "probes"), ["t5_type"])


def test_hf_correlation_sees_shared_texture_and_not_smooth_changes():
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(1, 3, 48, 48, generator=g)
    other = torch.rand(1, 3, 48, 48, generator=g)
    ramp = torch.linspace(0, 1, 48).expand(1, 3, 48, 48)
    assert zr.hf_correlation(tex, tex) == pytest.approx(1.0)
    # a smooth ramp added (low frequencies) leaves the high frequencies nearly unchanged
    assert zr.hf_correlation(tex, 0.5 * tex + ramp) > 0.99
    assert abs(zr.hf_correlation(tex, other)) < 0.1
    assert zr.hf_correlation(tex, -tex) == pytest.approx(-1.0)
    with pytest.raises(DataError):
        zr.hf_correlation(tex, tex[..., :40])


class _CopySource(torch.nn.Module):
    """A 'decoder' that ignores the content and returns the code's source LR (all content leaks), or the reverse."""

    def __init__(self, leak: bool):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.leak = leak

    def swap(self, content_hr, degradation_lr):
        from savl.analysis.inputs import downsample

        return degradation_lr if self.leak else downsample(content_hr, 4)


def test_swap_texture_separates_a_leaking_from_a_clean_hybrid():
    from savl.analysis.inputs import downsample

    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 64, 64, generator=g), torch.rand(3, 64, 64, generator=g)
    lr_b = downsample(b[None], 4)
    leak = zr.swap_texture(_CopySource(True), a, b, lr_b)
    clean = zr.swap_texture(_CopySource(False), a, b, lr_b)
    assert leak["hf_corr_source"] == pytest.approx(1.0, abs=1e-6) and abs(leak["hf_corr_content"]) < 0.2
    assert clean["hf_corr_content"] == pytest.approx(1.0, abs=1e-6) and abs(clean["hf_corr_source"]) < 0.2


def test_monotonicity_spearman_range_and_content_units():
    vals = np.linspace(0, 1, 8)
    top = np.stack([vals**2, np.sin(6 * vals), 0.003 * vals], axis=1)
    sweep = {"values": vals, "top_values": top, "top_dims": np.array([5, 2, 9])}
    content_sd = np.ones(12)
    content_sd[9] = 0.1
    m = zr.monotonicity(sweep, content_sd)
    for j in range(3):
        assert m["abs_spearman"][j] == pytest.approx(abs(stats.spearmanr(vals, top[:, j]).statistic))
    assert m["range"] == pytest.approx(np.ptp(top, axis=0))
    assert m["range_over_content_sd"][2] == pytest.approx(0.003 / 0.1)
    # dims 5 and 9 are both perfectly monotone; the tie goes to the one that moves more
    assert m["best"] == 0 and m["n_monotone"] == 2
    other = {"top_dims": np.array([9, 1, 3])}
    assert zr.subspace_overlap(sweep, other) == pytest.approx(1 / 3)
    with pytest.raises(DataError):
        zr.monotonicity({"values": vals[:2], "top_values": top[:2], "top_dims": [1, 2, 3]})


def test_pooled_codes_is_the_pooled_posterior_mean():
    from savl.analysis.reference import HandcraftedCode

    g = torch.Generator().manual_seed(2)
    imgs = [torch.rand(3, 64, 64, generator=g) for _ in range(3)]
    codes = zr.pooled_codes(HandcraftedCode(), imgs, "noise", 0.0)
    from savl.analysis.inputs import downsample

    want = HandcraftedCode()(downsample(imgs[1][None], 4).clamp(0, 1)).mean.mean((-2, -1))[0].numpy()
    assert codes.shape == (3, 2) and np.allclose(codes[1], want, atol=1e-5)


def test_read_jsonl(tmp_path):
    assert zr.read_jsonl(tmp_path / "missing.jsonl") is None
    p = tmp_path / "r.jsonl"
    p.write_text('{"beta_final": 0.001, "rec_l1": 0.03}\n\n{"beta_final": 0.1}\n')
    assert [r["beta_final"] for r in zr.read_jsonl(p)] == [0.001, 0.1]
    p.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"r\.jsonl:2"):
        zr.read_jsonl(p)
    assert math.isclose(zr.PAPER_TABLE5_ALL["SAVL"]["t5_type"], 0.7244)
