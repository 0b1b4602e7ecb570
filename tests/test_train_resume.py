"""Exact resume: a run killed with SIGKILL right after its step-10 checkpoint and resumed to 20
steps ends bit-identical to 20 uninterrupted steps (weights, logged losses), pool and RNG streams included."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from savl.train import load_config, train
from savl.train.loop import HANG_ENV

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "smoke" / "stage1.yaml"
SETTINGS = ["schedule.iterations=20", "checkpoint_every=10", "data.pool_size=4", "data.names=[astronaut]"]
SETTINGS += ["progress=none", "val_every=5", "log_every=1"]


def _command(output: Path, *extra: str) -> list[str]:
    sets = [a for s in [*SETTINGS, f"output={output}"] for a in ("--set", s)]
    return [sys.executable, "-m", "savl.train.command", str(CONFIG), *sets, *extra]


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path):
    interrupted = tmp_path / "interrupted"
    env = dict(os.environ, **{HANG_ENV: "10"})
    proc = subprocess.Popen(_command(interrupted), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not list(interrupted.glob("*/checkpoints/step_000010/state.pt")):
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no step-10 checkpoint within 120 s"
            time.sleep(0.2)
        time.sleep(0.5)  # the process now sleeps inside the hook; kill it there
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = interrupted.iterdir()
    assert not (run_dir / "done.json").exists()

    resumed = subprocess.run(_command(interrupted, "--resume"), cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    straight = train(load_config(CONFIG, [*SETTINGS, f"output={tmp_path / 'straight'}"]))
    for name in ("srnet", "savl"):
        a = load_file(str(run_dir / "final" / f"{name}.safetensors"))
        b = load_file(str(straight.final / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {len(different)} tensors differ, first {different[0]}"
    # the interrupted run's log was cut back to its checkpoint and continued: same losses at every step
    from savl.train.run import Run

    got, want = Run(run_dir).metrics, straight.metrics
    assert [r["step"] for r in got] == list(range(1, 21))
    skip = {"images_per_s", "s_per_step", "cpu_s_per_step"}  # timings
    for r, s in zip(got, want):
        assert {k: v for k, v in r.items() if k not in skip} == {k: v for k, v in s.items() if k not in skip}
