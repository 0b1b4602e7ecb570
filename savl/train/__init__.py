"""Training: strict YAML configs, the staged loop, checkpoints and exact resume, DDP, and `get_or_train`."""

from savl.train.config import TrainConfig, config_hash, load_config
from savl.train.loop import NonFiniteLossError, get_or_train, train
from savl.train.run import Run

__all__ = ["NonFiniteLossError", "Run", "TrainConfig", "config_hash", "get_or_train", "load_config", "train"]
