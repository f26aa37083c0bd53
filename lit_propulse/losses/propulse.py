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

Norms: the papers' ||.||^2 divided by the element count S_r (Eq. (2)) is the mean squared error per
element; we use that normalisation for Eq. (2), (3) and (6) alike (Eq. (6) prints no 1/S_r, but the
unnormalised sum would weight scales by their pixel count, against the 1/N average the equation
takes). Every term is averaged over the batch. All downscaling is :func:`lit_propulse.core.downscale.downscale`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.core.outputs import ImageOutput
from lit_propulse.core.downscale import downscale
from lit_propulse.losses.gan import WGANGeneratorLoss


class SidePixelLoss(nn.Module):
    """Eq. (2): 1/M sum_r MSE(I_o^r, DS_r(I_o^final)) over the M side outputs. The target is detached:
    the branches learn to match the frozen generator's image, not the reverse."""

    def forward(self, out: ImageOutput) -> Tensor:
        final = out.image.detach().float()
        terms = [F.mse_loss(img.float(), downscale(final, r)) for r, img in out.side_images.items()]
        return torch.stack(terms).mean()


class SidePerceptualLoss(nn.Module):
    """Eq. (3): 1/M sum_r MSE(VGG(I_o^r), VGG(DS_r(I_o^final))) with VGG-16 conv4_2 features.

    Args:
        vgg: a frozen feature network mapping [B, 3, H, W] in [-1, 1] to features (VGGPerceptual).
    """

    def __init__(self, vgg: nn.Module) -> None:
        super().__init__()
        self.vgg = vgg

    def forward(self, out: ImageOutput) -> Tensor:
        final = out.image.detach().float()
        terms = []
        for r, img in out.side_images.items():
            with torch.no_grad():
                target = self.vgg(downscale(final, r))
            terms.append(F.mse_loss(self.vgg(img.float()), target))
        return torch.stack(terms).mean()


class GdsLoss(nn.Module):
    """Eq. (1): L_Gds = L_pix + lambda_pp * L_pp.

    Args:
        lambda_pp: weight of the perceptual term (1 in the paper); 0 = off (no VGG needed).
        vgg: the VGG-16 feature network; required when lambda_pp > 0.
    """

    def __init__(self, lambda_pp: float = 1.0, vgg: nn.Module | None = None) -> None:
        super().__init__()
        if lambda_pp < 0:
            raise ValueError(f"lambda_pp must be >= 0, got {lambda_pp}")
        if lambda_pp > 0 and vgg is None:
            raise ValueError(f"lambda_pp = {lambda_pp} needs a VGG-16 feature network (vgg=...); set lambda_pp: 0 to train without it")
        self.lambda_pp = float(lambda_pp)
        self.pix = SidePixelLoss()
        self.pp = SidePerceptualLoss(vgg) if lambda_pp > 0 else None

    def forward(self, out: ImageOutput) -> tuple[Tensor, dict[str, Tensor]]:
        logs = {"loss/gds/pix": self.pix(out)}
        total = logs["loss/gds/pix"]
        if self.pp is not None:
            logs["loss/gds/pp"] = self.pp(out)
            total = total + self.lambda_pp * logs["loss/gds/pp"]
        logs["loss/gds/total"] = total
        return total, {k: v.detach() for k, v in logs.items()}


class MultiScaleReconstructionLoss(nn.Module):
    """Eq. (6): L_rec = 1/N sum_r' MSE(I_LR, DS_LR(I_o^r')) over the N output scales (every side
    output and the final image; N = 6 for 16 -> 1024).

    Args:
        use_side_outputs: False = only the final image (N = 1; the "without G_ds" ablation).
    """

    def __init__(self, use_side_outputs: bool = True) -> None:
        super().__init__()
        self.use_side_outputs = use_side_outputs

    def per_scale(self, out: ImageOutput, lr: Tensor) -> dict[int, Tensor]:
        """MSE against the LR for each output scale r' (for logging per scale)."""
        scales = out.all_scales() if self.use_side_outputs else {out.image.shape[-1]: out.image}
        lr = lr.float()
        return {r: F.mse_loss(downscale(img.float(), lr.shape[-1]), lr) for r, img in scales.items()}

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
    """

    def __init__(
        self,
        lambda_rec: float = 1.0,
        lambda_id: float = 1.0,
        lambda_adv: float = 0.01,
        identity_net: nn.Module | None = None,
        use_side_outputs: bool = True,
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
        self.rec = MultiScaleReconstructionLoss(use_side_outputs)
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
