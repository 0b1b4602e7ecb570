"""RRDB-SFT of the paper's Table 4 (A.3): shapes, the kernel guidance's PCA code, the guidance plumbing from the
MANet protocol to the network (training batches, validation and scoring), save/load, smoke training of each
guidance, and the held-out scoring beside bicubic."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F

from savl.degrade.kernels import manet_kernel
from savl.degrade.spatial import MANET_A, MANET_B, manet_degrade
from savl.errors import ConfigError, ImageError
from savl.models.encoder import AmortizedEncoder, EncoderConfig
from savl.models.io import load_model, save_model
from savl.models.rrdb_sft import GUIDANCES, KERNEL_SIZE, RRDBSFTConfig, RRDBSFTNet, replayed_kernel_map

TRAIN_PHOTOS = ["astronaut", "rocket"]


def _net(guidance: str, seed: int = 0) -> RRDBSFTNet:
    torch.manual_seed(seed)
    net = RRDBSFTNet(RRDBSFTConfig.smoke(guidance))
    # the smoke profile's zero-initialised tail makes every guidance output the same bilinear image: perturb it
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)
    return net


def _hr(size: int = 96, seed: int = 0) -> torch.Tensor:
    from savl.data import sample_images

    img = dict(sample_images(["astronaut"]))["astronaut"][:3]
    top = 100 + 7 * seed
    return img[None, :, top : top + size, 150 : 150 + size].contiguous()


def _reblur(hr: torch.Tensor, kmap: torch.Tensor) -> torch.Tensor:
    """Each LR pixel recomputed from the kernel the map names for it (MANet's correlation, replicate padding,
    [0::4] sampling), one pixel at a time from the formula: an independent reading of the map."""
    p = KERNEL_SIZE // 2
    xp = F.pad(hr, (p, p, p, p), mode="replicate")
    cols = F.unfold(xp, KERNEL_SIZE, stride=4)  # (B, 3 * 441, h * w)
    b, _, h, w = kmap.shape
    triples = kmap.permute(0, 2, 3, 1).reshape(b, h * w, 3).tolist()
    taps = torch.stack([torch.stack([manet_kernel(*t).flatten() for t in row]) for row in triples])  # (B, L, 441)
    out = (cols.view(b, 3, KERNEL_SIZE**2, h * w) * taps.permute(0, 2, 1)[:, None]).sum(2)
    return out.view(b, 3, h, w)


# ------------------------------------------------------------------------------------------------ network
@pytest.mark.parametrize("guidance", GUIDANCES)
def test_shapes_and_condition_width(guidance):
    net = _net(guidance)
    hr = _hr(64)
    lr, kmap, _ = manet_degrade(hr, 5, torch.Generator().manual_seed(1))
    out = net(lr, kmap if guidance == "kernel" else None)
    assert out.shape == (1, 3, 64, 64)
    cond = net.condition(lr, kmap if guidance == "kernel" else None)
    want = {"none": None, "code": EncoderConfig.smoke().code_dim, "kernel": 4}[guidance]
    assert (cond is None) if want is None else cond.shape == (1, want, 16, 16)


def test_the_unguided_net_is_the_guided_one_without_the_condition_columns():
    """Same layers; the difference in parameters is exactly the SFT convolutions' condition input columns."""
    cfg = RRDBSFTConfig.smoke("kernel")
    none, kernel = RRDBSFTNet(RRDBSFTConfig.smoke("none")), RRDBSFTNet(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    extra = cfg.num_blocks * 2 * cfg.kernel_components * cfg.sft_hidden * 9  # two branches, one 3x3 conv each
    assert count(kernel) - count(none) == extra
    assert [n for n, _ in none.named_parameters()] == [n for n, _ in kernel.named_parameters()]


def test_bad_guides_are_one_line_errors():
    lr = torch.rand(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="needs the kernel map"):
        _net("kernel")(lr)
    with pytest.raises(ImageError, match="kernel map must be"):
        _net("kernel")(lr, torch.ones(1, 2, 8, 8))
    with pytest.raises(ImageError, match="does not fit the LR image"):
        _net("code")(lr, torch.zeros(1, 8, 4, 4))
    with pytest.raises(ConfigError, match="guidance must be one of"):
        RRDBSFTConfig(guidance="gt")


def test_kernel_codes_are_the_whitened_pca_of_each_pixels_kernel():
    net = RRDBSFTNet(RRDBSFTConfig.paper("kernel"))
    mean, basis, std = net.kernel_mean.double(), net.kernel_basis.double(), net.kernel_std.double()
    assert basis.shape == (15, KERNEL_SIZE**2)
    assert torch.allclose(basis @ basis.T, torch.eye(15, dtype=torch.float64), atol=1e-5)  # orthonormal
    # Fresh kernels of the protocol's family (another seed than the fit): unit-scale codes, small residual.
    g = torch.Generator().manual_seed(7)
    u = torch.rand(300, 3, generator=g, dtype=torch.float64)
    draws = [(MANET_B + MANET_A * x, MANET_B + MANET_A * y, math.pi * z) for x, y, z in u.tolist()]
    taps = torch.stack([manet_kernel(*d).double().flatten() for d in draws])
    codes = (taps - mean) @ basis.T / std
    assert ((codes.std(0) - 1).abs() < 0.25).all()
    rebuilt = (codes * std) @ basis + mean
    assert ((rebuilt - taps).norm(dim=1) / (taps - mean).norm(dim=1)).mean() < 0.06
    # The net's map: every pixel's code is that projection of its own kernel.
    lr, kmap, _ = manet_degrade(_hr(80), 5, torch.Generator().manual_seed(3))
    got = net.kernel_codes(kmap).double()
    for i, j in [(0, 0), (3, 17), (19, 19), (10, 11)]:
        k = manet_kernel(*kmap[0, :, i, j].tolist()).double().flatten()
        assert torch.allclose(got[0, :, i, j], (k - mean) @ basis.T / std, atol=1e-4)
    assert got[0, :, 0, 0].sub(got[0, :, 19, 19]).abs().max() > 0.1  # mode 5: blocks differ


# -------------------------------------------------------------------------------------- guidance plumbing
def test_the_kernel_map_is_the_one_that_degraded_the_image():
    """Noise-free MANet draws: every LR pixel recomputed from the kernel its map names equals the LR image
    (8-bit); a map from another draw does not."""
    from savl.train.data import ManetModes

    hr = torch.cat([_hr(96, 0), _hr(96, 3)])
    lr, kmap, params = ManetModes(noise=0).with_kernel_map(hr, torch.Generator().manual_seed(5))
    assert kmap.shape == (2, 3, 24, 24) and len(params) == 2
    rounded = (_reblur(hr, kmap).clamp(0, 1) * 255).round() / 255
    assert (rounded - lr).abs().max() <= 1 / 255 + 1e-6
    assert (rounded == lr).float().mean() > 0.99
    _, other, _ = ManetModes(modes=(5,), noise=0).with_kernel_map(hr, torch.Generator().manual_seed(6))
    wrong = (_reblur(hr, other).clamp(0, 1) * 255).round() / 255
    assert (wrong - lr).abs().max() > 4 / 255


def _smoke_cfg(guidance: str, tmp_path, encoder=None, **extra) -> dict:
    cfg = {
        "profile": "smoke", "stage": "rrdb_sft", "model": {"guidance": guidance}, "output": str(tmp_path / "runs"),
        "name": f"t4-{guidance}", "progress": "none", "log_every": 1,
        "data": {"names": TRAIN_PHOTOS, "val_names": ["chelsea"], "protocol": "manet", "val_protocol": "manet-mode5",
                 "max_side": 160},
    }  # fmt: skip
    if encoder is not None:
        cfg["model"]["encoder_from"] = str(encoder)
    cfg.update(extra)
    return cfg


def _tiny_encoder(tmp_path):
    torch.manual_seed(3)
    return save_model(AmortizedEncoder(EncoderConfig.smoke()), tmp_path / "encoder.safetensors")


def test_training_batches_carry_the_kernel_map_of_their_own_draw(tmp_path):
    from savl.train.config import validate
    from savl.train.data import BatchSource, ManetModes

    cfg = validate(_smoke_cfg("kernel", tmp_path))
    src = BatchSource(cfg, 0, 1, torch.device("cpu"))
    state = src.generator.get_state()
    lr, target, real, guide = src.next()
    assert torch.equal(target, real) and guide.shape == (2, 3, *lr.shape[-2:])
    again = torch.Generator().set_state(state)
    lr2, kmap2, params = ManetModes().with_kernel_map(real, again)
    assert torch.equal(lr, lr2) and torch.equal(guide, kmap2)
    assert {p["noise"] for p in params} == {15.0}


def test_the_objective_feeds_the_batch_map_to_the_net(tmp_path):
    from savl.train.config import validate
    from savl.train.stages import Objective, build_models

    cfg = validate(_smoke_cfg("kernel", tmp_path))
    models = build_models(cfg)
    net = models["srnet"]
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)
    lr, kmap, _ = manet_degrade(_hr(64), 5, torch.Generator().manual_seed(2))
    out = Objective(cfg, models)(lr, torch.zeros(1, 3, 64, 64), 0, None, guide=kmap)
    assert torch.equal(out["sr"], net(lr, kmap))
    assert not torch.equal(out["sr"], net(lr, kmap.flip(-1)))


def test_frozen_set_maps_are_replayed_and_checked(tmp_path):
    from savl.data import FrozenValidationSet

    data = FrozenValidationSet.build([("a", _hr(64)[0])], "manet-mode5", 3, tmp_path / "set")
    kmap = replayed_kernel_map(data[0]["hr"], data[0]["lr"], data.params[0])
    _, direct, _ = manet_degrade(data[0]["hr"][None], 5, torch.Generator().manual_seed(0))
    assert kmap.shape == direct.shape
    forged = [dict(data.params[0][0], noise_seed=data.params[0][0]["noise_seed"] + 1)]
    with pytest.raises(ConfigError, match="do not replay"):
        replayed_kernel_map(data[0]["hr"], data[0]["lr"], forged)


# ---------------------------------------------------------------------------------------------- save/load
@pytest.mark.parametrize("guidance", GUIDANCES)
def test_save_load_round_trip(tmp_path, guidance):
    net = _net(guidance, seed=4)
    if guidance == "kernel":
        with torch.no_grad():
            net.kernel_basis.neg_()  # a model carries its own basis, not the one a fresh build computes
    path = save_model(net, tmp_path / "m.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["architecture"] == "RRDBSFTNet" and meta["config"]["guidance"] == guidance
    loaded = load_model(path)
    assert loaded.config == net.config
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    lr, kmap, _ = manet_degrade(_hr(64), 4, torch.Generator().manual_seed(8))
    guide = kmap if guidance == "kernel" else None
    assert torch.equal(net.eval()(lr, guide), loaded(lr, guide))


# ------------------------------------------------------------------------------------------------- config
def test_config_rules(tmp_path):
    from savl.train.config import validate

    with pytest.raises(ConfigError, match="belong to stage rrdb_sft"):
        validate({"profile": "smoke", "stage": "frozen_l1", "model": {"guidance": "kernel"}})
    with pytest.raises(ConfigError, match="needs a trained SAVL encoder"):
        validate(_smoke_cfg("code", tmp_path))
    with pytest.raises(ConfigError, match="needs data.protocol manet"):
        validate({**_smoke_cfg("kernel", tmp_path), "data": {"protocol": "realesrgan"}})
    with pytest.raises(ConfigError, match="encoder of guidance code"):
        validate(_smoke_cfg("none", tmp_path, encoder=tmp_path / "e.safetensors"))
    assert validate({"profile": "smoke", "stage": "rrdb_sft", "data": {"protocol": "manet"}}).model.guidance == "none"


def test_hash_leaves_other_configs_alone_and_follows_the_encoder_file(tmp_path):
    from savl.train.config import _HASH_EXCLUDED, config_hash, validate

    cfg = validate({"profile": "smoke", "stage": "frozen_l1", "seed": 3})
    data = {k: v for k, v in cfg.to_dict().items() if k not in _HASH_EXCLUDED}
    data["init_from"] = None
    data["model"] = {k: v for k, v in data["model"].items() if k not in ("guidance", "encoder_from")}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()  # as before the rrdb_sft keys existed

    enc = _tiny_encoder(tmp_path)
    first = config_hash(validate(_smoke_cfg("code", tmp_path, encoder=enc)))
    torch.manual_seed(9)
    save_model(AmortizedEncoder(EncoderConfig.smoke()), enc)
    assert config_hash(validate(_smoke_cfg("code", tmp_path, encoder=enc))) != first


# ----------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("guidance", GUIDANCES)
def test_four_step_smoke_training(tmp_path, guidance):
    from savl.train import train

    enc = _tiny_encoder(tmp_path) if guidance == "code" else None
    run = train(_smoke_cfg(guidance, tmp_path, encoder=enc), fresh=True)
    assert run.finished
    rows = [r for r in run.metrics if "sr_l1" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["sr_l1"]) for r in rows)
    assert math.isfinite(run.metrics[-1]["val_psnr"])
    net = load_model(run.final / "srnet.safetensors")
    assert net.config.guidance == guidance
    fresh = RRDBSFTNet(net.config)  # same seed-free config: the trained SR weights must have moved from init
    assert not torch.equal(net.tail.weight, fresh.tail.weight)  # the tail starts at zero
    if guidance == "code":  # frozen: the encoder is the file's, untouched by training
        source = load_model(enc)
        assert all(torch.equal(a, b) for a, b in zip(net.encoder.state_dict().values(), source.state_dict().values()))


def test_code_guidance_takes_the_encoder_of_a_representation_run(tmp_path):
    from savl.train import train

    rep = train({"profile": "smoke", "stage": "representation", "output": str(tmp_path / "runs"), "name": "rep",
                 "progress": "none", "data": {"names": TRAIN_PHOTOS, "max_side": 160}}, fresh=True)  # fmt: skip
    run = train(_smoke_cfg("code", tmp_path, init_from=str(rep.path)), fresh=True)
    net = load_model(run.final / "srnet.safetensors")
    want = rep.load_savl().encoder.state_dict()
    assert all(torch.equal(net.encoder.state_dict()[k], v) for k, v in want.items())


# ---------------------------------------------------------------------------------------------- scoring
class _Bicubic(torch.nn.Module):
    """A "kernel-guided" model that ignores its guide and upsamples bicubically, recording the guides."""

    def __init__(self):
        super().__init__()
        self.config = RRDBSFTConfig.smoke("kernel")
        self.seen = []

    def forward(self, lr, guide=None):
        from savl.imresize import imresize

        self.seen.append(guide)
        return imresize(lr, scale=4)


def test_scoring_on_the_zoos_held_out_manet_sets(tmp_path):
    from savl import zoo
    from savl.data.split import HELD_OUT
    from savl.table4 import table4_metrics

    sets = {n: zoo.held_out_sr_set(n, tmp_path / "heldout", draws=1, crop=64) for n in ("manet-mode1", "manet-mode5")}
    fake = _Bicubic()
    out = table4_metrics(fake, sets)
    assert out["images"] == 2 * len(HELD_OUT) and out["guidance"] == "kernel"
    assert out["psnr"] == pytest.approx(out["bicubic_psnr"], abs=1e-9)  # same images: the same numbers
    assert out["psnr_gain_over_bicubic"] == pytest.approx(0.0, abs=1e-9)
    assert 15 < out["bicubic_psnr"] < 40
    per_image = list(out["per_image_psnr"].values())
    assert out["psnr"] == pytest.approx(sum(per_image) / len(per_image))
    # each image was given the map of its own draw
    mode1 = sets["manet-mode1"]
    for i, guide in enumerate(fake.seen[: len(mode1)]):
        _, kmap, _ = manet_degrade(mode1[i]["hr"][None], 1, None)  # mode 1 draws no kernel parameters
        assert torch.equal(guide, kmap)
    net = _net("kernel")
    real = table4_metrics(net, sets)
    assert real["per_set"].keys() == sets.keys() and math.isfinite(real["psnr"])
    assert real["bicubic_psnr"] == pytest.approx(out["bicubic_psnr"])


def test_code_guidance_takes_the_encoder_of_a_savl_model_file(tmp_path):
    """model.encoder_from may name a whole SAVL model (what the zoo ships): its encoder, config and weights."""
    from savl.train.config import validate
    from savl.train.stages import build_models

    torch.manual_seed(5)
    savl = build_models(validate({"profile": "smoke", "stage": "representation"}))["savl"]
    path = save_model(savl, tmp_path / "savl.safetensors")
    net = build_models(validate(_smoke_cfg("code", tmp_path, encoder=path)))["srnet"]
    assert net.config.encoder == savl.encoder.config
    assert all(torch.equal(net.encoder.state_dict()[k], v) for k, v in savl.encoder.state_dict().items())
    assert not any(p.requires_grad for p in net.encoder.parameters())
    with pytest.raises(ConfigError, match="SAVL or AmortizedEncoder"):
        other = save_model(_net("none"), tmp_path / "other.safetensors")
        build_models(validate(_smoke_cfg("code", tmp_path, encoder=other)))
