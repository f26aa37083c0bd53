"""What a person looks at: at each validation, a panel of the same validation images (Pro-PULSE
Sec. IV figures: LR | every side output | HR | GT), as PNG in the run directory and to the loggers."""

from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from lit_propulse.core.images import rows_grid, save_image
from lit_propulse.loggers import ensure_dir, log_image, run_dir


class ValidationImages(pl.Callback):
    """Args:
    num_images: validation images per panel (taken from the first validation batches).
    size: side at which every column is shown (nearest-neighbour for the small ones); None = the
        largest column's size.
    """

    def __init__(self, num_images: int = 8, size: int | None = None) -> None:
        super().__init__()
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        self.num_images, self.size = num_images, size
        self._batch = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            self._batch = batch

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._batch is None or trainer.sanity_checking or not hasattr(pl_module, "visual_columns"):
            return
        batch = self._batch
        n = min(self.num_images, len(batch))
        sub = type(batch)(
            hr=batch.hr[:n], lr=batch.lr[:n], index=batch.index[:n], name=list(batch.name[:n]), attrs=None if batch.attrs is None else batch.attrs[:n]
        )
        with torch.no_grad():
            cols = pl_module.visual_columns(sub)
        size = self.size or max(t.shape[-1] for _, t in cols)
        grid = rows_grid([t for _, t in cols], size)
        out = ensure_dir(os.path.join(run_dir(trainer), "images"))
        save_image(grid, os.path.join(out, f"val_step{trainer.global_step:07d}.png"))
        save_image(grid, os.path.join(out, "val_latest.png"))
        with open(os.path.join(out, "columns.txt"), "w") as f:
            f.write(" | ".join(name for name, _ in cols) + "\n")
        log_image(trainer, "val/panel", grid, trainer.global_step)
        self._batch = None
