"""Training: the trainer and its config."""

from vaebench.training.callbacks import Callback
from vaebench.training.config import TrainerConfig
from vaebench.training.trainer import Trainer, evaluate, resolve_device

__all__ = ["Callback", "Trainer", "TrainerConfig", "evaluate", "resolve_device"]
