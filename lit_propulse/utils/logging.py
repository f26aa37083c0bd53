"""Logging helpers shared by modules and callbacks."""
from __future__ import annotations

import os

import pytorch_lightning as pl
from torch import Tensor

from lit_propulse.utils.images import to_uint8


def run_dir(trainer: pl.Trainer) -> str:
    """Where a run writes its files: the logger's versioned directory, else ``default_root_dir``."""
    d = trainer.log_dir if trainer.loggers else None
    return d or trainer.default_root_dir


def log_image(trainer: pl.Trainer, key: str, image: Tensor, step: int) -> None:
    """Send a [3, H, W] image in [-1, 1] to every active logger that takes images (TensorBoard, W&B and
    their subclasses, e.g. :class:`lit_propulse.loggers.AutoWandbLogger`), as uint8: W&B saves a float
    image in [0, 1] black."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    img = to_uint8(image).cpu()  # [3, H, W] uint8
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, img, global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[img.permute(1, 2, 0).numpy()], step=step)  # [H, W, 3]


def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
