"""savl.book: profile and device checks, seeding, the environment banner and the project's folders."""

import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import savl
from savl.book import (
    PROFILES,
    by_profile,
    check_profile,
    configs_dir,
    environment,
    git_commit,
    models_dir,
    print_environment,
    repo_root,
    resolve_device,
    results_dir,
    runs_dir,
    seed_everything,
)
from savl.errors import ConfigError, SavlError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("profile", ["smoke", "book", "paper"])
def test_check_profile_accepts_the_three_profiles(profile):
    assert check_profile(profile) == profile


@pytest.mark.parametrize("bad", ["Book", "full", "", None, 1])
def test_check_profile_rejects_anything_else_in_one_line(bad):
    with pytest.raises(ConfigError) as info:
        check_profile(bad)
    msg = str(info.value)
    assert "\n" not in msg and "smoke, book, paper" in msg
    assert isinstance(info.value, SavlError)


def test_by_profile_falls_back_to_the_next_cheaper_value():
    assert PROFILES == ("smoke", "book", "paper")
    assert by_profile("smoke", smoke=1, book=2, paper=3) == 1
    assert by_profile("book", smoke=1, book=2, paper=3) == 2
    assert by_profile("paper", smoke=1, book=2) == 2
    assert by_profile("paper", smoke=1) == 1
    with pytest.raises(ConfigError):
        by_profile("smoke", book=2)  # nothing at or below smoke
    with pytest.raises(ConfigError):
        by_profile("book", boook=2)  # typo in a profile name
    with pytest.raises(ConfigError):
        by_profile("huge", book=2)


def test_resolve_device_cpu_and_auto_without_cuda(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_resolve_device_auto_prefers_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("bad", ["gpu0", "cuda:x", "tpu"])
def test_resolve_device_rejects_unknown_names_in_one_line(bad):
    with pytest.raises(ConfigError) as info:
        resolve_device(bad)
    assert "\n" not in str(info.value) and repr(bad) in str(info.value)


def test_seed_everything_matches_fresh_generators():
    # Independent references: a fresh generator of each library seeded with the same value.
    seed_everything(1234)
    got = (random.random(), np.random.rand(3), torch.rand(3))  # noqa: NPY002
    assert got[0] == random.Random(1234).random()
    np.testing.assert_array_equal(got[1], np.random.RandomState(1234).rand(3))
    torch.testing.assert_close(got[2], torch.rand(3, generator=torch.Generator().manual_seed(1234)))
    for bad in (-1, 2**32, 1.5, True, "0"):
        with pytest.raises(ConfigError):
            seed_everything(bad)


def test_git_commit_matches_git_and_is_unknown_outside_a_checkout(tmp_path, monkeypatch):
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("this copy of the project is not a git checkout")
    got = git_commit()
    assert got.removesuffix("+dirty") == head and len(head) == 40
    # Outside a checkout (git must not search upwards past tmp_path) and without git at all.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit(tmp_path) == "unknown"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_commit() == "unknown"


def test_print_environment_prints_and_seeds(capsys):
    info = print_environment(seed=7, device="cpu")
    drawn = torch.rand(2)
    out = capsys.readouterr().out
    torch.testing.assert_close(drawn, torch.rand(2, generator=torch.Generator().manual_seed(7)))
    assert info["savl"] == savl.__version__ and info["torch"] == torch.__version__
    assert info["device"] == "cpu" and info["seed"] == 7
    for key in ("savl", "commit", "torch", "device", "seed"):
        line = next(ln for ln in out.splitlines() if ln.split(":")[0].strip() == key)
        assert line.split(":", 1)[1].strip() == str(info[key])
    assert environment(7, "cpu")["commit"] == info["commit"]


def test_folders_resolve_from_the_repository_root_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("SAVL_RUNS", raising=False)
    monkeypatch.delenv("SAVL_MODELS", raising=False)
    monkeypatch.chdir(tmp_path)  # a chapter may run from book/ or from the root; neither may matter
    assert repo_root() == REPO and (REPO / "pyproject.toml").is_file()
    assert runs_dir() == REPO / "runs" and models_dir() == REPO / "models"
    assert results_dir() == REPO / "results"
    assert configs_dir() == REPO / "configs" and configs_dir("book") == REPO / "configs" / "book"
    with pytest.raises(ConfigError):
        configs_dir("Book")


def test_environment_variables_move_runs_and_models_relative_to_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAVL_RUNS", "elsewhere/runs")
    monkeypatch.setenv("SAVL_MODELS", str(tmp_path / "zoo"))
    assert runs_dir() == REPO / "elsewhere" / "runs"  # relative: from the root, not from the cwd
    assert models_dir() == tmp_path / "zoo"
    monkeypatch.setenv("SAVL_RUNS", "  ")  # blank counts as unset
    assert runs_dir() == REPO / "runs"


def test_markdown_table_rows_alignment_and_caption():
    from savl.book import markdown_table

    t = markdown_table(["a", "b"], [["x", 1.5], ["y", 2]], align="lr", caption="note")
    assert t.data == "| a | b |\n|---|---:|\n| x | 1.5 |\n| y | 2 |\n\nnote"
    with pytest.raises(ValueError, match="2 cells"):
        markdown_table(["a", "b", "c"], [["x", 1]])
    with pytest.raises(ValueError, match="align"):
        markdown_table(["a"], [], align="q")
