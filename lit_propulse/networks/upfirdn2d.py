"""FIR filtering for StyleGAN2: ``upfirdn2d`` (upsample, FIR filter, downsample) without a custom op.

The role of NVlabs' ``torch_utils/ops/upfirdn2d.py`` and of the port's ``op/upfirdn2d.py``: the same
definition, computed as strided (transposed) depthwise convolutions, so it runs on CPU and GPU alike
with no build step. :class:`Blur` and :class:`Upsample` are the port's modules of the same names
(their ``kernel`` buffers are part of the port's state dicts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Blur", "Upsample", "make_kernel", "upfirdn2d"]


def make_kernel(k: Sequence[float] | Sequence[Sequence[float]] | Tensor) -> Tensor:
    """A 2-D FIR kernel from a 1-D (separable, outer product) or 2-D spec, normalised to sum 1."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    if k.ndim != 2:
        raise ValueError(f"blur kernel must be 1-D or 2-D, got shape {tuple(k.shape)}")
    return k / k.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0), bias: Tensor | None = None) -> Tensor:
    """Upsample by zero insertion, pad, convolve with ``kernel`` (true convolution), downsample.

    Same definition as the port's ``upfirdn2d`` (x: [B, C, H, W], kernel: [kh, kw], the same pad
    (p0, p1) on both axes, negative pads crop), computed without a custom op: with ``up`` > 1 as one
    depthwise ``conv_transpose2d`` of stride ``up`` followed by a crop, otherwise as a depthwise
    ``conv2d`` of stride ``down`` on the padded input. Output side: (n*up + p0 + p1 - k) // down + 1.
    ``bias`` ([C], optional) is added to the output inside the convolution (no extra pass); only
    without ``up``.
    """
    if up > 1 and down > 1:
        raise ValueError("upfirdn2d: up and down together are not supported")
    if bias is not None and up > 1:
        raise ValueError("upfirdn2d: bias is only supported without up-sampling")
    c = x.shape[1]
    kh, kw = kernel.shape
    p0, p1 = pad
    kernel = kernel.to(dtype=x.dtype)
    if up > 1:
        weight = kernel[None, None].expand(c, 1, kh, kw)
        full = F.conv_transpose2d(x, weight, stride=up, groups=c)  # [B, C, (H-1)*up + kh, ...]
        # out[o] = full[o + (k - 1 - p0)] for o < n*up + p0 + p1 - k + 1
        h, w = x.shape[-2:]
        out_h, out_w = h * up + p0 + p1 - kh + 1, w * up + p0 + p1 - kw + 1
        ch, cw = kh - 1 - p0, kw - 1 - p0
        return F.pad(full, [-cw, out_w + cw - full.shape[-1], -ch, out_h + ch - full.shape[-2]])
    weight = kernel.flip([0, 1])[None, None].expand(c, 1, kh, kw)
    bias = None if bias is None else bias.to(x.dtype)
    if p0 == p1 and p0 >= 0:
        return F.conv2d(x, weight, bias, stride=down, padding=p0, groups=c)  # no padded copy
    x = F.pad(x, [p0, p1, p0, p1])
    return F.conv2d(x, weight, bias, stride=down, groups=c)


class Blur(nn.Module):
    """FIR filter with fixed pads (port's ``Blur``); ``scale`` multiplies the kernel (factor**2 after upsampling)."""

    def __init__(self, kernel: Sequence[float] | Tensor, pad: tuple[int, int], scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * scale)
        self.pad = (int(pad[0]), int(pad[1]))

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad, bias=bias)

    def adjoint(self, grad: Tensor) -> Tensor:
        """The transpose of :meth:`forward` (its input gradient, used by hand-written backward
        passes): the same FIR with the flipped kernel and the complementary pads
        (k - 1 - p0, k - 1 - p1), which maps the output size back to the input size."""
        k = self.kernel.shape[0]
        return upfirdn2d(grad, self.kernel.flip([0, 1]), pad=(k - 1 - self.pad[0], k - 1 - self.pad[1]))


class Upsample(nn.Module):
    """2x FIR upsampling of the skip RGB (port's ``Upsample``)."""

    def __init__(self, kernel: Sequence[float] | Tensor, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)
