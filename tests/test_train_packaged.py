"""`savl train` outside the repository: configs shipped in the package (by name), training without the
optional TensorBoard, and an env.json even when torchvision does not match torch."""

import builtins
import json
import sys
import warnings

import pytest
import torch

from savl.cli import main
from savl.errors import ConfigError
from savl.train.command import packaged_configs, resolve_config
from savl.train.records import MetricsLog, environment


def _break_torchvision(monkeypatch):
    """Make `import torchvision` fail as a torchvision built for another torch does (RuntimeError)."""
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *args, **kwargs)

    for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, key)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_packaged_config_names_resolve_to_the_shipped_files(tmp_path, monkeypatch):
    names = packaged_configs()
    assert {"book/representation", "smoke/stage1", "paper/stage3", "ablations/club"} <= set(names)
    monkeypatch.chdir(tmp_path)  # away from the repository, where configs/ does not exist
    path = resolve_config("book/representation")
    assert path.is_file() and path.parts[-3:] == ("configs", "book", "representation.yaml")
    assert resolve_config("configs/smoke/stage2.yaml") == resolve_config("smoke/stage2")
    (tmp_path / "mine.yaml").write_text("profile: smoke\n")
    assert resolve_config("mine.yaml").resolve() == (tmp_path / "mine.yaml").resolve()  # a file wins
    with pytest.raises(ConfigError, match="nope/stage1: no such config file"):
        resolve_config("nope/stage1")


def test_train_list_prints_packaged_configs(capsys):
    assert main(["train", "--list"]) == 0
    assert "book/representation" in capsys.readouterr().out.split()


def test_metrics_log_without_tensorboard_warns_and_writes_jsonl(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.warns(UserWarning, match="TensorBoard is not installed"):
        log = MetricsLog(tmp_path, tensorboard=True)
    log.write({"step": 1, "loss": 0.5})
    log.image("x", torch.zeros(3, 4, 4), 1)
    log.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 0.5}
    assert not (tmp_path / "tb").exists()


def test_environment_survives_a_mismatched_torchvision(monkeypatch):
    _break_torchvision(monkeypatch)
    env = environment(torch.device("cpu"), 1)
    assert env["torchvision"].startswith("unusable (RuntimeError") and env["torch"] == torch.__version__


@pytest.mark.usefixtures("one_thread")
def test_savl_train_by_name_from_another_folder_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    _break_torchvision(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["train", "smoke/representation", "--set", "output=runs", "--set", "schedule.iterations=2"])
    assert code == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((run / "env.json").read_text())["torchvision"].startswith("unusable")
    assert not (run / "tb").exists()
