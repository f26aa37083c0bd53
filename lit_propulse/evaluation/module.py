"""The side-by-side test loop (Pro-PULSE Table I, Fig. 7/8): :class:`EvaluationModule` and the run state it
shares with the stages' self-evaluation (:class:`~lit_propulse.evaluation.callback.StageEvaluation`).

``python -m lit_propulse test --config experiments/toy/eval.yaml`` runs every method on the same test
images (each image once, also under DDP: the DataModules' test sampler does not pad) and writes the
report (:mod:`lit_propulse.evaluation.report`). Runtime per image: warm-up, device-synchronised,
median and interquartile range over batches; FLOPs per image from ``torch.utils.flop_counter``
(PULSE: every step's forward plus a backward counted as 2x its forward, Pro-PULSE Sec. IV-C).
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.evaluation.methods import SRMethod
from lit_propulse.evaluation.report import write_report
from lit_propulse.evaluation.suite import MetricSuite

__all__ = ["EvaluationModule", "EvaluationRun", "runtime_summary", "synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (so wall-clock times measure it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runtime_summary(per_image_s: list[float]) -> dict[str, float]:
    """Median and interquartile range of per-image seconds over batches."""
    if not per_image_s:
        return {"median_s": math.nan, "q25_s": math.nan, "q75_s": math.nan, "batches": 0}
    xs = sorted(per_image_s)
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return {"median_s": statistics.median(xs), "q25_s": q[0], "q75_s": q[2], "batches": len(xs)}


class EvaluationRun:
    """One test run of several methods: their metric collections (in ``suite``), per-batch runtimes, FLOPs
    and the first batch's image columns for the grid and strip.

    Args:
        suite: the metric suite (one collection per method is added and reset here).
        names: the methods' names, in report order.
        grid_images: test images shown in the grid / strip (the first batch's first ones).
    """

    def __init__(self, suite: MetricSuite, names: list[str], grid_images: int) -> None:
        self.suite = suite
        self.names = list(names)
        self.grid_images = grid_images
        for n in self.names:
            suite.add_method(n)
            suite.reset(n)
        self.times: dict[str, list[float]] = {n: [] for n in self.names}
        self.flops: dict[str, float] = {}
        self._cols: list[tuple[str, Tensor]] = []  # the first batch's method columns, in order
        self._strip: dict[int, Tensor] = {}
        self._lr: Tensor | None = None
        self._gt: Tensor | None = None

    def add(self, name: str, out: ImageOutput, batch: SRBatch, batch_idx: int, seconds: float, show_sides: bool = False) -> None:
        """Score one batch of ``name``'s outputs (in [-1, 1]) that took ``seconds`` to compute."""
        self.suite.update(name, out, batch)
        self.times[name].append(seconds / len(batch))
        if batch_idx != 0:
            return
        n = self.grid_images  # columns: ... | method's side outputs (low to high) | method's HR | ...
        self._lr, self._gt = batch.lr[:n].detach().cpu(), batch.hr[:n].detach().cpu()
        if show_sides and out.side_images:
            for r, img in sorted(out.side_images.items()):
                self._cols.append((f"{name} {r}", img[:n].detach().cpu()))
            self._strip = {r: img[:n].detach().cpu() for r, img in out.side_images.items()}
            self._strip[batch.hr.shape[-1]] = out.image[:n].detach().cpu()
        self._cols.append((name, out.image[:n].detach().cpu()))

    def grid(self) -> dict[str, Any] | None:
        """``{"cols": [(title, images)], "strip": {r: images}, "lr": images}`` of the first batch (None before it)."""
        if self._lr is None:
            return None
        return {"cols": [("LR", self._lr), *self._cols, ("GT", self._gt)], "strip": dict(self._strip), "lr": self._lr}

    def results(self) -> dict[str, dict[str, Any]]:
        """Every method's metrics (:meth:`MetricSuite.compute`) plus ``runtime`` and ``flops_per_image``."""
        results = {}
        for name in self.names:
            r = self.suite.compute(name)
            r["runtime"] = runtime_summary(self.times[name])
            r["flops_per_image"] = self.flops.get(name, math.nan)
            results[name] = r
        return results

    def finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, title: str, out_dir: str | None) -> dict[str, dict[str, Any]]:
        """Compute the results, log them as ``test/<method>/<key>`` and write the report (rank 0; into
        ``out_dir``, None = the run directory)."""
        results = self.results()
        for name, r in results.items():
            for k, v in r.items():
                if isinstance(v, float) and math.isfinite(v):
                    pl_module.log(f"test/{name}/{k}", v, sync_dist=False, rank_zero_only=True)
        if trainer.is_global_zero:
            from lit_propulse.loggers import run_dir

            count = next(iter(results.values()))["count"]
            write_report(out_dir or run_dir(trainer), title, results, self.suite.skipped, self.suite.labels, count, self.grid(),
                         device=str(pl_module.device), world_size=trainer.world_size)
        return results


class EvaluationModule(pl.LightningModule):
    """Run several SR methods on the same test images and report the papers' metrics.

    ``python -m lit_propulse test --config experiments/toy/eval.yaml``. Nothing is trained.

    Args:
        methods: the methods, in report order (unique names).
        metrics: the metric suite; None = ``MetricSuite()`` (every metric whose files are given).
        grid_images: test images shown in ``grid.png`` / ``strip.png`` (the first batch's first ones).
        output_dir: where report.json/report.md/grid.png go; None = the run directory.
        title: the report's heading.
    """

    def __init__(
        self,
        methods: list[SRMethod],
        metrics: MetricSuite | None = None,
        grid_images: int = 8,
        output_dir: str | None = None,
        title: str = "Evaluation",
    ) -> None:
        super().__init__()
        if not methods:
            raise ValueError("methods must list at least one SRMethod")
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique, got {names}")
        self.methods = nn.ModuleList(methods)
        self.metrics = metrics if metrics is not None else MetricSuite()
        for n in names:
            self.metrics.add_method(n)
        self.grid_images = grid_images
        self.output_dir = output_dir
        self.title = title
        self.results: dict[str, dict[str, Any]] = {}

    def on_test_start(self) -> None:
        self._run = EvaluationRun(self.metrics, [m.name for m in self.methods], self.grid_images)
        for m in self.methods:
            m.prepare()

    def test_step(self, batch: SRBatch, batch_idx: int) -> None:
        for method in self.methods:
            if method.name not in self._run.flops:
                self._run.flops[method.name] = method.flops_per_image(batch)
                if method.feedforward:
                    method.upsample(batch)  # warm-up: the first call pays for allocations / kernel selection
            synchronize(self.device)
            t0 = time.perf_counter()
            out = method.upsample(batch)
            synchronize(self.device)
            self._run.add(method.name, out, batch, batch_idx, time.perf_counter() - t0, method.show_sides)

    def on_test_epoch_end(self) -> None:
        self.results = self._run.finish(self.trainer, self, self.title, self.output_dir)

    def configure_optimizers(self) -> None:
        return None
