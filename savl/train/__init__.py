"""Training (DESIGN §2, §5.1, §6): strict configs, the staged loop, checkpoints/resume, DDP, get_or_train."""

from savl.train.config import TrainConfig, config_hash, load_config
from savl.train.loop import NonFiniteLossError, train
from savl.train.run import Run, get_or_train

__all__ = ["NonFiniteLossError", "Run", "TrainConfig", "config_hash", "get_or_train", "load_config", "train"]
