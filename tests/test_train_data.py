"""Training on the paper's data layout: configs/paper fail in one line without DF2K + OST; on a tiny generated
tree (prepared by `savl data prepare`) they train, streaming from DataLoader workers, and resume bit-exactly;
DDP ranks read disjoint shards whose union is the single-process batch (world sizes 1, 2, 3); validation on a
paired real set matches scikit-image; the process-group backend is NCCL on CUDA and gloo on CPU."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from savl.cli import main
from savl.data import prepare
from savl.data.hr_files import DATA_ENV
from savl.train import distributed, load_config, train
from savl.train.data import BatchSource

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"


def _png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _fake_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for rel, (h, w) in {
        "DIV2K/DIV2K_train_HR/0001.png": (70, 90),
        "Flickr2K/Flickr2K/Flickr2K_HR/000001.png": (80, 56),
        "OST/OutdoorSceneTrain_v2/sky/sky_0001.png": (50, 60),
    }.items():
        _png(root / rel, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    prepare.prepare_paper_data(root, crop=48, step=24, shortest_edge=40)
    return root


def test_paper_config_without_the_data_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nothing"))
    assert main(["train", str(PAPER / "stage1.yaml"), "--set", f"output={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "DF2K_OST_sub/meta_info.txt: not found under" in err[0]
    assert "`savl data download DIV2K" in err[0] and "`savl data download OST" in err[0]
    assert "then `savl data prepare" in err[0]
    # failed before anything was built or written (the run folder holds at most its released lock)
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def _paper_smoke(tmp_path, *extra):
    over = ["profile=smoke", "init_from=null", f"output={tmp_path / 'runs'}", "progress=none", "log_every=1"]
    over += ["workers=1", "data.pool_size=4", "val_every=null", "threads=1", *extra]
    return load_config(PAPER / "stage1.yaml", over)


@pytest.mark.slow
def test_paper_config_streams_the_prepared_tree_and_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(_fake_tree(tmp_path / "data")))
    straight = train(_paper_smoke(tmp_path, "name=straight", "schedule.iterations=4", "checkpoint_every=2"))
    assert [r["step"] for r in straight.metrics] == [1, 2, 3, 4]
    first = train(_paper_smoke(tmp_path, "name=cut", "schedule.iterations=2", "checkpoint_every=2"))
    resumed = train(_paper_smoke(tmp_path, "name=cut", "schedule.iterations=4", "checkpoint_every=2"), resume=True)
    assert resumed.path == first.path
    for name in ("srnet", "savl"):
        a = load_file(str(resumed.final / f"{name}.safetensors"))
        b = load_file(str(straight.final / f"{name}.safetensors"))
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {len(different)} tensors differ, first {different[0]}"
    skip = {"images_per_s", "s_per_step", "cpu_s_per_step", "val_psnr"}
    strip = lambda r: {k: v for k, v in r.items() if k not in skip}  # noqa: E731
    assert [strip(r) for r in resumed.metrics] == [strip(r) for r in straight.metrics]


def _coded_tree(folder: Path, n: int) -> list[Path]:
    """n constant images whose value is their index: a patch tells which file it came from."""
    files = []
    for i in range(n):
        f = folder / f"{i:02d}.png"
        _png(f, np.full((40, 40, 3), 10 * i, np.uint8))
        files.append(f)
    return files


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_read_disjoint_shards_that_make_up_the_global_batch(tmp_path, world):
    files = _coded_tree(tmp_path / "hr", 12)
    cfg = load_config(None, ["profile=smoke", "batch=6", "data.source=hr_folder", f"data.root={tmp_path / 'hr'}"])

    def read(rank, start=0, steps=4):
        src = BatchSource(cfg, rank, world, torch.device("cpu"), start_step=start, files=files)
        out = []
        for _ in range(steps):
            hr = next(src._iter)["hr"]
            out.append([int(round(float(x.mean()) * 255 / 10)) for x in hr])
        return out

    per_rank = [read(r) for r in range(world)]
    single = read(0, steps=4) if world == 1 else None
    # 12 files, 6 a step: steps 0-1 are epoch 0, steps 2-3 epoch 1
    for epoch in (0, 1):
        shards = [[i for t in (2 * epoch, 2 * epoch + 1) for i in per_rank[r][t]] for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(12))  # together: the whole list, once
        for a in range(world):
            for b in range(a + 1, world):
                assert not set(shards[a]) & set(shards[b])
    # the global batch of a step does not depend on the number of ranks (position t*batch ... t*batch + 5)
    reference = BatchSource(cfg.model_copy(update={"batch": 6}), 0, 1, torch.device("cpu"), files=files)
    for t in range(4):
        glob = [int(round(float(x.mean()) * 255 / 10)) for x in next(reference._iter)["hr"]]
        assert sorted(i for r in range(world) for i in per_rank[r][t]) == sorted(glob)
    if single is not None:
        assert single == per_rank[0]
    # resuming at step 3 reads what step 3 read
    assert read(world - 1, start=3, steps=1)[0] == per_rank[world - 1][3]


@pytest.mark.slow
def test_validation_on_a_paired_real_set_matches_skimage(tmp_path):
    from skimage.metrics import peak_signal_noise_ratio

    from savl.imresize import imresize
    from savl.io import read_image, write_image

    rng = np.random.default_rng(1)
    hr_dir = tmp_path / "hr_train"
    _png(hr_dir / "a.png", rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    real = tmp_path / "real"  # the lr/ + hr/ layout `savl eval` detects; HR 56x44 -> LR 14x11
    (real / "hr").mkdir(parents=True)
    (real / "lr").mkdir()
    for name, (h, w) in {"p1": (44, 56), "p2": (40, 40)}.items():
        hr = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h))
        write_image(real / "hr" / f"{name}.png", hr)
        write_image(real / "lr" / f"{name}.png", imresize(read_image(real / "hr" / f"{name}.png"), scale=0.25))
    over = ["profile=smoke", "schedule.iterations=2", f"output={tmp_path / 'runs'}", "progress=none"]
    over += ["data.source=hr_folder", f"data.root={hr_dir}", f"data.val_data={real}", "checkpoint_every=2"]
    run = train(load_config(ROOT / "configs" / "smoke" / "stage1.yaml", over))
    assert not (run.path / "valset").exists()  # no synthetic set drawn
    scores = []
    size = run.config.data.val_size  # 32: centre crops of 32 HR / 8 LR pixels
    for name in ("p1", "p2"):
        sr = read_image(run.path / "samples" / "step_000002" / f"{name}.png").double().numpy() * 255
        hr = read_image(real / "hr" / f"{name}.png").double().numpy() * 255
        lh, lw = hr.shape[1] // 4, hr.shape[2] // 4
        top, left = (lh - size // 4) // 2 * 4, (lw - size // 4) // 2 * 4
        hr = hr[:, top : top + size, left : left + size]
        assert sr.shape == hr.shape
        y = lambda a: 16 + (65.481 * a[0] + 128.553 * a[1] + 24.966 * a[2]) / 255  # noqa: E731
        scores.append(peak_signal_noise_ratio(y(hr)[4:-4, 4:-4], y(sr)[4:-4, 4:-4], data_range=255))
    assert run.metrics[-1]["val_psnr"] == pytest.approx(np.mean(scores), abs=1e-3)


def test_missing_real_validation_set_names_its_download(tmp_path, monkeypatch):
    from savl.errors import DataError
    from savl.train.data import real_validation_set

    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    cfg = load_config(None, ["profile=smoke", "data.val_data=RealSR"])
    with pytest.raises(DataError, match=r"^data.val_data: RealSR: not found under .*`savl data download RealSR"):
        real_validation_set(cfg)


@pytest.mark.parametrize(
    "device, cuda, backend", [("cuda", True, "nccl"), ("cpu", True, "gloo"), ("cpu", False, "gloo")]
)
def test_process_group_backend_follows_the_device(monkeypatch, device, cuda, backend):
    chosen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.setdefault("cuda_device", d))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: chosen.setdefault("backend", backend))
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    info = distributed.setup(device)
    assert chosen["backend"] == backend == distributed.backend_for(info.device)
    assert (info.rank, info.world) == (1, 2)
    if device == "cuda":
        assert info.device == torch.device("cuda", 1) == chosen["cuda_device"]  # LOCAL_RANK's GPU
    else:
        assert info.device.type == "cpu" and "cuda_device" not in chosen
