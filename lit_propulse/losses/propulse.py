"""Pro-PULSE's loss terms (IEEE TIP 2022, Sec. III-C to III-E), one module per equation.

| equation | module |
| --- | --- |
| Eq. (1) L_Gds = L_pix + lambda_pp L_pp | :class:`GdsLoss` |
| Eq. (2) L_pix, side output vs DS_r(final) | :class:`SidePixelLoss` |
| Eq. (3) L_pp, VGG-16 conv4_2 features of the same pair | :class:`SidePerceptualLoss` |
| Eq. (5) L_E = lambda_rec L_rec + lambda_id L_id + lambda_adv L_adv | :class:`EncoderLoss` |
| Eq. (6) L_rec, every output scale downscaled to the LR | :class:`MultiScaleReconstructionLoss` |
| Eq. (7) L_id = 1 - cos(id(I_o), id(I_GT)) | :class:`IdentityLoss` |
| Eq. (8), (9) WGAN L_adv and L_D | :mod:`lit_propulse.losses.gan` |

Normalisation (``norm``, one argument of :class:`GdsLoss` and :class:`EncoderLoss`):

* ``"mean"`` (default): every ||.||^2 is a mean over all its elements (channels included), for
  Eq. (2), (3) and (6) alike: F.mse_loss, as pSp (whose training setting the paper follows) computes
  its L2. The terms then have comparable magnitudes at the paper's weights (lambda_rec = lambda_id = 1,
  lambda_adv = 0.01).
* ``"paper"``: the equations as printed. Eq. (2): ||.||^2 / S_r with S_r = r^2, the image's spatial
  size (a sum over the 3 channels: 3x "mean"); Eq. (3): ||.||^2 / S_r with S_r the feature map's
  spatial size (a sum over VGG's 512 channels: 512x "mean"); Eq. (6): no 1/S_r at all, the plain
  sum of squares over the LR grid (3 l^2 values: 768x "mean" at LR 16). Every term of Eq. (6) is at
  the LR size, so the sum weights the N scales equally too; what changes is L_rec's weight relative
  to L_id and L_adv.

docs/paper-setting.md argues the default. Every term is averaged over the batch (per image first).
All downscaling is :func:`lit_propulse.core.downscale.downscale`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.core.downscale import downscale
from lit_propulse.core.outputs import ImageOutput
from lit_propulse.losses.gan import WGANGeneratorLoss

Norm = Literal["mean", "paper"]
_NORMS = ("mean", "paper")


def _check_norm(norm: str) -> None:
    if norm not in _NORMS:
        raise ValueError(f"norm must be 'mean' (per-element means) or 'paper' (the equations as printed), got {norm!r}")


def squared_error(x: Tensor, y: Tensor, divide_by: Literal["elements", "spatial", "none"]) -> Tensor:
    """||x - y||^2 per batch item, divided by its element count, its spatial size H*W, or nothing,
    then averaged over the batch: [B, C, H, W] x2 -> scalar."""
    per_item = (x - y).square().flatten(1).sum(1)  # [B]
    if divide_by == "elements":
        per_item = per_item / x[0].numel()
    elif divide_by == "spatial":
        per_item = per_item / (x.shape[-1] * x.shape[-2])
    elif divide_by != "none":
        raise ValueError(f"divide_by must be 'elements', 'spatial' or 'none', got {divide_by!r}")
    return per_item.mean()


class SidePixelLoss(nn.Module):
    """Eq. (2): 1/M sum_r 1/S_r ||I_o^r - DS_r(I_o^final)||^2 over the M side outputs. The target is
    detached: the branches learn to match the frozen generator's image, not the reverse.

    Args:
        norm: "mean" = S_r the element count (per-element MSE); "paper" = S_r = r^2 (spatial).
    """

    def __init__(self, norm: Norm = "mean") -> None:
        super().__init__()
        _check_norm(norm)
        self.norm = norm

    def forward(self, out: ImageOutput) -> Tensor:
        final = out.image.detach().float()
        divide_by = "elements" if self.norm == "mean" else "spatial"
        terms = [squared_error(img.float(), downscale(final, r), divide_by) for r, img in out.side_images.items()]
        return torch.stack(terms).mean()


class SidePerceptualLoss(nn.Module):
    """Eq. (3): 1/M sum_r 1/S_r ||VGG(I_o^r) - VGG(DS_r(I_o^final))||^2 with VGG-16 conv4_2 features.

    Args:
        vgg: a frozen feature network mapping [B, 3, H, W] in [-1, 1] to features (VGGPerceptual).
        norm: "mean" = S_r the feature map's element count; "paper" = its spatial size h*w.
    """

    def __init__(self, vgg: nn.Module, norm: Norm = "mean") -> None:
        super().__init__()
        _check_norm(norm)
        self.vgg = vgg
        self.norm = norm

    def forward(self, out: ImageOutput) -> Tensor:
        final = out.image.detach().float()
        divide_by = "elements" if self.norm == "mean" else "spatial"
        terms = []
        for r, img in out.side_images.items():
            with torch.no_grad():
                target = self.vgg(downscale(final, r))
            terms.append(squared_error(self.vgg(img.float()), target, divide_by))
        return torch.stack(terms).mean()


class GdsLoss(nn.Module):
    """Eq. (1): L_Gds = L_pix + lambda_pp * L_pp.

    Args:
        lambda_pp: weight of the perceptual term (1 in the paper); 0 = off (no VGG needed).
        vgg: the VGG-16 feature network; required when lambda_pp > 0.
        norm: the 1/S_r of Eq. (2)/(3): "mean" (per-element means, the default) or "paper"
            (spatial sizes, as printed); see the module docstring.
    """

    def __init__(self, lambda_pp: float = 1.0, vgg: nn.Module | None = None, norm: Norm = "mean") -> None:
        super().__init__()
        _check_norm(norm)
        if lambda_pp < 0:
            raise ValueError(f"lambda_pp must be >= 0, got {lambda_pp}")
        if lambda_pp > 0 and vgg is None:
            raise ValueError(f"lambda_pp = {lambda_pp} needs a VGG-16 feature network (vgg=...); set lambda_pp: 0 to train without it")
        self.lambda_pp = float(lambda_pp)
        self.pix = SidePixelLoss(norm)
        self.pp = SidePerceptualLoss(vgg, norm) if lambda_pp > 0 else None

    def forward(self, out: ImageOutput) -> tuple[Tensor, dict[str, Tensor]]:
        logs = {"loss/gds/pix": self.pix(out)}
        total = logs["loss/gds/pix"]
        if self.pp is not None:
            logs["loss/gds/pp"] = self.pp(out)
            total = total + self.lambda_pp * logs["loss/gds/pp"]
        logs["loss/gds/total"] = total
        return total, {k: v.detach() for k, v in logs.items()}


class MultiScaleReconstructionLoss(nn.Module):
    """Eq. (6): L_rec = 1/N sum_r' ||I_LR - DS_LR(I_o^r')||^2 over the N output scales (every side
    output and the final image; N = 6 for 16 -> 1024).

    Args:
        use_side_outputs: False = only the final image (N = 1; the "without G_ds" ablation).
        norm: "mean" = per-element MSE (the default); "paper" = the plain sum of squares, as printed
            (no 1/S_r).
    """

    def __init__(self, use_side_outputs: bool = True, norm: Norm = "mean") -> None:
        super().__init__()
        _check_norm(norm)
        self.use_side_outputs = use_side_outputs
        self.norm = norm

    def per_scale(self, out: ImageOutput, lr: Tensor) -> dict[int, Tensor]:
        """||I_LR - DS_LR(I_o^r')||^2 (normalised per ``norm``) for each output scale r' (for logging per scale)."""
        scales = out.all_scales() if self.use_side_outputs else {out.image.shape[-1]: out.image}
        lr = lr.float()
        divide_by = "elements" if self.norm == "mean" else "none"
        return {r: squared_error(downscale(img.float(), lr.shape[-1]), lr, divide_by) for r, img in scales.items()}

    def forward(self, out: ImageOutput, lr: Tensor) -> Tensor:
        return torch.stack(list(self.per_scale(out, lr).values())).mean()


class IdentityLoss(nn.Module):
    """Eq. (7): L_id = 1 - cos(id(I_o^final), id(I_GT)), averaged over the batch.

    Args:
        identity_net: frozen face-recognition embedder ([B, 3, H, W] in [-1, 1] -> [B, D]); ArcFace
            IR-SE50 in the paper, FaceNet also supported (lit_propulse.networks.feature_nets).
    """

    def __init__(self, identity_net: nn.Module) -> None:
        super().__init__()
        self.net = identity_net

    def forward(self, image: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            t = self.net(target.float())
        return (1 - F.cosine_similarity(self.net(image.float()), t, dim=1)).mean()


class EncoderLoss(nn.Module):
    """Eq. (5): L_E = lambda_rec L_rec + lambda_id L_id + lambda_adv L_adv (E_W and E_W+ alike, Sec. III-E).

    A term whose weight is 0 is not computed (and needs no network), which is how the "only / without
    L_rec, L_id, L_adv" ablations of Sec. IV-G are configured.

    Args:
        lambda_rec: weight of Eq. (6) (1).
        lambda_id: weight of Eq. (7) (1; 0 for non-face domains, as the paper does in Sec. IV-I).
        lambda_adv: weight of Eq. (8) (0.01).
        identity_net: required when lambda_id > 0.
        use_side_outputs: L_rec over every output scale (True) or the final image only (False).
        norm: Eq. (6)'s normalisation: "mean" (per-element MSE, the default) or "paper" (the plain
            sum, as printed); see the module docstring.
    """

    def __init__(
        self,
        lambda_rec: float = 1.0,
        lambda_id: float = 1.0,
        lambda_adv: float = 0.01,
        identity_net: nn.Module | None = None,
        use_side_outputs: bool = True,
        norm: Norm = "mean",
    ) -> None:
        super().__init__()
        weights = {"rec": lambda_rec, "id": lambda_id, "adv": lambda_adv}
        bad = {k: v for k, v in weights.items() if v < 0}
        if bad:
            raise ValueError(f"loss weights must be >= 0, got {bad}")
        if not any(v > 0 for v in weights.values()):
            raise ValueError(f"at least one of lambda_rec, lambda_id, lambda_adv must be > 0, got {weights}")
        if lambda_id > 0 and identity_net is None:
            raise ValueError(f"lambda_id = {lambda_id} needs an identity network (identity_net=...); set lambda_id: 0 to train without it")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.rec = MultiScaleReconstructionLoss(use_side_outputs, norm)
        self.id = IdentityLoss(identity_net) if lambda_id > 0 else None
        self.adv = WGANGeneratorLoss()

    @property
    def needs_discriminator(self) -> bool:
        return self.weights["adv"] > 0

    def forward(self, out: ImageOutput, lr: Tensor, gt: Tensor, fake_logits: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """out: G_ds output for the batch; lr: [B, 3, l, l] inputs; gt: [B, 3, H, W] ground truth;
        fake_logits: D(out.image) [B, 1], required when lambda_adv > 0."""
        terms: dict[str, Tensor] = {}
        if self.weights["rec"] > 0:
            per_scale = self.rec.per_scale(out, lr)
            terms["rec"] = torch.stack(list(per_scale.values())).mean()
        if self.id is not None:
            terms["id"] = self.id(out.image, gt)
        if self.weights["adv"] > 0:
            if fake_logits is None:
                raise ValueError("lambda_adv > 0 but no discriminator logits were given")
            terms["adv"] = self.adv(fake_logits)
        total = sum(self.weights[k] * v for k, v in terms.items())
        logs = {f"loss/{k}": v.detach() for k, v in terms.items()}
        if "rec" in terms:
            logs.update({f"loss/rec/{r}": v.detach() for r, v in per_scale.items()})
        logs["loss/total"] = total.detach()
        return total, logs


class GradientPenalty(nn.Module):
    """WGAN-GP (Gulrajani et al. 2017): lambda * E[(||grad D(x_hat)|| - 1)^2] on real/fake interpolates.
    Optional; the paper trains its WGAN critic without it (Eq. (9) only).

    Args:
        weight: lambda (10 in WGAN-GP).
    """

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def forward(self, discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
        return self.weight * (grad.flatten(1).norm(dim=1) - 1).square().mean()
