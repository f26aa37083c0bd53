"""Write what ``predict`` produces: the HR image and every side output as PNG (Pro-PULSE Sec. III-B)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from lit_propulse.core.images import save_image


class SidePredictionWriter(BasePredictionWriter):
    """Writes ``<output_dir>/<name>.png`` (final HR), ``<name>_r<R>.png`` per side output and ``<name>_lr.png``.

    Args:
        output_dir: where to write (created).
        save_lr: also write the LR input.
    """

    def __init__(self, output_dir: str, save_lr: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.save_lr = output_dir, save_lr

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        for i, name in enumerate(prediction["name"]):
            stem = os.path.splitext(os.path.basename(str(name)))[0]
            save_image(prediction["image"][i], os.path.join(self.output_dir, f"{stem}.png"))
            for r, img in prediction["side_images"].items():
                save_image(img[i], os.path.join(self.output_dir, f"{stem}_r{r}.png"))
            if self.save_lr:
                save_image(prediction["lr"][i], os.path.join(self.output_dir, f"{stem}_lr.png"))
