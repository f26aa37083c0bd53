"""StyleGAN2 (Karras et al., CVPR 2020): mapping, synthesis, generator and discriminator.

The whole family lives in this one file, as in NVlabs' ``training/networks_stylegan2.py``. The
networks compute exactly what the de-facto standard PyTorch port (rosinality/stylegan2-pytorch)
computes and load its checkpoints as they are — the layout of ``stylegan2-ffhq-config-f.pt`` used by
pSp, e4e and the Pro-PULSE paper (Sec. III-F: "We revise the StyleGAN2 pre-trained on FFHQ") — but
with no custom CUDA/C++ op: the FIR up/down-sampling (``upfirdn2d``) is expressed as strided
(transposed) depthwise convolutions, so it runs on CPU and GPU alike with no build step.

Parameter names inside :class:`SynthesisNetwork` and :class:`Discriminator` are the port's, so a
port state dict maps onto ours by a prefix (``style.*`` -> ``mapping.net.*``, everything else ->
``synthesis.*``); see :func:`port_to_ours` / :func:`ours_to_port`.

Layer order and the map "resolution -> which rows of w+ it uses" are defined once, in
:func:`synthesis_layout` and :func:`num_ws_up_to`; everything else (Pro-PULSE's Eq. (10) progressive
composition, PULSE's per-layer latents and noise) asks them.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Literal, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.core.outputs import ImageOutput
from lit_propulse.core.errors import CheckpointError
from lit_propulse.core.files import needs_file

__all__ = [
    "CheckpointError",
    "DeeplySupervisedGenerator",
    "SideOutputHead",
    "side_resolutions",
    "load_discriminator",
    "load_gds",
    "load_generator",
    "Discriminator",
    "Generator",
    "LayerSpec",
    "MappingNetwork",
    "SynthesisNetwork",
    "SynthesisOutput",
    "default_channels",
    "num_ws_up_to",
    "synthesis_layout",
    "upfirdn2d",
]

NoiseArg = Union[Literal["random", "const", "none"], Sequence[Union[Tensor, None]]]


# ----------------------------------------------------------------------------------------------
# Architecture tables: the single place that knows the layer order.


def default_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """The port's channel table (``channels`` in rosinality's Generator/Discriminator), 4..size."""
    table = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }
    return {r: c for r, c in table.items() if r <= size}


def _check_size(size: int) -> int:
    size = int(size)
    if size < 8 or size > 4096 or size & (size - 1):
        raise ValueError(f"StyleGAN2 size must be a power of two in [8, 4096], got {size}")
    return size


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the synthesis network, in execution order.

    kind: "conv" (a StyledConv, has a noise input) or "torgb" (a ToRGB, no noise).
    resolution: output resolution of the layer.
    w_index: the row of w+ [B, num_ws, w_dim] that styles it.
    noise_index: index into the per-layer noise list (port order), None for "torgb".
    name: the module's name inside :class:`SynthesisNetwork` (= the port's).
    """

    kind: Literal["conv", "torgb"]
    resolution: int
    w_index: int
    noise_index: int | None
    name: str


def synthesis_layout(size: int) -> list[LayerSpec]:
    """Every synthesis layer of a ``size`` generator in execution order (the port's order).

    At 4x4: conv1 (w 0, noise 0), to_rgb1 (w 1). At resolution 2**k (k >= 3): an upsampling conv
    (w 2k-5), a conv (w 2k-4) and a ToRGB (w 2k-3); the ToRGB of one block shares its w row with the
    first conv of the next, as in StyleGAN2. So num_ws = 2*log2(size) - 2 (18 at 1024) and there
    are 2*log2(size) - 3 noise maps (17 at 1024).
    """
    size = _check_size(size)
    layers = [
        LayerSpec("conv", 4, 0, 0, "conv1"),
        LayerSpec("torgb", 4, 1, None, "to_rgb1"),
    ]
    for j, k in enumerate(range(3, int(math.log2(size)) + 1)):
        res = 2**k
        layers.append(LayerSpec("conv", res, 2 * k - 5, 2 * j + 1, f"convs.{2 * j}"))
        layers.append(LayerSpec("conv", res, 2 * k - 4, 2 * j + 2, f"convs.{2 * j + 1}"))
        layers.append(LayerSpec("torgb", res, 2 * k - 3, None, f"to_rgbs.{j}"))
    return layers


def num_ws_up_to(resolution: int) -> int:
    """How many leading rows of w+ style the layers of resolutions <= ``resolution``.

    Rows [0, 2*log2(r) - 2): the convs and ToRGB of every block up to r. Pro-PULSE Eq. (10) replaces
    exactly these rows at scale r_i (the ToRGB row of r_i also styles the first conv of 2*r_i, a
    property of StyleGAN2's layout, not a choice of ours).
    """
    r = int(resolution)
    if r < 4 or r & (r - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
    return 2 * int(math.log2(r)) - 2


# ----------------------------------------------------------------------------------------------
# FIR filtering: upfirdn2d as (transposed) depthwise convolutions.


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


# ----------------------------------------------------------------------------------------------
# Equalized-learning-rate layers.


def _fused_lrelu(x: Tensor, bias: Tensor | None, negative_slope: float = 0.2, scale: float = math.sqrt(2)) -> Tensor:
    """leaky_relu(x + bias) * sqrt(2), bias broadcast over dim 1 (the port's ``fused_leaky_relu``)."""
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.view(shape).to(x.dtype)
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Bias + LeakyReLU(0.2) * sqrt(2) (port's ``FusedLeakyReLU``). bias=False: no bias parameter."""

    def __init__(self, channels: int, bias: bool = True) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return _fused_lrelu(x, self.bias)


class PixelNorm(nn.Module):
    """x / sqrt(mean(x**2) + 1e-8) over the feature dimension."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate.

    Args:
        in_dim, out_dim: feature sizes.
        bias: learn a bias.
        bias_init: initial bias value.
        lr_mul: learning-rate multiplier (weights stored divided by it; 0.01 in the mapping network).
        activation: None = linear, "fused_lrelu" = bias + LeakyReLU(0.2) * sqrt(2).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: Literal["fused_lrelu"] | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            return _fused_lrelu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate (weight scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"


# ----------------------------------------------------------------------------------------------
# Synthesis layers.


class ModulatedConv2d(nn.Module):
    """Modulated (and optionally demodulated) convolution, StyleGAN2 Sec. 2.2.

    Computed as "modulate activations, shared-weight conv, demodulate outputs" — mathematically the
    port's per-sample grouped convolution, but one dense convolution over the batch, which is what
    makes it fast on CPU (and with channels_last / bf16).

    Args:
        in_channel, out_channel, kernel_size: the convolution.
        style_dim: width of w.
        demodulate: divide each output channel by the norm of its modulated weights (False in ToRGB).
        upsample: 2x transposed conv followed by the FIR blur (the port's fused upsampling).
        blur_kernel: FIR kernel for the upsampling blur.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (make_kernel(blur_kernel).shape[0] - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), scale=factor**2)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    #: per-sample activations of at least this many elements use the modulated-weights formulation
    weight_path_min_elements: int = 2**20

    def forward(self, x: Tensor, w: Tensor, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
        # x: [B, in, H, W], w: [B, style_dim] -> gain * [B, out, H', W'] (+ bias [out], if given)
        batch = x.shape[0]
        style = self.modulation(w)  # [B, in]
        weight = self.weight[0] * self.scale  # [out, in, k, k]
        if x[0].numel() >= self.weight_path_min_elements:
            return self._forward_modulated_weights(x, style, weight, gain, bias)
        x = x * style.view(batch, -1, 1, 1).to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
            out = self.blur(out)
        else:
            out = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (weight[o,i,k] * style[b,i])**2 = style**2 @ sum_k weight**2
            dcoefs = torch.rsqrt(style.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8) * gain  # [B, out]
            out = out * dcoefs.view(batch, -1, 1, 1).to(out.dtype)
        elif gain != 1:
            out = out * gain
        return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)

    def _forward_modulated_weights(self, x: Tensor, style: Tensor, weight: Tensor, gain: float, bias: Tensor | None) -> Tensor:
        """The port's own formulation (per-sample modulated and demodulated weights, one conv per
        sample): at high resolution it saves two full passes over the activations."""
        wmod = weight.unsqueeze(0) * style.view(style.shape[0], 1, -1, 1, 1)  # [B, out, in, k, k]
        if self.demodulate:
            wmod = wmod * torch.rsqrt(wmod.square().sum(dim=(2, 3, 4)) + 1e-8).view(style.shape[0], -1, 1, 1, 1)
        if gain != 1:
            wmod = wmod * gain
        wmod = wmod.to(x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
        outs = []
        for b in range(x.shape[0]):  # the bias rides in the last convolution of each branch
            if self.upsample:
                outs.append(self.blur(F.conv_transpose2d(x[b: b + 1], wmod[b].transpose(0, 1), stride=2), bias=bias))
            else:
                outs.append(F.conv2d(x[b: b + 1], wmod[b], bias, padding=self.padding))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, "
            f"upsample={self.upsample}, demodulate={self.demodulate}"
        )


class NoiseInjection(nn.Module):
    """x + weight * noise, one learned scalar weight per layer."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None) -> Tensor:
        if noise is None:
            return x
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class ConstantInput(nn.Module):
    """The learned 4x4 constant the synthesis starts from."""

    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + LeakyReLU (port's ``StyledConv``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        # lrelu(conv + n*noise + b) * sqrt(2) == lrelu(sqrt(2) conv + sqrt(2) n*noise + sqrt(2) b): the
        # gain is folded into the (small) weights, bias and noise strength instead of a full pass
        g = math.sqrt(2)
        out = self.conv(x, w, gain=g, bias=self.activate.bias * g)  # [B, out, H, W]
        if not out.requires_grad:  # nothing needs the pre-activation values: update in place
            if noise is not None:
                out.add_(noise.to(out.dtype) * (self.noise.weight * g).to(out.dtype))
            return F.leaky_relu_(out, 0.2)
        if noise is not None:
            out = out + (self.noise.weight * g).to(out.dtype) * noise.to(out.dtype)
        return F.leaky_relu(out, 0.2)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + bias, added to the upsampled running skip RGB."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, w, bias=self.bias.view(3))
        if skip is None:
            return out
        return out.add_(self.upsample(skip)) if not out.requires_grad else out + self.upsample(skip)


# ----------------------------------------------------------------------------------------------
# Mapping, synthesis, generator.


class MappingNetwork(nn.Module):
    """z -> w: PixelNorm then ``n_mlp`` equalized FC layers with LeakyReLU (StyleGAN Sec. 2).

    Args:
        style_dim: width of z and w (512 in config-f).
        n_mlp: number of FC layers (8 in config-f).
        lr_mlp: learning-rate multiplier of the FC layers (0.01; not stored in checkpoints).
    """

    def __init__(self, style_dim: int, n_mlp: int, lr_mlp: float = 0.01) -> None:
        super().__init__()
        if n_mlp < 1:
            raise ValueError(f"n_mlp must be >= 1, got {n_mlp}")
        self.z_dim = self.w_dim = style_dim
        layers: list[nn.Module] = [PixelNorm()]
        layers += [EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping expects z of shape [B, {self.z_dim}], got {tuple(z.shape)}")
        return self.net(z)  # [B, w_dim]


@dataclass
class SynthesisOutput:
    """What the synthesis network returns.

    image: [B, 3, size, size] final RGB, the generator's raw range (about [-1, 1] when trained).
    features: resolution -> [B, C_r, r, r] feature map after the last conv of that block (what
        Pro-PULSE's side-output branches read, Sec. III-C).
    skips: resolution -> [B, 3, r, r] running skip RGB after that block's ToRGB (skips[size] == image).
    """

    image: Tensor
    features: Mapping[int, Tensor] = field(default_factory=dict)
    skips: Mapping[int, Tensor] = field(default_factory=dict)


class _BatchParts(Mapping):
    """resolution -> tensor, where high-resolution entries are kept as per-sample parts and
    concatenated only when read (and then cached): most callers never read most of them."""

    def __init__(self) -> None:
        self._data: dict[int, Tensor | list[Tensor]] = {}

    def __setitem__(self, key: int, value: Tensor | list[Tensor]) -> None:
        self._data[key] = value

    def __getitem__(self, key: int) -> Tensor:
        v = self._data[key]
        if isinstance(v, list):
            v = self._data[key] = v[0] if len(v) == 1 else torch.cat(v)
        return v

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class SynthesisNetwork(nn.Module):
    """w+ [B, num_ws, w_dim] -> image, the skip-architecture synthesis of StyleGAN2 (config-f).

    Args:
        size: output resolution, a power of two (32..1024 in practice; >= 8 accepted).
        style_dim: width of w.
        channels: resolution -> channels for every resolution 4..size (port's table by default).
        blur_kernel: FIR kernel of the up-sampling (1-D separable or 2-D).
    """

    def __init__(self, size: int, style_dim: int, channels: dict[int, int], blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.size = _check_size(size)
        self.w_dim = style_dim
        self.log_size = int(math.log2(size))
        self.layout = synthesis_layout(size)
        self.num_ws = self.log_size * 2 - 2
        self.num_noise = self.log_size * 2 - 3
        missing = [2**k for k in range(2, self.log_size + 1) if 2**k not in channels]
        if missing:
            raise ValueError(f"channel table lacks resolutions {missing} (size {size}); got {sorted(channels)}")
        self.channels = {2**k: int(channels[2**k]) for k in range(2, self.log_size + 1)}
        #: run activations in channels_last memory format: a speed setting, same math, not saved
        #: (several times faster for CPU convolutions here, and what tensor cores want on GPU)
        self.channels_last = True

        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for spec in self.layout:
            if spec.noise_index is not None:
                r = spec.resolution
                self.noises.register_buffer(f"noise_{spec.noise_index}", torch.randn(1, 1, r, r))
        in_ch = self.channels[4]
        for k in range(3, self.log_size + 1):
            out_ch = self.channels[2**k]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur_kernel))
            in_ch = out_ch

    @property
    def resolutions(self) -> list[int]:
        return [2**k for k in range(2, self.log_size + 1)]

    def stored_noise(self) -> list[Tensor]:
        """The generator's own noise buffers, in the port's order."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_noise)]

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh Gaussian noise maps [batch, 1, r, r] for every noise layer (port order)."""
        device = self.input.input.device
        return [
            torch.randn(batch, 1, s.resolution, s.resolution, device=device, generator=generator)
            for s in self.layout
            if s.noise_index is not None
        ]

    def resolve_noise(self, noise: NoiseArg, batch: int) -> list[Tensor | None]:
        """A list of num_noise maps (or None = no noise) from a mode string or an explicit list."""
        if isinstance(noise, str):
            if noise == "random":
                return list(self.make_noise(batch))
            if noise == "const":
                return self.stored_noise()
            if noise == "none":
                return [None] * self.num_noise
            raise ValueError(f"noise must be 'random', 'const', 'none' or a list of maps, got {noise!r}")
        noise = list(noise)
        if len(noise) != self.num_noise:
            raise ValueError(f"expected {self.num_noise} noise maps for size {self.size}, got {len(noise)}")
        res_of = [s.resolution for s in self.layout if s.noise_index is not None]
        for i, (n, r) in enumerate(zip(noise, res_of)):
            if n is not None and (n.ndim != 4 or n.shape[1] != 1 or tuple(n.shape[-2:]) != (r, r)):
                raise ValueError(f"noise map {i} must be [B or 1, 1, {r}, {r}], got {tuple(n.shape)}")
        return noise

    def forward(self, ws: Tensor, noise: NoiseArg = "random") -> SynthesisOutput:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(
                f"synthesis expects ws of shape [B, {self.num_ws}, {self.w_dim}] (num_ws, w_dim), got {tuple(ws.shape)}"
            )
        batch = ws.shape[0]
        noises = self.resolve_noise(noise, batch)
        features, skips = _BatchParts(), _BatchParts()
        x = self.input(batch)  # [B, C4, 4, 4]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        skip: Tensor | None = None
        # Once activations are large enough for ModulatedConv2d's per-sample modulated weights, the
        # batch continues as per-sample parts (lists): no concatenation between layers.
        split = batch > 1
        for spec in self.layout:
            module = self.get_submodule(spec.name)
            w = ws[:, spec.w_index]
            if split and not isinstance(x, list) and spec.kind == "conv" and x[0].numel() >= ModulatedConv2d.weight_path_min_elements:
                x = [x[b: b + 1] for b in range(batch)]
                skip = [skip[b: b + 1] for b in range(batch)] if skip is not None else None
            if isinstance(x, list):
                n = noises[spec.noise_index] if spec.kind == "conv" else None
                if spec.kind == "conv":
                    x = [module(x[b], w[b: b + 1], None if n is None else n[b: b + 1] if n.shape[0] > 1 else n) for b in range(batch)]
                else:
                    skip = [module(x[b], w[b: b + 1], None if skip is None else skip[b]) for b in range(batch)]
                    features[spec.resolution], skips[spec.resolution] = x, skip
            elif spec.kind == "conv":
                x = module(x, w, noises[spec.noise_index])  # [B, C_r, r, r]
            else:
                skip = module(x, w, skip)  # [B, 3, r, r]
                features[spec.resolution], skips[spec.resolution] = x, skip
        image = skips[self.size]  # concatenates per-sample parts once, [B, 3, size, size]
        return SynthesisOutput(image=image, features=features, skips=skips)


def port_to_ours(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a port generator state dict (``style.*``, ``convs.*``...) to :class:`Generator` keys."""
    out = {}
    for k, v in state.items():
        out[("mapping.net." + k[len("style."):]) if k.startswith("style.") else ("synthesis." + k)] = v
    return out


def ours_to_port(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`port_to_ours` (``latent_avg`` is not part of the port's state dict)."""
    out = {}
    for k, v in state.items():
        if k.startswith("mapping.net."):
            out["style." + k[len("mapping.net."):]] = v
        elif k.startswith("synthesis."):
            out[k[len("synthesis."):]] = v
    return out


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> w) and ``synthesis`` (w+ -> image), both reachable.

    Args:
        size: output resolution (power of two, 32..1024 for the published models).
        style_dim: width of z and w (512 for config-f).
        n_mlp: mapping layers (8 for config-f).
        channel_multiplier: the port's channel multiplier (2 = config-f); ignored when ``channels`` is given.
        blur_kernel: FIR kernel, 1-D separable or 2-D.
        lr_mlp: mapping learning-rate multiplier (0.01; it changes the forward pass and is not stored
            in the port's checkpoints, so give it when a checkpoint was trained with another value).
        channels: explicit table resolution -> channels for every resolution 4..size; None = the
            port's table for ``channel_multiplier``.
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] | Sequence[Sequence[float]] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        channels: dict[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.size = _check_size(size)
        channels = default_channels(size, channel_multiplier) if channels is None else {int(k): int(v) for k, v in channels.items()}
        self.arch = {
            "size": self.size,
            "style_dim": int(style_dim),
            "n_mlp": int(n_mlp),
            "channels": dict(channels),
            "blur_kernel": make_kernel(blur_kernel).tolist() if torch.as_tensor(blur_kernel).ndim == 2 else [float(v) for v in blur_kernel],
            "lr_mlp": float(lr_mlp),
        }
        self.mapping = MappingNetwork(style_dim, n_mlp, lr_mlp)
        self.synthesis = SynthesisNetwork(size, style_dim, channels, blur_kernel)
        self.register_buffer("latent_avg", torch.zeros(style_dim))
        self.register_buffer("has_latent_avg", torch.tensor(False))

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    @property
    def w_dim(self) -> int:
        return self.synthesis.w_dim

    @property
    def z_dim(self) -> int:
        return self.mapping.z_dim

    @property
    def num_noise(self) -> int:
        return self.synthesis.num_noise

    # -- latents --------------------------------------------------------------------------------
    @torch.no_grad()
    def compute_latent_avg(self, n: int = 10_000, seed: int = 0, batch: int = 2048) -> Tensor:
        """Mean of mapping(z) over ``n`` z with a fixed seed; stored in ``latent_avg`` and returned."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        total = torch.zeros(self.w_dim, dtype=torch.float64)
        done = 0
        while done < n:
            b = min(batch, n - done)
            z = torch.randn(b, self.z_dim, generator=gen).to(self.latent_avg.device)
            total += self.mapping(z).double().sum(0).cpu()
            done += b
        self.latent_avg.copy_((total / n).to(self.latent_avg))
        self.has_latent_avg.fill_(True)
        return self.latent_avg

    def truncate(self, w: Tensor, truncation: float) -> Tensor:
        """w' = latent_avg + truncation * (w - latent_avg); truncation 1 = identity."""
        if truncation == 1:
            return w
        return torch.lerp(self.latent_avg.to(w.dtype), w, truncation)

    def to_ws(self, w: Tensor) -> Tensor:
        """[B, w_dim] -> [B, num_ws, w_dim] (the same w at every layer); [B, num_ws, w_dim] passes."""
        if w.ndim == 2:
            return w.unsqueeze(1).expand(-1, self.num_ws, -1)
        if w.ndim == 3 and w.shape[1] == self.num_ws:
            return w
        raise ValueError(f"expected w [B, {self.w_dim}] or w+ [B, {self.num_ws}, {self.w_dim}], got {tuple(w.shape)}")

    def mix(self, w1: Tensor, w2: Tensor, inject_index: int) -> Tensor:
        """Style mixing: rows [0, inject_index) from w1, the rest from w2 -> [B, num_ws, w_dim]."""
        if not 0 <= inject_index <= self.num_ws:
            raise ValueError(f"inject_index must be in [0, {self.num_ws}], got {inject_index}")
        ws1, ws2 = self.to_ws(w1), self.to_ws(w2)
        return torch.cat([ws1[:, :inject_index], ws2[:, inject_index:]], dim=1)

    def forward(
        self,
        latent: Tensor,
        input_space: Literal["z", "w"] = "z",
        truncation: float = 1.0,
        noise: NoiseArg = "random",
        latent2: Tensor | None = None,
        inject_index: int | None = None,
    ) -> SynthesisOutput:
        """Generate from z [B, z_dim] (input_space "z"), w [B, w_dim] or w+ [B, num_ws, w_dim] ("w").

        truncation: toward ``latent_avg`` in W (1 = none). latent2 / inject_index: style mixing,
        rows >= inject_index come from latent2 (same input space). noise: see ``SynthesisNetwork``.
        """
        if input_space not in ("z", "w"):
            raise ValueError(f"input_space must be 'z' or 'w', got {input_space!r}")

        def to_w(x: Tensor) -> Tensor:
            w = self.mapping(x) if input_space == "z" else x
            return self.truncate(w, truncation)

        ws = self.to_ws(to_w(latent))
        if latent2 is not None:
            if inject_index is None:
                raise ValueError("latent2 given without inject_index")
            ws = self.mix(ws, to_w(latent2), inject_index)
        return self.synthesis(ws, noise=noise)

    # -- checkpoints ----------------------------------------------------------------------------
    def port_state_dict(self) -> dict[str, Tensor]:
        """State dict in the port's layout (``g_ema`` of ``stylegan2-ffhq-config-f.pt``)."""
        return ours_to_port({k: v.detach() for k, v in self.state_dict().items()})

    def load_port_state_dict(self, state: dict[str, Tensor], source: str = "<state dict>") -> None:
        """Load a port-layout state dict, with one clear error listing missing/unexpected/mis-shaped keys."""
        _load_exact(self, port_to_ours(state), source, ignore={"latent_avg", "has_latent_avg"}, port_names=True)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, key: str = "g_ema", lr_mlp: float | None = None, map_location: str | torch.device = "cpu") -> "Generator":
        """Load a generator from a port checkpoint (converter or trainer layout) or our own save.

        The architecture (size, style_dim, n_mlp, channel table, blur kernel) is inferred from the
        tensors' shapes. ``key`` picks "g_ema" (default) or "g" from trainer checkpoints; ``lr_mlp``
        overrides the stored/default mapping multiplier (0.01). ``latent_avg`` is kept when present,
        computed (10k z, seed 0) and stored when absent.
        """
        ckpt = load_checkpoint_file(path)
        path = str(path)
        state = _pick_state(ckpt, path, key, kind="generator")
        arch = infer_generator_arch(state, path)
        saved = ckpt.get("arch") if isinstance(ckpt.get("arch"), dict) else {}
        arch["lr_mlp"] = float(lr_mlp if lr_mlp is not None else saved.get("lr_mlp", 0.01))
        G = cls(**arch)
        G.load_port_state_dict(state, source=path)
        avg = ckpt.get("latent_avg")
        if isinstance(avg, Tensor):
            avg = avg.reshape(-1)
            if avg.numel() != G.w_dim:
                raise CheckpointError(f"{path}: 'latent_avg' has {avg.numel()} values, expected w_dim = {G.w_dim}")
            G.latent_avg.copy_(avg)
            G.has_latent_avg.fill_(True)
        else:
            G.compute_latent_avg()
        return G.to(map_location)

    def save(self, path: str | os.PathLike, discriminator: "Discriminator | None" = None, extra: dict[str, Any] | None = None) -> None:
        """Write ``{"g_ema", "latent_avg", "arch", ["d"]}`` in the port's layout (readable by the port too)."""
        ckpt: dict[str, Any] = {"g_ema": self.port_state_dict(), "latent_avg": self.latent_avg.detach().cpu().clone(), "arch": _plain_arch(self.arch), "format": "lit_propulse.stylegan2/1"}
        if discriminator is not None:
            ckpt["d"] = {k: v.detach() for k, v in discriminator.state_dict().items()}
            ckpt["d_arch"] = _plain_arch(discriminator.arch)
        if extra:
            ckpt.update(extra)
        torch.save(ckpt, path)


# ----------------------------------------------------------------------------------------------
# Pro-PULSE's deeply-supervised generator G_ds (Sec. III-C, III-F).


class SideOutputHead(nn.Module):
    """One side-output branch: three 1x1 convs (128, 64, 3 channels; Sec. III-F) with LeakyReLU(0.2)
    between them (the paper does not name the activation) mapping a style block's feature map to RGB.

    Args:
        in_channels: channels of the block's feature map.
        hidden: widths of the first two 1x1 convs ((128, 64) in the paper).
        residual_skip: add the head's output to the block's running skip RGB (our option, off in
            the paper's configs: the branch then only learns a correction, so it trains much faster;
            the head's last conv starts at zero so the initial side output is that skip RGB).
    """

    def __init__(self, in_channels: int, hidden: Sequence[int] = (128, 64), residual_skip: bool = False) -> None:
        super().__init__()
        widths = [in_channels, *hidden, 3]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 1))
            if i < len(widths) - 2:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)
        self.residual_skip = residual_skip
        if residual_skip:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, feature: Tensor, skip: Tensor) -> Tensor:
        # feature: [B, C_r, r, r], skip: [B, 3, r, r] -> [B, 3, r, r]
        out = self.net(feature.float() if feature.dtype != self.net[0].weight.dtype else feature)
        return out + skip if self.residual_skip else out


def side_resolutions(size: int, lr_size: int) -> list[int]:
    """Resolutions that get a side-output branch: 2*lr_size, ..., size/2 (32..512 for 16 -> 1024)."""
    size, lr_size = int(size), int(lr_size)
    if lr_size < 1 or lr_size & (lr_size - 1) or 2 * lr_size > size:
        raise ValueError(f"lr_size must be a power of two with 2*lr_size <= size; got lr_size={lr_size}, size={size}")
    return [2**k for k in range(int(math.log2(2 * lr_size)), int(math.log2(size)))]


class DeeplySupervisedGenerator(nn.Module):
    """G_ds: a frozen StyleGAN2 plus one side-output branch per style block (Sec. III-C, Fig. 2).

    The generator's parameters never train here (``requires_grad`` False); gradients still flow
    through it to w+ (encoders, Eq. (4)/(10)) and to the branches.

    Args:
        generator: the pretrained StyleGAN2 (frozen in place).
        lr_size: LR side; branches at 2*lr_size ... size/2.
        head_hidden: widths of the branches' first two 1x1 convs ((128, 64)).
        residual_skip: see :class:`SideOutputHead` (False = the paper's branch).
    """

    def __init__(self, generator: Generator, lr_size: int, head_hidden: Sequence[int] = (128, 64), residual_skip: bool = False) -> None:
        super().__init__()
        self.generator = generator.requires_grad_(False)
        self.lr_size = int(lr_size)
        self.head_hidden = [int(h) for h in head_hidden]
        self.residual_skip = bool(residual_skip)
        self.resolutions = side_resolutions(generator.size, lr_size)
        ch = generator.synthesis.channels
        self.heads = nn.ModuleDict({str(r): SideOutputHead(ch[r], head_hidden, residual_skip) for r in self.resolutions})

    @property
    def size(self) -> int:
        return self.generator.size

    @property
    def num_ws(self) -> int:
        return self.generator.num_ws

    @property
    def w_dim(self) -> int:
        return self.generator.w_dim

    def train(self, mode: bool = True) -> "DeeplySupervisedGenerator":
        super().train(mode)
        self.generator.eval()  # frozen: no train-mode behaviour
        return self

    def forward(self, ws: Tensor, noise: NoiseArg = "const") -> ImageOutput:
        """w+ [B, num_ws, w_dim] -> final image and side outputs. ``noise`` defaults to the
        generator's stored maps, so an encoder's output image is deterministic."""
        out = self.generator.synthesis(ws, noise=noise)
        side = {r: self.heads[str(r)](out.features[r], out.skips[r]) for r in self.resolutions}
        return ImageOutput(image=out.image, side_images=side)

    def save(self, path: str | os.PathLike, discriminator: "Discriminator | None" = None) -> None:
        """The generator in the port's layout (readable by the port and by ``Generator.from_checkpoint``)
        plus ``side_heads`` / ``side_arch`` for :func:`load_gds`."""
        extra = {
            "side_heads": {k: v.detach().cpu() for k, v in self.heads.state_dict().items()},
            "side_arch": {"lr_size": self.lr_size, "head_hidden": list(self.head_hidden), "residual_skip": self.residual_skip},
        }
        self.generator.save(path, discriminator=discriminator, extra=extra)


_SG2_SOURCE = (
    "a StyleGAN2 checkpoint in the rosinality/stylegan2-pytorch layout: stylegan2-ffhq-config-f.pt (converted "
    "from NVlabs' FFHQ config-f with the port's convert_weight.py, as pSp/e4e distribute it), or one trained here "
    "(python -m lit_propulse fit --config experiments/toy/stylegan2.yaml)"
)


@needs_file("path", "the pretrained StyleGAN2 generator", _SG2_SOURCE)
def load_generator(path: str, key: str = "g_ema", lr_mlp: float | None = None) -> Generator:
    """YAML-friendly loader: ``class_path: lit_propulse.networks.stylegan2.load_generator``."""
    return Generator.from_checkpoint(path, key=key, lr_mlp=lr_mlp)


@needs_file("path", "the pretrained StyleGAN2 checkpoint holding the discriminator 'd'", _SG2_SOURCE)
def load_discriminator(path: str, key: str = "d") -> Discriminator:
    """YAML-friendly loader of the checkpoint's discriminator (Pro-PULSE's critic starts from it)."""
    return Discriminator.from_checkpoint(path, key=key)


@needs_file("path", "G_ds: a StyleGAN2 checkpoint, with trained side-output branches unless require_heads is false", "the G_ds stage writes it (python -m lit_propulse fit --config experiments/gds.yaml -> gds.pt); for that stage itself, " + _SG2_SOURCE)
def load_gds(
    path: str,
    lr_size: int | None = None,
    head_hidden: Sequence[int] = (128, 64),
    residual_skip: bool = False,
    require_heads: bool = True,
    reset_heads: bool = False,
) -> DeeplySupervisedGenerator:
    """Load G_ds written by the G_ds stage (generator + trained branches).

    With ``require_heads=False`` a plain StyleGAN2 checkpoint is accepted too and gets fresh branches
    (``lr_size``, ``head_hidden``, ``residual_skip``): how the G_ds stage itself starts, and the
    "without G_ds" ablation. A file's own ``side_arch`` wins over the arguments; ``lr_size`` given
    and different from the file's is an error. ``reset_heads`` keeps the file's branch architecture
    but starts the branches afresh (the E2E ablation, whose branches train with the encoder).
    """
    ckpt = load_checkpoint_file(path)
    G = Generator.from_checkpoint(path)
    arch = ckpt.get("side_arch")
    if arch is None:
        if require_heads:
            raise CheckpointError(
                f"{path}: has no trained side-output branches ('side_heads'); it is a plain StyleGAN2 checkpoint. "
                f"Train G_ds first (experiments/gds.yaml) and give its export (gds.pt), or set require_heads: false"
            )
        if lr_size is None:
            raise ValueError("load_gds: lr_size is needed to build fresh branches on a plain StyleGAN2 checkpoint")
        return DeeplySupervisedGenerator(G, lr_size, head_hidden, residual_skip)
    if lr_size is not None and int(lr_size) != int(arch["lr_size"]):
        raise CheckpointError(f"{path}: its branches were trained for LR {arch['lr_size']}, but lr_size={lr_size} was asked")
    gds = DeeplySupervisedGenerator(G, int(arch["lr_size"]), arch["head_hidden"], bool(arch["residual_skip"]))
    if reset_heads:
        return gds
    _load_exact(gds.heads, ckpt["side_heads"], str(path), ignore=set(), port_names=False)
    return gds


# ----------------------------------------------------------------------------------------------
# Discriminator.


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU] (port's ``ConvLayer``; its Sequential indices are the key names)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (make_kernel(blur_kernel).shape[0] - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride=stride, padding=padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual discriminator block: two 3x3 convs (second downsamples) + 1x1 downsampled skip, / sqrt(2)."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel, activate=False, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator with minibatch standard deviation.

    Args:
        size: input resolution (power of two).
        channel_multiplier: the port's multiplier (2 = config-f); ignored when ``channels`` is given.
        blur_kernel: FIR kernel of the downsampling.
        channels: explicit table resolution -> channels for every resolution 4..size.
        stddev_group: minibatch-stddev group size (4); the batch must be divisible by min(batch, group).
        stddev_feat: minibatch-stddev feature groups (1).
    """

    def __init__(
        self,
        size: int,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        channels: dict[int, int] | None = None,
        stddev_group: int = 4,
        stddev_feat: int = 1,
    ) -> None:
        super().__init__()
        self.size = _check_size(size)
        channels = default_channels(size, channel_multiplier) if channels is None else {int(k): int(v) for k, v in channels.items()}
        log_size = int(math.log2(size))
        missing = [2**k for k in range(2, log_size + 1) if 2**k not in channels]
        if missing:
            raise ValueError(f"channel table lacks resolutions {missing} (size {size}); got {sorted(channels)}")
        self.arch = {"size": self.size, "channels": {2**k: channels[2**k] for k in range(2, log_size + 1)}, "blur_kernel": [float(v) for v in torch.as_tensor(blur_kernel).flatten()] if torch.as_tensor(blur_kernel).ndim == 1 else make_kernel(blur_kernel).tolist(), "stddev_group": stddev_group, "stddev_feat": stddev_feat}
        convs: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        in_ch = channels[size]
        for k in range(log_size, 2, -1):
            out_ch = channels[2 ** (k - 1)]
            convs.append(ResBlock(in_ch, out_ch, blur_kernel))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.stddev_group, self.stddev_feat = stddev_group, stddev_feat
        self.final_conv = ConvLayer(in_ch + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
            EqualLinear(channels[4], 1),
        )

    def forward(self, img: Tensor) -> Tensor:
        if img.ndim != 4 or img.shape[1] != 3 or tuple(img.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"discriminator expects [B, 3, {self.size}, {self.size}], got {tuple(img.shape)}")
        out = self.convs(img)  # [B, C4, 4, 4]
        batch, channel, height, width = out.shape
        group = min(batch, self.stddev_group)
        if batch % group:
            raise ValueError(f"minibatch-stddev needs the batch ({batch}) divisible by the group size ({group})")
        # samples i, i + B/G, i + 2B/G, ... form a group (the port's view order)
        stddev = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
        stddev = stddev.mean([2, 3, 4], keepdim=True).squeeze(2)
        stddev = stddev.repeat(group, 1, height, width)
        out = self.final_conv(torch.cat([out, stddev], 1))
        return self.final_linear(out.reshape(batch, -1))  # [B, 1]

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, key: str = "d", map_location: str | torch.device = "cpu") -> "Discriminator":
        """Load the discriminator (``"d"``) of a port trainer checkpoint or our own save; architecture from shapes."""
        ckpt = load_checkpoint_file(path)
        path = str(path)
        state = _pick_state(ckpt, path, key, kind="discriminator")
        D = cls(**infer_discriminator_arch(state, path))
        _load_exact(D, state, path, ignore=set(), port_names=True)
        return D.to(map_location)


# ----------------------------------------------------------------------------------------------
# Checkpoint reading: safe, shape-inferring, one clear error.


_PORT_HINT = (
    "expected a StyleGAN2 checkpoint in the layout of rosinality/stylegan2-pytorch "
    "(e.g. stylegan2-ffhq-config-f.pt: {'g_ema', 'latent_avg'} from its convert_weight.py, or "
    "{'g', 'd', 'g_ema', 'g_optim', 'd_optim', 'args'} from its train.py) or one saved by lit_propulse"
)


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(weights_only=True)``; only the port trainer's ``argparse.Namespace`` is allowed extra."""
    path = str(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: file not found; {_PORT_HINT}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file; {_PORT_HINT}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: file is empty (0 bytes); {_PORT_HINT}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        detail = msg.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if msg.strip() else type(e).__name__
        if "Unsupported global" in msg:
            raise CheckpointError(
                f"{path}: refused to load: the file contains Python objects other than tensors and plain "
                f"containers ({detail}). NVlabs .pkl networks must be converted first (the port's "
                f"convert_weight.py); {_PORT_HINT}"
            ) from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({detail}); {_PORT_HINT}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint (corrupt or truncated: {first}); {_PORT_HINT}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a dict; {_PORT_HINT}")
    return ckpt


def _pick_state(ckpt: dict[str, Any], path: str, key: str, kind: str) -> dict[str, Tensor]:
    if key in ckpt and isinstance(ckpt[key], dict):
        return ckpt[key]
    if kind == "generator" and key == "g_ema" and isinstance(ckpt.get("g"), dict):
        return ckpt["g"]
    if all(isinstance(v, Tensor) for v in ckpt.values()) and any(k.startswith(("style.", "convs.", "final_conv")) for k in ckpt):
        return ckpt  # a bare state dict
    found = sorted(str(k) for k in ckpt)[:12]
    raise CheckpointError(f"{path}: no {kind} state dict under key {key!r}; found keys {found}; {_PORT_HINT}")


def _shape(state: dict[str, Tensor], path: str, key: str) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{path}: missing tensor {key!r}; {_PORT_HINT}")
    return state[key].shape


def _kernel_spec(kernel: Tensor) -> list[float] | list[list[float]]:
    """The blur kernel spec from a stored 2-D kernel: 1-D when separable, else 2-D (normalised)."""
    k = kernel.double() / kernel.double().sum()
    row = k.sum(0)
    if torch.allclose(torch.outer(row, row), k, atol=1e-6):
        return [float(v) for v in row]
    return k.tolist()


def infer_generator_arch(state: dict[str, Tensor], path: str = "<state dict>") -> dict[str, Any]:
    """size, style_dim, n_mlp, channels and blur_kernel of a port-layout generator state dict."""
    style_dim = _shape(state, path, "style.1.weight")[1]
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    n_conv = 0
    while f"convs.{n_conv}.conv.weight" in state:
        n_conv += 1
    if n_conv < 2 or n_conv % 2:
        raise CheckpointError(f"{path}: found {n_conv} 'convs.N.conv.weight' tensors, expected an even number >= 2; {_PORT_HINT}")
    log_size = n_conv // 2 + 2
    channels = {4: int(_shape(state, path, "input.input")[1])}
    for j in range(n_conv // 2):
        channels[2 ** (j + 3)] = int(_shape(state, path, f"convs.{2 * j}.conv.weight")[1])
    blur = state.get("convs.0.conv.blur.kernel")
    return {
        "size": 2**log_size,
        "style_dim": int(style_dim),
        "n_mlp": n_mlp,
        "channels": channels,
        "blur_kernel": (1, 3, 3, 1) if blur is None else _kernel_spec(blur),
    }


def infer_discriminator_arch(state: dict[str, Tensor], path: str = "<state dict>") -> dict[str, Any]:
    """size, channels and blur_kernel of a port-layout discriminator state dict."""
    n_blocks = 0
    while f"convs.{n_blocks + 1}.conv1.0.weight" in state:
        n_blocks += 1
    if n_blocks < 1:
        raise CheckpointError(f"{path}: no 'convs.1.conv1.0.weight'; not a discriminator state dict; {_PORT_HINT}")
    size = 2 ** (n_blocks + 2)
    channels = {size: int(_shape(state, path, "convs.0.0.weight")[0])}
    for b in range(1, n_blocks + 1):
        channels[size // 2**b] = int(_shape(state, path, f"convs.{b}.conv2.1.weight")[0])
    blur = state.get("convs.1.conv2.0.kernel")
    return {"size": size, "channels": channels, "blur_kernel": (1, 3, 3, 1) if blur is None else _kernel_spec(blur)}


def _load_exact(module: nn.Module, state: dict[str, Tensor], source: str, ignore: set[str], port_names: bool) -> None:
    """load_state_dict(strict) with one error listing every missing, unexpected and mis-shaped key."""
    own = {k: v for k, v in module.state_dict().items() if k not in ignore}
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own and k not in ignore)
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs expected {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape
    )
    if missing or unexpected or mismatched:
        def name(k: str) -> str:  # report the file's own (port) key names
            return next(iter(ours_to_port({k: None})), k) if port_names and isinstance(module, Generator) else k

        parts = []
        if missing:
            parts.append(f"missing keys {[name(k) for k in missing][:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {[name(k) for k in unexpected][:10]}{' ...' if len(unexpected) > 10 else ''}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched[:10]}{' ...' if len(mismatched) > 10 else ''}")
        raise CheckpointError(f"{source}: does not match the architecture inferred from it: " + "; ".join(parts))
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k])


def _plain_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """Arch dict with plain Python values only (safe under weights_only loading)."""
    out: dict[str, Any] = {}
    for k, v in arch.items():
        if isinstance(v, dict):
            out[k] = {int(a): int(b) for a, b in v.items()}
        elif isinstance(v, (list, tuple)):
            out[k] = [list(map(float, x)) if isinstance(x, (list, tuple)) else float(x) for x in v]
        else:
            out[k] = v
    return out
