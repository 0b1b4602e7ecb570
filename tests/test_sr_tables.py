"""savl.analysis.sr_tables (Table 2 / Table 4 from zoo cards, spread over seeds) and the zoo's helpers for the
tables (missing seeds, steps over a training chain). References: numpy and scipy computed independently."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from savl import zoo
from savl.analysis.sr_tables import (
    PAPER_TABLE4,
    ordering,
    paired_differences,
    paired_summary,
    paired_text,
    paper_table4,
    per_set_summary,
)
from savl.errors import DataError

SETS = [f"manet-mode{m}" for m in range(1, 6)]


def _card(name: str, seed: int, per_set: dict[str, float], overall: float) -> dict:
    return {
        "name": name,
        "config": {"seed": seed},
        "held_out_metrics": {
            "manet": {
                "psnr": overall,
                "ssim": overall / 40,
                "per_set": {s: {"psnr": v, "ssim": v / 40} for s, v in per_set.items()},
            }
        },
    }


def _family(values: np.ndarray, seeds=(0, 1, 2), prefix="fam") -> list[dict]:
    """values: (seeds, sets); the card's overall number is the mean of its sets."""
    rows = zip(seeds, values)
    return [_card(f"{prefix}-s{s}", s, dict(zip(SETS, row.tolist())), float(row.mean())) for s, row in rows]


def test_per_set_summary_matches_numpy():
    rng = np.random.default_rng(0)
    values = 24 + rng.normal(size=(3, 5))
    got = per_set_summary(_family(values))
    assert list(got) == [*SETS, "all"]
    for j, s in enumerate(SETS):
        assert got[s]["mean"] == pytest.approx(values[:, j].mean(), abs=1e-12)
        assert got[s]["sd"] == pytest.approx(values[:, j].std(ddof=1), abs=1e-12)
        assert got[s]["n"] == 3
    assert got["all"]["mean"] == pytest.approx(values.mean(), abs=1e-12)
    ssim = per_set_summary(_family(values), key="ssim")
    assert ssim[SETS[0]]["mean"] == pytest.approx(values[:, 0].mean() / 40, abs=1e-12)
    with pytest.raises(DataError, match="no cards"):
        per_set_summary([])
    with pytest.raises(DataError, match="'fam-s0' has no held_out_metrics/realesrgan/per_set"):
        per_set_summary(_family(values), protocol="realesrgan")


def test_paired_differences_pair_by_seed_and_the_summary_matches_scipy():
    a = _family(np.array([[25.0] * 5, [25.4] * 5, [25.1] * 5]), seeds=(0, 1, 2), prefix="a")
    b = _family(np.array([[24.8] * 5, [24.9] * 5, [24.0] * 5]), seeds=(2, 0, 3), prefix="b")  # seeds 0, 2 shared
    d = paired_differences(list(reversed(a)), b, ("held_out_metrics", "manet", "psnr"))
    assert list(d) == [0, 2]
    assert d[0] == pytest.approx(25.0 - 24.9) and d[2] == pytest.approx(25.1 - 24.8)
    diffs = [0.31, 0.12, 0.25, 0.2]
    s = paired_summary(diffs)
    t = stats.ttest_1samp(diffs, 0.0)
    assert s["se"] == pytest.approx(stats.sem(diffs), rel=1e-12)
    assert s["mean"] / s["se"] == pytest.approx(t.statistic, rel=1e-12)
    assert s["resolved"] == (abs(t.statistic) > 2) and s["same_sign"]
    noisy = paired_summary([0.3, -0.25, 0.05])
    assert not noisy["resolved"] and not noisy["same_sign"]
    assert abs(noisy["mean"] / noisy["se"]) == pytest.approx(abs(stats.ttest_1samp([0.3, -0.25, 0.05], 0).statistic))
    one = paired_summary({0: 0.4})
    assert one["n"] == 1 and not one["resolved"] and one["se"] is None
    assert paired_summary([])["n"] == 0
    assert "3 seeds (not resolved" in paired_text(noisy) and "one seed" in paired_text(one)
    assert "resolved, the same sign at every seed" in paired_text(s)


def test_ordering():
    assert ordering({"gt": 25.3, "code": 25.2, "none": 24.9}, ["gt", "code", "none"]) == {
        "ranked": ["gt", "code", "none"],
        "holds": True,
    }
    got = ordering({"gt": 25.1, "code": 25.2, "none": 24.9, "other": 30}, ["gt", "code", "none"])
    assert got == {"ranked": ["code", "gt", "none"], "holds": False}
    with pytest.raises(DataError, match="no mean for 'none'"):
        ordering({"gt": 1.0, "code": 0.5}, ["gt", "code", "none"])


def test_paper_table4_rows_keep_the_papers_own_ordering():
    """The paper's Table 4 (A.3): the GT kernel is the upper bound in each of its five columns, and its code beats
    the global degradation learning (CDP) in each."""
    assert len(PAPER_TABLE4) == 5 and all(len(r[2]) == 5 for r in PAPER_TABLE4)
    gt, ours, cdp = paper_table4("GT kernel"), paper_table4("SAVL code"), paper_table4("CDP")
    for j in range(5):
        assert all(gt[j][0] >= r[2][j][0] for r in PAPER_TABLE4)
        assert gt[j][0] > ours[j][0] > cdp[j][0]
    with pytest.raises(DataError, match="no row 'bicubic'"):
        paper_table4("bicubic")


def _fake_present(root, name, seed):
    folder = root / name
    folder.mkdir()
    weights = folder / f"{name}.safetensors"
    weights.write_bytes(name.encode())
    card = {"name": name, "config": {"seed": seed}, "files": {weights.name: zoo.sha256(weights)}}
    (folder / "card.json").write_text(json.dumps(card))


def test_missing_seeds_and_chain_iterations(tmp_path):
    (tmp_path / "s1.yaml").write_text("profile: smoke\nstage: joint\nschedule: {iterations: 3}\n")
    (tmp_path / "s2.yaml").write_text(
        "profile: smoke\nstage: frozen_l1\ninit_from: s1.yaml\nschedule: {iterations: 5}\n"
    )
    (tmp_path / "gan.yaml").write_text(
        "profile: smoke\nstage: gan\ninit_from: models/base-s0/base-s0.safetensors\nschedule: {iterations: 7}\n"
    )
    (tmp_path / "alone.yaml").write_text("profile: smoke\nstage: frozen_l1\nschedule: {iterations: 11}\n")
    root = tmp_path / "models"
    root.mkdir()
    lines = ["models:"]
    for name, cfg in (("base-s0", "s2"), ("base-s1", "s2"), ("base-s2", "s2"), ("gan-s0", "gan"), ("hat-s0", "alone")):
        lines += [f"  {name}:", f"    config: {tmp_path / cfg}.yaml", "    artefact: srnet", "    kind: sr"]
    (root / "zoo.yaml").write_text("\n".join(lines) + "\n")
    _fake_present(root, "base-s1", 1)
    assert zoo.missing_seeds("base", root) == ["base-s0", "base-s2"]
    assert [c["name"] for c in zoo.seed_cards("base", root)] == ["base-s1"]
    assert zoo.missing_seeds("gan", root) == ["gan-s0"] and zoo.missing_seeds("none", root) == []
    # joint 3 + frozen 5; the GAN stage's 7 on top of the zoo model it starts from (not yet trained: counted
    # from its config); a lone stage its own
    assert zoo.chain_iterations("base-s0", root) == 8
    assert zoo.chain_iterations("gan-s0", root) == 15
    assert zoo.chain_iterations("hat-s0", root) == 11
    # a copy of the zoo list elsewhere ($SAVL_MODELS) still counts the model the config names by its entry
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "zoo.yaml").write_text((root / "zoo.yaml").read_text())
    assert zoo.zoo_dependency(zoo.entry("gan-s0", other).train_config(), other) is None
    assert zoo.chain_iterations("gan-s0", other) == 15
