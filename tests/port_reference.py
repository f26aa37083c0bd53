"""An independent, deliberately naive re-statement of the standard port's forward pass (test-only).

It follows the port's *fused* path (one grouped convolution per sample with modulated, demodulated
weights) and its native ``upfirdn2d`` (zero insertion, padding and a flipped-kernel correlation
done step by step), whereas lit_propulse uses dense convolutions with modulated activations and
strided depthwise FIR. Agreement between the two on any architecture is the "a second, differently
shaped checkpoint would match too" check; the shared fixture pins both to the real port.
It reads parameters by the port's key names from a port-layout state dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def upfirdn2d_naive(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    b, c, h, w = x.shape
    p0, p1 = pad
    # zero insertion: sample i goes to position i*up
    u = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    # pad (negative = crop)
    u = F.pad(u, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    u = u[:, :, max(-p0, 0) : u.shape[2] - max(-p1, 0), max(-p0, 0) : u.shape[3] - max(-p1, 0)]
    kh, kw = kernel.shape
    kf = torch.flip(kernel, [0, 1])
    oh, ow = u.shape[2] - kh + 1, u.shape[3] - kw + 1
    out = torch.zeros(b, c, oh, ow, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += u[:, :, i : i + oh, j : j + ow] * kf[i, j]
    return out[:, :, ::down, ::down]


def _kernel(k) -> Tensor:
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def _lrelu(x: Tensor, bias: Tensor) -> Tensor:
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.ndim - 2))), 0.2) * math.sqrt(2)


def _modconv(sd, prefix, x, w, demodulate=True, upsample=False, blur=(1, 3, 3, 1)):
    weight = sd[prefix + "weight"]  # [1, out, in, k, k]
    _, out_c, in_c, k, _ = weight.shape
    b = x.shape[0]
    style = F.linear(w, sd[prefix + "modulation.weight"] / math.sqrt(w.shape[1])) + sd[prefix + "modulation.bias"]
    wt = weight / math.sqrt(in_c * k * k) * style.view(b, 1, in_c, 1, 1)
    if demodulate:
        wt = wt * torch.rsqrt(wt.pow(2).sum([2, 3, 4]) + 1e-8).view(b, out_c, 1, 1, 1)
    if upsample:
        wt = wt.transpose(1, 2).reshape(b * in_c, out_c, k, k)
        out = F.conv_transpose2d(x.reshape(1, b * in_c, *x.shape[2:]), wt, stride=2, groups=b)
        out = out.view(b, out_c, *out.shape[2:])
        kern = _kernel(blur) * 4
        p = (kern.shape[0] - 2) - (k - 1)
        return upfirdn2d_naive(out, kern, pad=((p + 1) // 2 + 1, p // 2 + 1))
    out = F.conv2d(x.reshape(1, b * in_c, *x.shape[2:]), wt.reshape(b * out_c, in_c, k, k), padding=k // 2, groups=b)
    return out.view(b, out_c, *out.shape[2:])


def port_generator_forward(sd: dict, ws: Tensor, noise: list[Tensor], blur=(1, 3, 3, 1)) -> Tensor:
    """Image from port-layout state dict ``sd``, w+ [B, n_latent, D] and the port-ordered noise list."""
    b = ws.shape[0]

    def styled(prefix, x, w, nz, upsample=False):
        out = _modconv(sd, prefix + "conv.", x, w, upsample=upsample, blur=blur)
        out = out + sd[prefix + "noise.weight"] * nz
        return _lrelu(out, sd[prefix + "activate.bias"])

    def torgb(prefix, x, w, skip):
        out = _modconv(sd, prefix + "conv.", x, w, demodulate=False) + sd[prefix + "bias"]
        if skip is not None:
            kern = _kernel(blur) * 4
            p = kern.shape[0] - 2
            out = out + upfirdn2d_naive(skip, kern, up=2, pad=((p + 1) // 2 + 1, p // 2))
        return out

    x = sd["input.input"].repeat(b, 1, 1, 1)
    x = styled("conv1.", x, ws[:, 0], noise[0])
    skip = torgb("to_rgb1.", x, ws[:, 1], None)
    n_blocks = len([k for k in sd if k.startswith("to_rgbs.") and k.count(".") == 2 and k.endswith(".bias")])
    i = 1
    for j in range(n_blocks):
        x = styled(f"convs.{2 * j}.", x, ws[:, i], noise[2 * j + 1], upsample=True)
        x = styled(f"convs.{2 * j + 1}.", x, ws[:, i + 1], noise[2 * j + 2])
        skip = torgb(f"to_rgbs.{j}.", x, ws[:, i + 2], skip)
        i += 2
    return skip


def port_mapping(sd: dict, z: Tensor, lr_mlp: float = 0.01) -> Tensor:
    x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    n = 1
    while f"style.{n}.weight" in sd:
        wgt = sd[f"style.{n}.weight"]
        x = _lrelu(F.linear(x, wgt * (lr_mlp / math.sqrt(wgt.shape[1]))), sd[f"style.{n}.bias"] * lr_mlp)
        n += 1
    return x
