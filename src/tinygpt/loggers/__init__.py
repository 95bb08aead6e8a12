"""Loggers a training run can report to besides metrics.jsonl: `--logger tensorboard|wandb`.

Each is an optional extra, imported only when chosen; a missing package is a one-line error
that says how to install it, given before a new run's directory is made. Under torchrun only
rank 0 logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinygpt.errors import require_package

if TYPE_CHECKING:
    from tinygpt.train.loop import Trainer
    from tinygpt.train.observers import TrainingObserver

# the logger's name -> (the module it needs, the pip extra that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def require_logger_package(logger: str) -> None:
    """Refuse a logger whose package is not installed, saying how to install it."""
    if logger in PACKAGES:
        module, extra = PACKAGES[logger]
        require_package(module, extra, f"--logger {logger}", ", or drop --logger")


def open_loggers(trainer: Trainer) -> list[TrainingObserver]:
    """The loggers `trainer.config.train.logger` names, opened on this run; none on the ranks
    of a torchrun job other than 0."""
    logger = trainer.config.train.logger
    if logger == "none" or not trainer.context.is_main:
        return []
    require_logger_package(logger)
    if logger == "tensorboard":
        from tinygpt.loggers.tensorboard_logger import TensorBoardLogger

        return [TensorBoardLogger(trainer)]
    from tinygpt.loggers.wandb_logger import WandbLogger

    return [WandbLogger(trainer)]
