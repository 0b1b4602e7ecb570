"""`init_from` a model file: a stage starts its SR net from a shipped model's weights (e.g. the zoo's stage-2
DA-RHAG for the stage-3 GAN run). The path is read from the config's folder, the run's hash follows the file's
content, the weights arrive unchanged, and a wrong file fails in one line."""

from __future__ import annotations

import pytest
import torch

from savl.errors import ConfigError, ModelFileError
from savl.models.io import save_model
from savl.train import load_config, train
from savl.train.config import config_hash, init_from_model_file, validate
from savl.train.stages import build_models

pytestmark = pytest.mark.usefixtures("one_thread")

GAN = """\
profile: smoke
stage: gan
init_from: {init}
ema: 0.9
losses: {{perceptual: 0.0, gan: 0.1}}
data: {{names: [astronaut], val_names: [chelsea], max_side: 160}}
schedule: {{iterations: 1}}
optimiser: {{lr: 1.0e-12}}
progress: none
val_every: null
"""


def _srnet(seed: int, **model) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_models(validate({"profile": "smoke", "stage": "frozen_l1", "model": model}))["srnet"]


def _zoo_file(tmp_path, seed: int = 1, **model):
    """A shipped-model layout: <tmp>/models/base/base.safetensors (+ .json), and a config folder beside it."""
    path = tmp_path / "models" / "base" / "base.safetensors"
    save_model(_srnet(seed, **model), path)
    (tmp_path / "configs").mkdir(exist_ok=True)
    return path


def _config(tmp_path, init="../models/base/base.safetensors", **over):
    cfg = tmp_path / "configs" / "gan.yaml"
    cfg.write_text(GAN.format(init=init))
    return load_config(cfg, [f"output={tmp_path / 'runs'}", *(f"{k}={v}" for k, v in over.items())])


def test_relative_path_is_read_from_the_config_folder_and_hashed_by_content(tmp_path):
    path = _zoo_file(tmp_path)
    cfg = _config(tmp_path)
    assert init_from_model_file(cfg) == path.resolve()
    first = config_hash(cfg)
    assert config_hash(_config(tmp_path)) == first  # the same file: the same run
    save_model(_srnet(seed=2), path)  # another model at the same path is another run
    assert config_hash(_config(tmp_path)) != first
    # a config or a run folder is not a model file
    assert init_from_model_file(validate({"profile": "smoke", "stage": "gan", "init_from": "stage2.yaml"})) is None
    # a missing file still resolves where the config says it lies, so the error names that place
    missing = _config(tmp_path, init="../models/other/other.safetensors")
    assert init_from_model_file(missing) == (tmp_path / "models" / "other" / "other.safetensors").resolve()


def test_the_stage_starts_from_the_file_weights(tmp_path):
    path = _zoo_file(tmp_path, seed=1)
    run = train(_config(tmp_path), fresh=True)
    got = run.load_srnet(ema=False).state_dict()
    want = _srnet(seed=1).state_dict()  # the file's weights, rebuilt from the same seed
    fresh = _srnet(seed=0).state_dict()  # what the run would start from without init_from (its seed is 0)
    moved = max(float((got[k] - want[k]).abs().max()) for k in want if want[k].is_floating_point())
    assert moved < 1e-8  # one Adam step of lr 1e-12 moves a weight by about 1e-12
    assert any(not torch.allclose(fresh[k], want[k]) for k in want if want[k].is_floating_point())
    assert path.is_file() and run.has("srnet_ema")


def test_a_wrong_or_missing_file_fails_in_one_line(tmp_path):
    _zoo_file(tmp_path, channel_guidance=False, spatial_guidance=False)  # plain HAT weights
    with pytest.raises(ModelFileError, match="base.safetensors") as err:
        train(_config(tmp_path), fresh=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"other\.safetensors: init_from names no such model file"):
        train(_config(tmp_path, init="../models/other/other.safetensors"), fresh=True)
    with pytest.raises(ConfigError, match="stage representation has none"):
        train(_config(tmp_path, stage="representation", **{"losses.gan": 0.1}), fresh=True)
