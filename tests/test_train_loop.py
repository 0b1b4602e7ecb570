"""savl.train loop: a smoke run of every stage and ablation, shared/frozen encoders, gradients on every
parameter, the NaN guard, checkpoint files, metrics.jsonl keys, validation PSNR against scikit-image,
get_or_train caching."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from savl.errors import ConfigError
from savl.train import NonFiniteLossError, get_or_train, load_config, train
from savl.train.stages import Objective, build_models

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Stage 3 via get_or_train: trains stage 2, which trains stage 1 (each 4 smoke steps)."""
    root = tmp_path_factory.mktemp("runs")
    gan = get_or_train(SMOKE / "stage3.yaml", root=root)
    runs = {r.config.stage: r for r in (gan, *(type(gan)(p) for p in root.iterdir()))}
    return root, runs


def test_every_stage_runs_and_chains(chain):
    root, runs = chain
    assert set(runs) == {"joint", "frozen_l1", "gan"}
    for run in runs.values():
        assert run.finished and run.hash
        assert (run.path / "config.yaml").is_file() and (run.path / "env.json").is_file()
        assert any((run.path / "tb").iterdir())
        m = run.metrics
        assert [r["step"] for r in m] == [1, 2, 3, 4]
        assert all(np.isfinite(v) for r in m for v in r.values() if isinstance(v, float))
    assert {"percep", "gan_g", "d_real", "d_fake"} <= set(runs["gan"].metrics[-1])
    assert runs["gan"].has("srnet_ema") and runs["gan"].has("discriminator")


def test_joint_shares_encoder_and_stage2_freezes_it(chain):
    _, runs = chain
    joint = runs["joint"]
    savl, srnet = joint.load_savl(), joint.load_srnet()
    for (k, a), (_, b) in zip(savl.encoder.state_dict().items(), srnet.encoder.state_dict().items()):
        assert torch.equal(a, b), k  # one module, trained by both losses
    stage2 = runs["frozen_l1"].load_srnet()
    for k, v in srnet.encoder.state_dict().items():
        assert torch.equal(v, stage2.encoder.state_dict()[k]), k  # frozen estimator
    changed = [k for k, v in srnet.sr.state_dict().items() if not torch.equal(v, stage2.sr.state_dict()[k])]
    assert changed  # the SR backbone did train in stage 2
    # the saved model reproduces its weights file exactly
    raw = load_file(str(joint.final / "srnet.safetensors"))
    assert all(torch.equal(raw[k], v) for k, v in srnet.state_dict().items())


def test_ema_follows_its_recursion(chain):
    """EMA 0.999 (§5.3): first update copies, then e <- 0.999 e + 0.001 p; with 4 steps the EMA stays within
    the hull of the init weights and the trained ones, and differs from both."""
    _, runs = chain
    gan = runs["gan"]
    ema = gan.load_srnet(ema=True).sr.state_dict()
    live = gan.load_srnet(ema=False).sr.state_dict()
    init = runs["frozen_l1"].load_srnet().sr.state_dict()
    k = next(k for k in live if live[k].is_floating_point() and not torch.equal(live[k], init[k]))
    assert not torch.equal(ema[k], live[k])
    lo, hi = torch.minimum(init[k], live[k]), torch.maximum(init[k], live[k])
    slack = (live[k] - init[k]).abs().max()  # intermediate iterates may overshoot the endpoints a little
    assert bool(((ema[k] >= lo - slack) & (ema[k] <= hi + slack)).all())


def test_metrics_keys_and_beta_schedule(chain):
    _, runs = chain
    cfg = runs["joint"].config
    m = runs["joint"].metrics
    for r in m:
        assert {
            "step",
            "lr",
            "loss",
            "rec",
            "kl",
            "beta",
            "sr_l1",
            "savl_loss",
            "images_per_s",
            "cpu_s_per_step",
        } <= set(r)
        # Eq. 29-30 at update t (0-based step = r["step"] - 1)
        expected = cfg.losses.beta_final * min(1.0, (r["step"] - 1) / cfg.losses.anneal_steps)
        assert r["beta"] == pytest.approx(expected, rel=1e-6)
        assert r["lr"] == cfg.lr_at(r["step"] - 1)
        assert r["loss"] == pytest.approx(r["savl_loss"] + r["sr_l1"], rel=1e-5)
    assert "val_psnr" in m[-1]
    env = runs["joint"].env
    assert env["world_size"] == 1 and env["torch"] == torch.__version__ and "commit" in env


def test_validation_psnr_matches_skimage(chain):
    """The logged val_psnr equals scikit-image's PSNR on BasicSR's Y channel of the saved 8-bit images."""
    from skimage.metrics import peak_signal_noise_ratio

    from savl.io import read_image

    _, runs = chain
    run = runs["frozen_l1"]
    step = run.metrics[-1]["step"]
    scores = []
    for png in sorted((run.path / "samples" / f"step_{step:06d}").glob("*.png")):
        sr = read_image(png).double().numpy() * 255
        hr = read_image(run.path / "valset" / "hr" / png.name).double().numpy() * 255
        y = lambda a: 16 + (65.481 * a[0] + 128.553 * a[1] + 24.966 * a[2]) / 255  # noqa: E731
        b = 4
        scores.append(peak_signal_noise_ratio(y(hr)[b:-b, b:-b], y(sr)[b:-b, b:-b], data_range=255))
    assert scores and run.metrics[-1]["val_psnr"] == pytest.approx(np.mean(scores), abs=1e-3)


def test_checkpoints_are_weights_only_and_pruned(chain):
    _, runs = chain
    run = runs["gan"]
    steps = sorted(p.name for p in run.checkpoints.iterdir())
    assert steps == ["step_000002", "step_000004"]  # keep_last 2 of checkpoints at 2 and 4
    last = run.checkpoints / "step_000004"
    state = torch.load(last / "state.pt", weights_only=True)
    rank = torch.load(last / "rank0.pt", weights_only=True)
    assert state["step"] == 4 and state["hash"] == run.hash
    assert {"optimiser", "optimiser_d", "ema_n_averaged"} <= set(state)
    assert {"torch", "numpy", "python", "generators"} <= set(rank["rng"]) and "generator" in rank["data"]
    for name in ("srnet", "srnet_ema", "discriminator"):
        assert (last / f"{name}.safetensors").is_file() and (last / f"{name}.json").is_file()


def test_get_or_train_returns_cached_run(chain):
    root, runs = chain
    done = runs["joint"].path / "done.json"
    before = done.stat().st_mtime_ns
    again = get_or_train(SMOKE / "stage1.yaml", root=root)
    assert again.path == runs["joint"].path and done.stat().st_mtime_ns == before


def test_existing_run_needs_resume(chain):
    root, _ = chain
    cfg = load_config(SMOKE / "stage1.yaml", [f"output={root}"])
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg)


def test_representation_stage(tmp_path):
    run = train(load_config(SMOKE / "representation.yaml", [f"output={tmp_path}", "schedule.iterations=2"]))
    m = run.metrics
    assert [r["step"] for r in m] == [1, 2] and "val_rec_psnr" in m[-1] and "sr_l1" not in m[-1]
    assert run.has("savl") and not run.has("srnet")


@pytest.mark.parametrize("name", ["deterministic", "club", "no_channel", "no_spatial"])
def test_ablation_configs_run(tmp_path, name):
    over = [f"output={tmp_path}", "profile=smoke", "schedule.iterations=2", "val_every=2", "data.names=[astronaut]"]
    over += ["threads=1", "checkpoint_every=2", "progress=none"]
    run = train(load_config(ROOT / "configs" / "ablations" / f"{name}.yaml", over))
    last = run.metrics[-1]
    assert np.isfinite(last["loss"]) and "val_psnr" in last
    srnet = run.load_srnet()
    if name == "deterministic":
        assert last["kl"] == 0.0 and srnet.encoder.config.deterministic
    if name == "club":
        assert "club" in last and "club_q" in last and srnet.encoder.config.deterministic
    if name == "no_channel":
        assert not srnet.config.channel_guidance and srnet.config.spatial_guidance
    if name == "no_spatial":
        assert srnet.config.channel_guidance and not srnet.config.spatial_guidance


@pytest.mark.parametrize("stage", ["representation", "joint", "frozen_l1", "gan"])
def test_every_trainable_parameter_gets_a_gradient(stage, generator):
    """DDP runs with find_unused_parameters=False, so one backward must reach every trainable parameter."""
    torch.manual_seed(0)
    cfg = load_config(None, ["profile=smoke", f"stage={stage}"])
    models = build_models(cfg)
    objective = Objective(cfg, models)
    lr = torch.rand(2, 3, 8, 8, generator=generator)
    hr = torch.rand(2, 3, 32, 32, generator=generator)
    terms = objective(lr, hr, step=1, generator=generator)
    terms["loss"].backward()
    trainable = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable), [n for n, p in trainable if p.grad is None]
    if stage == "joint":
        assert models["savl"].encoder is models["srnet"].encoder
    if stage in ("frozen_l1", "gan"):
        assert all(not p.requires_grad for p in models["srnet"].encoder.parameters())


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    over = [f"output={tmp_path}", "schedule.iterations=6", "debug.nan_at_step=5", "debug.nan_term=kl"]
    cfg = load_config(SMOKE / "stage1.yaml", over)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg)
    msg = str(e.value)
    assert msg.startswith("step 5: loss term 'kl' is not finite") and "step_000004" in msg and "\n" not in msg
    ckpts = sorted(p.name for p in (tmp_path / next(tmp_path.iterdir()).name / "checkpoints").iterdir())
    assert ckpts == ["step_000002", "step_000004"]  # nothing written at or after the bad step
    run_dir = next(tmp_path.iterdir())
    assert not (run_dir / "done.json").exists()
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    # the kept checkpoint is complete: resuming (same run: test hooks are not part of its identity) without
    # the NaN hook continues from step 4 and finishes
    run = train(load_config(SMOKE / "stage1.yaml", over[:2]), resume=True)
    assert run.path == run_dir and run.finished
    assert [r["step"] for r in run.metrics] == [1, 2, 3, 4, 5, 6] and run.metrics[:4] == logged


def _photo_folder(root: Path, names: list[str]) -> list:
    from savl.data import sample_images
    from savl.io import write_image

    root.mkdir(parents=True)
    photos = sample_images(names)
    for name, img in photos:
        write_image(root / f"{name}.png", img[:, :64, :64].contiguous())
    return photos


def test_hr_folder_and_paired_sources(tmp_path):
    """Training reads a folder of HR photos (degraded on the fly) and a paired LR/HR folder (used as is)."""
    from savl.imresize import imresize
    from savl.io import write_image

    photos = _photo_folder(tmp_path / "hr_only", ["astronaut", "coffee"])
    common = [f"output={tmp_path / 'runs'}", "schedule.iterations=2", "progress=none", "checkpoint_every=2"]
    run = train(load_config(SMOKE / "stage1.yaml", [*common, "data.source=hr_folder", f"data.root={tmp_path}/hr_only"]))
    assert [r["step"] for r in run.metrics] == [1, 2]

    paired = tmp_path / "paired"
    (paired / "hr").mkdir(parents=True)
    (paired / "lr").mkdir()
    for name, img in photos:
        hr = img[:, :64, :64].contiguous()
        write_image(paired / "hr" / f"{name}.png", hr)
        write_image(paired / "lr" / f"{name}.png", imresize(hr, scale=0.25).clamp(0, 1))
    over = [*common, "data.source=paired", f"data.root={paired}", "val_every=null", "init_from=null"]
    run = train(load_config(SMOKE / "stage2.yaml", over))
    assert [r["step"] for r in run.metrics] == [1, 2] and np.isfinite(run.metrics[-1]["sr_l1"])


def test_bf16_autocast_and_deterministic_mode(tmp_path):
    over = [f"output={tmp_path}", "schedule.iterations=2", "precision=bf16", "deterministic=true", "progress=none"]
    over += ["data.names=[astronaut]"]
    run = train(load_config(SMOKE / "stage1.yaml", over))
    assert all(np.isfinite(r["loss"]) for r in run.metrics)
    assert run.load_srnet().sr.conv_first.weight.dtype == torch.float32  # autocast keeps fp32 master weights
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("stage", ["representation", "joint"])
def test_savl_decoder_reads_the_clean_gt_not_the_sharpened_target(stage, generator):
    """The LR was made from the unsharpened GT; the SAVL likelihood p(y | x, r) must re-degrade that x, while
    the SR loss (joint stage) keeps the USM-sharpened target."""
    torch.manual_seed(0)
    cfg = load_config(None, ["profile=smoke", f"stage={stage}"])
    models = build_models(cfg)
    objective = Objective(cfg, models).eval()
    models["savl"].eval()  # the posterior mean, not a sample (SAVL itself is not a registered child)
    lr = torch.rand(2, 3, 8, 8, generator=generator)
    clean = torch.rand(2, 3, 32, 32, generator=generator)
    sharpened = (clean * 1.5 - 0.25).clamp(0, 1)
    with torch.no_grad():
        direct = models["savl"](lr, clean, step=1)
        terms = objective(lr, sharpened, 1, None, clean)
        wrong = models["savl"](lr, sharpened, step=1)
    assert torch.allclose(terms["rec"], direct["rec"])
    assert not torch.allclose(terms["rec"], wrong["rec"])
    if stage == "joint":
        sr, _ = models["srnet"].forward_with_posterior(lr)
        assert torch.allclose(terms["sr_l1"], (sr - sharpened).abs().mean())


def test_mixture_protocol_degrades_each_batch_with_one_named_protocol():
    """data.protocol a+b: one protocol per batch, drawn from the run's generator (same seed, same draws)."""
    from savl.degrade.protocols import get_protocol
    from savl.train.data import _degradation

    cfg = load_config(None, ["profile=smoke", "stage=representation", "data.protocol=bicubic+table5-noise"])
    mix = _degradation(cfg)
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    bicubic = get_protocol("bicubic")(hr, torch.Generator())[0]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    seen = set()
    for _ in range(12):
        a, _ = mix(hr, g1)
        b, _ = mix(hr, g2)
        assert torch.equal(a, b)
        seen.add("bicubic" if torch.equal(a, bicubic) else "noise")
    assert seen == {"bicubic", "noise"}
    with pytest.raises(ConfigError, match="unknown degradation protocol"):
        _degradation(load_config(None, ["profile=smoke", "data.protocol=bicubic+nope"]))


@pytest.mark.parametrize("fused", [None, True, False])
def test_adam_first_step_is_lr_times_the_gradient_sign(fused):
    # Adam's first step with bias correction is lr * g / (|g| + eps), fused or for-each alike; None picks the
    # fused kernel on the CPU (it has one).
    from savl.train.loop import _adam

    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    p.grad = torch.tensor([0.3, -1e-3, 2.0, -0.7])
    opt = _adam([p], fused, lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    assert bool(opt.defaults["fused"]) == (fused is not False)
    before, g = p.detach().clone(), p.grad.clone()
    opt.step()
    assert torch.allclose(p.detach(), before - 0.1 * g / (g.abs() + 1e-8), atol=1e-6)
