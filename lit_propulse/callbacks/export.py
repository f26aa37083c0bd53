"""Each stage's product as one file the next stage loads (G_ds -> gds.pt, E_W -> ew.pt, E_W+ -> ewplus.pt)."""
from __future__ import annotations

import os

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from lit_propulse.utils.logging import run_dir


class StageExport(pl.Callback):
    """Call ``pl_module.export(path)`` at the end of training and with every checkpoint save.

    Args:
        path: file to write; relative paths are inside the run directory.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def resolve(self, trainer: pl.Trainer) -> str:
        return self.path if os.path.isabs(self.path) else os.path.join(run_dir(trainer), self.path)

    @rank_zero_only
    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.resolve(trainer)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        pl_module.export(path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._export(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint) -> None:
        self._export(trainer, pl_module)
