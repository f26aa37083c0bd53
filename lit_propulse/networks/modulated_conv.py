"""StyleGAN2's building blocks: equalized-learning-rate layers and the modulated convolution.

Split out of :mod:`lit_propulse.networks.stylegan2` (which re-exports :class:`ModulatedConv2d`,
:class:`EqualLinear`, :class:`EqualConv2d`, :class:`FusedLeakyReLU` and :class:`PixelNorm`). Parameter
names are the port's (rosinality/stylegan2-pytorch), so its state dicts load as they are.

The modulated convolution (StyleGAN2 Sec. 2.2, Eq. (1)-(3)) has three formulations of the same math,
chosen per call; each is pinned to the port's fixture by ``tests/test_stylegan2.py`` with and without
gradients. :class:`_StyleGradConv` is the backward that PULSE and the encoder stages take through a
frozen generator: no weight-gradient convolution, so forward + backward costs about two forwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.networks.upfirdn2d import Blur, make_kernel

__all__ = ["EqualConv2d", "EqualLinear", "FusedLeakyReLU", "ModulatedConv2d", "PixelNorm"]


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


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of reductions: float32 for bf16/fp16 activations, else their own."""
    return torch.promote_types(dtype, torch.float32)


def _pixels(t: Tensor) -> Tensor:
    """Sample 0 of ``t`` [1, C, H, W] as a [H*W, C] matrix (a view for channels_last and NCHW)."""
    c = t.shape[1]
    if t.is_contiguous() and not t.is_contiguous(memory_format=torch.channels_last):
        return t[0].reshape(c, -1).t()
    return t[0].permute(1, 2, 0).reshape(-1, c)


def _channel_dot(a: Tensor, b: Tensor) -> Tensor:
    """sum over pixels of a * b per channel, [1, C, H, W] x2 -> [C] (accumulated in float32 or wider),
    in blocks of rows of about 2**18 elements: no activation-sized temporary (on CPU a fresh large
    tensor costs more in page faults than the multiplication itself)."""
    acc_t = _acc_dtype(a.dtype)
    if a.device.type != "cpu":  # caching allocators: one pass, no per-block kernel launches
        return torch.sum(a * b, dim=(0, 2, 3), dtype=acc_t)
    rows = max(1, 2**18 // max(1, a.shape[1] * a.shape[3]))
    acc = torch.zeros(a.shape[1], device=a.device, dtype=acc_t)
    for i in range(0, a.shape[2], rows):
        acc += torch.sum(a[:, :, i : i + rows] * b[:, :, i : i + rows], dim=(0, 2, 3), dtype=acc_t)
    return acc


def _modulated_weights(weight: Tensor, coef: Tensor, transpose: bool, channels_last: bool, dtype: torch.dtype) -> Tensor:
    """Per-sample weights ``weight[o, i] * coef[b, o, i]`` in one pass over the weights.

    weight: [out, in, k, k]; coef: [B, out, in] (or broadcastable: [B, out, 1], [B, 1, in]).
    Returns [B, out, in, k, k], or [B, in, out, k, k] when ``transpose`` (what conv_transpose2d
    takes), written in ``dtype`` and, for channels_last activations, directly in the channels_last
    layout the convolution wants (no reorder copy inside each convolution).
    """
    batch = coef.shape[0]
    out_c, in_c, kh, kw = weight.shape
    coef = coef.expand(batch, out_c, in_c)
    if torch.is_grad_enabled() and (weight.requires_grad or coef.requires_grad):  # out= is not differentiable
        w = (weight.unsqueeze(0) * coef[..., None, None]).to(dtype)
        return w.transpose(1, 2) if transpose else w
    if not channels_last:
        w = torch.empty(batch, out_c, in_c, kh, kw, device=weight.device, dtype=dtype)
        torch.mul(weight.unsqueeze(0), coef[..., None, None], out=w)
        return w.transpose(1, 2) if transpose else w
    if transpose:  # physical [B, in, k, k, out]
        w = torch.empty(batch, in_c, kh, kw, out_c, device=weight.device, dtype=dtype)
        torch.mul(weight.permute(1, 2, 3, 0).unsqueeze(0), coef.transpose(1, 2)[:, :, None, None, :], out=w)
        return w.permute(0, 1, 4, 2, 3)  # [B, in, out, k, k]
    w = torch.empty(batch, out_c, kh, kw, in_c, device=weight.device, dtype=dtype)  # physical [B, out, k, k, in]
    torch.mul(weight.permute(0, 2, 3, 1).unsqueeze(0), coef[:, :, None, None, :], out=w)
    return w.permute(0, 1, 4, 2, 3)  # [B, out, in, k, k]


def _is_channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _conv_per_sample(x: Tensor, wmod: Tensor, bias: Tensor | None, blur: Blur | None, padding: int) -> list[Tensor]:
    """One convolution per sample with its own weights: conv2d(x[b], wmod[b]) + bias, or with ``blur``
    the 2x transposed convolution with wmod[b] ([in, out, k, k]) then the blur (the bias rides in it)."""
    if blur is not None:
        return [blur(F.conv_transpose2d(x[b : b + 1], wmod[b], stride=2), bias=bias) for b in range(x.shape[0])]
    return [F.conv2d(x[b : b + 1], wmod[b], bias, padding=padding) for b in range(x.shape[0])]


class _StyleGradConv(torch.autograd.Function):
    """Per-sample modulated convolution (+ noise + LeakyReLU) whose backward needs no
    weight-gradient convolution: the gradient that PULSE and the encoder stages take through a
    frozen generator w.r.t. w+ (StyleGAN2 Sec. 2.2, Eq. (1)-(3)).

    Forward, per sample b: ``y = act(blur?(conv(x, W * s_i * d_o)) + bias_o + nw * noise)``, the
    port's fused formulation (weights modulated and demodulated per sample, one convolution, no extra
    pass over the activations), the epilogue in place; ``act`` = LeakyReLU(0.2) or none (the √2 gain
    is folded into ``d``, ``bias`` and ``nw`` by the caller; ``s`` includes the equalized-lr scale).
    Backward, with ``dpre = act'(y) * dy`` and ``g = conv_input_grad(W * d, dpre)`` (the input
    gradient of the unmodulated convolution, the one convolution of the backward):

    * dL/dx_i = s_i * g_i;  dL/ds_i = sum_px x_i * g_i;
    * dL/dd_o = sum_px dpre_o * (pre_o - bias_o - nw * noise) / d_o, where sum_px dpre_o * pre_o =
      sum_px dy_o * y_o (LeakyReLU is positively homogeneous), so only ``y`` is kept;
    * dL/dnoise = nw * sum_o dpre_o.

    Autograd through per-sample weights needs, per layer, the input gradient and a
    weight-gradient convolution (about twice as costly again). ``d`` (demodulation coefficients
    times the gain) comes from the caller under autograd, which carries dL/dd back to the style.
    Not differentiable twice.
    """

    @staticmethod
    def forward(ctx, x, style, dcoef, noise, weight, bias, noise_strength, blur, padding, activate):
        # x: [B, in, H, W]; style: [B, in]; dcoef: [B, out] or None (= 1); noise: [B or 1, 1, H', W'] or None;
        # weight: [out, in, k, k]; bias: [out] or None; noise_strength: [1] (with noise); blur: the Blur
        # after a 2x transposed convolution, or None (plain convolution with ``padding``)
        coef = style.unsqueeze(1) if dcoef is None else dcoef.unsqueeze(2) * style.unsqueeze(1)  # [B, out or 1, in]
        wmod = _modulated_weights(weight, coef, blur is not None, _is_channels_last(x), x.dtype)
        outs = _conv_per_sample(x, wmod, None if bias is None else bias.to(x.dtype), blur, padding)
        for b, o in enumerate(outs):
            if noise is not None:
                o.add_((noise[b : b + 1] if noise.shape[0] > 1 else noise).to(o.dtype) * noise_strength.to(o.dtype))
            if activate:
                F.leaky_relu_(o, 0.2)
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        ctx.blur, ctx.padding, ctx.activate = blur, padding, activate
        ctx.save_for_backward(x, style, dcoef, noise, weight, bias, noise_strength, y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, style, dcoef, noise, weight, bias, nw, y = ctx.saved_tensors
        need_x, need_s, need_d, need_n = ctx.needs_input_grad[:4]
        dt = dy.dtype
        acc = _acc_dtype(dt)
        gx, gs, gd = [], [], []
        gn = None if not need_n else torch.zeros(noise.shape, device=noise.device, dtype=acc)
        for b in range(x.shape[0]):
            dy_b, y_b, x_b = dy[b : b + 1], y[b : b + 1], x[b : b + 1]
            n_b = None if noise is None else noise[b : b + 1] if noise.shape[0] > 1 else noise
            dpre = torch.ops.aten.leaky_relu_backward(dy_b, y_b, 0.2, True) if ctx.activate else dy_b  # [1, out, H', W']
            d_b = torch.ones_like(style[b, :1]).expand(weight.shape[0]) if dcoef is None else dcoef[b]  # [out]
            if need_d or need_n:
                dpre_m = _pixels(dpre)  # [H'W', out]
            if need_d:
                dd = _channel_dot(dy_b, y_b)  # sum_px dpre * pre
                if bias is not None or n_b is not None:  # sum_px dpre and sum_px dpre * noise in one product
                    ones = torch.ones(dpre_m.shape[0], 1, device=dy.device, dtype=dt)
                    rhs = ones if n_b is None else torch.cat([ones, n_b.reshape(-1, 1).to(dt)], 1)  # [H'W', 1 or 2]
                    sums = (dpre_m.t() @ rhs).to(acc)  # [out, 1 or 2]
                    if bias is not None:
                        dd -= bias.to(acc) * sums[:, 0]
                    if n_b is not None:
                        dd -= nw.to(acc) * sums[:, 1]
                gd.append((dd / d_b.to(acc)).to(dcoef.dtype))
            if need_n:
                gn_b = dpre_m.sum(1, dtype=acc).view(n_b.shape) * nw.to(acc)
                if noise.shape[0] > 1:
                    gn[b : b + 1] = gn_b
                else:
                    gn += gn_b
            if not (need_x or need_s):
                continue
            s_b = style[b]  # [in]
            if ctx.blur is None and weight.shape[-1] == 1:  # 1x1 (ToRGB): two thin matrix products
                w2 = weight.flatten(1) * d_b.view(-1, 1)  # [out, in]
                dpre_m, x_m = _pixels(dpre), _pixels(x_b)  # [HW, out], [HW, in]
                if need_s:
                    m = x_m.t() @ dpre_m.to(x_m.dtype)  # [in, out] = sum_px x_i dpre_o
                    gs.append((m.to(acc) * w2.t().to(acc)).sum(1).to(style.dtype))
                if need_x:
                    g = dpre_m.to(dt) @ (w2 * s_b.view(1, -1)).to(dt)  # [HW, in]
                    gx.append(g.view(1, *x_b.shape[-2:], -1).permute(0, 3, 1, 2).to(x.dtype))
                continue
            dconv = ctx.blur.adjoint(dpre) if ctx.blur is not None else dpre  # [1, out, h, w]
            xin = x_b if x_b.dtype == dt else x_b.to(dt)
            wd = _modulated_weights(weight, d_b.view(1, -1, 1), ctx.blur is not None, _is_channels_last(dconv), dt)[0]
            if ctx.blur is not None:  # the forward was conv_transpose2d(x, (W d)^T, stride 2)
                g = torch.ops.aten.convolution_backward(dconv, xin, wd, None, [2, 2], [0, 0], [1, 1], True, [0, 0], 1, [True, False, False])[0]
            else:
                p = ctx.padding
                g = torch.ops.aten.convolution_backward(dconv, xin, wd, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1, [True, False, False])[0]
            if need_s:
                gs.append(_channel_dot(xin, g).to(style.dtype))
            if need_x:
                gx.append(g.mul_(s_b.view(1, -1, 1, 1).to(dt)).to(x.dtype))
        grad_x = None if not gx else gx[0] if len(gx) == 1 else torch.cat(gx)
        grad_s = None if not gs else torch.stack(gs)
        grad_d = None if not gd else torch.stack(gd)
        grad_n = None if gn is None else gn.to(noise.dtype)
        return grad_x, grad_s, grad_d, grad_n, None, None, None, None, None, None


class ModulatedConv2d(nn.Module):
    """Modulated (and optionally demodulated) convolution, StyleGAN2 Sec. 2.2.

    Three formulations of the same math, chosen per call (each pinned to the port's fixture by
    ``tests/test_stylegan2.py``, with and without gradients):

    * "modulate activations, shared-weight conv, demodulate outputs": one dense convolution over the
      batch. Used at low resolution, and at every resolution when the layer's own weights need
      gradients (training the generator);
    * at high resolution (per-sample activations of at least :attr:`weight_path_min_elements`
      elements) without gradients: the port's per-sample modulated and demodulated weights, which
      saves two full passes over the activations;
    * at high resolution when a gradient is wanted w.r.t. the input or w+ through frozen weights
      (PULSE, the encoder stages, G_ds): the same per-sample forward with a backward that needs no
      weight-gradient convolution (:class:`_StyleGradConv`), so forward + backward costs about two
      forwards.

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

    #: per-sample activations of at least this many elements use per-sample modulated weights
    weight_path_min_elements: int = 2**20
    #: with gradients through frozen weights, use :class:`_StyleGradConv` there (False = autograd
    #: through the per-sample weights, the slower reference the tests compare it with)
    style_grad_path: bool = True

    def forward(self, x: Tensor, w: Tensor, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
        # x: [B, in, H, W], w: [B, style_dim] -> gain * [B, out, H', W'] (+ bias [out], if given)
        return self.modulated(x, self.modulation(w), gain, bias)

    def modulated(self, x: Tensor, style: Tensor, gain: float = 1.0, bias: Tensor | None = None) -> Tensor:
        """The convolution for given styles [B, in] (``modulation(w)``), the formulation chosen per call."""
        if self.style_grad_applies(x, style, bias):
            return self.style_grad(x, style, gain, bias)
        batch = x.shape[0]
        weight = self.weight[0]  # [out, in, k, k]; the equalized-lr scale rides in the style
        style = style * self.scale  # [B, in]
        frozen = not weight.requires_grad and (bias is None or not bias.requires_grad)
        if x[0].numel() >= self.weight_path_min_elements and (frozen or not torch.is_grad_enabled()):
            return self._forward_modulated_weights(x, style, weight, gain, bias)
        x = x * style.view(batch, -1, 1, 1).to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
            out = self.blur(out)
        else:
            out = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            out = out * self._dcoefs(style, weight, gain).view(batch, -1, 1, 1).to(out.dtype)
        elif gain != 1:
            out = out * gain
        return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)

    def style_grad_applies(self, x: Tensor, style: Tensor, *frozen: Tensor | None) -> bool:
        """Whether :meth:`style_grad` serves this call: a gradient is wanted (w.r.t. the input or the
        style), the activations are large enough for per-sample weights, and neither this layer's
        weight nor the given tensors (bias, noise strength) need one."""
        return (
            self.style_grad_path
            and torch.is_grad_enabled()
            and (x.requires_grad or style.requires_grad)
            and x[0].numel() >= self.weight_path_min_elements
            and not self.weight.requires_grad
            and not any(t is not None and t.requires_grad for t in frozen)
        )

    def style_grad(
        self,
        x: Tensor,
        style: Tensor,
        gain: float = 1.0,
        bias: Tensor | None = None,
        noise: Tensor | None = None,
        noise_strength: Tensor | None = None,
        activate: bool = False,
    ) -> Tensor:
        """Per-sample modulated weights, then ``+ noise_strength * noise`` and LeakyReLU(0.2) when
        ``activate``, with the backward of :class:`_StyleGradConv` (frozen weights only)."""
        if noise is not None and noise_strength is None:
            raise ValueError("style_grad: noise given without noise_strength")
        weight = self.weight[0]  # [out, in, k, k]
        style = style * self.scale  # [B, in]
        if self.demodulate:
            dcoef = self._dcoefs(style, weight, gain)  # [B, out]
        elif gain != 1:
            dcoef = torch.full((style.shape[0], self.out_channel), float(gain), device=style.device, dtype=style.dtype)
        else:
            dcoef = None
        blur = self.blur if self.upsample else None
        return _StyleGradConv.apply(x, style, dcoef, noise, weight, bias, noise_strength, blur, self.padding, activate)

    @staticmethod
    def _dcoefs(style: Tensor, weight: Tensor, gain: float) -> Tensor:
        """gain / ||W * s||_2 per output channel, [B, out]: sum_{i,k} (W[o,i,k] s[b,i])**2 = s**2 @ sum_k W**2."""
        return torch.rsqrt(style.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8) * gain

    def _forward_modulated_weights(self, x: Tensor, style: Tensor, weight: Tensor, gain: float, bias: Tensor | None) -> Tensor:
        """The port's own formulation (per-sample modulated and demodulated weights, one conv per
        sample): at high resolution it saves two full passes over the activations. ``style``
        includes the equalized-lr scale."""
        if self.demodulate:
            coef = self._dcoefs(style, weight, gain).unsqueeze(2) * style.unsqueeze(1)  # [B, out, in]
        else:
            coef = (style * gain).unsqueeze(1)  # [B, 1, in]
        wmod = _modulated_weights(weight, coef, self.upsample, _is_channels_last(x), x.dtype)
        outs = _conv_per_sample(x, wmod, None if bias is None else bias.to(x.dtype), self.blur if self.upsample else None, self.padding)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def extra_repr(self) -> str:
        return f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, demodulate={self.demodulate}"
