"""Per-image super-resolution metrics as torchmetrics ``Metric`` s (states are sums, ``dist_reduce_fx="sum"``,
so DDP adds them up and each image counts once with the project's non-padding test sampler).

* :class:`DownscaleConsistency` — ||DS(SR) - LR||² (PULSE Sec. 3.1 Eq. (8), L_DS in the units of
  :mod:`lit_propulse.losses.pulse`) and the success rate at ε (PULSE Sec. 6: "the HR downscales to
  the LR within ε"), with the data's own ``DS``.
* :class:`IdentitySimilarity` — cosine of identity embeddings of SR and GT (Pro-PULSE Sec. IV-D, the
  metric version of L_id Eq. (7)).
* :class:`LPIPSDistance` — mean LPIPS (:class:`~lit_propulse.networks.feature_nets.LPIPSNetwork`).
* :func:`psnr_ssim_metrics` — torchmetrics' PSNR (mean of per-image PSNR) and SSIM on [0, 1] images
  (PULSE App. C reports both).
* :class:`FIDFeatures` — adapts any network with ``features(x)`` (e.g. the toy attribute classifier)
  to torchmetrics' ``FrechetInceptionDistance(feature=...)``.
* :class:`InceptionFeatures` — the FID Inception-v3 (torch-fidelity's port, Pro-PULSE Table I's FID)
  read from its weights file, as the same kind of feature extractor on [-1, 1] images.

Images are float [-1, 1] NCHW RGB, the project's convention.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lit_propulse.core.errors import (
    MissingFilesError,
    UserFacingError,
    WeightsFileError,
)
from lit_propulse.core.images import to_uint8
from lit_propulse.losses.pulse import DownscaleLoss

__all__ = [
    "DownscaleConsistency",
    "FIDFeatures",
    "IdentitySimilarity",
    "InceptionFeatures",
    "LPIPSDistance",
    "cosine_similarity",
    "psnr_ssim_metrics",
    "to_unit",
]


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped (what PSNR/SSIM with data_range 1 expect)."""
    return ((x.float() + 1) * 0.5).clamp(0, 1)


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine [B, D] x2 -> [B] (embeddings need not be normalised)."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1)


class DownscaleConsistency(Metric):
    """Mean L_DS = ||DS(SR) - LR||² per image and the fraction of images with L_DS <= ε.

    Args:
        eps: success threshold ε on the per-image L_DS (PULSE's 2e-3 by default; its tables used 1e-3).
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    def __init__(self, eps: float = 2e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.ds = DownscaleLoss()
        self.add_state("error_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("successes", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sr: Tensor, lr: Tensor) -> None:  # sr [B,3,H,W], lr [B,3,h,w]
        err = self.ds(sr.float(), lr.float()).detach()  # [B]
        self.error_sum += err.double().sum()
        self.successes += (err <= self.eps).sum()
        self.count += err.numel()

    def compute(self) -> dict[str, Tensor]:
        n = self.count.clamp(min=1)
        return {"l_ds": (self.error_sum / n).float(), "success_rate": self.successes.double().div(n).float(), "count": self.count.clone()}


class IdentitySimilarity(Metric):
    """Mean cosine similarity of identity embeddings id(SR) · id(GT).

    Args:
        identity_net: a frozen network mapping [B,3,H,W] in [-1,1] to embeddings [B, D]
            (:func:`~lit_propulse.networks.feature_nets.build_identity_net`). Not part of the state.
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(self, identity_net: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = identity_net
        self.add_state("sim_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sr: Tensor, gt: Tensor) -> None:
        with torch.no_grad():
            sim = cosine_similarity(self.net(sr), self.net(gt))  # [B]
        self.sim_sum += sim.double().sum()
        self.count += sim.numel()

    def compute(self) -> Tensor:
        return (self.sim_sum / self.count.clamp(min=1)).float()


class LPIPSDistance(Metric):
    """Mean LPIPS(SR, GT) (lower is better). ``net``: an :class:`LPIPSNetwork` (not part of the state)."""

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    def __init__(self, net: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.add_state("dist_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sr: Tensor, gt: Tensor) -> None:
        with torch.no_grad():
            d = self.net(sr, gt)  # [B]
        self.dist_sum += d.double().sum()
        self.count += d.numel()

    def compute(self) -> Tensor:
        return (self.dist_sum / self.count.clamp(min=1)).float()


def psnr_ssim_metrics() -> dict[str, Metric]:
    """torchmetrics PSNR (per-image PSNR in dB averaged over images, data range 1) and SSIM (Gaussian
    11x11, σ 1.5, data range 1); both take [0, 1] images (:func:`to_unit`)."""
    return {
        "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean"),
        "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
    }


class FIDFeatures(nn.Module):
    """A network with ``features(x [B,3,H,W] in [-1,1]) -> [B, D]`` as torchmetrics' custom FID
    feature extractor (it reads ``num_features`` and calls ``forward`` on the images it is given).

    Args:
        net: e.g. :class:`~lit_propulse.networks.attribute_classifier.AttributeClassifier`.
        name: how the FID is labelled in reports ("toy attribute-classifier features"), so nobody
            mistakes it for Inception FID.
    """

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        if not hasattr(net, "features") or not hasattr(net, "num_features"):
            raise ValueError(f"{type(net).__name__} has no features()/num_features for FID")
        self.net = net.requires_grad_(False).eval()
        self.num_features = int(net.num_features)
        self.name = name

    def train(self, mode: bool = True) -> FIDFeatures:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.net.features(x.float())  # [B, D]


class InceptionFeatures(nn.Module):
    """The FID Inception-v3 pool features (2048) of torchmetrics/torch-fidelity, read from a weights file,
    on [-1, 1] images (converted to the uint8 the network expects): the custom feature extractor of
    ``FrechetInceptionDistance(feature=...)`` for Pro-PULSE Table I's FID.

    Args:
        weights_path: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``. A missing file
            raises :class:`MissingFilesError`; an unusable one (or no torch-fidelity) a :class:`UserFacingError`.
    """

    num_features = 2048

    def __init__(self, weights_path: str) -> None:
        super().__init__()
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        from lit_propulse.networks.feature_nets import INCEPTION_FID_WEIGHTS

        path = str(weights_path)
        if not os.path.isfile(path):
            raise MissingFilesError(f"{path}: not found. Expected {INCEPTION_FID_WEIGHTS}. Copy it to this path (nothing is downloaded).")
        if not _TORCH_FIDELITY_AVAILABLE:
            raise UserFacingError(f"{path}: the Inception FID needs torch-fidelity: pip install torch-fidelity")
        from torchmetrics.image.fid import NoTrainInceptionV3

        try:
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(self.num_features)], feature_extractor_weights_path=path)
        except Exception as e:  # noqa: BLE001 - any unreadable/foreign file: one line naming it
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise WeightsFileError(f"{path}: not usable as the FID Inception weights ({detail}). Expected {INCEPTION_FID_WEIGHTS}.") from None
        self.net.requires_grad_(False)

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.net(to_uint8(x)).reshape(x.shape[0], -1)  # [B, 2048]
