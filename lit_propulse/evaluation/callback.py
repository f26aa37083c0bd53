"""A training stage scores itself (Pro-PULSE Table I / II metrics of one model): :class:`StageEvaluation`.

The stage modules (:mod:`lit_propulse.modules.propulse`) know nothing of evaluation: their
``validation_step`` and ``test_step`` return the model's :class:`~lit_propulse.core.outputs.ImageOutput`
for the batch, and this callback scores it:

* at every validation, the configured metric subset (``val_metrics``), logged as ``val/<key>``
  (``val/attr_diff``, ``val/psnr``, ``val/l_ds``, ``val/success_rate``, ...);
* on ``python -m lit_propulse test --config experiments/toy/ewplus.yaml --ckpt_path ...`` (and in the
  ablation grid), the full suite on the whole test split: ``report.json`` / ``report.md`` / ``grid.png`` /
  ``strip.png`` in the run directory, with the runtime (per image at batch 1, mean and median; throughput
  at the test batch size) and FLOPs (2 x MACs) of the module's forward (see :mod:`.module`).
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.evaluation.methods import clamp_output, count_flops
from lit_propulse.evaluation.module import EvaluationRun, synchronize
from lit_propulse.evaluation.suite import MetricSuite

__all__ = ["StageEvaluation"]


def _image_output(outputs: Any, pl_module: pl.LightningModule, hook: str) -> ImageOutput:
    if not isinstance(outputs, ImageOutput):
        raise TypeError(f"StageEvaluation scores the ImageOutput that {type(pl_module).__name__}.{hook} returns; it returned {type(outputs).__name__}")
    return clamp_output(outputs)


class StageEvaluation(pl.Callback):
    """Score the trained model: a metric subset at validation, the full metric suite and report on test.

    Args:
        metrics: the metric suite; None = L_DS, success rate, PSNR and SSIM only (``MetricSuite(fid="none", niqe=False)``).
        val_metrics: keys of ``metrics`` (:attr:`MetricSuite.keys`) also computed at every validation on
            the validation subset and logged as ``val/<key>`` (e.g. ["attr_diff", "psnr"]); None/[] = none.
        name: the model's row in the report; None = the module's ``method_name`` ("E_W", "Pro-PULSE", ...).
        grid_images: test images shown in ``grid.png`` / ``strip.png``.
        output_dir: where the report goes; None = the run directory.
        title: the report's heading; None = "<module class> (python -m lit_propulse test)".
        runtime_images: test images upsampled alone (batch 1) for the runtime per image; 0 = none.
    """

    def __init__(
        self,
        metrics: MetricSuite | None = None,
        val_metrics: list[str] | None = None,
        name: str | None = None,
        grid_images: int = 8,
        output_dir: str | None = None,
        title: str | None = None,
        runtime_images: int = 8,
    ) -> None:
        super().__init__()
        if runtime_images < 0:
            raise ValueError(f"runtime_images must be >= 0, got {runtime_images}")
        self.runtime_images = int(runtime_images)
        bad = set(val_metrics or []) - set(MetricSuite.keys)
        if bad:
            raise ValueError(f"val_metrics {sorted(bad)} are not metric keys; choose from {list(MetricSuite.keys)}")
        self.metrics = metrics if metrics is not None else MetricSuite(fid="none", niqe=False)
        self.val_metrics = self.metrics.available(val_metrics or [])
        for k in sorted(set(val_metrics or []) - set(self.val_metrics)):
            rank_zero_warn(f"StageEvaluation: val_metrics {k!r} is skipped: {self.metrics.skipped[k]}")
        self.name = name
        self.grid_images = grid_images
        self.output_dir = output_dir
        self.title = title
        self.results: dict[str, dict[str, Any]] = {}
        self._run: EvaluationRun | None = None
        self._t0 = 0.0

    def _method_name(self, pl_module: pl.LightningModule) -> str:
        return self.name or str(getattr(pl_module, "method_name", type(pl_module).__name__))

    # -- validation: the metric subset ----------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.val_metrics:
            self.metrics.to(pl_module.device)
            self.metrics.add_method("val", self.val_metrics)
            self.metrics.reset("val")

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: SRBatch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.val_metrics:
            self.metrics.update("val", _image_output(outputs, pl_module, "validation_step"), batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.val_metrics:
            return
        res = self.metrics.compute("val")  # synced over processes by torchmetrics
        pl_module.log_dict({f"val/{k}": v for k, v in res.items() if isinstance(v, float)}, rank_zero_only=True)
        self.metrics.reset("val")

    # -- test: the full suite and the report ----------------------------------------------------
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.metrics.to(pl_module.device)
        self._run = EvaluationRun(self.metrics, [self._method_name(pl_module)], self.grid_images, self.runtime_images)

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: SRBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self._run.names[0]
        self._run.time_batch1(name, lambda one: pl_module(one.lr), batch, True, pl_module.device)
        if name not in self._run.flops:
            self._run.flops[name] = count_flops(lambda one: pl_module(one.lr), batch)
            pl_module(batch.lr)  # warm-up: the first call pays for allocations / kernel selection
        synchronize(pl_module.device)
        self._t0 = time.perf_counter()

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: SRBatch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        synchronize(pl_module.device)
        seconds = time.perf_counter() - self._t0
        self._run.add(self._run.names[0], _image_output(outputs, pl_module, "test_step"), batch, batch_idx, seconds, show_sides=True)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        title = self.title or f"{type(pl_module).__name__} (python -m lit_propulse test)"
        self.results = self._run.finish(trainer, pl_module, title, self.output_dir)
