"""Training runs lose nothing: a run name is one folder (nothing outside it is ever deleted), a run folder has
one writer at a time, `--resume` never labels weights with fewer steps than they had, and broken checkpoint
records or output folders fail in one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from savl.cli import main
from savl.errors import ConfigError, ModelFileError
from savl.train import NonFiniteLossError, get_or_train, load_config, train
from savl.train.config import TrainConfig
from savl.train.loop import HANG_ENV
from savl.train.run import Run, RunLock, run_dir

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
REPRESENTATION = ROOT / "configs" / "smoke" / "representation.yaml"
FAST = ["data.names=[astronaut]", "progress=none", "val_every=2", "log_every=1", "checkpoint_every=2"]


def _fast(output: Path, *extra: str) -> TrainConfig:
    return load_config(REPRESENTATION, [*FAST, f"output={output}", "schedule.iterations=2", *extra])


def _one_line(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("savl: error:") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


# ------------------------------------------------------------------------------------------ 1. names
@pytest.mark.parametrize("name", [".", "..", "a/b", "../escape", "/abs", ".hidden", "", "x" * 129])
def test_run_name_must_be_one_folder(tmp_path, name):
    with pytest.raises(ConfigError, match="name"):
        load_config(REPRESENTATION, [f"output={tmp_path}", f"name={json.dumps(name)}"])


def test_init_from_chain_with_a_dot_name_deletes_nothing(tmp_path):
    """The chain: stage 2 names stage 1's config, whose `name` is '.' or '..'. Before the fix, training stage 1
    afresh called rmtree on runs/. (every other run) or runs/.. (the project)."""
    project = tmp_path / "project"
    runs = project / "runs"
    (runs / "other-run").mkdir(parents=True)
    (runs / "other-run" / "done.json").write_text("{}")
    (project / "notes.txt").write_text("keep me")
    for name in (".", ".."):
        stage1 = yaml.safe_load(REPRESENTATION.read_text()) | {"name": name}
        (project / "stage1.yaml").write_text(yaml.safe_dump(stage1))
        stage2 = {"profile": "smoke", "stage": "joint", "init_from": "stage1.yaml", "output": str(runs)}
        (project / "stage2.yaml").write_text(yaml.safe_dump(stage2))
        with pytest.raises(ConfigError, match="not a run folder name"):
            get_or_train(project / "stage2.yaml")
        assert (runs / "other-run" / "done.json").exists() and (project / "notes.txt").read_text() == "keep me"


def test_run_dir_checks_configs_built_without_validation(tmp_path):
    cfg = _fast(tmp_path)
    for bad in (".", "..", "a/../.."):
        unchecked = cfg.model_construct(**{**dict(cfg), "name": bad})  # bypasses the validators
        with pytest.raises(ConfigError, match="not a run folder name"):
            run_dir(unchecked)


def test_a_folder_that_is_not_a_run_is_never_cleared(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="not a savl run"):
        get_or_train(_fast(tmp_path, "name=photos"))
    assert (photos / "holiday.jpg").read_bytes() == b"precious"


def test_seed_out_of_range_is_one_line(tmp_path):
    for seed in ("-1", str(2**70)):
        with pytest.raises(ConfigError, match="seed"):
            _fast(tmp_path, f"seed={seed}")


# ------------------------------------------------------------------------------------------- 4. lock
def test_second_training_of_a_locked_run_fails_naming_the_holder(tmp_path, capsys):
    cfg = _fast(tmp_path, "name=busy")
    holder = RunLock(run_dir(cfg)).acquire()  # another open file description: flock treats it as another writer
    try:
        with pytest.raises(ConfigError, match=rf"in use by another training \(pid {os.getpid()} on "):
            train(cfg)
        assert not (tmp_path / "busy" / "config.yaml").exists()
        config = tmp_path / "busy.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        assert main(["train", str(config)]) == 2
        _one_line(capsys, "in use by another training", f"pid {os.getpid()}")
    finally:
        holder.release()
    run = train(cfg)  # free again
    assert run.finished and (run.path / ".lock").read_text() == ""


@pytest.mark.slow
def test_two_trainings_at_once_then_kill_9_releases_the_lock(tmp_path):
    """A real second process: the first hangs after its step-2 checkpoint (test hook), the second fails in one
    line naming the first's pid; after kill -9 of the first, --resume takes the lock and finishes."""
    settings = [*FAST, f"output={tmp_path}", "schedule.iterations=4", "name=shared"]
    command = [sys.executable, "-m", "savl", "train", str(REPRESENTATION)] + [a for s in settings for a in ("--set", s)]
    env = dict(os.environ, **{HANG_ENV: "2", "OMP_NUM_THREADS": "1"})
    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "shared" / "checkpoints" / "step_000002" / "state.pt").exists():
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no step-2 checkpoint within 180 s"
            time.sleep(0.2)
        second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by another training" in lines[0] and f"pid {first.pid}" in lines[0]
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    resumed = subprocess.run([*command, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert Run(tmp_path / "shared").done_record["step"] == 4


# ------------------------------------------------------------------------------------------ 5. resume
def test_resume_cannot_shorten_a_run(tmp_path):
    four = _fast(tmp_path, "schedule.iterations=4", "name=r")
    run = train(four)
    before = run.done_record
    weights = (run.final / "savl.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="has trained 4 steps already"):
        train(_fast(tmp_path, "schedule.iterations=2", "name=r"), resume=True)
    assert run.done_record == before and (run.final / "savl.safetensors").read_bytes() == weights
    assert Run(run.path).config.schedule.iterations == 4


def test_an_extension_is_unfinished_until_it_finishes(tmp_path):
    """Extending a finished 2-step run to 4 steps that fails at step 3: the folder must not still claim to be
    finished (its config already says 4 steps)."""
    run = train(_fast(tmp_path, "name=ext"))
    assert run.finished
    with pytest.raises(NonFiniteLossError, match="not finite"):
        train(_fast(tmp_path, "name=ext", "schedule.iterations=4", "debug.nan_at_step=3"), resume=True)
    assert not Run(run.path).finished


# ------------------------------------------------------------------------------ broken records, folders
def test_state_without_its_keys_is_one_line(tmp_path, capsys):
    cfg = _fast(tmp_path, "schedule.iterations=4", "name=s")
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    run = train(cfg)
    state = run.checkpoints / "step_000004" / "state.pt"
    torch.save({"step": 4}, state)
    with pytest.raises(ModelFileError, match=r"state\.pt: not a checkpoint of this run \(no world, optimiser\)"):
        train(cfg, resume=True)
    assert main(["train", str(config), "--resume"]) == 2
    _one_line(capsys, "state.pt", "no world")
    torch.save([1, 2, 3], state)
    assert main(["train", str(config), "--resume"]) == 2
    _one_line(capsys, "state.pt")


def test_unusable_output_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_fast(tmp_path / "unused").to_dict() | {"output": str(blocker / "runs")}))
    assert main(["train", str(config)]) == 2
    _one_line(capsys, "cannot create the run folder")


def test_corrupt_done_record_is_one_line(tmp_path):
    run = train(_fast(tmp_path, "name=d"))
    (run.path / "done.json").write_text("{truncated")
    with pytest.raises(ModelFileError, match="done.json: unreadable"):
        get_or_train(_fast(tmp_path, "name=d"))
    # Another run's broken record does not stop get_or_train from finding a finished run by its hash.
    good = train(_fast(tmp_path, "name=e", "seed=1"))
    assert get_or_train(_fast(tmp_path, "name=other", "seed=1")).path == good.path
