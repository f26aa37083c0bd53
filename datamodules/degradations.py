"""Extra degradations of the LR input, for PULSE's robustness experiment (PULSE Sec. 5, Fig. 6,
supplementary Appendix D).

PULSE shows that its output still downscales to (approximately) the *clean* bicubic LR when the
given LR was further degraded, with four operators in Fig. 6:

* downscaling followed by Gaussian noise, std = 25 and 50 (on the 0..255 scale);
* motion blur in a random direction, length 100 (pixels of the 1024² HR image), followed by
  downscaling;
* downscaling followed by salt-and-pepper noise of density 0.05.

Each operator is a small ``nn.Module`` acting on ``[B, C, H, W]`` images in [-1, 1] (the project
convention). Strength 0 is the identity. Randomness comes from an explicit ``torch.Generator``
passed to ``forward`` (``None`` = torch's global RNG), so a caller that wants reproducible LR
inputs (the datasets do, per item) seeds one generator per call.

:class:`Degradation` composes operators and says where they act relative to ``DS``
(``where="before_ds"`` on the HR, ``"after_ds"`` on the LR); :func:`degrade_lr` applies a list of
compositions around ``DS``. The default everywhere is no degradation (empty lists).

Units: images are in [-1, 1], so a 0..255 noise std ``s`` is ``sigma = s / 127.5`` here
(PULSE's std 25 -> 0.196, std 50 -> 0.392).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.core.downscale import downscale
from lit_propulse.core.seeding import seed_generator

__all__ = [
    "GaussianNoise",
    "MotionBlur",
    "SaltPepper",
    "Degradation",
    "degrade_lr",
    "motion_blur_kernel",
    "std255_to_sigma",
]


def std255_to_sigma(std: float) -> float:
    """Convert a noise std on the 0..255 scale (as in PULSE Fig. 6) to [-1, 1] image units."""
    return float(std) / 127.5


def _check_image(img: Tensor, who: str) -> None:
    if img.ndim != 4:
        raise ValueError(f"{who} expects [B, C, H, W], got shape {tuple(img.shape)}")
    if not img.is_floating_point():
        raise ValueError(f"{who} expects a float image in [-1, 1], got dtype {img.dtype}")


class GaussianNoise(nn.Module):
    """Additive white Gaussian noise, i.i.d. per pixel and channel (PULSE Sec. 5, Fig. 6).

    Args:
        sigma: standard deviation in [-1, 1] image units (0 = identity). PULSE's std 25 / 50 on
            the 0..255 scale are ``sigma = 25/127.5 ≈ 0.196`` / ``50/127.5 ≈ 0.392``
            (see :func:`std255_to_sigma`).
        clamp: clip the result to [-1, 1] like a saved image would be (False = keep the
            unclipped Gaussian values, e.g. for noise statistics).
    """

    def __init__(self, sigma: float = 0.0, clamp: bool = True) -> None:
        super().__init__()
        if not (sigma >= 0.0 and math.isfinite(sigma)):
            raise ValueError(f"GaussianNoise sigma must be a finite value >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.clamp = bool(clamp)

    def forward(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(img, "GaussianNoise")  # [B, C, H, W]
        if self.sigma == 0.0:
            return img
        noise = torch.randn(img.shape, generator=generator, dtype=img.dtype).to(img.device)
        out = img + self.sigma * noise
        return out.clamp(-1.0, 1.0) if self.clamp else out

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, clamp={self.clamp}"


def motion_blur_kernel(length: float, angle_deg: float) -> Tensor:
    """A normalised line kernel: a segment of ``length`` pixels through the centre at ``angle_deg``.

    As MATLAB's ``fspecial("motion", length, angle)``: every pixel gets ``max(0, 1 - d)`` with
    ``d`` its distance to the segment of half-length ``(length - 1) / 2`` (pixel centres), then the
    kernel is normalised to sum 1. A horizontal length-9 kernel is nine taps of 1/9; oblique lines
    are anti-aliased. Odd-sized and point-symmetric, so it does not shift the image.
    ``length <= 1`` gives the 1x1 identity kernel. Returns ``[k, k]`` float32.
    """
    if length <= 1.0:
        return torch.ones(1, 1)
    half = (length - 1.0) / 2.0
    r = math.ceil(half) + 1
    coords = torch.arange(-r, r + 1, dtype=torch.float64)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    theta = math.radians(angle_deg)
    along = xs * math.cos(theta) - ys * math.sin(theta)  # image rows grow downwards
    perp = xs * math.sin(theta) + ys * math.cos(theta)
    dist = torch.sqrt(perp**2 + (along.abs() - half).clamp(min=0.0) ** 2)
    ker = (1.0 - dist).clamp(min=0.0)
    return (ker / ker.sum()).float()


def _depthwise_conv(x: Tensor, ker: Tensor) -> Tensor:
    """'valid' correlation of every channel of ``x`` [B, C, H', W'] with ``ker`` [k, k].

    Small kernels use ``conv2d``; large ones (PULSE's length 100 -> 101²) go through the FFT,
    which is ~30x faster on CPU for a 1024² image and equal to float rounding.
    """
    k = ker.shape[-1]
    c = x.shape[1]
    if k <= 15:
        return F.conv2d(x, ker.expand(c, 1, k, k), groups=c)
    h, w = x.shape[-2:]
    spec = torch.fft.rfft2(x.double(), s=(h, w)) * torch.fft.rfft2(ker.flip(-1, -2).double(), s=(h, w))
    full = torch.fft.irfft2(spec, s=(h, w))  # circular convolution; the valid part is exact
    return full[..., k - 1 :, k - 1 :].to(x.dtype)


class MotionBlur(nn.Module):
    """Linear motion blur: convolution with a normalised line kernel (PULSE Sec. 5, Fig. 6).

    PULSE blurs the 1024² HR with length 100 in a random direction and then downscales, i.e. use
    it in a ``Degradation(where="before_ds")`` with ``length`` in HR pixels. Borders are padded by
    replication, so a constant image stays exactly constant (the kernel sums to 1).

    Args:
        length: length of the motion in pixels of the image it is applied to (0 or 1 = identity).
        angle: direction in degrees, counter-clockwise from the x axis; None = a random direction
            in [0, 180) drawn per image from the generator.
    """

    def __init__(self, length: float = 0.0, angle: float | None = None) -> None:
        super().__init__()
        if not (length >= 0.0 and math.isfinite(length)):
            raise ValueError(f"MotionBlur length must be a finite value >= 0, got {length}")
        self.length = float(length)
        self.angle = None if angle is None else float(angle)

    def forward(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(img, "MotionBlur")  # [B, C, H, W]
        if self.length <= 1.0:
            return img
        b, c = img.shape[:2]
        outs = []
        for i in range(b):
            angle = self.angle
            if angle is None:
                angle = float(torch.rand((), generator=generator)) * 180.0
            ker = motion_blur_kernel(self.length, angle).to(img)  # [k, k]
            k = ker.shape[-1]
            x = F.pad(img[i : i + 1], (k // 2,) * 4, mode="replicate")  # [1, C, H+k-1, W+k-1]
            outs.append(_depthwise_conv(x, ker))  # [1, C, H, W]
        return torch.cat(outs, 0)

    def extra_repr(self) -> str:
        return f"length={self.length}, angle={'random' if self.angle is None else self.angle}"


class SaltPepper(nn.Module):
    """Salt-and-pepper noise: a ``density`` fraction of pixels set to white (+1) or black (-1)
    (PULSE Sec. 5, Fig. 6 uses density 0.05 after downscaling).

    Args:
        density: expected fraction of corrupted pixels, in [0, 1] (0 = identity).
        salt_ratio: fraction of the corrupted pixels that become white (+1); the rest black (-1).
        per_channel: False = a corrupted pixel gets the same value in all channels (white/black
            dots, MATLAB ``imnoise`` on a grayscale view); True = channels are corrupted
            independently (``skimage.util.random_noise(mode="s&p")`` on an RGB array).
    """

    def __init__(self, density: float = 0.0, salt_ratio: float = 0.5, per_channel: bool = False) -> None:
        super().__init__()
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"SaltPepper density must be in [0, 1], got {density}")
        if not 0.0 <= salt_ratio <= 1.0:
            raise ValueError(f"SaltPepper salt_ratio must be in [0, 1], got {salt_ratio}")
        self.density = float(density)
        self.salt_ratio = float(salt_ratio)
        self.per_channel = bool(per_channel)

    def forward(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_image(img, "SaltPepper")  # [B, C, H, W]
        if self.density == 0.0:
            return img
        b, c, h, w = img.shape
        shape = (b, c, h, w) if self.per_channel else (b, 1, h, w)
        u = torch.rand(shape, generator=generator).to(img.device)
        hit = u < self.density
        salt = u < self.density * self.salt_ratio  # a subset of ``hit``
        value = torch.where(salt, 1.0, -1.0).to(img.dtype)
        return torch.where(hit.expand_as(img), value.expand_as(img), img)

    def extra_repr(self) -> str:
        return f"density={self.density}, salt_ratio={self.salt_ratio}, per_channel={self.per_channel}"


class Degradation(nn.Module):
    """A sequence of degradation operators applied at one place of the LR pipeline (PULSE Sec. 5).

    Args:
        ops: operators applied in order, each ``op(img, generator=...)`` on ``[B, C, H, W]``;
            empty = identity (the default: no degradation).
        where: ``"before_ds"`` = applied to the HR before ``DS`` (e.g. motion blur of length 100
            at 1024²); ``"after_ds"`` = applied to the LR produced by ``DS`` (noise, salt and pepper).
    """

    def __init__(self, ops: Sequence[nn.Module] | None = None, where: Literal["before_ds", "after_ds"] = "after_ds") -> None:
        super().__init__()
        if where not in ("before_ds", "after_ds"):
            raise ValueError(f"Degradation where must be 'before_ds' or 'after_ds', got {where!r}")
        self.ops = nn.ModuleList(list(ops or []))
        self.where = where

    def forward(self, img: Tensor, generator: torch.Generator | None = None, seed: int | None = None) -> Tensor:
        """Apply the ops. ``seed`` (if given) seeds a fresh generator and wins over ``generator``;
        both None = torch's global RNG. Accepts ``[B, C, H, W]`` or a single ``[C, H, W]``."""
        single = img.ndim == 3
        x = img.unsqueeze(0) if single else img
        if seed is not None:
            generator = seed_generator(seed)
        for op in self.ops:
            x = op(x, generator=generator)
        return x[0] if single else x

    def __len__(self) -> int:
        return len(self.ops)

    def extra_repr(self) -> str:
        return f"where={self.where!r}"


def degrade_lr(
    hr: Tensor,
    lr_size: int,
    degradations: Sequence[Degradation] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """``LR = after(DS(before(HR)))``: the LR pipeline with optional degradations (PULSE Sec. 5).

    ``hr`` is ``[B, 3, H, W]`` in [-1, 1]; returns ``[B, 3, lr_size, lr_size]``. With no
    degradations this is exactly ``DS(hr)``. All "before_ds" compositions run first (in list
    order), then ``DS``, then all "after_ds" ones; one generator feeds them all.
    """
    x = hr
    for d in degradations:
        if d.where == "before_ds":
            x = d(x, generator=generator)
    x = downscale(x, lr_size)
    for d in degradations:
        if d.where == "after_ds":
            x = d(x, generator=generator)
    return x
