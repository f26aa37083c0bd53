"""ADA-style adaptive discriminator augmentation (Karras et al., NeurIPS 2020), a compact version.

Every image D sees (real and fake) is augmented with probability p per operation: x-flip, integer
translation (up to 1/8 of the side, reflect-padded), brightness, contrast and saturation — all
differentiable, so G's gradient passes through. p is adapted from the overfitting heuristic
r_t = E[sign(D(real))]: raised when r_t > target, lowered otherwise, at a speed such that p can go
from 0 to 1 in ``speed_kimg`` thousand images. This is a subset of ADA's 18 operations (no
rotation, scaling or filtering); it is meant for small datasets and is off by default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AdaptiveAugment(nn.Module):
    """Args:
    target: the r_t target (0.6 in ADA).
    speed_kimg: thousands of images for p to move by 1 (500 in ADA).
    interval: update p every N calls of :meth:`update` (4).
    p_init: initial probability (0).
    p_max: cap on p (1).
    """

    def __init__(self, target: float = 0.6, speed_kimg: float = 500.0, interval: int = 4, p_init: float = 0.0, p_max: float = 1.0) -> None:
        super().__init__()
        if not 0 < target < 1:
            raise ValueError(f"target must be in (0, 1), got {target}")
        self.target, self.speed_kimg, self.interval, self.p_max = target, speed_kimg, interval, p_max
        self.register_buffer("p", torch.tensor(float(p_init)))
        self.register_buffer("_sign_sum", torch.zeros(()))
        self.register_buffer("_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("_calls", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, real_logits: Tensor) -> None:
        """Accumulate sign(D(real)) and adjust p every ``interval`` calls."""
        self._sign_sum += torch.sign(real_logits.float()).sum()
        self._count += real_logits.numel()
        self._calls += 1
        if int(self._calls) % self.interval == 0:
            rt = self._sign_sum / self._count.clamp(min=1)
            step = float(self._count) / (self.speed_kimg * 1000)
            self.p.copy_((self.p + torch.sign(rt - self.target) * step).clamp(0, self.p_max))
            self._sign_sum.zero_()
            self._count.zero_()

    def forward(self, img: Tensor) -> Tensor:  # [B, 3, H, W] -> same
        p = float(self.p)
        if p <= 0:
            return img
        b, _, h, w = img.shape
        dev = img.device

        def mask() -> Tensor:
            return (torch.rand(b, 1, 1, 1, device=dev) < p).to(img.dtype)

        flip = mask()
        img = flip * img.flip(3) + (1 - flip) * img
        # integer translation, reflect padding
        pad = max(1, h // 8)
        padded = F.pad(img, [pad, pad, pad, pad], mode="reflect")
        m = mask().view(b)
        tx = (torch.randint(-pad, pad + 1, (b,), device=dev) * m.long()) + pad
        ty = (torch.randint(-pad, pad + 1, (b,), device=dev) * m.long()) + pad
        rows = (ty.view(b, 1) + torch.arange(h, device=dev).view(1, h)).view(b, 1, h, 1).expand(b, img.shape[1], h, w + 2 * pad)
        img = padded.gather(2, rows)
        cols = (tx.view(b, 1) + torch.arange(w, device=dev).view(1, w)).view(b, 1, 1, w).expand(b, img.shape[1], h, w)
        img = img.gather(3, cols)
        # colour
        img = img + mask() * torch.randn(b, 1, 1, 1, device=dev, dtype=img.dtype) * 0.2
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        c = torch.exp2(torch.randn(b, 1, 1, 1, device=dev) * 0.5).to(img.dtype)
        img = mean + (img - mean) * (mask() * (c - 1) + 1)
        gray = img.mean(dim=1, keepdim=True)
        s = torch.exp2(torch.randn(b, 1, 1, 1, device=dev) * math.log2(2)).to(img.dtype)
        return gray + (img - gray) * (mask() * (s - 1) + 1)
