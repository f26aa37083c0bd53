"""Attribute-score difference: semantic preservation of SR results (Pro-PULSE Sec. IV-E, Fig. 8).

The paper scores results and ground truths with a face-attribute classifier and reports the
absolute differences of the attribute scores, per attribute (Fig. 8a: six attributes, for every
progressive resolution 16 ... 1024) and averaged over all 40 attributes (Fig. 8b: one number per
method). Here, for images x and the classifier's scores s(x) = sigmoid(logits) in [0, 1]:

    d_a = mean over images of |s_a(SR) - s_a(GT)|        (per attribute a; lower is better)
    mean = (1 / A) * sum_a d_a

Resolution: the classifier takes ``image_size`` images. SR and GT of any other size are resized to
it by the same function, :func:`resize_for_classifier` (bicubic; antialiased when shrinking; clamped
to [-1, 1]), each from its own size. Side outputs at 16 or 32 px (Fig. 8a) are thus upsampled
bicubically before scoring; pass the GT at full resolution to compare against the real ground truth,
as the paper's remark on 'attractive' and 'young' ("rely heavily on image resolution") implies, or
downscale it to the side output's size first to take resolution itself out of the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

__all__ = ["AttributeScoreDifference", "attribute_score_difference", "resize_for_classifier"]


def attribute_score_difference(scores_sr: Tensor, scores_gt: Tensor) -> Tensor:
    """|s(SR) - s(GT)| per image and attribute: [B, A] from two [B, A] score tensors."""
    if scores_sr.shape != scores_gt.shape or scores_sr.ndim != 2:
        raise ValueError(f"scores must both be [B, A], got {tuple(scores_sr.shape)} and {tuple(scores_gt.shape)}")
    return (scores_sr - scores_gt).abs()


def resize_for_classifier(img: Tensor, size: int) -> Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, 3, size, size]: bicubic (antialiased when shrinking), clamped to [-1, 1].

    Returns ``img`` unchanged when it already has that size."""
    if tuple(img.shape[-2:]) == (size, size):
        return img
    out = F.interpolate(img.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp(-1.0, 1.0)


class AttributeScoreDifference(Metric):
    """Mean absolute attribute-score difference between SR results and ground truths (Sec. IV-E).

    ``update(sr, gt)``: [B, 3, H, W] images in [-1, 1]; SR and GT may have different sizes (each is
    resized to the classifier's ``image_size``, see the module docstring). ``compute()`` returns
    ``{"mean": scalar, "per_attribute": [A]}`` (float32); :meth:`named` flattens it to
    ``{"mean": float, <attribute name>: float, ...}`` for logging.

    States are sums (``sum_abs_diff`` [A], float64) and an image count, reduced with "sum" across
    processes. The classifier is not a metric state: it is frozen, stays in eval mode, moves with
    the metric (``.to(device)``) and is left out of the metric's ``state_dict`` (it comes from its
    own file).

    Args:
        classifier: a trained attribute classifier with ``scores(x) -> [B, A]`` probabilities,
            ``num_attributes`` and ``image_size`` (an
            :class:`~lit_propulse.networks.attribute_classifier.AttributeClassifier`).
        attr_names: names of the A attributes for reporting; None = the classifier's ``attr_names``
            (or "0", "1", ... when it has none).
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    def __init__(self, classifier: nn.Module, attr_names: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        a = int(classifier.num_attributes)
        names = attr_names if attr_names is not None else getattr(classifier, "attr_names", None)
        names = [str(i) for i in range(a)] if names is None else [str(n) for n in names]
        if len(names) != a:
            raise ValueError(f"got {len(names)} attribute names for a classifier of {a} attributes")
        self.attr_names = names
        self.image_size = int(classifier.image_size)
        self.classifier = classifier.eval().requires_grad_(False)
        self.add_state("sum_abs_diff", default=torch.zeros(a, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.register_load_state_dict_pre_hook(self._keep_classifier_weights)

    # -- the classifier: frozen, eval mode, outside the state dict -------------------------------
    def train(self, mode: bool = True) -> AttributeScoreDifference:
        super().train(mode)
        self.classifier.eval()
        return self

    def state_dict(self, destination: dict[str, Any] | None = None, prefix: str = "", keep_vars: bool = False) -> dict[str, Any]:
        out = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        for k in [k for k in out if k.startswith(prefix + "classifier.")]:
            del out[k]
        return out

    def _keep_classifier_weights(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A state dict without the classifier (see :meth:`state_dict`) loads strictly: keep the current weights."""
        for k, v in self.classifier.state_dict().items():
            state_dict.setdefault(prefix + "classifier." + k, v)

    # -- metric ---------------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, img: Tensor) -> Tensor:
        """Classifier scores [B, A] of images [B, 3, H, W] in [-1, 1] of any size."""
        return self.classifier.scores(resize_for_classifier(img, self.image_size)).float()

    def update(self, sr: Tensor, gt: Tensor) -> None:
        """Accumulate |s(SR) - s(GT)| of a batch: ``sr`` [B, 3, h, w], ``gt`` [B, 3, H, W], in [-1, 1]."""
        for name, x in (("sr", sr), ("gt", gt)):
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"{name} must be [B, 3, H, W] images, got {tuple(x.shape)}")
        if sr.shape[0] != gt.shape[0]:
            raise ValueError(f"sr and gt hold different numbers of images: {sr.shape[0]} vs {gt.shape[0]}")
        d = attribute_score_difference(self.scores(sr), self.scores(gt))  # [B, A]
        self.sum_abs_diff += d.double().sum(dim=0)
        self.count += d.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """``{"mean": mean over attributes, "per_attribute": [A]}``; nan before any update."""
        per = (self.sum_abs_diff / self.count).float() if self.count > 0 else torch.full_like(self.sum_abs_diff, float("nan")).float()
        return {"mean": per.mean(), "per_attribute": per}

    def named(self, result: dict[str, Tensor] | None = None) -> dict[str, float]:
        """``{"mean": ..., <attribute>: ...}`` as floats, from ``result`` (None = ``compute()``)."""
        result = self.compute() if result is None else result
        return {"mean": float(result["mean"]), **{n: float(v) for n, v in zip(self.attr_names, result["per_attribute"])}}
