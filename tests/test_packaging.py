"""The wheel works outside the repository: the dataset catalog and the run configs ship inside it."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the sources, unpacked as pip would install it, far from the repository."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT / "savl", src / "savl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp.glob("savl-*.whl")
    site = tmp / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return wheel, site, elsewhere


def _savl(installed, *args):
    _, site, cwd = installed
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    env.pop("SAVL_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "savl", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_wheel_carries_catalog_and_configs(installed):
    names = zipfile.ZipFile(installed[0]).namelist()
    assert "savl/data/catalog.yaml" in names
    assert {f"savl/configs/{p}/stage1.yaml" for p in ("smoke", "book", "paper")} <= set(names)
    where = _savl(installed, "--version")
    assert where.returncode == 0
    probe = subprocess.run(
        [sys.executable, "-c", "import savl; print(savl.__file__)"],
        cwd=installed[2],
        env={**os.environ, "PYTHONPATH": str(installed[1])},
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip().startswith(str(installed[1]))  # the unpacked wheel, not the repository


@pytest.mark.slow
def test_installed_savl_lists_datasets_and_trains_a_packaged_config(installed):
    listed = _savl(installed, "data", "list")
    assert listed.returncode == 0, listed.stderr
    assert "DIV2K" in listed.stdout.split()
    run = _savl(installed, "train", "smoke/representation", "--set", "output=runs", "--set", "schedule.iterations=1")
    assert run.returncode == 0, run.stderr[-2000:]
    (folder,) = (installed[2] / "runs").iterdir()
    assert (folder / "metrics.jsonl").exists()
