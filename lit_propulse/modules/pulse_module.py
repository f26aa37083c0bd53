"""PULSE (Menon et al., CVPR 2020) as a LightningModule for ``predict`` and ``test``, so the
evaluation stage runs the baseline on the same DataModules, test split and metrics as Pro-PULSE.

Nothing is trained: every batch is one batched PULSE search (:class:`lit_propulse.pulse.PULSE`).
``test_step`` logs the success rate (best per-image L_DS ≤ ε, Sec. 6) and the mean L_DS through
torchmetrics, and returns the outputs so callbacks (image logging, other metrics) can use them.
"""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from lit_propulse.core.batch import SRBatch
from lit_propulse.networks.stylegan2 import Generator
from lit_propulse.pulse import PULSE, GaussianFit, PULSEConfig, PULSEResult, SuccessRate


class PULSEModule(pl.LightningModule):
    """PULSE on :class:`SRBatch` batches (``batch.lr`` is searched; ``batch.hr`` is only passed on).

    Args:
        generator: the StyleGAN2, or a checkpoint path (loaded with ``Generator.from_checkpoint``).
        config: PULSE settings (:class:`PULSEConfig`); None = the official defaults.
        num_samples: searches per LR (Sec. 4.4); ``predict_step`` returns all of them, ``test_step``
            scores all of them and passes sample 0 on as ``"sr"``.
        cache_dir: Gaussian-fit cache; None = :func:`lit_propulse.pulse.default_cache_dir`.
        gaussian_fit: a ready fit (skips the cache); None = loaded or fitted in ``setup``.

    Initialisation seeds come from ``batch.index`` (unique dataset indices), so an image's result
    does not depend on the batch size or order.
    """

    def __init__(
        self,
        generator: Generator | str | os.PathLike,
        config: PULSEConfig | None = None,
        num_samples: int = 1,
        cache_dir: str | None = None,
        gaussian_fit: GaussianFit | None = None,
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.save_hyperparameters(ignore=["generator", "gaussian_fit"])
        G = generator if isinstance(generator, Generator) else Generator.from_checkpoint(generator)
        self.config = config if config is not None else PULSEConfig()
        self.num_samples = int(num_samples)
        self.cache_dir = cache_dir
        self._fit_ready = gaussian_fit is not None
        self.pulse = PULSE(G, gaussian_fit if gaussian_fit is not None else GaussianFit(G.w_dim), self.config)
        self.success_rate = SuccessRate()
        self.mean_loss = MeanMetric()

    @property
    def generator(self) -> Generator:
        return self.pulse.generator

    def setup(self, stage: str) -> None:
        """Load (or fit and cache) the Gaussian fit of the mapping's output, once."""
        if self._fit_ready:
            return
        with torch.inference_mode(False):
            fit = GaussianFit.load_or_fit(self.generator, self.cache_dir, self.config.gaussian_fit_samples, self.config.gaussian_fit_seed)
            self.pulse.gaussian_fit.mean.copy_(fit.mean)
            self.pulse.gaussian_fit.std.copy_(fit.std)
        self._fit_ready = True

    def search(self, batch: SRBatch) -> PULSEResult:
        """``num_samples`` searches per item of ``batch`` (item-major: row i*N + s is sample s of item i)."""
        if not self._fit_ready:
            raise RuntimeError("PULSEModule.setup() has not run: the Gaussian fit is missing")
        keys = [int(i) for i in batch.index.tolist()]
        return self.pulse.sample(batch.lr, self.num_samples, keys=keys)

    def predict_step(self, batch: SRBatch, batch_idx: int) -> dict[str, Any]:
        res = self.search(batch)
        return {"name": list(batch.name), "index": batch.index, "result": res, "num_samples": self.num_samples}

    def test_step(self, batch: SRBatch, batch_idx: int) -> dict[str, Tensor]:
        res = self.search(batch)
        b, n = len(batch), self.num_samples
        self.success_rate.update(res.success)
        self.mean_loss.update(res.loss)
        self.log("test/pulse/success_rate", self.success_rate, on_step=False, on_epoch=True, batch_size=b * n)
        self.log("test/pulse/loss_ds", self.mean_loss, on_step=False, on_epoch=True, batch_size=b * n)
        images = res.image.view(b, n, *res.image.shape[1:])  # [B, N, 3, H, W]
        return {
            "sr": images[:, 0],  # [B, 3, H, W]
            "samples": images,
            "hr": batch.hr,
            "lr": batch.lr,
            "loss": res.loss.view(b, n),
            "success": res.success.view(b, n),
        }

    def configure_optimizers(self) -> None:
        return None
