"""savl.train.config: every shipped YAML validates and names its reduction; unknown/misplaced keys fail naming
the key and file; overrides parse as YAML; the hash ignores key order and output location; the lr schedule
matches the paper's §4.1."""

from pathlib import Path

import pytest
import yaml

from savl.errors import ConfigError
from savl.losses import convert_beta
from savl.train.config import (
    PROFILE_DEFAULTS,
    apply_override,
    config_hash,
    init_from_model_file,
    load_config,
    read_yaml,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_configs_exist():
    names = {str(p.relative_to(ROOT / "configs")) for p in CONFIGS}
    for profile in ("smoke", "book", "paper"):
        for stage in ("representation", "stage1", "stage2", "stage3"):
            assert f"{profile}/{stage}.yaml" in names
    for ab in ("deterministic", "club", "no_channel", "no_spatial"):
        assert f"ablations/{ab}.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_yaml_validates(path):
    cfg = load_config(path)
    assert cfg.schedule.iterations >= 1 and cfg.batch >= 1 and cfg.data.gt_size % cfg.data.scale == 0
    if cfg.init_from:  # previous stages are named relative to the file and must exist
        assert Path(cfg.init_from).is_file()
        if init_from_model_file(cfg) is not None:  # a shipped model's weights, with its JSON config beside
            assert Path(cfg.init_from).with_suffix(".json").is_file()
        else:
            assert load_config(cfg.init_from).profile == cfg.profile


def test_paper_schedule_matches_section_4_1():
    s1, s2, s3 = (load_config(ROOT / f"configs/paper/stage{i}.yaml") for i in (1, 2, 3))
    assert (s1.stage, s2.stage, s3.stage) == ("joint", "frozen_l1", "gan")
    assert [c.schedule.iterations for c in (s1, s2, s3)] == [200_000, 800_000, 600_000]
    assert all(c.batch == 32 and c.lr_patch == 64 and c.optimiser.betas == (0.9, 0.99) for c in (s1, s2, s3))
    assert (s1.optimiser.lr, s2.optimiser.lr, s3.optimiser.lr) == (2e-4, 2e-4, 1e-4)
    assert s3.ema == 0.999 and s3.losses.gan == 0.1 and s3.losses.perceptual_trunk == "imagenet"
    assert s1.losses.anneal_steps == 50_000
    # the paper's beta_final = 5e-4 is for its literal sums (Eq. 7, 13): the representation config uses them
    # verbatim; stage 1 reduces SAVL per pixel beside the SR L1, with the converted weight
    rep = load_config(ROOT / "configs/paper/representation.yaml")
    assert (rep.losses.reduction, rep.losses.beta_final, rep.losses.alpha) == ("literal", 5e-4, 1.0)
    assert s1.losses.reduction == "pixel"
    assert s1.losses.beta_final == pytest.approx(convert_beta(5e-4, "literal", "pixel"), rel=1e-7)
    # halved every 200K: hand-computed values at the boundaries
    assert s2.lr_at(0) == 2e-4 and s2.lr_at(199_999) == 2e-4
    assert s2.lr_at(200_000) == 1e-4 and s2.lr_at(400_000) == 5e-5 and s2.lr_at(799_999) == 2.5e-5
    assert s3.milestones() == [200_000, 400_000]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_yaml_names_its_reduction(path):
    raw = read_yaml(path)
    assert raw["losses"]["reduction"] in ("literal", "pixel", "element")
    cfg = load_config(path)
    if cfg.model.variant != "deterministic_club":
        assert cfg.losses.lam is None  # lam is the CLUB weight only


def test_reduction_key_and_old_alias():
    assert validate({}).losses.reduction == "pixel"
    assert validate({"losses": {"reduction": "literal"}}).losses.reduction == "literal"
    # the old key still works for the reductions it named, and hashes like the new one
    old = validate({"profile": "smoke", "losses": {"kl_reduction": "element"}})
    new = validate({"profile": "smoke", "losses": {"reduction": "element"}})
    assert old.losses.reduction == "element" and config_hash(old) == config_hash(new)
    with pytest.raises(ConfigError, match="no longer offered"):
        validate({"losses": {"kl_reduction": "sum"}}, "x.yaml")
    with pytest.raises(ConfigError, match="contradicts"):
        validate({"losses": {"kl_reduction": "pixel", "reduction": "literal"}})
    with pytest.raises(ConfigError, match="losses.reduction"):
        validate({"losses": {"reduction": "mean"}})


def test_lam_is_the_club_weight_only():
    assert validate({"model": {"variant": "deterministic_club"}, "losses": {"lam": 1e-3}}).losses.lam == 1e-3
    assert validate({"model": {"variant": "deterministic_club"}}).losses.lam is None  # -> beta_final
    with pytest.raises(ConfigError, match="must be > 0") as e:
        validate({"model": {"variant": "deterministic_club"}, "losses": {"lam": 0}}, "club.yaml")
    assert "club.yaml" in str(e.value)
    with pytest.raises(ConfigError, match="needs lam = 0"):
        validate({"losses": {"lam": 0.5}})


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("stage: joint\noptimiser:\n  lr: 1.0e-4\n  momentum: 0.9\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "optimiser.momentum" in msg and str(f) in msg and "\n" not in msg


def test_misplaced_key_names_it(tmp_path):
    f = tmp_path / "misplaced.yaml"
    f.write_text("stage: joint\nlosses:\n  lr: 1.0e-4\n")  # lr belongs under optimiser
    with pytest.raises(ConfigError, match=r"unknown key 'losses\.lr'") as e:
        load_config(f)
    assert str(f) in str(e.value)
    g = tmp_path / "top.yaml"
    g.write_text("iterations: 10\n")  # belongs under schedule
    with pytest.raises(ConfigError, match=r"unknown key 'iterations'"):
        load_config(g)


def test_bad_values_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="stage"):
        validate({"stage": "pretrain"}, "x.yaml")
    with pytest.raises(ConfigError, match="gt_size"):
        validate({"profile": "smoke", "data": {"gt_size": 30}})
    with pytest.raises(ConfigError, match="data.root"):
        validate({"data": {"source": "paired"}})
    f = tmp_path / "broken.yaml"
    f.write_text("stage: [joint\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(f)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_parse_values_as_yaml():
    cfg = load_config(
        ROOT / "configs/smoke/stage1.yaml",
        ["optimiser.lr=1e-3", "schedule.milestones=[3, 5]", "compile=true", "data.names=[astronaut]", "ema=0.5"],
    )
    assert cfg.optimiser.lr == 1e-3 and cfg.schedule.milestones == [3, 5] and cfg.compile is True
    assert cfg.data.names == ["astronaut"] and cfg.ema == 0.5
    assert cfg.lr_at(2) == 1e-3 and cfg.lr_at(3) == 5e-4 and cfg.lr_at(5) == 2.5e-4
    with pytest.raises(ConfigError, match="unknown key 'optimiser.lrr'"):
        load_config(ROOT / "configs/smoke/stage1.yaml", ["optimiser.lrr=1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_override({}, "optimiser.lr")


def test_profile_override_moves_sizes():
    book = load_config(ROOT / "configs/ablations/club.yaml")
    paper = load_config(ROOT / "configs/ablations/club.yaml", ["profile=paper"])
    assert book.batch == PROFILE_DEFAULTS["book"]["batch"] and paper.batch == 32
    assert paper.schedule.iterations == 200_000 and paper.model.variant == "deterministic_club"
    assert config_hash(book) != config_hash(paper)


def test_hash_stable_over_key_order_and_location(tmp_path):
    a = {"profile": "smoke", "stage": "joint", "optimiser": {"lr": 1e-4, "betas": [0.9, 0.99]}, "seed": 3}
    b = {"seed": 3, "optimiser": {"betas": [0.9, 0.99], "lr": 1e-4}, "stage": "joint", "profile": "smoke"}
    fa, fb = tmp_path / "a.yaml", tmp_path / "b.yaml"
    fa.write_text(yaml.safe_dump(a, sort_keys=False))
    fb.write_text(yaml.safe_dump(b, sort_keys=False))
    ha, hb = config_hash(load_config(fa)), config_hash(load_config(fb))
    assert ha == hb and len(ha) == 64
    # where a run goes and how often it logs do not change it; what it computes does
    assert config_hash(load_config(fa, ["output=/elsewhere", "log_every=7", "name=x"])) == ha
    assert config_hash(load_config(fa, ["seed=4"])) != ha
    assert config_hash(load_config(fa, ["optimiser.lr=2e-4"])) != ha
    # explicit values equal to the profile defaults hash like the defaults they fill
    assert config_hash(load_config(fa, [f"batch={PROFILE_DEFAULTS['smoke']['batch']}"])) == ha


def test_init_from_identity_follows_previous_config(tmp_path):
    (tmp_path / "s1.yaml").write_text("profile: smoke\nstage: joint\n")
    (tmp_path / "s2.yaml").write_text("profile: smoke\nstage: frozen_l1\ninit_from: s1.yaml\n")
    h = config_hash(load_config(tmp_path / "s2.yaml"))
    (tmp_path / "s1.yaml").write_text("profile: smoke\nstage: joint\noptimiser: {lr: 1.0e-3}\n")
    assert config_hash(load_config(tmp_path / "s2.yaml")) != h
    # the chain's seed is the last stage's: a seed written in the previous stage's file is overridden
    (tmp_path / "s1.yaml").write_text("profile: smoke\nstage: joint\nseed: 9\n")
    assert config_hash(load_config(tmp_path / "s2.yaml")) == h


def test_previous_stage_inherits_device_precision_and_threads():
    from pathlib import Path

    from savl.train.config import init_config, load_config

    cfg = load_config(
        Path(__file__).resolve().parents[1] / "configs/smoke/stage2.yaml",
        ["device=cuda", "precision=bf16", "threads=1", "profile=book", "seed=7"],
    )
    prev = init_config(cfg)
    assert prev is not None
    assert (prev.device, prev.precision, prev.threads, prev.profile, prev.seed) == ("cuda", "bf16", 1, "book", 7)


def test_fused_adam_option_leaves_the_run_hash_alone():
    # Fused and for-each Adam differ only in float operation order (like `threads`): one run, one hash, and
    # configs written before the key existed keep theirs.
    base = load_config(None, ["profile=smoke", "stage=representation"])
    for value in ("true", "false", "null"):
        cfg = load_config(None, ["profile=smoke", "stage=representation", f"optimiser.fused={value}"])
        assert cfg.optimiser.fused == {"true": True, "false": False, "null": None}[value]
        assert config_hash(cfg) == config_hash(base)
    assert config_hash(load_config(None, ["profile=smoke", "stage=representation", "optimiser.lr=1e-3"])) != (
        config_hash(base)
    )
    with pytest.raises(ConfigError, match="fused"):
        load_config(None, ["profile=smoke", "stage=representation", "optimiser.fused=often"])
