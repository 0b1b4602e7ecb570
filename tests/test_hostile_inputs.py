"""A small corpus of hostile and careless inputs, generated here, through every subcommand: each must end in one
line on stderr, exit code 2, no traceback, bounded memory (the address space is capped a few GB above what the
process already holds, so a 19-75 GB allocation fails instead of swapping the machine) and no partial output.
Inputs that must work (a gray + alpha PNG, an unreadable file among good ones in an evaluated folder) are
checked to work, and images with a side of one pixel must either work or fail in one line, never hang."""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
import yaml

from savl.cli import main
from savl.io import read_image, write_image

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
HEADROOM = 3 << 30  # bytes of address space allowed beyond what the test process holds


# ------------------------------------------------------------------------------------------- the corpus
def _image(path: Path, h: int, w: int, seed: int = 0, **kw) -> Path:
    g = torch.Generator().manual_seed(seed)
    write_image(path, torch.rand(3 if not kw.get("gray") else 1, h, w, generator=g), **kw)
    return path


def _with_config(src: Path, dst: Path, **changes) -> Path:
    """A copy of a model file whose JSON config has `changes` (dotted keys reach nested configs)."""
    shutil.copy(src, dst)
    meta = json.loads(src.with_suffix(".json").read_text())
    for key, value in changes.items():
        node = meta["config"]
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    dst.with_suffix(".json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from savl.models.discriminator import DiscriminatorConfig, build_discriminator
    from savl.models.encoder import AmortizedEncoder, EncoderConfig
    from savl.models.io import save_model
    from savl.models.savl import SAVL
    from savl.models.srnet import DARHAGNet, SRNetConfig

    d = tmp_path_factory.mktemp("corpus")
    m, im, pr = d / "models", d / "images", d / "params"
    for folder in (m, im, pr):
        folder.mkdir()
    torch.manual_seed(0)
    c = {}
    c["net"] = save_model(DARHAGNet(SRNetConfig.smoke()), m / "net.safetensors")
    c["enc"] = save_model(AmortizedEncoder(EncoderConfig.smoke()), m / "enc.safetensors")
    c["savl"] = save_model(SAVL.build("smoke"), m / "savl.safetensors")
    c["disc"] = save_model(build_discriminator(DiscriminatorConfig(base=4)), m / "disc.safetensors")
    # hostile model files: the weights are the good net's, the JSON lies
    c["embed"] = _with_config(c["net"], m / "embed.safetensors", embed_dim=10_000_000)
    c["negative"] = _with_config(c["net"], m / "negative.safetensors", embed_dim=-16)
    c["depths"] = _with_config(c["net"], m / "depths.safetensors", depths=[100_000])
    c["window"] = _with_config(c["net"], m / "window.safetensors", window=1e9)
    wide = {"encoder.base": 256, "encoder.multipliers": [64]}
    c["enc_width"] = _with_config(c["net"], m / "encw.safetensors", **wide)
    c["savl_big"] = _with_config(c["savl"], m / "savlbig.safetensors", **{"decoder.channels": 100_000})
    c["nan_float"] = _with_config(c["net"], m / "nanfloat.safetensors", mlp_ratio=float("nan"))
    c["wrong_type"] = _with_config(c["net"], m / "wrongtype.safetensors", heads="six")
    deep = m / "deep.safetensors"
    shutil.copy(c["net"], deep)
    deep_list = "[" * 5000 + "]" * 5000
    deep.with_suffix(".json").write_text('{"architecture": "DARHAGNet", "config": {"depths": ' + deep_list + "}}")
    c["deep"] = deep
    nested = m / "nested.safetensors"
    shutil.copy(c["net"], nested)
    cfg = {"encoder": {}}
    node = cfg["encoder"]
    for _ in range(10):
        node["encoder"] = {}
        node = node["encoder"]
    nested.with_suffix(".json").write_text(json.dumps({"architecture": "DARHAGNet", "config": cfg}))
    c["nested"] = nested
    big = m / "big.safetensors"
    shutil.copy(c["net"], big)
    big.with_suffix(".json").write_text(json.dumps({"architecture": "DARHAGNet", "config": {}, "pad": "x" * (2 << 20)}))
    c["big_json"] = big
    net = DARHAGNet(SRNetConfig.smoke())
    with torch.no_grad():
        next(net.parameters())[0].fill_(float("nan"))
    c["nan_weights"] = save_model(net, m / "nanw.safetensors")
    enc = AmortizedEncoder(EncoderConfig.smoke())
    with torch.no_grad():
        next(enc.parameters()).fill_(float("inf"))
    c["nan_encoder"] = save_model(enc, m / "nanenc.safetensors")  # its severity map was all NaN, with exit 0

    # images
    c["good"] = _image(im / "good.png", 16, 20)
    c["hr"] = _image(im / "hr.png", 32, 32)
    c["px1"] = _image(im / "px1.png", 1, 1)
    c["row"] = _image(im / "row.png", 1, 24)
    c["col"] = _image(im / "col.png", 24, 1)
    g = torch.Generator().manual_seed(1)
    c["gray_alpha"] = im / "ga.png"
    gray, alpha = torch.rand(1, 12, 10, generator=g), torch.rand(1, 12, 10, generator=g)
    write_image(c["gray_alpha"], gray, gray=True, alpha=alpha)
    c["truncated"] = im / "truncated.png"
    c["truncated"].write_bytes(c["hr"].read_bytes()[:60])
    c["empty"] = im / "empty.png"
    c["empty"].write_bytes(b"")
    c["text"] = im / "text.png"
    c["text"].write_text("not an image")
    bomb = bytearray(c["good"].read_bytes())
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width and height, with the chunk's CRC redone
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    c["bomb"] = im / "bomb.png"
    c["bomb"].write_bytes(bytes(bomb))

    # replayed parameter records
    record_out = d / "record" / "lr.png"
    record_out.parent.mkdir()
    assert main(["degrade", str(c["hr"]), str(record_out), "--seed", "1"]) == 0
    good = json.loads(record_out.with_suffix(".json").read_text())
    c["record"] = record_out.with_suffix(".json")

    def record(name, edit):
        r = copy.deepcopy(good)
        edit(r["params"][0])
        path = pr / f"{name}.json"
        path.write_text(json.dumps(r))
        return path

    c["blur_size"] = record("blur", lambda p: p["blur1"].update(size=100001))
    c["resize_scale"] = record("resize", lambda p: p["resize1"].update(scale=1000.0))
    c["usm_radius"] = record("usm", lambda p: p["usm"].update(radius=10**6))
    c["nan_sigma"] = record("nan", lambda p: p["noise1"].update(kind="gaussian", sigma=float("nan")))
    c["jpeg"] = record("jpeg", lambda p: p.update(jpeg1=1e9))
    c["not_a_list"] = pr / "dict.json"
    c["not_a_list"].write_text(json.dumps({**good, "params": {"a": 1}}))

    # training configs
    base = yaml.safe_load((ROOT / "configs" / "smoke" / "representation.yaml").read_text())
    for name, change in {
        "name_dotdot": {"name": ".."},
        "name_slash": {"name": "a/b"},
        "seed_negative": {"seed": -1},
        "seed_huge": {"seed": 2**70},
        "unknown_key": {"optimiser": {"lr": 1e-4, "momentum": 0.9}},
        "iterations_zero": {"schedule": {"iterations": 0}},
        "output_in_file": {"output": str(c["good"] / "runs")},
    }.items():
        (d / "configs").mkdir(exist_ok=True)
        c[name] = d / "configs" / f"{name}.yaml"
        c[name].write_text(yaml.safe_dump({**base, "output": str(d / "runs"), **change}))
    c["not_yaml"] = d / "configs" / "broken.yaml"
    c["not_yaml"].write_text("a: [1, 2\n")
    return c


# ------------------------------------------------------------------------------------------ the runner
def _vm_size() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_bounded(argv: list[str]) -> int:
    """`savl ARGV` in this process with the address space capped HEADROOM above its current size."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = _vm_size()
    if vm is not None:
        resource.setrlimit(resource.RLIMIT_AS, (min(vm + HEADROOM, hard) if hard > 0 else vm + HEADROOM, hard))
    try:
        return main(argv)
    except SystemExit as e:  # argparse usage errors
        return e.code
    except (MemoryError, RuntimeError) as e:  # an allocation beyond the cap: the input was not bounded
        pytest.fail(f"savl {' '.join(argv)}: {type(e).__name__} (unbounded memory or a traceback): {e}"[:500])
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _argv(template: list[str], corpus: dict, out: Path) -> list[str]:
    """"@key" and "@key/name": a corpus path (or a name inside it); "OUT" and "OUT/name": the fresh output."""

    def one(a: str) -> str:
        head, _, rest = a.partition("/")
        if head.startswith("@"):
            base = Path(corpus[head[1:]])
        elif head == "OUT":
            base = out
        else:
            return a
        return str(base / rest if rest else base)

    return [one(a) for a in template]


# (id, argv template, words the one-line message must contain). "@key" is a corpus path, OUT a fresh output.
FAILS = [
    # degrade
    ("degrade-truncated", ["degrade", "@truncated", "OUT/o.png"], ["truncated.png"]),
    ("degrade-empty", ["degrade", "@empty", "OUT/o.png"], ["empty"]),
    ("degrade-text", ["degrade", "@text", "OUT/o.png"], ["text.png"]),
    ("degrade-bomb", ["degrade", "@bomb", "OUT/o.png"], ["bomb.png", "decompression bomb"]),
    ("degrade-seed-negative", ["degrade", "@hr", "OUT/o.png", "--seed", "-1"], ["--seed"]),
    ("degrade-seed-huge", ["degrade", "@hr", "OUT/o.png", "--seed", str(2**70)], ["--seed"]),
    ("params-blur-size", ["degrade", "@hr", "OUT/o.png", "--params", "@blur_size"], ["blur1.size"]),
    ("params-resize-scale", ["degrade", "@hr", "OUT/o.png", "--params", "@resize_scale"], ["resize1.scale"]),
    ("params-usm-radius", ["degrade", "@hr", "OUT/o.png", "--params", "@usm_radius"], ["usm.radius"]),
    ("params-nan", ["degrade", "@hr", "OUT/o.png", "--params", "@nan_sigma"], ["sigma"]),
    ("params-jpeg", ["degrade", "@hr", "OUT/o.png", "--params", "@jpeg"], ["jpeg1"]),
    ("params-not-a-list", ["degrade", "@hr", "OUT/o.png", "--params", "@not_a_list"], ["list"]),
    ("params-model-file", ["degrade", "@hr", "OUT/o.png", "--params", "@net"], ["JSON"]),
    # sr: model files
    *[
        (f"sr-model-{key}", ["sr", "@good", "OUT/o.png", "--model", f"@{key}"], [words])
        for key, words in [
            ("embed", "embed_dim"),
            ("negative", "embed_dim"),
            ("depths", "depths"),
            ("window", "window"),
            ("enc_width", "encoder"),
            ("nan_float", "mlp_ratio"),
            ("wrong_type", "heads"),
            ("deep", "deep.json"),
            ("nested", "nested"),
            ("big_json", "too large"),
            ("nan_weights", "NaN"),
            ("enc", "not a super-resolution network"),
            ("savl", "not a super-resolution network"),
            ("disc", "not a super-resolution network"),
            ("savl_big", "decoder: channels"),
            ("good", "good.json"),  # an image given as the model: its JSON config is missing
        ]
    ],
    # sr: options and images
    ("sr-overlap-negative", ["sr", "@good", "OUT/o.png", "--model", "@net", "--overlap", "-1"], ["--overlap"]),
    ("sr-device-cuda", ["sr", "@good", "OUT/o.png", "--model", "@net", "--device", "cuda:7"], ["cuda:7"]),
    ("sr-device-banana", ["sr", "@good", "OUT/o.png", "--model", "@net", "--device", "banana"], ["banana"]),
    ("sr-truncated", ["sr", "@truncated", "OUT/o.png", "--model", "@net"], ["truncated.png"]),
    ("sr-bomb", ["sr", "@bomb", "OUT/o.png", "--model", "@net"], ["bomb.png"]),
    ("sr-tile-small", ["sr", "@good", "OUT/o.png", "--model", "@net", "--tile", "3"], ["--tile"]),
    # severity
    ("severity-device", ["severity", "@good", "OUT/s.png", "--model", "@enc", "--device", "cuda:7"], ["cuda:7"]),
    ("severity-embed", ["severity", "@good", "OUT/s.png", "--model", "@embed"], ["embed_dim"]),
    ("severity-plain-net", ["severity", "@good", "OUT/s.png", "--model", "@disc"], ["no encoder"]),
    ("severity-empty", ["severity", "@empty", "OUT/s.png", "--model", "@enc"], ["empty"]),
    ("severity-nan-weights", ["severity", "@good", "OUT/s.png", "--model", "@nan_encoder"], ["infinite"]),
    # eval
    ("eval-model-savl", ["eval", "--model", "@savl", "--data", "@images", "--save-images", "OUT"], ["savl"]),
    ("eval-model-disc", ["eval", "--model", "@disc", "--data", "@images", "--save-images", "OUT"], ["disc"]),
    ("eval-model-embed", ["eval", "--model", "@embed", "--data", "@images", "--save-images", "OUT"], ["embed_dim"]),
    ("eval-model-nan", ["eval", "--model", "@nan_weights", "--data", "@images", "--save-images", "OUT"], ["NaN"]),
    ("eval-scale", ["eval", "--model", "bicubic", "--data", "@images", "--scale", "100000", "--save-images", "OUT"],
     ["--scale"]),
    ("eval-device", ["eval", "--model", "bicubic", "--data", "@images", "--device", "auto:3", "--save-images", "OUT"],
     ["auto:3"]),
    ("eval-overlap", ["eval", "--model", "bicubic", "--data", "@images", "--tile", "16", "--overlap", "8",
                      "--save-images", "OUT"], ["overlap"]),
    ("eval-overlap-negative", ["eval", "--model", "bicubic", "--data", "@images", "--overlap", "-2",
                               "--save-images", "OUT"], ["overlap"]),
    ("eval-out-unwritable", ["eval", "--model", "bicubic", "--data", "@images", "--save-images", "OUT",
                             "--out", "@good/result.json"], ["--out"]),
    ("eval-into-inputs", ["eval", "--model", "bicubic", "--data", "@images", "--save-images", "@images"],
     ["holds the images"]),
    # train
    ("train-name-dotdot", ["train", "@name_dotdot"], ["name"]),
    ("train-name-slash", ["train", "@name_slash"], ["name"]),
    ("train-seed-negative", ["train", "@seed_negative"], ["seed"]),
    ("train-seed-huge", ["train", "@seed_huge"], ["seed"]),
    ("train-unknown-key", ["train", "@unknown_key"], ["momentum"]),
    ("train-iterations-zero", ["train", "@iterations_zero"], ["iterations"]),
    ("train-output-in-file", ["train", "@output_in_file"], ["good.png"]),
    ("train-not-yaml", ["train", "@not_yaml"], ["YAML"]),
    ("train-set-garbage", ["train", "@seed_negative", "--set", "nokey"], ["nokey"]),
    # data
    ("data-unknown", ["data", "download", "no-such-set"], ["no-such-set"]),
    ("data-root-in-file", ["data", "download", "RealSRSet", "--root", "@good"], ["good.png"]),
]


@pytest.mark.parametrize("case, template, words", FAILS, ids=[f[0] for f in FAILS])
def test_hostile_input_is_one_line_exit_2_bounded_and_writes_nothing(corpus, tmp_path, capsys, case, template, words):
    corpus = {**corpus, "images": _eval_folder(corpus, tmp_path)}
    out = tmp_path / "out"
    out.mkdir()
    before = _listing(tmp_path)
    rc = run_bounded(_argv(template, corpus, out))
    err = capsys.readouterr().err.strip()
    assert rc == 2, (case, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("savl") and "error:" in lines[0], err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (case, lines[0])
    assert list(out.iterdir()) == [], f"{case}: partial output {list(out.iterdir())}"
    assert _listing(tmp_path) == before, f"{case}: files appeared"


def _eval_folder(corpus: dict, tmp_path: Path) -> Path:
    folder = tmp_path / "lr"
    folder.mkdir(exist_ok=True)
    shutil.copy(corpus["good"], folder / "good.png")
    return folder


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------- inputs that must work
def test_gray_alpha_png_into_sr_keeps_gray_and_alpha(corpus, tmp_path):
    out = tmp_path / "ga_x4.png"
    assert run_bounded(["sr", str(corpus["gray_alpha"]), str(out), "--model", str(corpus["net"])]) == 0
    img, info = read_image(out, with_info=True)
    _, src = read_image(corpus["gray_alpha"], with_info=True)
    assert img.shape == (3, 48, 40) and info.gray and info.alpha is not None and info.alpha.shape == (1, 48, 40)
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    # the alpha track is MATLAB bicubic of the input's alpha (savl.infer's documented behaviour)
    from savl.imresize import imresize

    expected = (imresize(src.alpha, scale=4).clamp(0, 1) * 255).round() / 255
    assert torch.allclose(info.alpha, expected, atol=1 / 255 + 1e-6)


def test_eval_folder_skips_an_unreadable_file_and_goes_on(corpus, tmp_path, capsys):
    folder = tmp_path / "lr"
    folder.mkdir()
    shutil.copy(corpus["good"], folder / "a_good.png")
    shutil.copy(corpus["truncated"], folder / "b_truncated.png")
    shutil.copy(corpus["good"], folder / "c_good.png")
    out = tmp_path / "sr"
    result = tmp_path / "result.json"
    argv = ["eval", "--model", "bicubic", "--data", str(folder), "--save-images", str(out), "--out", str(result)]
    assert run_bounded(argv) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("savl: skipped")]
    assert len(skipped) == 1 and "b_truncated.png" in skipped[0]
    assert sorted(p.name for p in out.iterdir()) == ["a_good.png", "c_good.png"]
    record = json.loads(result.read_text())
    assert [r["name"] for r in record["per_image"]] == ["a_good", "c_good"]
    assert len(record["skipped"]) == 1 and "b_truncated.png" in record["skipped"][0]["reason"]


def test_eval_paired_folder_skips_an_image_too_small_for_the_crop(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    for sub in ("lr", "hr"):
        (tmp_path / "set" / sub).mkdir(parents=True)
    for name, side in (("big", 8), ("tiny", 2)):
        hr = torch.rand(3, side * 4, side * 4, generator=g)
        write_image(tmp_path / "set" / "hr" / f"{name}.png", hr)
        from savl.imresize import imresize

        write_image(tmp_path / "set" / "lr" / f"{name}.png", imresize(hr, scale=0.25).clamp(0, 1))
    argv = ["eval", "--model", "bicubic", "--data", str(tmp_path / "set"), "--lpips", "none", "--crop-border", "4"]
    assert run_bounded(argv) == 0
    captured = capsys.readouterr()
    assert "savl: skipped tiny: HR 8x8 leaves nothing after the 4px border crop" in captured.err
    assert "over 1 images, 1 skipped" in captured.out


# ------------------------------------------------------------------------------------- one-pixel sides
_ONE_PIXEL = [("px1", (1, 1)), ("row", (1, 24)), ("col", (24, 1))]


@pytest.mark.parametrize("key, size", _ONE_PIXEL, ids=[k for k, _ in _ONE_PIXEL])
def test_one_pixel_sides_work_or_fail_in_one_line_and_never_hang(corpus, tmp_path, key, size):
    """`savl sr` and `savl eval` on images with a side of one pixel: HAT's test-time padding could not reflect
    such a side and looped forever. A subprocess with a timeout, so a hang fails the test instead of the run."""
    out = tmp_path / "o.png"
    folder = tmp_path / "lr"
    folder.mkdir()
    shutil.copy(corpus[key], folder / f"{key}.png")
    shutil.copy(corpus["good"], folder / "good.png")
    commands = {
        "sr": ["sr", str(corpus[key]), str(out), "--model", str(corpus["net"])],
        "eval": ["eval", "--model", str(corpus["net"]), "--data", str(folder), "--save-images", str(tmp_path / "e")],
    }
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for what, argv in commands.items():
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "savl", *argv], capture_output=True, text=True, timeout=90, cwd=ROOT, env=env
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"savl {what} on a {size[0]}x{size[1]} image did not finish within 90 s (a hang)")
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.returncode in (0, 2), proc.stderr[-2000:]
        if proc.returncode == 2:
            assert len(proc.stderr.strip().splitlines()) == 1
        elif what == "sr":
            assert read_image(out).shape == (3, 4 * size[0], 4 * size[1])
        else:
            assert (tmp_path / "e" / "good.png").exists()  # the evaluation went on to the other image


# ------------------------------------------------------------------------------------- real processes
@pytest.mark.parametrize(
    "template",
    [
        ["sr", "@good", "OUT/o.png", "--model", "@embed"],
        ["degrade", "@hr", "OUT/o.png", "--params", "@resize_scale"],
        ["sr", "@good", "OUT/o.png", "--model", "@net", "--device", "cuda"],
    ],
    ids=["model-embed", "params-resize", "device-cuda"],
)
def test_a_real_process_exits_2_with_one_line_under_a_memory_cap(corpus, tmp_path, template):
    """The same contract from a fresh `python -m savl`, its address space capped at 6 GB (torch alone maps about
    3 GB), so what the exit code and stderr say is what a shell sees."""
    out = tmp_path / "out"
    out.mkdir()
    argv = _argv(template, corpus, out)
    if template[-1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "savl", *argv], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=env, preexec_fn=cap,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("savl: error:"), proc.stderr[-2000:]
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------------------- the bounds
def test_every_shipped_profile_is_within_the_bounds():
    """The bounds must never refuse the library's own models: every architecture at every profile passes."""
    import dataclasses

    from savl.models.registry import ARCHITECTURES
    from savl.models.validate import check_config

    for name, (_, config_cls) in ARCHITECTURES.items():
        for profile in ("smoke", "book", "paper"):
            make = getattr(config_cls, profile, config_cls)
            values = json.loads(json.dumps(dataclasses.asdict(make())))
            check_config(config_cls, values, f"{name} {profile}")


@pytest.mark.slow
def test_the_largest_models_the_bounds_allow_stay_near_a_gigabyte():
    """Every size field at its bound at once, built on the meta device (nothing allocated) and counted: the
    bounds of savl.models.validate keep any model file to the order of a gigabyte of weights and buffers."""
    from savl.models.decoder import Decoder, DecoderConfig
    from savl.models.discriminator import DiscriminatorConfig, build_discriminator
    from savl.models.encoder import AmortizedEncoder, EncoderConfig
    from savl.models.srnet import DARHAGNet, SRNetConfig
    from savl.models.validate import BOUNDS, MAX_BLOCKS, MAX_ENCODER_WIDTH, MAX_LEVELS, check_config

    top = {k: hi for k, (_, hi) in BOUNDS.items()}
    levels = MAX_LEVELS
    enc = EncoderConfig(
        in_channels=top["in_channels"], code_dim=top["code_dim"], base=MAX_ENCODER_WIDTH // 16,
        multipliers=(16,) * levels, blocks_per_level=top["blocks_per_level"], groups=1, split=top["split"],
        reduction=1,
    )  # fmt: skip
    per_group = int(top["depths"])
    sr = SRNetConfig(
        embed_dim=top["embed_dim"], depths=(per_group,) * (MAX_BLOCKS // per_group), heads=top["heads"],
        window=top["window"], mlp_ratio=top["mlp_ratio"], compress=1, squeeze=1, overlap=top["overlap"],
        upscale=top["upscale"], num_feat=top["num_feat"], dsca_channel_hidden=top["dsca_channel_hidden"],
        dsca_spatial_hidden=top["dsca_spatial_hidden"], encoder=enc,
    )  # fmt: skip
    dec = DecoderConfig(
        in_channels=top["in_channels"], code_dim=top["code_dim"], channels=top["channels"],
        num_blocks=top["num_blocks"], growth=top["growth"], scale=top["scale"], blur_size=top["blur_size"],
    )  # fmt: skip
    import dataclasses

    for cls, cfg in ((SRNetConfig, sr), (DecoderConfig, dec)):
        check_config(cls, json.loads(json.dumps(dataclasses.asdict(cfg))), "worst case")  # allowed by the bounds

    def gigabytes(module) -> float:
        return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()]) / 1e9

    with torch.device("meta"):
        sizes = {
            "srnet": gigabytes(DARHAGNet(sr)),
            "encoder": gigabytes(AmortizedEncoder(enc)),
            "decoder": gigabytes(Decoder(dec)),
            "discriminator": gigabytes(build_discriminator(DiscriminatorConfig(in_ch=4, base=int(top["base"])))),
        }
    assert sizes["srnet"] < 2.0 and sizes["encoder"] + sizes["decoder"] < 1.0 and sizes["discriminator"] < 0.5, sizes


# ---------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch, capsys):
    """Building the parser imports the training code and torch (seconds): Ctrl-C there was a traceback."""
    import savl.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(savl.cli, "build_parser", interrupted)
    try:
        rc = savl.cli.main(["sr", "a.png", "b.png", "--model", "m"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped savl.cli.main (a traceback)")
    assert rc == 130
    assert capsys.readouterr().err == "savl: interrupted\n"


def test_ctrl_c_while_python_loads_the_command_is_one_line(monkeypatch, capsys):
    """`python -m savl` interrupted while it imports savl.cli: one line and exit code 130, no traceback."""
    import runpy
    import types

    class Loading(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "savl.cli", Loading("savl.cli"))
    monkeypatch.delitem(sys.modules, "savl.__main__", raising=False)
    with pytest.raises(SystemExit) as stop:
        try:
            runpy.run_module("savl", run_name="__main__")
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped python -m savl (a traceback)")
    assert stop.value.code == 130 and capsys.readouterr().err == "savl: interrupted\n"
