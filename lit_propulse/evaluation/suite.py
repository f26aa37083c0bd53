"""The evaluation's metrics: one torchmetrics ``MetricCollection`` per method, prefixed ``"<method>/"``.

The metric set (keys of :attr:`MetricSuite.keys`, built from one table, :data:`METRIC_BUILDERS`):

| key | what | paper |
| --- | --- | --- |
| consistency | L_DS = ||DS(SR) - LR||² and the success rate at ε | PULSE Sec. 3.1 Eq. (8), Sec. 6 |
| psnr, ssim | PSNR / SSIM on [0, 1] | PULSE App. C |
| fid | FID on Inception features (from a file) or the attribute classifier's ("toy-FID") | Pro-PULSE Table I |
| niqe | NIQE against a pristine model | Pro-PULSE Table I |
| identity | cosine of identity embeddings (ArcFace / FaceNet) | Pro-PULSE Sec. IV-D |
| lpips | LPIPS | - |
| attr_diff | attribute-score difference, per attribute and per side-output resolution | Pro-PULSE Sec. IV-E, Fig. 8 |

Every collection is fed by one call, ``update(sr=, gt=, lr=, sides=)`` (images in [-1, 1]); each metric
takes the inputs its ``update`` names (small adapters below rename where torchmetrics' names differ).

A metric whose weights file is not given, or does not exist, is *skipped*: left out of every
collection, its reason in :attr:`MetricSuite.skipped` (and in the report). Any other failure — a file
that exists but cannot be used, an error while updating or computing — raises: a wrong path never
turns into a table of dashes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.wrappers.abstract import WrapperMetric

from lit_propulse.core.batch import SRBatch
from lit_propulse.core.downscale import downscale
from lit_propulse.core.errors import UserFacingError, WeightsFileError
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.metrics.attributes import AttributeScoreDifference
from lit_propulse.metrics.quality import (
    DownscaleConsistency,
    FIDFeatures,
    IdentitySimilarity,
    InceptionFeatures,
    LPIPSDistance,
    psnr_ssim_metrics,
    to_unit,
)

__all__ = ["METRIC_BUILDERS", "MetricSuite"]


# ----------------------------------------------------------------------------------------------
# Adapters: one update(sr=, gt=, lr=, sides=) call feeds every metric of a collection.


class _Wrapped(WrapperMetric):
    """One torchmetrics metric behind an adapter's ``update`` (the subclasses'); its compute and reset as they are."""

    def __init__(self, metric: Metric) -> None:
        super().__init__()
        self.metric = metric

    def compute(self) -> Tensor:
        return self.metric.compute()

    def reset(self) -> None:
        super().reset()
        self.metric.reset()


class _UnitRange(_Wrapped):
    """A torchmetrics ``(preds, target)`` metric on [0, 1] images, fed SR and GT in [-1, 1]."""

    def update(self, sr: Tensor, gt: Tensor) -> None:
        self.metric.update(to_unit(sr), to_unit(gt))


class _OnSR(_Wrapped):
    """A no-reference metric (NIQE) fed the SR images only."""

    def update(self, sr: Tensor) -> None:
        self.metric.update(sr)


class _PairedFID(FrechetInceptionDistance):
    """torchmetrics' FID between the GT set (real) and the SR set (fake) on a given feature network
    that takes [-1, 1] images (:class:`InceptionFeatures` or :class:`FIDFeatures`)."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__(feature=features)

    def update(self, sr: Tensor, gt: Tensor) -> None:  # type: ignore[override]
        super().update(gt, real=True)
        super().update(sr, real=False)


class _AttributeDifference(WrapperMetric):
    """Attribute-score difference of the final image vs GT (Fig. 8b) and, with ``per_side``, of each side
    output vs DS(GT) at its resolution (Fig. 8a); the per-side metrics are created on first sight of a
    resolution (every process sees the same method outputs, so the same ones)."""

    def __init__(self, classifier: nn.Module, attr_names: Sequence[str], per_side: bool) -> None:
        super().__init__()
        self.final = AttributeScoreDifference(classifier, attr_names)
        self.per_side = per_side
        self.sides = nn.ModuleDict()  # str(resolution) -> AttributeScoreDifference

    def update(self, sr: Tensor, gt: Tensor, sides: dict[int, Tensor]) -> None:
        self.final.update(sr, gt)
        if not self.per_side:
            return
        for r, side in sides.items():
            key = str(int(r))
            if key not in self.sides:
                self.sides[key] = AttributeScoreDifference(self.final.classifier, self.final.attr_names).to(side.device)
            self.sides[key].update(side, downscale(gt, int(r)))

    def compute(self) -> dict[str, Any]:
        d = self.final.compute()
        out: dict[str, Any] = {"attr_diff": d["mean"], "attr_diff_per_attribute": d["per_attribute"]}
        if len(self.sides):
            out["attr_diff_side"] = {int(r): m.compute()["mean"] for r, m in self.sides.items()}
        return out

    def reset(self) -> None:
        super().reset()
        self.final.reset()
        for m in self.sides.values():
            m.reset()


# ----------------------------------------------------------------------------------------------
# The table of metrics.


def _consistency(s: MetricSuite) -> Metric:
    return DownscaleConsistency(s.eps)  # update(sr, lr) -> {"l_ds", "success_rate", "count"}


def _psnr(s: MetricSuite) -> Metric:
    return _UnitRange(psnr_ssim_metrics()["psnr"])


def _ssim(s: MetricSuite) -> Metric:
    return _UnitRange(psnr_ssim_metrics()["ssim"])


def _fid(s: MetricSuite) -> Metric:
    return _PairedFID(s.fid_features)


def _niqe(s: MetricSuite) -> Metric:
    from lit_propulse.metrics.niqe import NIQE

    return _OnSR(NIQE(params=s.niqe_model))


def _identity(s: MetricSuite) -> Metric:
    return IdentitySimilarity(s.identity)  # update(sr, gt)


def _lpips(s: MetricSuite) -> Metric:
    return LPIPSDistance(s.lpips_net)  # update(sr, gt)


def _attr_diff(s: MetricSuite) -> Metric:
    return _AttributeDifference(s.classifier, s.attr_names, s.side_resolutions)


#: metric key -> builder of one method's metric from the suite's loaded networks, in report order
METRIC_BUILDERS: tuple[tuple[str, Callable[[MetricSuite], Metric]], ...] = (
    ("consistency", _consistency),
    ("psnr", _psnr),
    ("ssim", _ssim),
    ("fid", _fid),
    ("niqe", _niqe),
    ("identity", _identity),
    ("lpips", _lpips),
    ("attr_diff", _attr_diff),
)


def _load(path: str, what: str, loader: Callable[[str], Any]) -> Any:
    """``loader(path)`` for an existing file; a failure is the user's to fix (never a skip)."""
    try:
        return loader(path)
    except UserFacingError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable/foreign file: one line naming it
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise WeightsFileError(f"{path}: not usable as {what} ({detail}); fix the path, or leave it out to skip the metric") from None


class MetricSuite(nn.Module):
    """The metrics of the evaluation, one ``MetricCollection(prefix="<method>/")`` per method.

    Networks are loaded once, here, and shared by every method's collection. A metric whose file is
    not given (None) or does not exist is skipped with its reason (:attr:`skipped`); a file that
    exists but cannot be used raises (:class:`~lit_propulse.core.errors.WeightsFileError`).

    Args:
        eps: ε of the success rate on L_DS (PULSE Sec. 3 Eq. (5)): the official code's 2e-3 by default; the
            paper's tables used 1e-3, which the paper configs set. The one ε of an evaluation: an
            :class:`~lit_propulse.evaluation.module.EvaluationModule` gives it to PULSE's search too.
        fid: "inception" (Table I: FID on Inception features from ``inception_weights``), "attributes"
            (FID on the attribute classifier's features — the toy domain's "toy-FID", labelled as such)
            or "none".
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

    #: every metric key (for ``add_method(keys=...)`` and the stages' validation subsets)
    keys: tuple[str, ...] = tuple(k for k, _ in METRIC_BUILDERS)

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
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.side_resolutions = side_resolutions
        self.skipped: dict[str, str] = {}  # metric key -> why it is not computed
        self.labels: dict[str, str] = {"fid": "FID (attribute-classifier features)" if fid == "attributes" else "FID (Inception)"}
        self.register_buffer("_device_probe", torch.empty(0), persistent=False)

        self.classifier: nn.Module | None = None
        self.attr_names: list[str] = []
        if self._exists(
            "attr_diff",
            attribute_classifier,
            "an attribute classifier",
            "metrics.attribute_classifier: attributes.pt, written by experiments/toy/attributes.yaml or experiments/attributes.yaml",
        ):
            from lit_propulse.core.weights import load_module

            net = _load(attribute_classifier, "an attribute classifier", lambda p: load_module(p, what="attribute classifier"))
            self.classifier = net.requires_grad_(False).eval()
            self.attr_names = list(getattr(net, "attr_names", None) or [f"attr{i}" for i in range(net.num_attributes)])

        self.identity: nn.Module | None = None
        if self._exists("identity", identity_weights, "identity weights", "metrics.identity_weights: ArcFace model_ir_se50.pth or FaceNet's VGGFace2 file"):
            from lit_propulse.networks.feature_nets import build_identity_net

            self.identity = (
                _load(identity_weights, f"{identity_kind} identity weights", lambda p: build_identity_net(identity_kind, p)).requires_grad_(False).eval()
            )

        self.lpips_net: nn.Module | None = None
        if self._exists("lpips", lpips_weights, "LPIPS backbone weights", "metrics.lpips_weights: torchvision's alexnet-owt-7be5be79.pth"):
            from lit_propulse.networks.feature_nets import LPIPSNetwork

            self.lpips_net = _load(lpips_weights, "LPIPS backbone weights", lambda p: LPIPSNetwork(p, net=lpips_net))

        self.fid_features: nn.Module | None = None
        if fid == "none":
            self.skipped["fid"] = "switched off (metrics.fid: none)"
        elif fid == "attributes":
            if self.classifier is None:
                self.skipped["fid"] = f"FID on attribute-classifier features needs the attribute classifier ({self.skipped['attr_diff']})"
            else:
                self.fid_features = FIDFeatures(self.classifier, "attribute-classifier features")
        elif self._exists(
            "fid", inception_weights, "Inception weights", "metrics.inception_weights: torch-fidelity's weights-inception-2015-12-05-6726825d.pth"
        ):
            self.fid_features = _load(inception_weights, "the FID Inception weights", InceptionFeatures)

        self.niqe_model = None  # NIQEParams
        if not niqe:
            self.skipped["niqe"] = "switched off (metrics.niqe: false)"
        elif niqe_params is None or self._exists(
            "niqe",
            niqe_params,
            "a NIQE pristine model",
            "metrics.niqe_params: an .npz from python -m lit_propulse.metrics.niqe --fit, or null for the published one",
        ):
            from lit_propulse.metrics.niqe import NIQEParams

            self.niqe_model = _load(niqe_params, "a NIQE pristine model (.npz)", NIQEParams.load) if niqe_params is not None else NIQEParams.load(None)

        self.collections = nn.ModuleDict()  # method name -> MetricCollection(prefix="<name>/")

    def _exists(self, key: str, path: str | None, what: str, hint: str) -> bool:
        """True when ``path`` is given and exists; otherwise ``key`` is skipped with the reason."""
        if path is None:
            self.skipped[key] = f"no {what} ({hint})"
            return False
        if not os.path.exists(path):
            self.skipped[key] = f"{path}: file not found; it should be {what} ({hint})"
            return False
        return True

    def available(self, keys: Sequence[str] | None = None) -> list[str]:
        """The metric keys (of ``keys``; None = all) that are computed, i.e. not skipped."""
        wanted = self.keys if keys is None else keys
        unknown = set(wanted) - set(self.keys)
        if unknown:
            raise ValueError(f"unknown metric keys {sorted(unknown)}; choose from {list(self.keys)}")
        return [k for k in self.keys if k in wanted and k not in self.skipped]

    def add_method(self, name: str, keys: Sequence[str] | None = None) -> MetricCollection:
        """The metric collection of one method (created on first call, prefix ``"<name>/"``; every
        process must add the same methods). ``keys``: a subset of :attr:`keys` (None = all)."""
        if name not in self.collections:
            build = dict(METRIC_BUILDERS)
            metrics = {k: build[k](self) for k in self.available(keys)}
            self.collections[name] = MetricCollection(metrics, prefix=f"{name}/", compute_groups=False).to(self._device_probe.device)
        return self.collections[name]

    def update(self, name: str, out: ImageOutput, batch: SRBatch) -> None:
        """Add one batch of ``name``'s outputs (``out`` in [-1, 1]) to its collection."""
        sides = {int(r): v.float() for r, v in out.side_images.items()}
        self.add_method(name).update(sr=out.image.float(), gt=batch.hr.float(), lr=batch.lr.float(), sides=sides)

    def compute(self, name: str) -> dict[str, Any]:
        """``{"count", "l_ds", "success_rate", "psnr", "ssim", "fid"?, "niqe"?, "identity"?, "lpips"?,
        "attr_diff"?, "attr_diff_per_attribute"?: {attr: v}, "attr_diff_side"?: {r: v}}`` as floats
        (the keys of the collection; synced over processes by torchmetrics)."""
        prefix = f"{name}/"
        res: dict[str, Any] = {}
        for key, v in self.collections[name].compute().items():
            k = key.removeprefix(prefix)
            if k == "count":
                res[k] = int(v)  # images scored (summed over processes)
            elif k == "attr_diff_per_attribute":
                res[k] = {a: float(x) for a, x in zip(self.attr_names, v.tolist())}
            elif k == "attr_diff_side":
                res[k] = {int(r): float(x) for r, x in v.items()}
            else:
                res[k] = float(v)
        return res

    def reset(self, name: str | None = None) -> None:
        """Reset one method's metric states (None = every method's)."""
        for n, collection in self.collections.items():
            if name is None or n == name:
                collection.reset()
