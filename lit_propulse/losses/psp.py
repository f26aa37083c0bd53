"""pSp's training objective (Richardson et al., CVPR 2021, Sec. 3.3, Eq. (2)-(5)), for the pSp
baseline of Pro-PULSE Table I, one module per term:

    L = lambda_l2 L2 + lambda_lpips LPIPS + lambda_id L_id + lambda_reg L_w-norm

| term | module | pSp |
| --- | --- | --- |
| L2 = mean squared error of output and target | :class:`PSPLoss` (F.mse_loss) | Eq. (2) |
| LPIPS(output, target) (AlexNet) | an ``LPIPSNetwork`` | Eq. (3) |
| L_id = 1 - cos(R(output), R(target)), ArcFace | :class:`~lit_propulse.losses.propulse.IdentityLoss` | Eq. (4) |
| L_w-norm = ||E(x) - w_avg||_2 | :class:`WNormLoss` | Eq. (5) |

Super-resolution weights (pSp's ``configs/train/superres.yaml``): lambda_l2 = 1, lambda_lpips = 0.8,
lambda_id = 0.1, lambda_reg = 0.005. pSp computes every image term on the output average-pooled to
256 (its ``face_pool``) against the target at 256: ``loss_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.losses.propulse import IdentityLoss

__all__ = ["PSPLoss", "WNormLoss"]


class WNormLoss(nn.Module):
    """pSp Eq. (5): the Frobenius norm of w+ - w_avg per image (pSp's ``WNormLoss``:
    ``(latent - latent_avg).norm(2, dim=(1, 2))``), averaged over the batch: [B, num_ws, w_dim] -> scalar."""

    def forward(self, ws: Tensor, latent_avg: Tensor) -> Tensor:
        return (ws - latent_avg.to(ws)).flatten(1).norm(dim=1).mean()


class PSPLoss(nn.Module):
    """pSp's objective (module docstring). A term whose weight is 0 is not computed and needs no network;
    LPIPS and identity nets may be None on the toy domain (set their weights to 0).

    Args:
        lambda_l2: weight of L2 (1).
        lambda_lpips: weight of LPIPS (0.8); > 0 needs ``lpips`` (an LPIPSNetwork: [B,3,H,W] x2 -> [B]).
        lambda_id: weight of L_id (0.1); > 0 needs ``identity_net`` (ArcFaceIdentity).
        lambda_w_norm: weight of L_w-norm (0.005).
        lpips: frozen LPIPS network; None = no LPIPS term.
        identity_net: frozen face-recognition embedder; None = no identity term.
        loss_size: side both images are average-pooled to before every image term (256 in pSp);
            None = the output's own size.
    """

    def __init__(
        self,
        lambda_l2: float = 1.0,
        lambda_lpips: float = 0.8,
        lambda_id: float = 0.1,
        lambda_w_norm: float = 0.005,
        lpips: nn.Module | None = None,
        identity_net: nn.Module | None = None,
        loss_size: int | None = 256,
    ) -> None:
        super().__init__()
        weights = {"l2": lambda_l2, "lpips": lambda_lpips, "id": lambda_id, "w_norm": lambda_w_norm}
        bad = {k: v for k, v in weights.items() if v < 0}
        if bad:
            raise ValueError(f"loss weights must be >= 0, got {bad}")
        if lambda_lpips > 0 and lpips is None:
            raise ValueError(f"lambda_lpips = {lambda_lpips} needs an LPIPS network (lpips=...); set lambda_lpips: 0 to train without it")
        if lambda_id > 0 and identity_net is None:
            raise ValueError(f"lambda_id = {lambda_id} needs an identity network (identity_net=...); set lambda_id: 0 to train without it")
        if loss_size is not None and loss_size < 1:
            raise ValueError(f"loss_size must be None or >= 1, got {loss_size}")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.loss_size = loss_size
        self.lpips = lpips if lambda_lpips > 0 else None
        self.id = IdentityLoss(identity_net) if lambda_id > 0 else None
        self.w_norm = WNormLoss()

    def pool(self, img: Tensor) -> Tensor:
        """pSp's ``face_pool``: adaptive average pooling to ``loss_size`` (no-op when None or already that size)."""
        s = self.loss_size
        if s is None or tuple(img.shape[-2:]) == (s, s):
            return img
        return F.adaptive_avg_pool2d(img, (s, s))

    def forward(self, image: Tensor, target: Tensor, ws: Tensor, latent_avg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """image: [B, 3, H, W] the generator's output; target: [B, 3, H, W] the ground truth;
        ws: [B, num_ws, w_dim] the encoder's w+; latent_avg: [w_dim]."""
        y_hat, y = self.pool(image.float()), self.pool(target.float())
        terms: dict[str, Tensor] = {}
        if self.weights["l2"] > 0:
            terms["l2"] = F.mse_loss(y_hat, y)
        if self.lpips is not None:
            terms["lpips"] = self.lpips(y_hat, y).mean()
        if self.id is not None:
            terms["id"] = self.id(y_hat, y)
        if self.weights["w_norm"] > 0:
            terms["w_norm"] = self.w_norm(ws, latent_avg)
        total = sum((self.weights[k] * v for k, v in terms.items()), torch.zeros((), device=image.device))
        logs = {f"loss/{k}": v.detach() for k, v in terms.items()}
        logs["loss/total"] = total.detach()
        return total, logs
