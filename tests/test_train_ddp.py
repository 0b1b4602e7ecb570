"""DDP: torchrun with two gloo processes on CPU trains a smoke stage; the world-size check."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from savl.errors import ConfigError
from savl.train import distributed

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "savl.train.command"]
    cmd += [str(ROOT / "configs/smoke/stage1.yaml"), "--set", f"output={tmp_path}", "--set", "schedule.iterations=3"]
    cmd += ["--set", "data.names=[astronaut]", "--set", "progress=none", "--set", "data.pool_size=4"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    env = json.loads((run_dir / "env.json").read_text())
    assert env["world_size"] == 2
    # one log (rank 0), one line per step; the loop's first-step check (every trainable parameter has a
    # gradient, as find_unused_parameters=False requires) raised nothing on either rank
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    ck = run_dir / "checkpoints" / "step_000003"
    assert (ck / "rank0.pt").is_file() and (ck / "rank1.pt").is_file()
    r0 = torch.load(ck / "rank0.pt", weights_only=True)
    r1 = torch.load(ck / "rank1.pt", weights_only=True)
    # ranks draw from different streams (DistributedSampler-style seeding), so their degradations differ
    assert not torch.equal(r0["data"]["generator"], r1["data"]["generator"])
    assert not torch.equal(r0["data"]["pool"]["lr"], r1["data"]["pool"]["lr"])
    assert out.stdout.count("finished") == 1  # rank 0 talks


def test_world_size_must_fit_the_gpus(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="4 processes on this node but it has 2 CUDA device") as e:
        distributed.setup("cuda")
    assert "--nproc_per_node=2" in str(e.value) and "\n" not in str(e.value)


def test_cuda_requested_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        distributed.resolve_device("cuda")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = distributed.setup("cpu")  # no torchrun environment: a single process, no process group
    assert (info.world, info.rank, info.enabled, info.device.type) == (1, 0, False, "cpu")
