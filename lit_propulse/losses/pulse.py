"""PULSE's loss terms (Menon et al., CVPR 2020), one small module each.

* :class:`DownscaleLoss` — the downscaling loss L_DS(I_SR, I_LR) = ||DS(I_SR) - I_LR||_p^p of
  Sec. 3.1, Eq. (8), with p = 2 as the official code's ``L2`` term: the **mean** squared difference
  over (C, H, W), **per image**, measured on images in [0, 1] (the official code converts the
  generator output to [0, 1] before its loss). Our images are in [-1, 1], so the value is
  ``mean(((DS(x) - y) / 2)**2)`` = MSE_[-1,1] / 4; this keeps ε (2e-3 in the code, 1e-3 in the
  paper's tables) meaning what it meant there.
* :class:`GeoCross` — the geodesic cross loss of App. B 2.3, GEOCROSS(v_1..v_k) = Σ_{i<j} θ(v_i, v_j)²;
  θ exact on unit vectors (our default) or the official code's formula on the raw rows
  (``unit_vectors=False``, "as published").
* :class:`PULSELoss` — ``downscale_weight · L_DS + geocross_weight · GEOCROSS`` (100 and 0.05, the
  official ``"100*L2+0.05*GEOCROSS"``), per image, summed over the batch so that every image's
  gradient is independent of the batch it is in.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_propulse.core.downscale import downscale

__all__ = ["DownscaleLoss", "GeoCross", "PULSELoss", "downscale_l2", "geocross", "pairwise_angles"]


def downscale_l2(sr_lr: Tensor, lr: Tensor) -> Tensor:
    """Per-image mean squared difference in [0, 1] units: [B, C, h, w] x2 -> [B]."""
    if sr_lr.shape != lr.shape:
        raise ValueError(f"downscaled output {tuple(sr_lr.shape)} and LR {tuple(lr.shape)} differ in shape")
    return ((sr_lr - lr) * 0.5).square().flatten(1).mean(1)


class DownscaleLoss(nn.Module):
    """L_DS of PULSE Eq. (8) with p = 2, per image (see the module docstring for units).

    The output is downscaled with the project's one ``DS`` (:func:`lit_propulse.core.downscale.downscale`)
    to the LR's own size, so the loss is measured with the operator that made the LR.
    """

    def forward(self, sr: Tensor, lr: Tensor) -> Tensor:
        # sr: [B, 3, H, W], lr: [B, 3, h, w] -> [B]
        return downscale_l2(downscale(sr, tuple(lr.shape[-2:])), lr)


def pairwise_angles(v: Tensor, unit_vectors: bool = True) -> Tensor:
    """Angles θ(v_i, v_j) in [0, π] between the k vectors of every batch item: [B, k, d] -> [B, k, k].

    Computed as 2·atan2(|û_i - û_j|, |û_i + û_j|) (the official code's formula). It is the exact
    angle only for vectors of equal norm, and the official code applies it to the unnormalised W
    rows; ``unit_vectors=True`` (our default) normalises first, û = v / |v|, so θ is the angle;
    False = the official formula on the raw rows. A 1e-9 under each square root keeps the gradient
    finite at θ = 0, as in the official code.
    """
    if v.ndim != 3:
        raise ValueError(f"pairwise_angles expects [B, k, d], got {tuple(v.shape)}")
    u = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12) if unit_vectors else v
    a = ((u[:, None] - u[:, :, None]).square().sum(-1) + 1e-9).sqrt()  # [B, k, k]
    b = ((u[:, None] + u[:, :, None]).square().sum(-1) + 1e-9).sqrt()
    return 2 * torch.atan2(a, b)


def geocross(v: Tensor, unit_vectors: bool = True) -> Tensor:
    """GEOCROSS(v_1..v_k) = Σ_{i<j} θ(v_i, v_j)² (PULSE App. B 2.3) per batch item: [B, k, d] -> [B].
    ``unit_vectors``: see :func:`pairwise_angles`."""
    k = v.shape[1]
    if k < 2:
        return v.new_zeros(v.shape[0])
    i, j = torch.triu_indices(k, k, offset=1, device=v.device)
    return pairwise_angles(v, unit_vectors)[:, i, j].square().sum(1)


class GeoCross(nn.Module):
    """The geodesic cross loss (PULSE App. B 2.3) of the k per-layer vectors, per image.

    Args:
        normalize: True = the official code's scaling, (d/8)·mean over all k² ordered pairs of θ²
            = d/(4k²)·Σ_{i<j} θ² (d = vector width; with d = 512, k = 18 this is exactly
            ``(D.pow(2)*512).mean((1, 2))/8`` of loss.py), so the official weight 0.05 keeps its
            meaning on any generator; False = the paper's plain Σ_{i<j} θ².
        unit_vectors: True = θ on the unit vectors (the exact angle, our default); False = the
            official formula on the raw rows (as published; see :func:`pairwise_angles`).
    """

    def __init__(self, normalize: bool = True, unit_vectors: bool = True) -> None:
        super().__init__()
        self.normalize = bool(normalize)
        self.unit_vectors = bool(unit_vectors)

    def forward(self, v: Tensor) -> Tensor:
        # v: [B, k, d] -> [B]
        total = geocross(v, self.unit_vectors)
        if not self.normalize:
            return total
        k, d = v.shape[1], v.shape[2]
        return total * (d / (4.0 * k * k))

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, unit_vectors={self.unit_vectors}"


class PULSELoss(nn.Module):
    """``downscale_weight · max(L_DS, floor) + geocross_weight · GEOCROSS`` per image (PULSE Sec. 3, App. B).

    Args:
        downscale_weight: weight of L_DS (100, the official ``100*L2``).
        geocross_weight: weight of GEOCROSS (0.05); 0 = off (the term is still reported).
        floor: the official code clamps L_DS from below at ε (``clamp(min=eps)``), so an image that
            already downscales within ε gets no more downscaling gradient; None = no clamp.
        geocross_normalize, geocross_unit_vectors: see :class:`GeoCross`.

    ``forward(sr, lr, vectors)`` returns ``(total, logs)``: ``total`` is the sum over the batch
    (a scalar to differentiate), ``logs`` holds detached per-image ``[B]`` values under
    ``"loss/downscale"`` (L_DS, unclamped), ``"loss/geocross"`` (GEOCROSS, unweighted) and
    ``"loss/total"`` (the per-image weighted total).
    """

    def __init__(
        self,
        downscale_weight: float = 100.0,
        geocross_weight: float = 0.05,
        floor: float | None = 2e-3,
        geocross_normalize: bool = True,
        geocross_unit_vectors: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("downscale_weight", downscale_weight), ("geocross_weight", geocross_weight)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite value >= 0, got {value}")
        if floor is not None and not floor >= 0:
            raise ValueError(f"floor must be None or >= 0, got {floor}")
        self.downscale_weight = float(downscale_weight)
        self.geocross_weight = float(geocross_weight)
        self.floor = None if floor is None else float(floor)
        self.downscale = DownscaleLoss()
        self.geocross = GeoCross(normalize=geocross_normalize, unit_vectors=geocross_unit_vectors)

    def forward(self, sr: Tensor, lr: Tensor, vectors: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # sr: [B, 3, H, W], lr: [B, 3, h, w], vectors: [B, k, d] (the per-layer vectors GEOCROSS sees)
        l_ds = self.downscale(sr, lr)  # [B]
        l_gc = self.geocross(vectors)  # [B]
        clamped = l_ds if self.floor is None else l_ds.clamp(min=self.floor)
        per_image = self.downscale_weight * clamped + self.geocross_weight * l_gc  # [B]
        logs = {"loss/downscale": l_ds.detach(), "loss/geocross": l_gc.detach(), "loss/total": per_image.detach()}
        return per_image.sum(), logs

    def extra_repr(self) -> str:
        return f"downscale_weight={self.downscale_weight}, geocross_weight={self.geocross_weight}, floor={self.floor}"
