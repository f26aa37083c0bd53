"""Each stage's product as one file the next stage loads (G_ds -> gds.pt, E_W -> ew.pt, E_W+ -> ewplus.pt)."""

from __future__ import annotations

import os

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from lit_propulse.core.errors import DivergedError
from lit_propulse.core.weights import assert_finite
from lit_propulse.loggers import run_dir
from lit_propulse.runs import done_marker, mark_done


class StageExport(pl.Callback):
    """Call ``pl_module.export(path)`` at the end of training and with every checkpoint save; at the end
    of training also write :func:`lit_propulse.runs.done_marker` (the pipeline's and grid's "this stage
    finished" signal).

    Args:
        path: file to write; a relative path is inside the run directory (``trainer.default_root_dir``,
            whatever the logger).
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._exported_step: int | None = None  # the weights at one global step are written once

    def resolve(self, trainer: pl.Trainer) -> str:
        return self.path if os.path.isabs(self.path) else os.path.join(run_dir(trainer), self.path)

    @rank_zero_only
    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.resolve(trainer)
        assert_finite(pl_module.state_dict(), f"{path}: not written", DivergedError)  # a diverged run writes no export
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        pl_module.export(path)
        self._exported_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._export(trainer, pl_module)
        self._mark_done(trainer)

    @rank_zero_only
    def _mark_done(self, trainer: pl.Trainer) -> None:
        mark_done(self.resolve(trainer), f"global_step {trainer.global_step}")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint) -> None:
        # Lightning saves last.ckpt after on_train_end: the export of that step is already written
        if trainer.global_step != self._exported_step or not os.path.isfile(self.resolve(trainer)):
            self._export(trainer, pl_module)

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        marker = done_marker(self.resolve(trainer))
        if os.path.isfile(marker):
            os.remove(marker)  # training (again): not finished until on_train_end
