"""Evaluation of super-resolution methods side by side: the papers' Table I / Fig. 8 / Table II figures.

* :class:`SRMethod` and its implementations: :class:`BicubicMethod`, :class:`ProPulseMethod` (E_W+ or
  E_W only, from the stages' exports), :class:`PULSEMethod` (the per-image latent search).
* :class:`MetricSuite`: which metrics to compute (FID, NIQE, attribute-score difference per side-output
  resolution, identity, LPIPS, PSNR/SSIM, downscale consistency + ε success rate); a metric whose
  weights are missing is *skipped with a one-line reason*, never a crash and never a wrong number.
* :class:`EvaluationModule`: ``python -m lit_propulse test --config experiments/toy/eval.yaml`` runs every
  method on the same test images (each image once, also under DDP: the DataModules' test sampler
  does not pad) and writes ``report.json``, ``report.md`` (Table I layout + Fig. 8b attribute
  differences + Fig. 8a per resolution), ``grid.png`` (LR | methods | side outputs | GT) and
  ``strip.png`` (Fig. 7's multi-resolution strip).
* Runtime per image (warm-up, device-synchronised, median and interquartile range over batches) and
  FLOPs per image (``torch.utils.flop_counter``; PULSE: every step's forward plus a backward counted
  as 2x its forward, as Pro-PULSE Sec. IV-C counts it).
"""
from __future__ import annotations

import abc
import json
import math
import os
import statistics
import time
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torchmetrics import Metric

from lit_propulse.core.outputs import ImageOutput
from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.core.errors import MissingFilesError, UserFacingError
from lit_propulse.core.files import needs_file
from lit_propulse.metrics.quality import (
    DownscaleConsistency,
    FIDFeatures,
    IdentitySimilarity,
    LPIPSDistance,
    psnr_ssim_metrics,
    to_unit,
)
from lit_propulse.pulse import PULSEConfig
from lit_propulse.core.images import rows_grid, save_image

__all__ = [
    "BicubicMethod",
    "EvaluationHooks",
    "EvaluationModule",
    "ModuleMethod",
    "MetricSuite",
    "PULSEMethod",
    "ProPulseMethod",
    "SRMethod",
    "write_report",
]


# ----------------------------------------------------------------------------------------------
# Methods.


class SRMethod(nn.Module, abc.ABC):
    """One super-resolution method of the comparison.

    Args:
        name: its row label in the report (e.g. "Pro-PULSE", "E_W", "PULSE", "bicubic").
    """

    #: False for methods that optimise per image (no warm-up run before timing: it would double the cost)
    feedforward: bool = True

    def __init__(self, name: str) -> None:
        super().__init__()
        if not name or "/" in name:
            raise ValueError(f"method name must be non-empty without '/', got {name!r}")
        self.name = name

    def prepare(self) -> None:
        """Once before the first batch, on the evaluation device (e.g. PULSE's Gaussian fit)."""

    @abc.abstractmethod
    def upsample(self, batch: SRBatch) -> ImageOutput:
        """SR of ``batch.lr`` at the size of ``batch.hr``; may use ``batch.index`` (seeds), never ``batch.hr``'s pixels."""

    def flops_per_image(self, batch: SRBatch) -> float:
        """FLOPs of upsampling one image (counted on the batch's first item)."""
        one = _first(batch)
        with FlopCounterMode(display=False) as counter:
            self.upsample(one)
        return float(counter.get_total_flops())


def _first(batch: SRBatch) -> SRBatch:
    return SRBatch(hr=batch.hr[:1], lr=batch.lr[:1], index=batch.index[:1], name=list(batch.name[:1]), attrs=None if batch.attrs is None else batch.attrs[:1])


class BicubicMethod(SRMethod):
    """Bicubic upsampling of the LR (a = -0.75 as ``F.interpolate``), clamped to [-1, 1]."""

    def __init__(self, name: str = "bicubic") -> None:
        super().__init__(name)

    def upsample(self, batch: SRBatch) -> ImageOutput:
        size = batch.hr.shape[-2:]
        return ImageOutput(F.interpolate(batch.lr.float(), size=size, mode="bicubic", align_corners=False).clamp(-1, 1))


_STAGE_SOURCE = "written by that Pro-PULSE stage (python -m lit_propulse fit --config experiments/<stage>.yaml, or the pipeline)"


@needs_file("gds", "the G_ds export (gds.pt)", _STAGE_SOURCE)
@needs_file("encoder", "an encoder export (ew.pt or ewplus.pt)", _STAGE_SOURCE)
@needs_file("ew", "the E_W export (ew.pt)", _STAGE_SOURCE)
class ProPulseMethod(SRMethod):
    """Pro-PULSE (E_W+ with E_W guidance, Eq. (10)) or the E_W-only model (Eq. (4)), from stage exports.

    Args:
        name: row label.
        gds: the G_ds export (gds.pt).
        encoder: ewplus.pt (Pro-PULSE) or ew.pt (E_W only).
        ew: ew.pt, the guidance of an E_W+ (None for E_W only, or E_W+ with ``guidance="latent_avg"``).
        guidance: "ew" (the paper) or "latent_avg".
        show_sides: put its side outputs into the report's grid.
    """

    def __init__(
        self,
        name: str,
        gds: str,
        encoder: str,
        ew: str | None = None,
        guidance: Literal["ew", "latent_avg"] = "ew",
        show_sides: bool = True,
    ) -> None:
        super().__init__(name)
        from lit_propulse.inference import ProPulseUpsampler

        self.upsampler = ProPulseUpsampler.from_files(gds, encoder, ew=ew, guidance=guidance)
        self.show_sides = show_sides

    def upsample(self, batch: SRBatch) -> ImageOutput:
        out = self.upsampler(batch.lr.float())
        return ImageOutput(out.image.clamp(-1, 1), {r: v.clamp(-1, 1) for r, v in out.side_images.items()})


@needs_file("generator", "the StyleGAN2 checkpoint PULSE searches", "the same generator Pro-PULSE uses (e.g. stylegan2-ffhq-config-f.pt in the rosinality/stylegan2-pytorch layout, or lit_propulse/data/toy_stylegan2_64.pt)")
class PULSEMethod(SRMethod):
    """PULSE (Menon et al. 2020): one search per LR, seeded by the dataset index.

    Args:
        name: row label.
        generator: StyleGAN2 checkpoint (the one Pro-PULSE uses).
        config: PULSE settings (:class:`lit_propulse.pulse.PULSEConfig`); None = the official defaults.
        cache_dir: Gaussian-fit cache (None = the default cache directory).
    """

    feedforward = False

    def __init__(self, name: str, generator: str, config: PULSEConfig | None = None, cache_dir: str | None = None) -> None:
        super().__init__(name)
        from lit_propulse.pulse import GaussianFit, PULSE
        from lit_propulse.networks.stylegan2 import Generator

        G = Generator.from_checkpoint(generator)
        self.config = config if config is not None else PULSEConfig()
        self.cache_dir = cache_dir
        self.pulse = PULSE(G, GaussianFit(G.w_dim), self.config)
        self._ready = False

    def prepare(self) -> None:
        if self._ready:
            return
        from lit_propulse.pulse import GaussianFit

        with torch.inference_mode(False):
            G = self.pulse.generator
            fit = GaussianFit.load_or_fit(G, self.cache_dir, self.config.gaussian_fit_samples, self.config.gaussian_fit_seed)
            self.pulse.gaussian_fit.mean.copy_(fit.mean.to(G.latent_avg.device))
            self.pulse.gaussian_fit.std.copy_(fit.std.to(G.latent_avg.device))
        self._ready = True

    def upsample(self, batch: SRBatch) -> ImageOutput:
        self.prepare()
        res = self.pulse.sample(batch.lr, 1, keys=[int(i) for i in batch.index.tolist()])
        return ImageOutput(res.image.clamp(-1, 1))

    def flops_per_image(self, batch: SRBatch) -> float:
        """``steps`` x (forward + backward counted as 2x forward) of one search step (Sec. IV-C)."""
        self.prepare()
        one = _first(batch)
        pulse = self.pulse
        with torch.inference_mode(False), torch.enable_grad():  # as in the search itself
            latent, noise = pulse.initial_state([0], pulse.generator.latent_avg.device)
            with FlopCounterMode(display=False) as counter:
                per_layer, ws = pulse.latent_to_ws(latent)
                image = pulse.generator.synthesis(ws, noise=noise).image
                pulse.loss(image, one.lr.float().clone(), ws if pulse.config.loss.geocross_on == "w" else per_layer)
        return float(counter.get_total_flops()) * 3 * self.config.steps


# ----------------------------------------------------------------------------------------------
# Metrics.


class _Skipped(Exception):
    pass


class MetricSuite(nn.Module):
    """The metrics of the evaluation, per method. Metrics whose network is missing are skipped with a reason.

    Metric keys (for ``update(only=...)`` and the stages' ``val_metrics``): :attr:`keys`.

    Args:
        eps: ε of the success rate on L_DS (PULSE's 2e-3; its tables used 1e-3).
        fid: "inception" (Table I: torchmetrics' FID with ``inception_weights``), "attributes" (FID on
            the attribute classifier's features — the toy domain's "toy-FID", labelled as such) or "none".
        inception_weights: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (None = FID skipped).
        attribute_classifier: an exported AttributeClassifier (``attributes.pt``) for the
            attribute-score difference (Sec. IV-E, Fig. 8) and for ``fid="attributes"``; None = skipped.
        side_resolutions: also score the side outputs' attributes per resolution (Fig. 8a).
        niqe: compute NIQE.
        niqe_params: a pristine model (.npz); None = the published parameters packaged with lit_propulse.
        identity_weights: identity-network weights for the identity cosine (ArcFace ``model_ir_se50.pth`` or
            FaceNet's VGGFace2 file); None = skipped.
        identity_kind: "arcface" (the paper's) or "facenet".
        lpips_weights: torchvision AlexNet weights for LPIPS; None = skipped.
        lpips_net: "alex" or "vgg" (then ``lpips_weights`` are VGG-16's).
    """

    keys: tuple[str, ...] = ("consistency", "psnr", "ssim", "fid", "niqe", "identity", "lpips", "attr_diff")

    def __init__(
        self,
        eps: float = 2e-3,
        fid: Literal["inception", "attributes", "none"] = "inception",
        inception_weights: str | None = None,
        attribute_classifier: str | None = None,
        side_resolutions: bool = True,
        niqe: bool = True,
        niqe_params: str | None = None,
        identity_weights: str | None = None,
        identity_kind: Literal["arcface", "facenet"] = "arcface",
        lpips_weights: str | None = None,
        lpips_net: Literal["alex", "vgg"] = "alex",
    ) -> None:
        super().__init__()
        if fid not in ("inception", "attributes", "none"):
            raise ValueError(f"fid must be 'inception', 'attributes' or 'none', got {fid!r}")
        self.eps = float(eps)
        self.fid_kind = fid
        self.inception_weights = inception_weights
        self.side_resolutions = side_resolutions
        self.niqe_params = niqe_params
        self.want_niqe = niqe
        self.skipped: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.attr_names: list[str] = []
        self.classifier = self._load_classifier(attribute_classifier)
        self.identity = self._load_identity(identity_weights, identity_kind)
        self.lpips_net = self._load_lpips(lpips_weights, lpips_net)
        if self.fid_kind == "inception" and inception_weights is not None:
            self._check_inception()
        elif self.fid_kind == "inception":
            self.skipped["fid"] = "no Inception weights (metrics.inception_weights: torch-fidelity's weights-inception-2015-12-05-6726825d.pth)"
        elif self.fid_kind == "attributes" and self.classifier is None:
            self.skipped["fid"] = "FID on attribute-classifier features needs metrics.attribute_classifier"
        elif self.fid_kind == "none":
            self.skipped["fid"] = "switched off (metrics.fid: none)"
        self.labels["fid"] = "FID (attribute-classifier features)" if self.fid_kind == "attributes" else "FID (Inception)"
        if not niqe:
            self.skipped["niqe"] = "switched off (metrics.niqe: false)"
        self.per_method = nn.ModuleDict()  # method -> {metric key -> Metric}
        self.side_attr = nn.ModuleDict()  # method -> {side resolution -> AttributeScoreDifference}, filled on first use

    # -- construction helpers ---------------------------------------------------------------------
    def _load_classifier(self, path: str | None) -> nn.Module | None:
        if path is None:
            self.skipped["attr_diff"] = "no attribute classifier (metrics.attribute_classifier: attributes.pt, written by experiments/toy/attributes.yaml or experiments/attributes.yaml)"
            return None
        from lit_propulse.core.weights import load_module

        try:
            net = load_module(path, what="attribute classifier")
        except (MissingFilesError, UserFacingError) as e:
            self.skipped["attr_diff"] = f"attribute classifier unusable: {e}"
            return None
        self.attr_names = list(getattr(net, "attr_names", None) or [f"attr{i}" for i in range(net.num_attributes)])
        return net.requires_grad_(False).eval()

    def _load_identity(self, path: str | None, kind: str) -> nn.Module | None:
        if path is None:
            self.skipped["identity"] = "no identity weights (metrics.identity_weights: ArcFace model_ir_se50.pth or FaceNet's VGGFace2 file)"
            return None
        from lit_propulse.networks.feature_nets import build_identity_net

        try:
            return build_identity_net(kind, path).requires_grad_(False).eval()
        except (MissingFilesError, UserFacingError) as e:
            self.skipped["identity"] = f"identity network unusable: {e}"
            return None

    def _load_lpips(self, path: str | None, net: str) -> nn.Module | None:
        if path is None:
            self.skipped["lpips"] = "no LPIPS backbone weights (metrics.lpips_weights: torchvision's alexnet-owt-7be5be79.pth)"
            return None
        from lit_propulse.networks.feature_nets import LPIPSNetwork

        try:
            return LPIPSNetwork(path, net=net)
        except (MissingFilesError, UserFacingError) as e:
            self.skipped["lpips"] = f"LPIPS backbone unusable: {e}"
            return None

    def _check_inception(self) -> None:
        if not os.path.isfile(self.inception_weights):
            self.skipped["fid"] = f"{self.inception_weights}: Inception weights file not found (torch-fidelity's weights-inception-2015-12-05-6726825d.pth)"
            return
        try:
            import torch_fidelity  # noqa: F401
        except ImportError:
            self.skipped["fid"] = "Inception FID needs torch-fidelity (pip install torch-fidelity)"

    def _fid(self) -> Metric | None:
        if "fid" in self.skipped:
            return None
        from torchmetrics.image.fid import FrechetInceptionDistance

        if self.fid_kind == "attributes":
            return FrechetInceptionDistance(feature=FIDFeatures(self.classifier, "attribute-classifier features"))
        try:
            return _InceptionFID(self.inception_weights)
        except Exception as e:  # noqa: BLE001 - an unreadable weights file: skipped with its reason
            self.skipped["fid"] = f"{self.inception_weights}: Inception weights unusable ({str(e).strip().splitlines()[0][:150]})"
            return None

    def _niqe(self) -> Metric | None:
        if "niqe" in self.skipped:
            return None
        from lit_propulse.metrics.niqe import NIQE

        try:
            return NIQE(params=self.niqe_params)
        except (OSError, ValueError, MissingFilesError, UserFacingError) as e:
            self.skipped["niqe"] = f"NIQE pristine model unusable: {e}"
            return None

    def add_method(self, name: str) -> None:
        """Create the metric states of one method (every rank must add the same methods in the same order)."""
        if name in self.per_method:
            return
        m: dict[str, nn.Module] = {"consistency": DownscaleConsistency(self.eps), **psnr_ssim_metrics()}
        fid = self._fid()
        if fid is not None:
            m["fid"] = fid
        niqe = self._niqe()
        if niqe is not None:
            m["niqe"] = niqe
        if self.identity is not None:
            m["identity"] = IdentitySimilarity(self.identity)
        if self.lpips_net is not None:
            m["lpips"] = LPIPSDistance(self.lpips_net)
        if self.classifier is not None:
            from lit_propulse.metrics.attributes import AttributeScoreDifference

            m["attr_diff"] = AttributeScoreDifference(self.classifier)
        self.per_method[name] = nn.ModuleDict(m)
        self.side_attr[name] = nn.ModuleDict()

    # -- update / compute -------------------------------------------------------------------------
    def update(self, name: str, out: ImageOutput, batch: SRBatch, only: list[str] | None = None) -> None:
        """Add one batch of ``name``'s outputs. ``only`` restricts to some metric keys (validation subsets)."""
        self.add_method(name)
        m = self.per_method[name]
        sr, gt = out.image.float(), batch.hr.float()
        want = (lambda k: only is None or k in only)  # noqa: E731
        if want("consistency"):
            m["consistency"].update(sr, batch.lr)
        if want("psnr"):
            m["psnr"].update(to_unit(sr), to_unit(gt))
        if want("ssim"):
            m["ssim"].update(to_unit(sr), to_unit(gt))
        if "fid" in m and want("fid"):
            fid = m["fid"]
            fid.update(gt, real=True)
            fid.update(sr, real=False)
        if "niqe" in m and want("niqe"):
            try:
                m["niqe"].update(sr)
            except ValueError as e:  # images too small for the pristine model's blocks
                self.skipped["niqe"] = str(e).splitlines()[0]
                del m["niqe"]
        if "identity" in m and want("identity"):
            m["identity"].update(sr, gt)
        if "lpips" in m and want("lpips"):
            m["lpips"].update(sr, gt)
        if "attr_diff" in m and want("attr_diff"):
            m["attr_diff"].update(sr, gt)
            if self.side_resolutions:
                from lit_propulse.metrics.attributes import AttributeScoreDifference

                sides = self.side_attr[name]
                for r, side in out.side_images.items():
                    key = str(int(r))
                    if key not in sides:
                        sides[key] = AttributeScoreDifference(self.classifier).to(sr.device)
                    sides[key].update(side.float(), downscale(gt, int(r)))

    def compute(self, name: str, only: list[str] | None = None) -> dict[str, Any]:
        """``{"count", "l_ds", "success_rate", "psnr", "ssim", "fid"?, "niqe"?, "identity"?, "lpips"?,
        "attr_diff"?, "attr_diff_per_attribute"?: {attr: v}, "attr_diff_side"?: {r: v}}`` (floats);
        ``only``: the metric keys that were updated (as in :meth:`update`)."""
        m = self.per_method[name]
        want = (lambda k: only is None or k in only)  # noqa: E731
        res: dict[str, Any] = {}
        if want("consistency"):
            c = m["consistency"].compute()
            res["count"] = int(c["count"])  # images scored (summed over processes)
            res["l_ds"], res["success_rate"] = float(c["l_ds"]), float(c["success_rate"])
        for k in ("psnr", "ssim"):
            if want(k):
                res[k] = float(m[k].compute())
        for k in ("fid", "niqe", "identity", "lpips"):
            if k in m and want(k):
                try:
                    res[k] = float(m[k].compute())
                except (RuntimeError, ValueError) as e:  # e.g. FID on fewer than 2 images
                    self.skipped[k] = f"{k} not computable: {str(e).splitlines()[0][:150]}"
        if "attr_diff" in m and want("attr_diff"):
            d = m["attr_diff"].compute()
            res["attr_diff"] = float(d["mean"])
            res["attr_diff_per_attribute"] = {a: float(v) for a, v in zip(self.attr_names, d["per_attribute"].tolist())}
            if len(self.side_attr[name]):
                res["attr_diff_side"] = {int(r): float(s.compute()["mean"]) for r, s in self.side_attr[name].items()}
        return res

    def reset(self) -> None:
        for group in (*self.per_method.values(), *self.side_attr.values()):
            for metric in group.values():
                metric.reset()


class _InceptionFID(Metric):
    """torchmetrics' FrechetInceptionDistance on [-1, 1] inputs (converted to the uint8 it expects)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, weights: str) -> None:
        super().__init__()
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=weights)

    def update(self, imgs: Tensor, real: bool) -> None:
        from lit_propulse.core.images import to_uint8

        self.fid.update(to_uint8(imgs), real=real)

    def compute(self) -> Tensor:
        return self.fid.compute()

    def reset(self) -> None:
        self.fid.reset()


# ----------------------------------------------------------------------------------------------
# Runtime.


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runtime_summary(per_image_s: list[float]) -> dict[str, float]:
    """Median and interquartile range of per-image seconds over batches."""
    if not per_image_s:
        return {"median_s": math.nan, "q25_s": math.nan, "q75_s": math.nan, "batches": 0}
    xs = sorted(per_image_s)
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return {"median_s": statistics.median(xs), "q25_s": q[0], "q75_s": q[2], "batches": len(xs)}


# ----------------------------------------------------------------------------------------------
# The LightningModule.


class EvaluationHooks(abc.ABC):
    """``on_test_start`` / ``test_step`` / ``on_test_epoch_end`` of a side-by-side evaluation, for any
    LightningModule that provides :meth:`evaluation_methods` and :attr:`metric_suite` (the
    :class:`EvaluationModule`, and the Pro-PULSE stage modules evaluating themselves on ``test``)."""

    grid_images: int = 8
    report_title: str = "Evaluation"
    report_dir: str | None = None

    @abc.abstractmethod
    def evaluation_methods(self) -> list[SRMethod]:
        """The methods to run on every test batch, in report order."""

    @property
    @abc.abstractmethod
    def metric_suite(self) -> MetricSuite:
        """The :class:`MetricSuite` holding every method's metric states."""

    def on_test_start(self) -> None:
        self._eval_methods = self.evaluation_methods()
        for m in self._eval_methods:
            self.metric_suite.add_method(m.name)
        self._times = {m.name: [] for m in self._eval_methods}
        self._flops: dict[str, float] = {}
        self._grid: dict[str, Any] | None = None
        self.metric_suite.reset()
        for m in self._eval_methods:
            m.prepare()

    def test_step(self, batch: SRBatch, batch_idx: int) -> None:
        n = self.grid_images
        grid_cols: list[tuple[str, Tensor]] = [("LR", batch.lr[:n])]
        sides: dict[int, Tensor] = {}
        for method in self._eval_methods:
            if method.name not in self._flops:
                self._flops[method.name] = method.flops_per_image(batch)
                if method.feedforward:
                    method.upsample(batch)  # warm-up: the first call pays for allocations / kernel selection
            _sync(self.device)
            t0 = time.perf_counter()
            out = method.upsample(batch)
            _sync(self.device)
            self._times[method.name].append((time.perf_counter() - t0) / len(batch))
            self.metric_suite.update(method.name, out, batch)
            if batch_idx == 0:  # columns: ... | method's side outputs (low to high) | method's HR | ...
                if getattr(method, "show_sides", False) and out.side_images:
                    for r, img in sorted(out.side_images.items()):
                        grid_cols.append((f"{method.name} {r}", img[:n]))
                    sides = {r: img[:n] for r, img in out.side_images.items()}
                    sides[batch.hr.shape[-1]] = out.image[:n]
                grid_cols.append((method.name, out.image[:n]))
        if batch_idx == 0:
            grid_cols.append(("GT", batch.hr[:n]))
            self._grid = {"cols": [(c, t.detach().cpu()) for c, t in grid_cols], "strip": {r: t.detach().cpu() for r, t in sides.items()}, "lr": batch.lr[:n].cpu()}

    def on_test_epoch_end(self) -> None:
        results: dict[str, Any] = {}
        for method in self._eval_methods:
            r = self.metric_suite.compute(method.name)
            r["runtime"] = runtime_summary(self._times[method.name])
            r["flops_per_image"] = self._flops.get(method.name, math.nan)
            results[method.name] = r
            for k, v in r.items():
                if isinstance(v, float) and math.isfinite(v):
                    self.log(f"test/{method.name}/{k}", v, sync_dist=False, rank_zero_only=True)
        self.results = results
        if self.trainer.is_global_zero:
            out_dir = self.report_dir or _run_dir(self.trainer)
            count = next(iter(results.values()))["count"]
            write_report(out_dir, self.report_title, results, self.metric_suite.skipped, self.metric_suite.labels, count, self._grid,
                         device=str(self.device), world_size=self.trainer.world_size)


class EvaluationModule(EvaluationHooks, pl.LightningModule):
    """Run several SR methods on the same test images and report the papers' metrics.

    ``python -m lit_propulse test --config experiments/toy/eval.yaml``. Nothing is trained.

    Args:
        methods: the methods, in report order.
        metrics: the metric suite.
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
        for m in methods:
            self.metrics.add_method(m.name)
        self.grid_images = grid_images
        self.report_dir = output_dir
        self.report_title = title

    def evaluation_methods(self) -> list[SRMethod]:
        return list(self.methods)

    @property
    def metric_suite(self) -> MetricSuite:
        return self.metrics

    def configure_optimizers(self) -> None:
        return None


class ModuleMethod(SRMethod):
    """A LightningModule whose ``forward(lr)`` returns a G_ds output (the Pro-PULSE stages), as an
    SRMethod. Holds the module without registering it (no parameter cycle)."""

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__(name)
        self.__dict__["_module"] = module
        self.show_sides = True

    def upsample(self, batch: SRBatch) -> ImageOutput:
        out = self._module(batch.lr)
        return ImageOutput(out.image.clamp(-1, 1), {r: v.clamp(-1, 1) for r, v in out.side_images.items()})


def _run_dir(trainer: pl.Trainer) -> str:
    from lit_propulse.loggers import run_dir

    return run_dir(trainer)


# ----------------------------------------------------------------------------------------------
# Report.


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _flops(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    for unit, f in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if v >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.3g}"


def write_report(
    out_dir: str,
    title: str,
    results: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    labels: dict[str, str],
    num_images: int,
    grid: dict[str, Any] | None = None,
    device: str = "cpu",
    world_size: int = 1,
) -> dict[str, str]:
    """Write report.json, report.md (Table I layout, Fig. 8b/8a tables, skipped metrics with reasons),
    grid.png and strip.png into ``out_dir``; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "report.json"), "md": os.path.join(out_dir, "report.md")}
    payload = {"title": title, "num_images": num_images, "device": device, "world_size": world_size, "results": results, "skipped": skipped, "labels": labels}
    with open(paths["json"], "w") as f:
        json.dump(payload, f, indent=2, default=float)
    fid_label = labels.get("fid", "FID")
    lines = [f"# {title}", "", f"{num_images} test images, each once (device {device}, {world_size} process(es)).", ""]
    lines += ["## Table I layout", "", f"| method | {fid_label} ↓ | NIQE ↓ | runtime / image (median [IQR]) | FLOPs / image | PSNR ↑ | SSIM ↑ | LPIPS ↓ | identity ↑ | L_DS ↓ | success @ ε ↑ | attr. diff ↓ |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rt = r["runtime"]
        runtime = "—" if not math.isfinite(rt["median_s"]) else f"{rt['median_s'] * 1e3:.3g} ms [{rt['q25_s'] * 1e3:.3g}, {rt['q75_s'] * 1e3:.3g}]"
        cells = [_fmt(r.get("fid")), _fmt(r.get("niqe")), runtime, _flops(r.get("flops_per_image", math.nan)), _fmt(r.get("psnr")), _fmt(r.get("ssim")),
                 _fmt(r.get("lpips")), _fmt(r.get("identity")), _fmt(r.get("l_ds")), _fmt(r.get("success_rate")), _fmt(r.get("attr_diff"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Skipped metrics (shown as —):", ""] + [f"- **{k}**: {v}" for k, v in sorted(skipped.items())]
    attrs = [n for n, r in results.items() if "attr_diff_per_attribute" in r]
    if attrs:
        names = list(results[attrs[0]]["attr_diff_per_attribute"])
        lines += ["", "## Attribute-score differences |score(SR) − score(GT)| (Fig. 8b)", "", "| attribute | " + " | ".join(attrs) + " |", "|---|" + "---|" * len(attrs)]
        for a in names:
            lines.append(f"| {a} | " + " | ".join(_fmt(results[n]["attr_diff_per_attribute"][a], 3) for n in attrs) + " |")
        lines.append("| **mean** | " + " | ".join(_fmt(results[n]["attr_diff"], 3) for n in attrs) + " |")
    sides = [n for n, r in results.items() if r.get("attr_diff_side")]
    if sides:
        res_all = sorted({int(k) for n in sides for k in results[n]["attr_diff_side"]})
        lines += ["", "## Attribute-score difference per side-output resolution (Fig. 8a; vs DS(GT) at that resolution)", "",
                  "| method | " + " | ".join(f"{r}²" for r in res_all) + " | final |", "|---|" + "---|" * (len(res_all) + 1)]
        for n in sides:
            d = {int(k): v for k, v in results[n]["attr_diff_side"].items()}
            lines.append(f"| {n} | " + " | ".join(_fmt(d.get(r), 3) for r in res_all) + f" | {_fmt(results[n]['attr_diff'], 3)} |")
    if grid is not None:
        cols = grid["cols"]
        size = max(t.shape[-1] for _, t in cols)
        paths["grid"] = os.path.join(out_dir, "grid.png")
        save_image(rows_grid([t for _, t in cols], size), paths["grid"])
        lines += ["", "## Images", "", f"`grid.png` columns: {' | '.join(n for n, _ in cols)}"]
        if grid.get("strip"):
            strip = dict(sorted(grid["strip"].items()))
            paths["strip"] = os.path.join(out_dir, "strip.png")
            save_image(rows_grid([grid["lr"]] + list(strip.values()), size), paths["strip"])
            lines.append(f"`strip.png` (Fig. 7): LR | " + " | ".join(f"{r}²" for r in strip) + " (each shown at " + f"{size}² pixel by pixel)")
    with open(paths["md"], "w") as f:
        f.write("\n".join(lines) + "\n")
    return paths
