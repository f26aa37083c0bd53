"""GAN losses and regularisers.

StyleGAN2 training (Karras et al. 2020, Sec. 3.1-3.2 and App. B): non-saturating logistic loss,
lazy R1 penalty, path-length regularisation. Pro-PULSE's WGAN terms (Eq. (8), (9)) live here too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NonSaturatingLoss(nn.Module):
    """Logistic GAN loss. ``generator(fake_logits)`` = softplus(-D(G(z))); ``discriminator(real, fake)``
    = softplus(D(G(z))) + softplus(-D(x)), each averaged over the batch."""

    @staticmethod
    def generator(fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean()

    @staticmethod
    def discriminator(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


class R1Penalty(nn.Module):
    """R1 = gamma/2 * E[||grad_x D(x)||^2] on real images (Mescheder et al. 2018).

    Args:
        gamma: weight (10 for FFHQ 1024 in StyleGAN2; smaller for small images).
    """

    def __init__(self, gamma: float = 10.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"R1 gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, real: Tensor, real_logits: Tensor) -> Tensor:
        (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        return self.gamma / 2 * grad.float().square().flatten(1).sum(1).mean()


class PathLengthPenalty(nn.Module):
    """Path-length regularisation (StyleGAN2 Sec. 3.2): (||J_w^T y||_2 - a)^2 with y ~ N(0, I)/sqrt(HW)
    and a the running mean of the lengths (decay ``decay``).

    Args:
        decay: EMA rate of the target length a (0.01).
    """

    def __init__(self, decay: float = 0.01) -> None:
        super().__init__()
        self.decay = float(decay)
        self.register_buffer("mean_length", torch.zeros(()))

    def forward(self, images: Tensor, ws: Tensor) -> tuple[Tensor, Tensor]:
        """images [B, 3, H, W] produced from ws [B, num_ws, w_dim] -> (penalty, mean path length)."""
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = torch.sqrt(grad.float().square().sum(2).mean(1))  # [B]
        mean = self.mean_length + self.decay * (lengths.mean().detach() - self.mean_length)
        self.mean_length.copy_(mean)
        return (lengths - mean).square().mean(), lengths.mean().detach()


class WGANGeneratorLoss(nn.Module):
    """Pro-PULSE Eq. (8): L_adv = -E[D(I_o^1024)]."""

    def forward(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()


class WGANDiscriminatorLoss(nn.Module):
    """Pro-PULSE Eq. (9): L_D = E[D(I_o^1024)] - E[D(I_GT)]."""

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()
