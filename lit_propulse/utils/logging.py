"""Logging helpers shared by modules and callbacks."""
from __future__ import annotations

import os

import pytorch_lightning as pl
from torch import Tensor

from lit_propulse.utils.images import to_uint8


def run_dir(trainer: pl.Trainer) -> str:
    """Where a run writes its files: the first logger's directory (``log_dir`` of CSV/TensorBoard,
    ``save_dir`` of others, as ``Trainer.log_dir``), else ``default_root_dir``.

    Unlike ``Trainer.log_dir`` this does not broadcast, so rank-zero-only code may call it (a
    collective on one rank only hangs DDP)."""
    if trainer.loggers:
        logger = trainer.loggers[0]
        d = logger.log_dir if type(logger).__name__ in ("CSVLogger", "TensorBoardLogger") else getattr(logger, "save_dir", None)
        if d:
            return d
    return trainer.default_root_dir


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
