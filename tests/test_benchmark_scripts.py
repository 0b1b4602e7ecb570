"""benchmarks/step_versus_commit.py: a reference that is not a commit is one line and exit 2; a training child
refuses to time a tree whose `savl` it did not import (the comparison would time this checkout twice).
benchmarks/speed_cpu.py runs end to end at its smallest."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "step_versus_commit.py"


def test_a_reference_that_is_not_a_commit_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--reference", "no-such-revision-x", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"--reference no-such-revision-x: not a commit of {ROOT}"]
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_child_refuses_a_tree_whose_savl_it_did_not_import(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import step_versus_commit as svc
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    # tmp_path holds no savl package, so the child imports the installed one and must stop before training
    proc = subprocess.run(
        [sys.executable, "-c", svc.CHILD, str(tmp_path), "representation.yaml", "1", "0", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"not from {tmp_path}" in proc.stderr


@pytest.mark.slow
def test_speed_cpu_runs_end_to_end_at_its_smallest(tmp_path):
    """benchmarks/speed_cpu.py against today's training code (it once unpacked three values from a batch
    source that returns four, and failed): one round of one step per variant, one thread."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed_cpu.py"), "--threads", "1", "--rounds", "1", "--steps", "1",
         "--rounds-multi", "1", "--out", str(tmp_path), "--name", "smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads((tmp_path / "smoke.json").read_text())
    (steps,) = rep["steps"]
    assert steps["threads"] == 1
    md = (tmp_path / "smoke.md").read_text()
    assert "Split of a baseline step" in md and "| baseline |" in md


def test_too_few_steps_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--reference", "HEAD", "--steps", "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "--steps must be at least 2" in out.stderr
    assert not list(tmp_path.iterdir())
