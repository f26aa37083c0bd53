"""StyleGAN2 (Karras et al., CVPR 2020): mapping, synthesis, generator and discriminator.

The networks only, as NVlabs' ``training/networks_stylegan2.py``: reading and writing checkpoint
files is :mod:`lit_propulse.networks.checkpoints` (the role of stylegan3's ``legacy.py``), and
Pro-PULSE's side-output branches (G_ds, Sec. III-C) are :mod:`lit_propulse.networks.gds`.

The networks compute exactly what the de-facto standard PyTorch port (rosinality/stylegan2-pytorch)
computes and load its checkpoints as they are — the layout of ``stylegan2-ffhq-config-f.pt`` used by
pSp, e4e and the Pro-PULSE paper (Sec. III-F: "We revise the StyleGAN2 pre-trained on FFHQ") — but
with no custom CUDA/C++ op: the FIR up/down-sampling (:mod:`lit_propulse.networks.upfirdn2d`) is
expressed as strided (transposed) depthwise convolutions, so it runs on CPU and GPU alike with no
build step.

Parameter names inside :class:`SynthesisNetwork` and :class:`Discriminator` are the port's, so a
port state dict maps onto ours by a prefix (``style.*`` -> ``mapping.net.*``, everything else ->
``synthesis.*``); see :func:`lit_propulse.networks.checkpoints.port_to_ours`.

Layer order and the map "resolution -> which rows of w+ it uses" are defined once, in
:func:`synthesis_layout` and :func:`num_ws_up_to`; everything else (Pro-PULSE's Eq. (10) progressive
composition, PULSE's per-layer latents and noise) asks them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_propulse.networks.modulated_conv import EqualConv2d, EqualLinear, FusedLeakyReLU, ModulatedConv2d, PixelNorm
from lit_propulse.networks.upfirdn2d import Blur, Upsample, make_kernel

# Checkpoint files are read and written by lit_propulse.networks.checkpoints, which imports this
# module; the thin methods here (from_checkpoint, save, port_state_dict, ...) import it when called.

__all__ = [
    "Discriminator",
    "Generator",
    "LayerSpec",
    "MappingNetwork",
    "NoiseArg",
    "SynthesisNetwork",
    "SynthesisOutput",
    "default_channels",
    "num_ws_up_to",
    "synthesis_layout",
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
        # a copy, not a view of the parameter: torch's module tracker (FlopCounterMode) cannot hook
        # a view of a parameter under no_grad ("Expected gradient function to be set")
        return self.input.repeat(batch, 1, 1, 1)  # [B, C, size, size]


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + LeakyReLU (port's ``StyledConv``)."""

    def __init__(
        self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        # lrelu(conv + n*noise + b) * sqrt(2) == lrelu(sqrt(2) conv + sqrt(2) n*noise + sqrt(2) b): the
        # gain is folded into the (small) weights, bias and noise strength instead of a full pass
        g = math.sqrt(2)
        style = self.conv.modulation(w)  # [B, in]
        if self.conv.style_grad_applies(x, style, self.activate.bias, self.noise.weight):
            return self.conv.style_grad(x, style, g, self.activate.bias * g, noise, self.noise.weight * g, activate=True)
        out = self.conv.modulated(x, style, gain=g, bias=self.activate.bias * g)  # [B, out, H, W]
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
        return [torch.randn(batch, 1, s.resolution, s.resolution, device=device, generator=generator) for s in self.layout if s.noise_index is not None]

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
            raise ValueError(f"synthesis expects ws of shape [B, {self.num_ws}, {self.w_dim}] (num_ws, w_dim), got {tuple(ws.shape)}")
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
                x = [x[b : b + 1] for b in range(batch)]
                skip = [skip[b : b + 1] for b in range(batch)] if skip is not None else None
            if isinstance(x, list):
                n = noises[spec.noise_index] if spec.kind == "conv" else None
                if spec.kind == "conv":
                    x = [module(x[b], w[b : b + 1], None if n is None else n[b : b + 1] if n.shape[0] > 1 else n) for b in range(batch)]
                else:
                    skip = [module(x[b], w[b : b + 1], None if skip is None else skip[b]) for b in range(batch)]
                    features[spec.resolution], skips[spec.resolution] = x, skip
            elif spec.kind == "conv":
                x = module(x, w, noises[spec.noise_index])  # [B, C_r, r, r]
            else:
                skip = module(x, w, skip)  # [B, 3, r, r]
                features[spec.resolution], skips[spec.resolution] = x, skip
        image = skips[self.size]  # concatenates per-sample parts once, [B, 3, size, size]
        return SynthesisOutput(image=image, features=features, skips=skips)


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

    # -- checkpoints: thin calls into lit_propulse.networks.checkpoints ----------------------------
    def port_state_dict(self) -> dict[str, Tensor]:
        """State dict in the port's layout (``g_ema`` of ``stylegan2-ffhq-config-f.pt``)."""
        from lit_propulse.networks.checkpoints import ours_to_port

        return ours_to_port({k: v.detach() for k, v in self.state_dict().items()})

    def load_port_state_dict(self, state: dict[str, Tensor], source: str = "<state dict>") -> None:
        """Load a port-layout state dict, with one clear error listing missing/unexpected/mis-shaped keys."""
        from lit_propulse.networks.checkpoints import load_exact, port_to_ours

        load_exact(self, port_to_ours(state), source, ignore={"latent_avg", "has_latent_avg"}, port_names=True)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, key: str = "g_ema", lr_mlp: float | None = None, map_location: str | torch.device = "cpu") -> Generator:
        """Load a generator from a port checkpoint (converter or trainer layout) or our own save.

        The architecture (size, style_dim, n_mlp, channel table, blur kernel) is inferred from the
        tensors' shapes. ``key`` picks "g_ema" (default) or "g" from trainer checkpoints; ``lr_mlp``
        overrides the stored/default mapping multiplier (0.01). ``latent_avg`` is kept when present,
        computed (10k z, seed 0) and stored when absent.
        """
        from lit_propulse.networks.checkpoints import read_generator

        return read_generator(path, key=key, lr_mlp=lr_mlp, map_location=map_location, cls=cls)

    def save(self, path: str | os.PathLike, discriminator: Discriminator | None = None, extra: dict[str, Any] | None = None) -> None:
        """Write ``{"g_ema", "latent_avg", "arch", ["d"]}`` in the port's layout (readable by the port too)."""
        from lit_propulse.networks.checkpoints import write_generator

        write_generator(self, path, discriminator=discriminator, extra=extra)


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
        self.arch = {
            "size": self.size,
            "channels": {2**k: channels[2**k] for k in range(2, log_size + 1)},
            "blur_kernel": [float(v) for v in torch.as_tensor(blur_kernel).flatten()]
            if torch.as_tensor(blur_kernel).ndim == 1
            else make_kernel(blur_kernel).tolist(),
            "stddev_group": stddev_group,
            "stddev_feat": stddev_feat,
        }
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
    def from_checkpoint(cls, path: str | os.PathLike, key: str = "d", map_location: str | torch.device = "cpu") -> Discriminator:
        """Load the discriminator (``"d"``) of a port trainer checkpoint or our own save; architecture from shapes."""
        from lit_propulse.networks.checkpoints import read_discriminator

        return read_discriminator(path, key=key, map_location=map_location, cls=cls)
