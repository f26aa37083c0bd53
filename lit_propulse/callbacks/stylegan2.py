"""Periodic StyleGAN2 snapshots: a fixed-z sample grid (PNG + logger) and a port-layout checkpoint."""

from __future__ import annotations

import os
import shutil

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from lit_propulse.core.images import make_grid, save_image
from lit_propulse.loggers import ensure_dir, log_image, run_dir


class GeneratorSnapshot(pl.Callback):
    """Every ``every_n_steps`` optimisation steps and at the end of training: sample ``num_samples``
    images from fixed z (``seed``) with the EMA generator into ``<run dir>/samples/kimg_XXXXX.png``
    and the loggers, and export ``<run dir>/stylegan2-last.pt`` in the standard port's layout. The run
    directory is ``trainer.default_root_dir`` (:func:`lit_propulse.loggers.run_dir`), whatever the logger.

    Args:
        every_n_steps: interval in minibatches; 0 = only at the end.
        num_samples: images in the grid.
        nrow: images per grid row.
        seed: seed of the fixed z.
        truncation: truncation of the samples (1 = none).
        export: also write the port-layout checkpoint.
        keep_exports: also keep a copy per snapshot (stylegan2-kimg_XXXXX.pt).
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        num_samples: int = 64,
        nrow: int = 8,
        seed: int = 0,
        truncation: float = 1.0,
        export: bool = True,
        keep_exports: bool = False,
    ) -> None:
        super().__init__()
        if every_n_steps < 0 or num_samples < 1:
            raise ValueError(f"every_n_steps must be >= 0 and num_samples >= 1, got {every_n_steps}, {num_samples}")
        self.every_n_steps, self.num_samples, self.nrow = every_n_steps, num_samples, nrow
        self.seed, self.truncation, self.export, self.keep_exports = seed, truncation, export, keep_exports

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = int(pl_module.steps)  # minibatches since the start of training (global_step: since this run's start)
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.snapshot(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.snapshot(trainer, pl_module)

    @rank_zero_only
    @torch.no_grad()
    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        G = pl_module.G_ema
        z = torch.randn(self.num_samples, G.z_dim, generator=torch.Generator().manual_seed(self.seed)).to(pl_module.device)
        noise = G.synthesis.make_noise(self.num_samples, generator=torch.Generator(device=pl_module.device).manual_seed(self.seed))
        images = torch.cat([G(z[i : i + 16], truncation=self.truncation, noise=[n[i : i + 16] for n in noise]).image for i in range(0, len(z), 16)])
        grid = make_grid(images, nrow=self.nrow)
        kimg = float(pl_module.images_seen) / 1000
        out = run_dir(trainer)
        save_image(grid, os.path.join(ensure_dir(os.path.join(out, "samples")), f"kimg_{kimg:08.1f}.png"))
        save_image(grid, os.path.join(out, "samples", "latest.png"))
        log_image(trainer, "samples", grid, trainer.global_step)
        if self.export:
            path = os.path.join(out, "stylegan2-last.pt")
            pl_module.export_port_checkpoint(path + ".tmp")
            os.replace(path + ".tmp", path)  # atomic: a kill never leaves a half-written export
            if self.keep_exports:
                shutil.copyfile(path, os.path.join(out, f"stylegan2-kimg_{kimg:08.1f}.pt"))
