"""savl.provenance: CPU model, git commit and atomic writes shared by benchmarks, evaluate and training."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from savl import provenance
from savl.provenance import atomic_write_text, cpu_model, git_commit

REPO = Path(__file__).resolve().parents[1]


def test_git_commit_matches_git_and_is_unknown_outside_a_checkout(tmp_path, monkeypatch):
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("this copy of the project is not a git checkout")
    assert git_commit() == head and git_commit(REPO) == head and len(head) == 40
    assert git_commit(REPO, short=10) == head[:10]
    assert git_commit(REPO, dirty=True).removesuffix("+dirty") == head
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit(tmp_path) == "unknown"
    assert provenance.git_dirty(tmp_path) is None


def test_cpu_model_is_a_non_empty_string():
    cpu = cpu_model()
    assert isinstance(cpu, str) and cpu


def test_atomic_write_text_writes_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "result.json"
    atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n"
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_atomic_write_text_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text("old\n")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
