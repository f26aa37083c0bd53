"""The side-by-side test loop (Pro-PULSE Table I, Fig. 7/8): :class:`EvaluationModule` and the run state it
shares with the stages' self-evaluation (:class:`~lit_propulse.evaluation.callback.StageEvaluation`).

``python -m lit_propulse test --config experiments/toy/eval.yaml`` runs every method on the same test
images (each image once, also under DDP: the DataModules' test sampler does not pad) and writes the
report (:mod:`lit_propulse.evaluation.report`).

Speed, as Pro-PULSE Sec. IV-A/B reports it ("the inference time-cost ... using a single GPU", FLOPs):

* **runtime per image at batch 1**: the first ``runtime_images`` test images of the process, each
  upsampled alone, warm (one untimed batch-1 call first, for feed-forward methods) and
  device-synchronised around each call; mean and median (``runtime.batch1_mean_s`` / ``batch1_median_s``).
  PULSE's batch-1 times are whole searches (no warm-up search: it would double its cost).
* **throughput** at the test loader's batch size: images / second over every test batch (each
  synchronised, after an untimed warm-up batch for feed-forward methods), ``runtime.throughput_img_s``
  at ``runtime.batch_size``.
* **FLOPs per image**: :func:`~lit_propulse.evaluation.methods.count_flops`, 2 x MACs
  (:data:`~lit_propulse.evaluation.methods.FLOPS_CONVENTION`); PULSE: every step's forward plus a
  backward counted as 2x its forward (Pro-PULSE Sec. IV-B).

Under DDP each process times its own images; the report shows rank 0's.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.evaluation.methods import SRMethod, item
from lit_propulse.evaluation.report import write_report
from lit_propulse.evaluation.suite import MetricSuite

__all__ = ["EvaluationModule", "EvaluationRun", "runtime_summary", "synchronize", "time_single_images"]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (so wall-clock times measure it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_single_images(upsample: Callable[[SRBatch], Any], batch: SRBatch, count: int, warm_up: bool, device: torch.device) -> list[float]:
    """Seconds of ``upsample`` on each of the batch's first ``count`` images alone (batch 1),
    device-synchronised around each call; ``warm_up``: one untimed batch-1 call first."""
    times: list[float] = []
    for i in range(min(count, len(batch))):
        one = item(batch, i)
        if warm_up and i == 0:
            upsample(one)
        synchronize(device)
        t0 = time.perf_counter()
        upsample(one)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def runtime_summary(batch1_s: list[float], batches: list[tuple[int, float]] = ()) -> dict[str, float]:
    """The runtime entry of a method's results.

    ``batch1_s``: seconds per image timed alone (batch 1) -> ``batch1_mean_s``, ``batch1_median_s``,
    ``batch1_images``. ``batches``: (images, seconds) of every timed test batch -> ``throughput_img_s``
    (all images / all seconds), ``batch_size`` (the largest batch: the loader's), ``batches``, and
    the median / interquartile range of per-image seconds over batches (``median_s``, ``q25_s``, ``q75_s``).
    """
    out: dict[str, float] = {"batch1_mean_s": math.nan, "batch1_median_s": math.nan, "batch1_images": len(batch1_s)}
    if batch1_s:
        out["batch1_mean_s"] = statistics.fmean(batch1_s)
        out["batch1_median_s"] = statistics.median(batch1_s)
    batches = list(batches)
    out.update({"throughput_img_s": math.nan, "batch_size": 0, "batches": len(batches), "median_s": math.nan, "q25_s": math.nan, "q75_s": math.nan})
    if batches:
        images, seconds = sum(n for n, _ in batches), sum(t for _, t in batches)
        out["throughput_img_s"] = images / seconds if seconds > 0 else math.nan
        out["batch_size"] = max(n for n, _ in batches)
        xs = sorted(t / n for n, t in batches)
        q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
        out.update({"median_s": statistics.median(xs), "q25_s": q[0], "q75_s": q[2]})
    return out


class EvaluationRun:
    """One test run of several methods: their metric collections (in ``suite``), per-batch runtimes, FLOPs
    and the first batch's image columns for the grid and strip.

    Args:
        suite: the metric suite (one collection per method is added and reset here).
        names: the methods' names, in report order.
        grid_images: test images shown in the grid / strip (the first batch's first ones).
        runtime_images: images timed alone at batch 1 per method (0 = none).
        settings: method name -> one line naming its settings in the report (e.g. PULSE's preset).
    """

    def __init__(self, suite: MetricSuite, names: list[str], grid_images: int, runtime_images: int = 8, settings: dict[str, str] | None = None) -> None:
        if runtime_images < 0:
            raise ValueError(f"runtime_images must be >= 0, got {runtime_images}")
        self.suite = suite
        self.names = list(names)
        self.grid_images = grid_images
        self.runtime_images = int(runtime_images)
        self.settings = {k: v for k, v in (settings or {}).items() if v}
        for n in self.names:
            suite.add_method(n)
            suite.reset(n)
        self.times: dict[str, list[tuple[int, float]]] = {n: [] for n in self.names}  # (images, seconds) per batch
        self.batch1: dict[str, list[float]] = {n: [] for n in self.names}  # seconds per image alone
        self.flops: dict[str, float] = {}
        self._cols: list[tuple[str, Tensor]] = []  # the first batch's method columns, in order
        self._strip: dict[int, Tensor] = {}
        self._lr: Tensor | None = None
        self._gt: Tensor | None = None

    def add(self, name: str, out: ImageOutput, batch: SRBatch, batch_idx: int, seconds: float, show_sides: bool = False) -> None:
        """Score one batch of ``name``'s outputs (in [-1, 1]) that took ``seconds`` to compute."""
        self.suite.update(name, out, batch)
        self.times[name].append((len(batch), seconds))
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

    def time_batch1(self, name: str, upsample: Callable[[SRBatch], Any], batch: SRBatch, warm_up: bool, device: torch.device) -> None:
        """Time ``name``'s ``upsample`` on images of ``batch`` alone until ``runtime_images`` are timed."""
        need = self.runtime_images - len(self.batch1[name])
        if need > 0:
            self.batch1[name] += time_single_images(upsample, batch, need, warm_up and not self.batch1[name], device)

    def grid(self) -> dict[str, Any] | None:
        """``{"cols": [(title, images)], "strip": {r: images}, "lr": images}`` of the first batch (None before it)."""
        if self._lr is None:
            return None
        return {"cols": [("LR", self._lr), *self._cols, ("GT", self._gt)], "strip": dict(self._strip), "lr": self._lr}

    def results(self) -> dict[str, dict[str, Any]]:
        """Every method's metrics (:meth:`MetricSuite.compute`) plus ``runtime`` (:func:`runtime_summary`),
        ``flops_per_image`` (2 x MACs) and ``macs_per_image``."""
        results = {}
        for name in self.names:
            r = self.suite.compute(name)
            r["runtime"] = runtime_summary(self.batch1[name], self.times[name])
            r["flops_per_image"] = self.flops.get(name, math.nan)
            r["macs_per_image"] = r["flops_per_image"] / 2
            if name in self.settings:
                r["settings"] = self.settings[name]
            results[name] = r
        return results

    def finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, title: str, out_dir: str | None) -> dict[str, dict[str, Any]]:
        """Compute the results, log them as ``test/<method>/<key>`` and write the report (rank 0; into
        ``out_dir``, None = the run directory)."""
        results = self.results()
        for name, r in results.items():
            flat = dict(r, **{f"runtime/{k}": v for k, v in r["runtime"].items()})
            for k, v in flat.items():
                if isinstance(v, float) and math.isfinite(v):
                    pl_module.log(f"test/{name}/{k}", v, sync_dist=False, rank_zero_only=True)
        if trainer.is_global_zero:
            from lit_propulse.loggers import run_dir

            count = next(iter(results.values()))["count"]
            write_report(
                out_dir or run_dir(trainer),
                title,
                results,
                self.suite.skipped,
                self.suite.labels,
                count,
                self.grid(),
                device=str(pl_module.device),
                world_size=trainer.world_size,
                eps=self.suite.eps,
            )
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
        runtime_images: test images each method upsamples alone (batch 1) for the runtime per image
            (mean and median); 0 = none. For PULSE each is one more search.
    """

    def __init__(
        self,
        methods: list[SRMethod],
        metrics: MetricSuite | None = None,
        grid_images: int = 8,
        output_dir: str | None = None,
        title: str = "Evaluation",
        runtime_images: int = 8,
    ) -> None:
        super().__init__()
        if runtime_images < 0:
            raise ValueError(f"runtime_images must be >= 0, got {runtime_images}")
        if not methods:
            raise ValueError("methods must list at least one SRMethod")
        names = [m.name for m in methods]
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique, got {names}")
        if int(grid_images) < 1:
            raise ValueError(f"grid_images must be at least 1 (the test images shown in grid.png and strip.png), got {grid_images}")
        self.methods = nn.ModuleList(methods)
        self.metrics = metrics if metrics is not None else MetricSuite()
        for m in methods:
            m.bind_eps(self.metrics.eps)  # one ε: the search's (PULSE) is the success metric's
            self.metrics.add_method(m.name)
        self.grid_images = grid_images
        self.runtime_images = int(runtime_images)
        self.output_dir = output_dir
        self.title = title
        self.results: dict[str, dict[str, Any]] = {}

    def on_test_start(self) -> None:
        self._run = EvaluationRun(
            self.metrics, [m.name for m in self.methods], self.grid_images, self.runtime_images, {m.name: m.settings() for m in self.methods}
        )
        for m in self.methods:
            m.prepare()

    def test_step(self, batch: SRBatch, batch_idx: int) -> None:
        for method in self.methods:
            self._run.time_batch1(method.name, method.upsample, batch, method.feedforward, self.device)
            if method.name not in self._run.flops:
                self._run.flops[method.name] = method.flops_per_image(batch)
                if method.feedforward:
                    method.upsample(batch)  # warm-up at the batch size: the first call pays for allocations / kernel selection
            synchronize(self.device)
            t0 = time.perf_counter()
            out = method.upsample(batch)
            synchronize(self.device)
            self._run.add(method.name, out, batch, batch_idx, time.perf_counter() - t0, method.show_sides)

    def on_test_epoch_end(self) -> None:
        # settings again, after the run: a method may summarise what it did (the refinement: images within ε, steps),
        # over every process's images
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            for m in self.methods:
                m.merge_processes(_all_gather_object)
        self._run.settings.update({m.name: line for m in self.methods if (line := m.settings())})
        self.results = self._run.finish(self.trainer, self, self.title, self.output_dir)

    def configure_optimizers(self) -> None:
        return None


def _all_gather_object(obj: Any) -> list[Any]:
    """``obj`` from every process, in rank order (``torch.distributed.all_gather_object``)."""
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, obj)
    return parts
